import { promisify } from "node:util";
import { gzip } from "node:zlib";
import { pack } from "tar-stream";
import { type Digest, digestOf } from "../digest.js";
import type { Descriptor } from "../manifest.js";
import { MediaType } from "../media-types.js";
import { type LayerEntry, NORMALIZED_TIME } from "./layer-entry.js";

const gzipAsync = promisify(gzip);

/** A layer blob ready to be written: its compressed bytes, descriptor and diff id. */
export interface AuthoredLayer {
  readonly blob: Buffer;
  readonly descriptor: Descriptor;
  /** The digest of the uncompressed tar, for the config's `rootfs.diff_ids`. */
  readonly diffId: Digest;
}

/** The tar of `entries`, in their order, with normalised owners and times where not given. */
export async function tarLayer(entries: readonly LayerEntry[]): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    tar.on("data", (chunk: unknown) => chunks.push(chunk as Buffer));
    tar.on("end", () => resolve(Buffer.concat(chunks)));
    tar.on("error", reject);
  });
  for (const entry of entries) {
    const header = {
      name: entry.path,
      type: entry.type,
      mode: entry.mode ?? (entry.type === "directory" ? 0o755 : entry.type === "symlink" ? 0o777 : 0o644),
      mtime: entry.mtime ?? NORMALIZED_TIME,
      uid: entry.uid ?? 0,
      gid: entry.gid ?? 0,
      // Names and groups would make the bytes depend on this machine's /etc/passwd.
      uname: "",
      gname: "",
      ...(entry.linkname === undefined ? {} : { linkname: entry.linkname }),
    };
    await new Promise<void>((resolve, reject) => {
      const callback = (error?: Error | null) => (error ? reject(error) : resolve());
      if (entry.type === "file") {
        const body = Buffer.from(entry.content ?? new Uint8Array());
        tar.entry({ ...header, size: body.length }, body, callback);
      } else tar.entry(header, callback);
    });
  }
  tar.finalize();
  return done;
}

/** `entries` as a gzip-compressed OCI layer (fastest level, as pack writes them). */
export async function archiveLayer(entries: readonly LayerEntry[]): Promise<AuthoredLayer> {
  const tar = await tarLayer(entries);
  const blob = await gzipAsync(tar, { level: 1 });
  return {
    blob,
    diffId: digestOf(tar),
    descriptor: { mediaType: MediaType.OciLayerGzip, digest: digestOf(blob), size: blob.length },
  };
}
