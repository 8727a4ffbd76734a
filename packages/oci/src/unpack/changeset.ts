import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract, type Header as Headers } from "tar-stream";
import { diskFullError } from "../disk-space.js";
import {
  DigestMismatchError,
  InvalidLayerError,
  OciError,
  SizeLimitError,
  UnpackError,
  UnsafeLayerError,
} from "../errors.js";
import { ArchiveEnd, decompressed, type LayerBlob } from "./archive.js";
import { type FileJob, FileWriters, PIECE, type WriteFailure } from "./file-writers.js";
import { isHostRoot } from "./privilege.js";
import {
  copyDirectories,
  type EntryPath,
  entryPath,
  finishDirectories,
  formatEntryPath,
  printable,
  RootFs,
  WritesInFlight,
} from "./rootfs.js";
import type { TreePrint } from "./tree-print.js";

/**
 * Applies layer changesets (OCI image-spec "Applying changesets") to a root filesystem:
 * decompress → hash (DiffID) → tar → RootFs, one layer after another.
 */

export interface UnpackLimits {
  /** Uncompressed bytes over all layers. */
  readonly maxBytes: number;
  /** Archive entries over all layers. */
  readonly maxEntries: number;
}

export const DEFAULT_UNPACK_LIMITS: UnpackLimits = {
  maxBytes: 64 * 1024 ** 3,
  maxEntries: 500_000,
};

export interface ChangesetOptions {
  /** Only these subtrees of the image (absolute paths such as `/cnb`); everything when empty. */
  readonly paths?: readonly string[];
  readonly limits?: Partial<UnpackLimits>;
  /** Skip ownership and device nodes (default: when not running as root). */
  readonly rootless?: boolean;
}

export interface SkippedEntry {
  readonly path: string;
  readonly reason: string;
}

export interface UnpackReport {
  readonly layers: number;
  readonly entries: number;
  /** Uncompressed bytes read. */
  readonly bytes: number;
  /** Entries not created (device nodes when rootless, unsupported types), at most 1000 listed. */
  readonly skipped: readonly SkippedEntry[];
  /** True when ownership from the archive was not applied (rootless). */
  readonly ownershipSkipped: boolean;
  /**
   * Rootless only: modes that deny their owner access (a 0000 `/etc/shadow`) were loosened on
   * disk so the tree can be copied; `restoreModes(root, …)` puts them back.
   */
  readonly loosenedModes: ReadonlyArray<{ path: string; mode: number }>;
}

const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_MARKER = ".wh..wh..opq";
const MAX_SKIPPED_LISTED = 1000;

/** Which part of the tree a `--path` filter lets through. */
class PathFilter {
  private readonly prefixes: string[];
  constructor(paths: readonly string[]) {
    this.prefixes = paths.map((path) => entryPath(path).join("/"));
  }
  get all(): boolean {
    return this.prefixes.length === 0 || this.prefixes.includes("");
  }
  /** The entry is inside a selected subtree, or is a directory on the way to one. */
  admits(key: string): boolean {
    if (this.all) return true;
    return this.prefixes.some(
      (prefix) =>
        key === prefix || key.startsWith(`${prefix}/`) || key === "" || prefix.startsWith(`${key}/`),
    );
  }
}

/** Paths the current layer wrote, which its own whiteouts and opaque markers must not remove. */
class LayerWrites {
  private readonly written = new Set<string>();
  private readonly ancestors = new Set<string>();
  add(key: string): void {
    this.written.add(key);
    let slash = key.lastIndexOf("/");
    while (slash > 0) {
      const ancestor = key.slice(0, slash);
      if (this.ancestors.has(ancestor)) break;
      this.ancestors.add(ancestor);
      slash = ancestor.lastIndexOf("/");
    }
  }
  has(key: string): boolean {
    return this.written.has(key);
  }
  verdict(key: string): "keep" | "descend" | "remove" {
    if (this.ancestors.has(key)) return "descend";
    if (this.written.has(key)) return "keep";
    return "remove";
  }
}

