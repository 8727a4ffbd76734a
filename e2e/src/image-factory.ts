import { spawn } from "node:child_process";
import { lstat, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import {
  type ContainerConfig,
  type Descriptor,
  type Digest,
  digestOf,
  type ImageConfig,
  MediaType,
  type OciLayout,
  type Platform,
  walkTree,
} from "@locald/oci";
import { pack } from "tar-stream";

export type LayerEntryType =
  | "file"
  | "directory"
  | "symlink"
  | "link"
  | "fifo"
  | "character-device"
  | "block-device";

/**
 * One entry of a test layer: exactly what goes into the tar, so tests control every detail.
 * `path` is written verbatim (no cleaning), so it can be a whiteout (`dir/.wh.name`), an opaque
 * marker (`dir/.wh..wh..opq`), carry a `./` prefix, or be anything else a hostile layer holds.
 */
export interface LayerEntry {
  path: string;
  type?: LayerEntryType;
  content?: string | Buffer;
  mode?: number;
  /** Target of a symlink, or the path (in the archive) a hardlink points to. */
  linkname?: string;
  mtime?: Date;
  uid?: number;
  gid?: number;
  /** Device numbers of a character or block device. */
  devmajor?: number;
  devminor?: number;
  /** Extra PAX records (`{ mtime: paxTime(date) }`); `mtime` is added by itself when needed, see tarTimes. */
  pax?: Record<string, string>;
}

export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_WHITEOUT = ".wh..wh..opq";

function splitPath(path: string): { dir: string; name: string } {
  const trimmed = path.replace(/\/+$/, "");
  const slash = trimmed.lastIndexOf("/");
  return slash < 0
    ? { dir: "", name: trimmed }
    : { dir: trimmed.slice(0, slash + 1), name: trimmed.slice(slash + 1) };
}

/** The entry that deletes `path` (file, directory or symlink) from the layers below. */
export function whiteout(path: string, entry: Omit<LayerEntry, "path" | "type"> = {}): LayerEntry {
  const { dir, name } = splitPath(path);
  return { ...entry, path: `${dir}${WHITEOUT_PREFIX}${name}`, type: "file", content: "" };
}

/** The entry that hides everything the layers below put in directory `dir` (not `dir` itself). */
export function opaqueWhiteout(dir: string, entry: Omit<LayerEntry, "path" | "type"> = {}): LayerEntry {
  const prefix = dir.replace(/\/+$/, "");
  return {
    ...entry,
    path: `${prefix === "" ? "" : `${prefix}/`}${OPAQUE_WHITEOUT}`,
    type: "file",
    content: "",
  };
}

export type Compression = "gzip" | "zstd" | "none";
export type ImageFormat = "oci" | "docker";

export interface BuiltLayer {
  blob: Buffer;
  diffId: Digest;
  descriptor: Descriptor;
}

const EPOCH = new Date("2024-01-01T00:00:00Z");
/** tar-stream writes the ustar mtime through a 32-bit integer: later dates need a PAX record. */
const MAX_USTAR_SECONDS = 0x7fffffff;

/** A time as a PAX record value: signed decimal seconds, `-1.5` being 1.5 s before the epoch. */
export function paxTime(time: Date): string {
  const ms = time.getTime();
  const abs = Math.abs(ms);
  const fraction = abs % 1000;
  return `${ms < 0 ? "-" : ""}${Math.floor(abs / 1000)}${fraction === 0 ? "" : `.${String(fraction).padStart(3, "0")}`}`;
}

/**
 * The ustar mtime holds whole seconds (tar-stream truncates) from 1970 to 2038. A time outside
 * that range is clamped there and also written exactly as a PAX `mtime`; for sub-second
 * precision within it, pass `pax: { mtime: paxTime(date) }` explicitly.
 */
function tarTimes(mtime: Date): { mtime: Date; pax?: Record<string, string> } {
  const seconds = Math.floor(mtime.getTime() / 1000);
  const clamped = Math.min(Math.max(seconds, 0), MAX_USTAR_SECONDS);
  if (clamped === seconds) return { mtime };
  return { mtime: new Date(clamped * 1000), pax: { mtime: paxTime(mtime) } };
}

export async function tarEntries(entries: readonly LayerEntry[]): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    tar.on("data", (chunk: unknown) => chunks.push(chunk as Buffer));
    tar.on("end", () => resolve(Buffer.concat(chunks)));
    tar.on("error", reject);
  });
  for (const entry of entries) {
    const type = entry.type ?? "file";
    const times = tarTimes(entry.mtime ?? EPOCH);
    const pax = times.pax || entry.pax ? { ...times.pax, ...entry.pax } : undefined;
    const header = {
      name: entry.path,
      type,
      mode: entry.mode ?? (type === "directory" ? 0o755 : 0o644),
      mtime: times.mtime,
      ...(pax === undefined ? {} : { pax }),
      uid: entry.uid ?? 0,
      gid: entry.gid ?? 0,
      ...(entry.linkname === undefined ? {} : { linkname: entry.linkname }),
      ...(entry.devmajor === undefined ? {} : { devmajor: entry.devmajor }),
      ...(entry.devminor === undefined ? {} : { devminor: entry.devminor }),
    };
    const body =
      type === "file"
        ? typeof entry.content === "string"
          ? Buffer.from(entry.content)
          : (entry.content ?? Buffer.alloc(0))
        : undefined;
    await new Promise<void>((resolve, reject) => {
      const callback = (error?: Error | null) => (error ? reject(error) : resolve());
      if (body === undefined) tar.entry(header, callback);
      else tar.entry({ ...header, size: body.length }, body, callback);
    });
  }
  tar.finalize();
  return done;
}

