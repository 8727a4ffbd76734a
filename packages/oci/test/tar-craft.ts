/**
 * Raw tar archives for tests, byte by byte. Every header is built by hand so that a test can
 * write exactly what an attacker would — `../` names, an escape hidden in the ustar prefix, a
 * PAX record that contradicts the ustar name, a root entry of the wrong type, data after the
 * end marker — none of which a well-behaved tar writer (tar-stream included) will produce.
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";

export const BLOCK = 512;
/** Two zero blocks: the end-of-archive marker. */
export const END_MARKER: Buffer = Buffer.alloc(2 * BLOCK);

const TYPEFLAGS = {
  file: "0",
  hardlink: "1",
  symlink: "2",
  char: "3",
  block: "4",
  directory: "5",
  fifo: "6",
  pax: "x",
  "pax-global": "g",
  "gnu-long-name": "L",
  "gnu-long-link": "K",
} as const;

export type EntryType = keyof typeof TYPEFLAGS;

export interface HeaderFields {
  /** Written verbatim into the 100-byte name field (must fit). */
  name: string;
  type?: EntryType;
  /** Overrides `type` with any typeflag byte. */
  typeflag?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  /** Seconds since the epoch. */
  mtime?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** The ustar prefix field (155 bytes), joined to the name with "/" by readers. */
  prefix?: string;
  /** "ustar" (POSIX, the default) or "gnu" (the old GNU magic "ustar  "). */
  magic?: "ustar" | "gnu";
  /** Stored checksum; defaults to the correct one. */
  checksum?: number;
}

/** Default entry timestamp: 2001-09-09, far from "now", so a stray utimes() is visible. */
export const DEFAULT_MTIME = 1_000_000_000;

function writeString(block: Buffer, value: string, offset: number, length: number, field: string): void {
  const bytes = Buffer.from(value, "utf8");
  if (bytes.length > length)
    throw new Error(`tar-craft: ${field} "${value}" does not fit in ${length} bytes`);
  bytes.copy(block, offset);
}

/** An octal number, zero-padded to `length - 1` digits and NUL-terminated. */
function writeOctal(block: Buffer, value: number, offset: number, length: number, field: string): void {
  const digits = value.toString(8);
  if (value < 0 || digits.length > length - 1)
    throw new Error(`tar-craft: ${field} ${value} does not fit in ${length} bytes`);
  block.write(digits.padStart(length - 1, "0"), offset, "ascii");
  block[offset + length - 1] = 0;
}

/** The header checksum: the unsigned sum of all bytes, the checksum field counted as spaces. */
export function headerChecksum(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] as number);
  return sum;
}

/** Writes the checksum field: six octal digits, NUL, space (as GNU tar does). */
export function setChecksum(block: Buffer, value: number = headerChecksum(block)): void {
  block.write(value.toString(8).padStart(6, "0"), 148, "ascii");
  block[154] = 0;
  block[155] = 0x20;
}

/** One 512-byte header block, exactly as described: no normalisation, no PAX, no splitting. */
export function header(fields: HeaderFields): Buffer {
  const block = Buffer.alloc(BLOCK);
  writeString(block, fields.name, 0, 100, "name");
  writeOctal(block, fields.mode ?? (fields.type === "directory" ? 0o755 : 0o644), 100, 8, "mode");
  writeOctal(block, fields.uid ?? 0, 108, 8, "uid");
  writeOctal(block, fields.gid ?? 0, 116, 8, "gid");
  writeOctal(block, fields.size ?? 0, 124, 12, "size");
  writeOctal(block, fields.mtime ?? DEFAULT_MTIME, 136, 12, "mtime");
  const typeflag = fields.typeflag ?? TYPEFLAGS[fields.type ?? "file"];
  writeString(block, typeflag, 156, 1, "typeflag");
  writeString(block, fields.linkname ?? "", 157, 100, "linkname");
  if ((fields.magic ?? "ustar") === "ustar") {
    block.write("ustar\u000000", 257, "binary");
  } else {
    block.write("ustar  \u0000", 257, "binary");
  }
  writeString(block, "root", 265, 32, "uname");
  writeString(block, "root", 297, 32, "gname");
  writeOctal(block, fields.devmajor ?? 0, 329, 8, "devmajor");
  writeOctal(block, fields.devminor ?? 0, 337, 8, "devminor");
  writeString(block, fields.prefix ?? "", 345, 155, "prefix");
  setChecksum(block, fields.checksum);
  return block;
}

