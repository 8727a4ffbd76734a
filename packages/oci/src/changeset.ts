import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { PassThrough, type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as zlib from "node:zlib";
import { extract, type Header as Headers } from "tar-stream";
import type { Digest } from "./digest.js";
import { DigestMismatchError, InvalidLayerError, OciError, SizeLimitError, UnpackError } from "./errors.js";
import { layerCompression } from "./media-types.js";
import { type EntryPath, entryPath, formatEntryPath, printable, RootFs } from "./rootfs.js";

/**
 * Applies layer changesets (OCI image-spec "Applying changesets") to a root filesystem:
 * decompress → hash (DiffID) → tar → RootFs, one layer after another.
 */

/** A layer blob on disk, already verified against its digest when it was stored. */
export interface LayerBlob {
  readonly path: string;
  readonly mediaType: string;
  readonly digest: Digest | string;
  /** Digest of the uncompressed tar, from the image config's `rootfs.diff_ids`. */
  readonly diffId: Digest | string;
}

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
}

const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_MARKER = ".wh..wh..opq";
const MAX_SKIPPED_LISTED = 1000;
/** File data queued for writing before the archive is paused. */
const WRITE_BUDGET = 32 * 1024 * 1024;

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
  /** Bytes handed to the thread pool and not yet written. */
  inflight = 0;
  /** Entry streams paused until the pool catches up. */
  readonly paused: Array<{ resume(): void }> = [];
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

/** Decompressed bytes of a layer blob: zlib for gzip, zstd from zlib (Node ≥ 22.15) or the zstd program. */
function decompressed(layer: LayerBlob): Readable {
  const file = createReadStream(layer.path, { highWaterMark: 1024 * 1024 });
  const compression = layerCompression(layer.mediaType);
  if (compression === "none") return file;
  if (compression === "gzip") {
    const gunzip = zlib.createGunzip({ chunkSize: 256 * 1024 });
    file.on("error", (error) => gunzip.destroy(error));
    return file.pipe(gunzip);
  }
  const native = (zlib as { createZstdDecompress?: () => Transform }).createZstdDecompress;
  if (native !== undefined) {
    const zstd = native();
    file.on("error", (error) => zstd.destroy(error));
    return file.pipe(zstd);
  }
  file.destroy();
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  const child = spawn("zstd", ["-d", "-c", "-q", "--", layer.path], { stdio: ["ignore", "pipe", "pipe"] });
  const stderr: Buffer[] = [];
  child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
  child.on("error", (error) =>
    out.destroy(
      new UnpackError(`Cannot decompress zstd layer ${layer.digest}: ${error.message}.`, {
        hint: "Node 20 has no zstd: install the zstd program (Debian package zstd), or use Node ≥ 22.15.",
      }),
    ),
  );
  child.stdout.pipe(out, { end: false });
  child.on("close", (code) => {
    if (code === 0) out.end();
    else
      out.destroy(
        new InvalidLayerError(
          `Layer ${layer.digest} is not valid zstd data: ${Buffer.concat(stderr).toString("utf8").trim()}.`,
        ),
      );
  });
  return out;
}

/** Maps a failed syscall to a message a user can act on. */
function hostError(error: unknown, what: string): OciError {
  if (error instanceof OciError) return error;
  const err = error as NodeJS.ErrnoException;
  const hint =
    err.code === "ENOSPC"
      ? "The disk is full: free some space and try again."
      : err.code === "EACCES" || err.code === "EPERM"
        ? "Check that you own the target directory; run as root for device nodes and ownership."
        : undefined;
  return new UnpackError(`${what}: ${err.message}.`, hint === undefined ? {} : { hint });
}

/** Applies layers in order to one root; keeps the totals and the deferred directory metadata. */
export class ChangesetApplier {
  private readonly rootfs: RootFs;
  private readonly limits: UnpackLimits;
  private readonly filter: PathFilter;
  private readonly rootless: boolean;
  private readonly skipped: SkippedEntry[] = [];
  private skippedCount = 0;
  private layers = 0;
  private entries = 0;
  private bytes = 0;

