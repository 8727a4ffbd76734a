import {
  closeSync,
  constants,
  copyFileSync,
  fchmodSync,
  fchownSync,
  futimesSync,
  linkSync,
  lstatSync,
  openSync,
  readlinkSync,
  symlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { parentPort, workerData } from "node:worker_threads";
import {
  type LinkBatch,
  PIECE_FIELDS,
  type WriteFailure,
  type WriterAck,
  type WriterBatch,
  type WriterInit,
} from "./file-writers.js";
import { keepMetadata } from "./rootfs.js";
import { TreePrinter } from "./tree-print.js";

/**
 * A file-writer thread: creates the regular files of a layer that the unpack thread has placed
 * (parent resolved inside the root, slot checked free), with synchronous calls. Creating files is
 * most of an unpack's time and the kernel does it in parallel for different directories, so
 * several of these run at once, each given whole directories. Messages: `WriterBatch` in,
 * `WriterAck` out, one per batch, in order. They also hardlink a finished tree into the unpack
 * cache and copy a cached tree out of it (`LinkBatch`), a directory at a time.
 */

// O_EXCL|O_NOFOLLOW: nothing can sit in the slot, and nothing planted there is followed.
const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
// A reflink where the filesystem has them, and never over something already there.
const COPY = constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE;

class FileWriter {
  private readonly open = new Map<number, number>();
  private failed = false;

  constructor(private readonly ring: Uint8Array) {}

  run(batch: WriterBatch): WriterAck {
    const hosts = batch.hosts.split("\0");
    const n = batch.numbers;
    for (let i = 0; i < hosts.length; i++) {
      if (this.failed) break;
      const host = hosts[i] as string;
      const at = i * PIECE_FIELDS;
      try {
        this.piece(host, n, at);
      } catch (error) {
        this.failed = true;
        this.abandon();
        return { seq: batch.seq, error: failureOf(host, error) };
      }
    }
    return { seq: batch.seq };
  }

  private piece(host: string, n: Float64Array, at: number): void {
    const id = n[at] as number;
    let fd = this.open.get(id);
    if (fd === undefined) {
      fd = openSync(host, CREATE, n[at + 1] as number);
      this.open.set(id, fd);
    }
    const end = n[at + 7] as number;
    let offset = n[at + 6] as number;
    while (offset < end) offset += writeSync(fd, this.ring, offset, end - offset);
    if (n[at + 8] !== 1) return;
    this.open.delete(id);
    try {
      const chmod = n[at + 2] as number;
      const uid = n[at + 3] as number;
      // chown before chmod: chown clears setuid/setgid bits.
      if (uid >= 0) fchownSync(fd, uid, n[at + 4] as number);
      if (chmod >= 0) fchmodSync(fd, chmod);
      const time = new Date(n[at + 5] as number);
      futimesSync(fd, time, time);
    } finally {
      closeSync(fd);
    }
  }

  link(batch: LinkBatch): WriterAck {
    const printer = new TreePrinter();
    const prefix = batch.key === "" ? "" : `${batch.key}/`;
    let name = "";
    try {
      for (name of names(batch.others)) linkSync(join(batch.from, name), join(batch.to, name));
      for (name of names(batch.files)) {
        const linked = join(batch.to, name);
        linkSync(join(batch.from, name), linked);
        printer.add(`${prefix}${name}`, lstatSync(linked));
      }
    } catch (error) {
      return { seq: batch.seq, error: failureOf(join(batch.from, name), error) };
    }
    return { seq: batch.seq, print: printer.print };
  }

  copy(batch: LinkBatch): WriterAck {
    let name = "";
    try {
      for (name of [...names(batch.files), ...names(batch.others)]) {
        const from = join(batch.from, name);
        const to = join(batch.to, name);
        const info = lstatSync(from);
        if (info.isSymbolicLink()) symlinkSync(readlinkSync(from), to);
        else copyFileSync(from, to, COPY);
        keepMetadata(to, info, batch.owner === true);
      }
    } catch (error) {
      return { seq: batch.seq, error: failureOf(join(batch.from, name), error) };
    }
    return { seq: batch.seq };
  }

  private abandon(): void {
    for (const fd of this.open.values()) {
      try {
        closeSync(fd);
      } catch {
        // Already closed: nothing left to release.
      }
    }
    this.open.clear();
  }
}

const port = parentPort;
if (port !== null) {
  const writer = new FileWriter(new Uint8Array((workerData as WriterInit).ring));
  port.on("message", (batch: WriterBatch | LinkBatch) => {
    let ack: WriterAck;
    if (batch.kind === "files") ack = writer.run(batch);
    else if (batch.kind === "links") ack = writer.link(batch);
    else ack = writer.copy(batch);
    port.postMessage(ack);
  });
}

function failureOf(host: string, error: unknown): WriteFailure {
  const err = error as NodeJS.ErrnoException;
  return { host, message: err.message, ...(err.code ? { code: err.code } : {}) };
}

function names(joined: string): string[] {
  return joined === "" ? [] : joined.split("\0");
}
