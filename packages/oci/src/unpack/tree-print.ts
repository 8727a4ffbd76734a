import { createHash } from "node:crypto";
import type { Stats } from "node:fs";

/**
 * What the regular files of a cached tree looked like when it was made, in a few bytes: the count
 * and a sum of one hash per file (its path, inode, size, mtime, mode and owner). A sum does not
 * depend on the order, so threads that fingerprint parts of the tree at once can add theirs up,
 * and a tree of any size costs the same memory, not an object per file.
 */
export interface TreePrint {
  readonly files: number;
  /** The per-file hashes summed modulo 2^256, as hex. */
  readonly sum: string;
}

const MODULUS = 1n << 256n;

export class TreePrinter {
  private files = 0;
  private sum = 0n;

  static from(print: TreePrint): TreePrinter {
    const printer = new TreePrinter();
    printer.merge(print);
    return printer;
  }

  /** `path` is the file's path in the tree; `info` its lstat. */
  add(path: string, info: Stats): void {
    this.sum += fileHash(path, info);
    this.files++;
  }

  /** Takes back an `add` of the same path and lstat (a file replaced since). */
  remove(path: string, info: Stats): void {
    this.sum += MODULUS - fileHash(path, info);
    this.files--;
  }

  merge(part: TreePrint): void {
    this.sum += BigInt(`0x${part.sum}`);
    this.files += part.files;
  }

  get print(): TreePrint {
    return { files: this.files, sum: (this.sum % MODULUS).toString(16).padStart(64, "0") };
  }
}

function fileHash(path: string, info: Stats): bigint {
  const hash = createHash("sha256")
    .update(`${path}\0${info.ino} ${info.size} ${info.mtimeMs} ${info.mode} ${info.uid} ${info.gid}`)
    .digest("hex");
  return BigInt(`0x${hash}`);
}

export function samePrint(a: TreePrint, b: TreePrint): boolean {
  return a.files === b.files && a.sum === b.sum;
}
