import { spawn } from "node:child_process";
import { createReadStream } from "node:fs";
import { PassThrough, type Readable, Transform, type TransformCallback, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as zlib from "node:zlib";
import { type Digest, parseDigest, verifyingStream } from "../digest.js";
import { InvalidLayerError, UnpackError } from "../errors.js";
import { layerCompression } from "../media-types.js";
import { programOnPath } from "../programs.js";

// A layer blob as the tar stream it holds: decompressed, and cut at its end-of-archive marker.

/** A layer blob on disk, already verified against its digest when it was stored. */
export interface LayerBlob {
  readonly path: string;
  readonly mediaType: string;
  readonly digest: Digest | string;
  /** Digest of the uncompressed tar, from the image config's `rootfs.diff_ids`. */
  readonly diffId: Digest | string;
  /**
   * The file was verified against `digest` when it was stored (the store does this); otherwise
   * the compressed bytes are hashed too while they are read.
   */
  readonly verified?: boolean;
}

/**
 * The zstd program, when there is one on PATH: measured (bench/zstd.ts) it decompresses ~1.2× as
 * fast as Node's own zstd (zlib, Node ≥ 22.15) with 256 KiB output chunks (~2.2× with zlib's
 * default 16 KiB), which is the way when it is missing.
 */
let zstdProgram: Promise<string | undefined> | undefined;
const ZSTD_HINT =
  "Install the zstd program (Debian package zstd), or use Node ≥ 22.15, which has zstd of its own.";

/** Node's own zstd decompressor (zlib, Node ≥ 22.15), when this Node has one. */
function nativeZstd(): ((options: zlib.ZlibOptions) => Transform) | undefined {
  return (zlib as { createZstdDecompress?: (options: zlib.ZlibOptions) => Transform }).createZstdDecompress;
}

/** What zstd layers can be decompressed with here: the zstd program (preferred), Node's own, both or neither. */
export async function zstdDecoders(): Promise<{ program: string | undefined; native: boolean }> {
  zstdProgram ??= programOnPath("zstd", true);
  return { program: await zstdProgram, native: nativeZstd() !== undefined };
}

/** Decompressed bytes of a layer blob: zlib for gzip; for zstd the zstd program, else Node's zlib. */
export async function decompressed(layer: LayerBlob): Promise<Readable> {
  const raw = createReadStream(layer.path, { highWaterMark: 1024 * 1024 });
  const what = `Layer blob ${layer.path}`;
  const file: Readable = layer.verified
    ? raw
    : raw.pipe(verifyingStream(parseDigest(layer.digest), undefined, what));
  if (file !== raw) raw.on("error", (error) => file.destroy(error));
  const compression = layerCompression(layer.mediaType);
  if (compression === "none") return file;
  if (compression === "gzip") {
    const gunzip = zlib.createGunzip({ chunkSize: 256 * 1024 });
    file.on("error", (error) => gunzip.destroy(error));
    return file.pipe(gunzip);
  }
  const { program } = await zstdDecoders();
  const native = nativeZstd();
  if (program === undefined && native !== undefined) {
    // Its default 16 KiB output chunks halve its speed.
    const zstd = native({ chunkSize: 256 * 1024 });
    file.on("error", (error) => zstd.destroy(error));
    return file.pipe(zstd);
  }
  raw.destroy();
  if (program === undefined)
    throw new UnpackError(
      `Cannot decompress zstd layer ${layer.digest}: Node ${process.version} has no zstd of its own, and the zstd program is not on PATH.`,
      { hint: ZSTD_HINT },
    );
  // The zstd program reads the file itself, so an unverified blob is checked in a pass before.
  if (!layer.verified)
    await pipeline(
      createReadStream(layer.path),
      verifyingStream(parseDigest(layer.digest), undefined, what),
      new Writable({ write: (_chunk, _encoding, callback) => callback() }),
    );
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  const child = spawn(program, ["-d", "-c", "-q", "--", layer.path], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stderr: Buffer[] = [];
  child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
  child.on("error", (error) =>
    out.destroy(
      new UnpackError(`Cannot decompress zstd layer ${layer.digest}: ${error.message}.`, {
        hint: ZSTD_HINT,
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

const BLOCK = 512;

/** A numeric tar header field: octal text, or base-256 when the high bit of its first byte is set. */
function headerNumber(block: Buffer, offset: number, length: number): number {
  const field = block.subarray(offset, offset + length);
  if (((field[0] as number) & 0x80) !== 0) {
    let value = (field[0] as number) & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + (field[i] as number);
    return value;
  }
  const text = field
    .toString("latin1")
    .replace(/[\0 ].*$/s, "")
    .trim();
  return text === "" ? 0 : Number.parseInt(text, 8);
}

/** The `size` record of a PAX extended header, which overrides the next entry's header size. */
function paxSize(data: Buffer): number | undefined {
  const match = /(?:^|\n)\d+ size=(\d+)\n/.exec(data.toString("latin1"));
  return match === null ? undefined : Number(match[1]);
}

/**
 * Passes an archive through up to its end-of-archive marker and swallows whatever follows, as
 * GNU tar and Go's archive/tar do: tar-stream would go on reading headers after the marker. Only
 * block boundaries and sizes are read here; the entries themselves are tar-stream's job. The
 * bytes after the marker are still hashed upstream, so they count toward the DiffID.
 */
export class ArchiveEnd extends Transform {
  private header = Buffer.alloc(0);
  /** Bytes of entry data (padded) still to pass before the next header. */
  private skip = 0;
  /** PAX or GNU long-name payload being collected, for a `size` override. */
  private collecting: { type: string; data: Buffer[]; left: number } | undefined;
  private nextSize: number | undefined;
  private ended = false;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.ended) {
      callback();
      return;
    }
    let offset = 0;
    let passUntil = 0;
    while (offset < chunk.length) {
      if (this.skip > 0) {
        const take = Math.min(this.skip, chunk.length - offset);
        if (this.collecting !== undefined && this.collecting.left > 0) {
          const useful = Math.min(take, this.collecting.left);
          this.collecting.data.push(chunk.subarray(offset, offset + useful));
          this.collecting.left -= useful;
        }
        this.skip -= take;
        offset += take;
        if (this.skip === 0 && this.collecting !== undefined) {
          if (this.collecting.type === "x") this.nextSize = paxSize(Buffer.concat(this.collecting.data));
          this.collecting = undefined;
        }
        passUntil = offset;
        continue;
      }
      const need = BLOCK - this.header.length;
      const piece = chunk.subarray(offset, offset + need);
      this.header = this.header.length === 0 ? Buffer.from(piece) : Buffer.concat([this.header, piece]);
      offset += piece.length;
      if (this.header.length < BLOCK) {
        passUntil = offset;
        break;
      }
      const block = this.header;
      this.header = Buffer.alloc(0);
      if (block.every((byte) => byte === 0)) {
        // The end-of-archive marker: pass this block and its twin, then nothing more.
        this.ended = true;
        this.push(chunk.subarray(0, offset));
        this.push(Buffer.alloc(BLOCK));
        callback();
        return;
      }
      const type = String.fromCharCode(block[156] as number);
      let size = headerNumber(block, 124, 12);
      if (type === "x" || type === "g" || type === "L" || type === "K") {
        this.collecting = { type, data: [], left: size };
      } else if (this.nextSize !== undefined) {
        size = this.nextSize;
        this.nextSize = undefined;
      }
      // Links, directories and devices carry no data whatever their size field says.
      if (type === "1" || type === "2" || type === "3" || type === "4" || type === "5" || type === "6")
        size = 0;
      this.skip = Math.ceil(size / BLOCK) * BLOCK;
      passUntil = offset;
    }
    callback(null, passUntil === chunk.length ? chunk : chunk.subarray(0, passUntil));
  }
}