  constructor(root: string, options: ChangesetOptions = {}) {
    this.rootless = options.rootless ?? process.getuid?.() !== 0;
    this.rootfs = new RootFs(root, !this.rootless);
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
      // pool while this thread parses and writes the previous one.
      highWaterMark: 8 * 1024 * 1024,
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
    // File data is written by the thread pool while this thread parses on; each file is closed
    // (mode, owner, mtime) once its last write lands, and the layer ends when all have.
    const files = new Set<Promise<void>>();
    const tar = extract();
    tar.on("entry", (header, stream, next) => {
      let fd: number | undefined;
      const fail = (error: unknown) => {
        stream.resume();
        next(
          hostError(error, `Cannot apply layer entry "${printable(header.name)}" of layer ${layer.digest}`),
        );
      };
      try {
        fd = this.entry(header, writes);
      } catch (error) {
        fail(error);
        return;
      }
      if (fd === undefined) {
        stream.on("end", () => next());
        stream.resume();
        return;
      }
      const file = fd;
      const what = `Cannot write "${printable(header.name)}" of layer ${layer.digest}`;
      let position = 0;
      let outstanding = 0;
      let ended = false;
      let settled = false;
      let resolveFile!: () => void;
      let rejectFile!: (error: unknown) => void;
      const written = new Promise<void>((resolve, reject) => {
        resolveFile = resolve;
        rejectFile = reject;
      });
      written.catch(() => {});
      files.add(written);
      const settle = (error?: unknown) => {
        if (settled) return;
        if (error !== undefined) {
          settled = true;
          this.rootfs.abandonFile(file);
          rejectFile(hostError(error, what));
          tar.destroy(hostError(error, what));
          return;
        }
        if (!ended || outstanding > 0) return;
        settled = true;
        try {
          this.rootfs.finishFile(file, modeOf(header), owner(header), { mtime: mtimeOf(header) });
          resolveFile();
        } catch (finishError) {
          rejectFile(hostError(finishError, what));
          tar.destroy(hostError(finishError, what));
        }
      };
      stream.on("data", (chunk: unknown) => {
        const data = chunk as Buffer;
        outstanding++;
        writes.inflight += data.length;
        this.rootfs.writeAt(file, data, position, (error) => {
          outstanding--;
          writes.inflight -= data.length;
          if (writes.inflight < WRITE_BUDGET / 2)
            for (const paused of writes.paused.splice(0)) paused.resume();
          settle(error ?? undefined);
        });
        position += data.length;
        if (writes.inflight > WRITE_BUDGET) {
          stream.pause();
          writes.paused.push(stream);
        }
      });
      stream.on("error", (error) => {
        settle(error);
        next(error);
      });
      stream.on("end", () => {
        ended = true;
        settle();
        next();
      });
    });
    try {
      await pipeline(decompressed(layer), meter, tar);
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
      throw hostError(error, `Cannot apply layer ${layer.digest}`);
    } finally {
      await Promise.allSettled(files);
    }
    for (const file of files) await file;
    const diffId = `sha256:${hash.digest("hex")}`;
    if (diffId !== layer.diffId)
      throw new DigestMismatchError(
        `Layer ${layer.digest} unpacks to ${diffId}, but the image config says its DiffID is ${layer.diffId}.`,
        { hint: "The image is corrupt or was tampered with; nothing from it was kept." },
      );
    this.layers++;
  }

  /** Applies one entry's metadata; returns an open file descriptor when its data follows. */
  private entry(header: Headers, writes: LayerWrites): number | undefined {
    if (++this.entries > this.limits.maxEntries)
      throw new SizeLimitError(`The image has more than ${this.limits.maxEntries} archive entries.`, {
        hint: "If the image is genuine, raise the limit with --max-entries.",
      });
    const path = entryPath(header.name);
    const key = path.join("/");
    const base = path[path.length - 1] ?? "";
    if (base.startsWith(WHITEOUT_PREFIX)) {
      this.whiteout(path.slice(0, -1), base, writes);
      return undefined;
    }
    if (path.length === 0 && header.type !== "directory")
      throw new InvalidLayerError(
        `Layer entry "${printable(header.name)}" would replace the root directory with a ${header.type}.`,
      );
    if (!this.filter.admits(key)) return undefined;
    const times = { mtime: mtimeOf(header) };
    const ids = owner(header);
    writes.add(key);
    switch (header.type) {
      case "file":
      case "contiguous-file":
        return this.rootfs.createFile(path);
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

  /** Applies deferred directory metadata; call once after the last layer. */
  finish(): UnpackReport {
    this.rootfs.finish();
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
    };
  }
}

function owner(header: Headers): { uid: number; gid: number } {
  return { uid: header.uid ?? 0, gid: header.gid ?? 0 };
}

function mtimeOf(header: Headers): Date {
  return header.mtime ?? new Date(0);
}

function mode8(header: Headers): string {
  return (modeOf(header) & 0o7777).toString(8);
}