function modeOf(header: Headers): number {
  return header.mode ?? 0o644;
}

/** A writer thread's failure as the errno error it was. */
function writeFailure(failure: WriteFailure, root: string): OciError {
  const error = Object.assign(new Error(failure.message), failure.code ? { code: failure.code } : {});
  const path = failure.host.startsWith(`${root}/`) ? failure.host.slice(root.length) : failure.host;
  return hostError(error, `Cannot write ${printable(path)}`, root);
}

/** Maps a failed syscall to a message a user can act on. */
function hostError(error: unknown, what: string, root: string): OciError {
  if (error instanceof OciError) return error;
  const full = diskFullError(error, root, `${what} (unpacking into ${root})`);
  if (full !== undefined) return full;
  const err = error as NodeJS.ErrnoException;
  const hint =
    err.code === "EACCES" || err.code === "EPERM"
      ? "Check that you own the target directory; run as root for device nodes and ownership."
      : undefined;
  return new UnpackError(`${what}: ${err.message}.`, hint === undefined ? {} : { hint });
}

/** Applies layers in order to one root; keeps the totals and the deferred directory metadata. */
export class ChangesetApplier {
  private readonly rootfs: RootFs;
  private readonly writers: FileWriters;
  private readonly limits: UnpackLimits;
  private readonly filter: PathFilter;
  private readonly rootless: boolean;
  private readonly skipped: SkippedEntry[] = [];
  private skippedCount = 0;
  private layers = 0;
  private entries = 0;
  private bytes = 0;

  constructor(root: string, options: ChangesetOptions = {}) {
    this.rootless = options.rootless ?? !isHostRoot();
    this.rootfs = new RootFs(root, !this.rootless);
    this.writers = new FileWriters((host) => this.rootfs.fileWritten(host));
    this.limits = { ...DEFAULT_UNPACK_LIMITS, ...options.limits };
    this.filter = new PathFilter(options.paths ?? []);
  }

  private skip(path: EntryPath, reason: string): void {
    this.skippedCount++;
    if (this.skipped.length < MAX_SKIPPED_LISTED) this.skipped.push({ path: formatEntryPath(path), reason });
  }