async function zstdCompress(data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn("zstd", ["-q", "-c", "-3"], { stdio: ["pipe", "pipe", "inherit"] });
    const out: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.on("error", (e) =>
      reject(new Error(`zstd is needed to build zstd layers (Debian package zstd): ${e.message}`)),
    );
    child.on("close", (code) =>
      code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`zstd exited ${code}`)),
    );
    child.stdin.end(data);
  });
}

export async function compressLayer(
  tar: Buffer,
  compression: Compression,
  format: ImageFormat,
): Promise<BuiltLayer> {
  const diffId = digestOf(tar);
  let blob: Buffer;
  let mediaType: string;
  if (compression === "gzip") {
    blob = gzipSync(tar, { level: 1 });
    mediaType = format === "docker" ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip;
  } else if (compression === "zstd") {
    if (format === "docker") throw new Error("Docker v2s2 has no zstd layer media type");
    blob = await zstdCompress(tar);
    mediaType = MediaType.OciLayerZstd;
  } else {
    blob = tar;
    mediaType = format === "docker" ? "application/vnd.docker.image.rootfs.diff.tar" : MediaType.OciLayer;
  }
  return { blob, diffId, descriptor: { mediaType, digest: digestOf(blob), size: blob.length } };
}

/** Tars and compresses entries into one layer, for images that mix compressions. */
export async function buildLayer(
  entries: readonly LayerEntry[],
  compression: Compression = "gzip",
  format: ImageFormat = "oci",
): Promise<BuiltLayer> {
  return compressLayer(await tarEntries(entries), compression, format);
}

/** A layer holding a directory tree from disk (regular files, dirs, symlinks), paths relative to `root`. */
export async function entriesFromDirectory(root: string, prefix = ""): Promise<LayerEntry[]> {
  const entries: LayerEntry[] = [];
  const found = [...walkTree(root)].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const { path: relPath, host: path } of found) {
    const info = await lstat(path);
    const rel = join(prefix, relPath);
    if (info.isDirectory())
      entries.push({ path: `${rel}/`, type: "directory", mode: info.mode & 0o7777, mtime: info.mtime });
    else if (info.isSymbolicLink())
      entries.push({ path: rel, type: "symlink", linkname: await readlink(path), mtime: info.mtime });
    else if (info.isFile())
      entries.push({
        path: rel,
        type: "file",
        content: await readFile(path),
        mode: info.mode & 0o7777,
        mtime: info.mtime,
      });
  }
  return entries;
}

export interface ImageSpec {
  layers: ReadonlyArray<readonly LayerEntry[] | BuiltLayer>;
  format?: ImageFormat;
  compression?: Compression;
  platform?: Platform;
  config?: ContainerConfig;
  created?: string;
}

export interface WrittenImage {
  descriptor: Descriptor;
  manifest: Buffer;
  config: ImageConfig;
  layers: BuiltLayer[];
}

/** Writes an image's layers, config and manifest into a layout with our own writer. */
export async function writeImage(layout: OciLayout, spec: ImageSpec): Promise<WrittenImage> {
  const format = spec.format ?? "oci";
  const platform = spec.platform ?? { os: "linux", architecture: "amd64" };
  const layers: BuiltLayer[] = [];
  for (const layer of spec.layers) {
    const built = Array.isArray(layer)
      ? await compressLayer(await tarEntries(layer as LayerEntry[]), spec.compression ?? "gzip", format)
      : (layer as BuiltLayer);
    await layout.writeBlob(built.descriptor, [built.blob]);
    layers.push(built);
  }
  const config: ImageConfig = {
    created: spec.created ?? EPOCH.toISOString(),
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: spec.config ?? {},
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    history: layers.map(() => ({
      created: spec.created ?? EPOCH.toISOString(),
      created_by: "locald image factory",
    })),
  };
  const configDescriptor = await layout.writeBytes(
    Buffer.from(JSON.stringify(config)),
    format === "docker" ? MediaType.DockerConfig : MediaType.OciConfig,
  );
  const mediaType = format === "docker" ? MediaType.DockerManifest : MediaType.OciManifest;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: configDescriptor,
      layers: layers.map((l) => l.descriptor),
    }),
  );
  const written = await layout.writeBytes(manifest, mediaType);
  return { descriptor: { ...written, platform }, manifest, config, layers };
}

/** Writes an index (OCI) or manifest list (Docker) over already written manifests. */
export async function writeIndex(
  layout: OciLayout,
  manifests: readonly Descriptor[],
  format: ImageFormat = "oci",
  extra: readonly Descriptor[] = [],
): Promise<Descriptor> {
  const mediaType = format === "docker" ? MediaType.DockerManifestList : MediaType.OciIndex;
  const bytes = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType, manifests: [...manifests, ...extra] }),
  );
  return layout.writeBytes(bytes, mediaType);
}

/** Incompressible content, deterministic per seed, for benchmark-sized layers. */
export function pseudoRandomBytes(size: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i);
  }
  for (let i = size - (size % 4); i < size; i++) out[i] = i & 0xff;
  return out;
}