/** Zero padding that rounds `length` up to a whole block. */
export function padding(length: number): Buffer {
  return Buffer.alloc((BLOCK - (length % BLOCK)) % BLOCK);
}

/** One PAX extended-header record, `"<len> <key>=<value>\n"`, whose length counts itself. */
export function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  const bodyLength = Buffer.byteLength(body);
  let length = bodyLength + 1;
  while (String(length).length + bodyLength !== length) length = String(length).length + bodyLength;
  return Buffer.from(`${length}${body}`);
}

export interface Entry {
  name: string;
  type?: EntryType;
  content?: Buffer | string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  prefix?: string;
  /** PAX records written in an `x` header right before this entry (they override the ustar fields). */
  pax?: Record<string, string>;
  /** A GNU `L` long-name header before this entry, carrying this name. */
  gnuLongName?: string;
}

function longHeaderEntry(type: EntryType, name: string, data: Buffer): Buffer {
  return Buffer.concat([
    header({ name, type, size: data.length, mode: 0o644, magic: type.startsWith("gnu") ? "gnu" : "ustar" }),
    data,
    padding(data.length),
  ]);
}

/**
 * The blocks of one entry. A name or link name longer than the ustar fields is carried in a PAX
 * header automatically (the ustar field then holds a stand-in); anything in `pax`
 * is written as given, so a test can make the PAX path and the ustar name disagree.
 */
export function entry(spec: Entry): Buffer {
  const content =
    typeof spec.content === "string" ? Buffer.from(spec.content) : (spec.content ?? Buffer.alloc(0));
  const pax: Record<string, string> = { ...spec.pax };
  let name = spec.name;
  let linkname = spec.linkname;
  // The ustar fields then hold a stand-in, so a reader that ignores PAX is caught out.
  if (Buffer.byteLength(name) > 100) {
    pax.path ??= name;
    name = "pax-path-stand-in";
  }
  if (linkname !== undefined && Buffer.byteLength(linkname) > 100) {
    pax.linkpath ??= linkname;
    linkname = "pax-linkpath-stand-in";
  }
  const parts: Buffer[] = [];
  if (spec.gnuLongName !== undefined)
    parts.push(longHeaderEntry("gnu-long-name", "././@LongLink", Buffer.from(`${spec.gnuLongName}\u0000`)));
  const records = Object.entries(pax);
  if (records.length > 0)
    parts.push(
      longHeaderEntry(
        "pax",
        "PaxHeaders.0/entry",
        Buffer.concat(records.map(([key, value]) => paxRecord(key, value))),
      ),
    );
  const type = spec.type ?? "file";
  parts.push(
    header({
      name,
      type,
      size: type === "file" ? content.length : 0,
      ...(spec.mode === undefined ? {} : { mode: spec.mode }),
      ...(spec.uid === undefined ? {} : { uid: spec.uid }),
      ...(spec.gid === undefined ? {} : { gid: spec.gid }),
      ...(spec.mtime === undefined ? {} : { mtime: spec.mtime }),
      ...(linkname === undefined ? {} : { linkname }),
      ...(spec.devmajor === undefined ? {} : { devmajor: spec.devmajor }),
      ...(spec.devminor === undefined ? {} : { devminor: spec.devminor }),
      ...(spec.prefix === undefined ? {} : { prefix: spec.prefix }),
    }),
  );
  if (type === "file") parts.push(content, padding(content.length));
  return Buffer.concat(parts);
}