  /** Applies one layer, verifying its DiffID over every decompressed byte (the stream is drained). */
  async apply(layer: LayerBlob): Promise<void> {
    const hash = createHash("sha256");
    const limits = this.limits;
    const meter = new Transform({
      // A deep buffer and a deferred callback let zlib decompress the next chunk on the thread
      // pool while this thread parses and places the previous one (8 MiB was no faster).
      highWaterMark: 2 * 1024 * 1024,
      transform: (chunk: Buffer, _encoding, callback) => {
        this.bytes += chunk.length;
        if (this.bytes > limits.maxBytes) {
          callback(
            new SizeLimitError(
              `The image unpacks to more than ${limits.maxBytes} bytes (limit reached in layer ${layer.digest}).`,
              { hint: "If the image is genuine, raise the limit with --max-bytes." },
            ),
          );
          return;
        }
        hash.update(chunk);
        setImmediate(callback, null, chunk);
      },
    });
    const writes = new LayerWrites();
    const writers = this.writers;
    const tar = extract();
    const writeFailed = (failure: WriteFailure) => tar.destroy(writeFailure(failure, this.rootfs.root));
    tar.on("entry", (header, stream, next) => {
      // Failures travel through next()/destroy(); the entry stream's own error is that same one.
      stream.on("error", () => {});
      const fail = (error: unknown) => {
        stream.resume();
        next(
          hostError(
            error,
            `Cannot apply layer entry "${printable(header.name)}" of layer ${layer.digest}`,
            this.rootfs.root,
          ),
        );
      };
      if (++this.entries > this.limits.maxEntries) {
        fail(
          new SizeLimitError(`The image has more than ${this.limits.maxEntries} archive entries.`, {
            hint: "If the image is genuine, raise the limit with --max-entries.",
          }),
        );
        return;
      }
      const place = (): void => {
        let job: FileJob | undefined;
        try {
          job = this.entry(header, writes);
        } catch (error) {
          // Nothing was changed: apply the entry again once the writers have caught up.
          if (error instanceof WritesInFlight) writers.drained().then(place, writeFailed);
          else fail(error);
          return;
        }
        if (job === undefined) {
          stream.on("end", () => next());
          stream.resume();
          return;
        }
        // The writer thread creates the file with its first piece and closes it with the last.
        const file = job;
        const id = writers.newFile();
        let piece: Buffer[] = [];
        let size = 0;
        stream.on("data", (chunk: unknown) => {
          piece.push(chunk as Buffer);
          size += (chunk as Buffer).length;
          if (size < PIECE) return;
          writers.write(id, file, piece, false);
          piece = [];
          size = 0;
          if (!writers.backlogged) return;
          stream.pause();
          writers.caughtUp().then(() => stream.resume(), writeFailed);
        });
        stream.on("end", () => {
          writers.write(id, file, piece, true);
          if (writers.backlogged) writers.caughtUp().then(() => next(), writeFailed);
          else next();
        });
      };
      place();
    });
    try {
      await pipeline(await decompressed(layer), meter, new ArchiveEnd(), tar);
    } catch (error) {
      if (error instanceof OciError) throw error;
      const message = (error as Error).message;
      if (/incorrect header check|unexpected end|invalid|header|Unexpected end of data/i.test(message))
        throw new InvalidLayerError(
          `Layer ${layer.digest} is not a valid ${layer.mediaType} archive: ${message}.`,
          {
            hint: "The image is corrupt: ask its publisher, or pull it again from another source.",
          },
        );
      throw hostError(error, `Cannot apply layer ${layer.digest}`, this.rootfs.root);
    } finally {
      // Nothing may still be writing when the caller discards a failed tree.
      await writers.stopped();
    }
    await writers.drained().catch((failure: WriteFailure) => {
      throw writeFailure(failure, this.rootfs.root);
    });
    const diffId = `sha256:${hash.digest("hex")}`;
    if (diffId !== layer.diffId)
      throw new DigestMismatchError(
        `Layer ${layer.digest} unpacks to ${diffId}, but the image config says its DiffID is ${layer.diffId}.`,
        { hint: "The image is corrupt or was tampered with; nothing from it was kept." },
      );
    this.layers++;
  }

  /**
   * Applies one entry's metadata; returns the job of a regular file, whose data follows. Throws
   * WritesInFlight, having changed nothing, when the entry must wait for the writer threads.
   */
  private entry(header: Headers, writes: LayerWrites): FileJob | undefined {
    const path = entryPath(header.name);
    const key = path.join("/");
    const base = path[path.length - 1] ?? "";
    if (base.startsWith(WHITEOUT_PREFIX)) {
      this.whiteout(path.slice(0, -1), base, writes);
      return undefined;
    }
    if (path.length === 0 && header.type !== "directory")
      throw new UnsafeLayerError(
        `Layer entry "${printable(header.name)}" would replace the root directory with a ${header.type}.`,
      );
    if (!this.filter.admits(key)) return undefined;
    const times = { mtime: mtimeOf(header) };
    const ids = owner(header);
    writes.add(key);
    switch (header.type) {
      case "file":
      case "contiguous-file":
        return this.rootfs.createFile(path, modeOf(header), ids, times);
      case "directory":
        this.rootfs.directory(path, modeOf(header), ids, times);
        return undefined;
      case "symlink":
        this.rootfs.symlink(path, header.linkname ?? "", ids, times);
        return undefined;
      case "link": {
        const target = header.linkname ?? "";
        if (!this.filter.admits(entryPath(target).join("/")))
          throw new InvalidLayerError(
            `Layer entry "${formatEntryPath(path)}" is a hardlink to "${printable(target)}", outside the paths being unpacked.`,
            { hint: "Unpack without --path, or include the link target's directory." },
          );
        this.rootfs.hardlink(path, target);
        return undefined;
      }
      case "fifo":
        this.rootfs.special(path, (host) => execFileSync("mkfifo", ["-m", mode8(header), host]), ids, times);
        return undefined;
      case "character-device":
      case "block-device": {
        if (this.rootless) {
          this.skip(path, `${header.type} ${header.devmajor ?? 0}:${header.devminor ?? 0} (needs root)`);
          return undefined;
        }
        const kind = header.type === "character-device" ? "c" : "b";
        const args = [
          "-m",
          mode8(header),
          "--",
          "",
          kind,
          String(header.devmajor ?? 0),
          String(header.devminor ?? 0),
        ];
        this.rootfs.special(
          path,
          (host) => {
            args[3] = host;
            execFileSync("mknod", args);
          },
          ids,
          times,
        );
        return undefined;
      }
      default:
        this.skip(path, `unsupported entry type ${header.type}`);
        return undefined;
    }
  }