/** A PAX global header (`g`): its records apply to every entry that follows. */
export function paxGlobal(records: Record<string, string>): Buffer {
  return longHeaderEntry(
    "pax-global",
    "PaxHeaders.0/global",
    Buffer.concat(Object.entries(records).map(([key, value]) => paxRecord(key, value))),
  );
}

/** Shorthands for the common entry kinds. */
export const file = (name: string, content: Buffer | string = "", extra: Partial<Entry> = {}): Entry => ({
  ...extra,
  name,
  type: "file",
  content,
});
export const dir = (name: string, extra: Partial<Entry> = {}): Entry => ({
  ...extra,
  name,
  type: "directory",
});
export const symlink = (name: string, target: string, extra: Partial<Entry> = {}): Entry => ({
  ...extra,
  name,
  type: "symlink",
  linkname: target,
});
export const hardlink = (name: string, target: string, extra: Partial<Entry> = {}): Entry => ({
  ...extra,
  name,
  type: "hardlink",
  linkname: target,
});

export interface TarOptions {
  /** Write the two-zero-block end marker (default true). */
  end?: boolean;
  /** Bytes appended after everything else (after the end marker, when there is one). */
  trailer?: Buffer;
}

/** A whole archive: each entry's blocks, the end marker, then any trailer. */
export function tar(entries: readonly (Entry | Buffer)[], options: TarOptions = {}): Buffer {
  const parts = entries.map((item) => (Buffer.isBuffer(item) ? item : entry(item)));
  if (options.end ?? true) parts.push(END_MARKER);
  if (options.trailer !== undefined) parts.push(options.trailer);
  return Buffer.concat(parts);
}

export interface StreamedLayer {
  /** sha256 of the uncompressed bytes (the DiffID). */
  diffId: string;
  /** sha256 of the file written (the blob digest). */
  digest: string;
  /** Bytes before compression. */
  uncompressedSize: number;
}

/** Hashes whatever flows through it. */
class Tap extends Transform {
  readonly hash = createHash("sha256");
  bytes = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

/**
 * Streams `chunks` (typically a generator that reuses a few buffers) through gzip into `path`,
 * computing the DiffID and the blob digest on the way. Memory stays at one chunk, whatever the
 * uncompressed size: a million-entry archive or a gigabyte of zeros costs a few seconds.
 */
export async function writeGzipLayer(
  path: string,
  chunks: Iterable<Buffer> | AsyncIterable<Buffer>,
  level = 1,
): Promise<StreamedLayer> {
  const raw = new Tap();
  const compressed = new Tap();
  await pipeline(Readable.from(chunks), raw, createGzip({ level }), compressed, createWriteStream(path));
  return {
    diffId: `sha256:${raw.hash.digest("hex")}`,
    digest: `sha256:${compressed.hash.digest("hex")}`,
    uncompressedSize: raw.bytes,
  };
}

/**
 * `count` copies of one entry (no content), then the end marker, in chunks of `perChunk`
 * entries built once. The entry is repeated verbatim, so the archive compresses to almost nothing.
 */
export function* repeatedEntries(spec: Entry, count: number, perChunk = 1024): Generator<Buffer> {
  const one = entry(spec);
  const chunk = Buffer.concat(Array.from({ length: perChunk }, () => one));
  let left = count;
  while (left >= perChunk) {
    yield chunk;
    left -= perChunk;
  }
  if (left > 0) yield chunk.subarray(0, left * one.length);
  yield END_MARKER;
}

/** One file entry of `size` zero bytes, streamed in 1 MiB chunks, then the end marker. */
export function* zeroFile(name: string, size: number): Generator<Buffer> {
  yield header({ name, type: "file", size });
  const zeros = Buffer.alloc(1 << 20);
  let left = size;
  while (left > 0) {
    const n = Math.min(left, zeros.length);
    yield n === zeros.length ? zeros : zeros.subarray(0, n);
    left -= n;
  }
  yield padding(size);
  yield END_MARKER;
}