  private whiteout(dir: EntryPath, base: string, writes: LayerWrites): void {
    const dirKey = dir.join("/");
    if (base === OPAQUE_MARKER) {
      if (!this.filter.admits(dirKey)) return;
      this.rootfs.makeOpaque(dir, (key) => writes.verdict(key));
      return;
    }
    // Other `.wh..wh.` names are aufs bookkeeping (hardlink dirs, metadata), not whiteouts.
    if (base.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) return;
    const name = base.slice(WHITEOUT_PREFIX.length);
    if (name === "" || name === "." || name === "..")
      throw new InvalidLayerError(
        `Layer entry "${formatEntryPath([...dir, base])}" is a whiteout without a valid name to remove.`,
      );
    const victim = [...dir, name];
    const key = victim.join("/");
    // A whiteout only hides what lower layers made.
    if (writes.verdict(key) !== "remove" || !this.filter.admits(key)) return;
    this.rootfs.remove(victim);
  }

  /**
   * Applies deferred directory metadata and stops the writer threads; call once after the last
   * layer. With `linkInto` (a path that does not exist yet), the finished tree is also copied
   * there as hardlinks by the writer threads, and the print of its files comes back; a tree
   * that cannot be linked there (another filesystem) is left out, and so is the print.
   */
  async finish(linkInto?: string): Promise<{ report: UnpackReport; print?: TreePrint }> {
    this.rootfs.finish();
    let print: TreePrint | undefined;
    try {
      if (linkInto !== undefined) print = await this.linkTree(linkInto);
    } finally {
      await this.writers.close();
    }
    return { report: this.report(), ...(print === undefined ? {} : { print }) };
  }

  private async linkTree(into: string): Promise<TreePrint | undefined> {
    try {
      const copied = copyDirectories(this.rootfs.root, into, (from, to, key, files, others) =>
        this.writers.link(from, to, key, files, others),
      );
      await this.writers.drained();
      finishDirectories(copied, !this.rootless);
      return this.writers.linkedPrint();
    } catch {
      await this.writers.stopped();
      return undefined;
    }
  }

  private report(): UnpackReport {
    const skipped =
      this.skippedCount > this.skipped.length
        ? [
            ...this.skipped,
            { path: "…", reason: `${this.skippedCount - this.skipped.length} more not listed` },
          ]
        : this.skipped;
    return {
      layers: this.layers,
      entries: this.entries,
      bytes: this.bytes,
      skipped,
      ownershipSkipped: this.rootless,
      loosenedModes: this.rootfs.loosenedModes(),
    };
  }
}

function owner(header: Headers): { uid: number; gid: number } {
  return { uid: header.uid ?? 0, gid: header.gid ?? 0 };
}

/** A PAX `mtime` record (sub-second, beyond 2038) wins over the header field, as in GNU tar and umoci. */
function mtimeOf(header: Headers): Date {
  const pax = (header.pax as Record<string, string> | undefined)?.mtime;
  if (pax !== undefined && /^-?\d+(\.\d+)?$/.test(pax)) return new Date(Number(pax) * 1000);
  return header.mtime ?? new Date(0);
}

function mode8(header: Headers): string {
  return (modeOf(header) & 0o7777).toString(8);
}
