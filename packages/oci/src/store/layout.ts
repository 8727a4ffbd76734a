import { createReadStream } from "node:fs";
import { mkdir, open, readdir, readFile, rm, rmdir, stat, utimes } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import {
  type Digest,
  digestAlgorithm,
  digestHex,
  digestOf,
  parseDigest,
  verifyBytes,
  verifyingStream,
} from "../digest.js";
import { LayoutError, NotFoundError, OciError } from "../errors.js";
import { publishFile, type ResumableSource, tempName, writeFileAtomic, writeVerified } from "../files.js";
import { checkIndex, type Descriptor, type ImageIndex } from "../manifest.js";
import { MediaType } from "../media-types.js";
import { type DownloadEvents, downloadOnce, isStaleLock } from "./downloads.js";

export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";
const LAYOUT_VERSION = "1.0.0";

/**
 * An OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), readable and
 * writable by skopeo, umoci and crane. Manifests are stored byte-exact; blobs become visible only
 * once verified; `index.json` updates are serialised with a lock so several processes can share it.
 */
export class OciLayout {
  private constructor(readonly root: string) {}

  /** Opens a layout, creating an empty one when `create` is set and the directory has none. */
  static async open(root: string, options: { create?: boolean } = {}): Promise<OciLayout> {
    const layout = new OciLayout(root);
    let marker: string | undefined;
    try {
      marker = await readFile(join(root, "oci-layout"), "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT")
        throw new LayoutError(`Cannot read the OCI layout at ${root}: ${(error as Error).message}.`);
    }
    if (marker === undefined) {
      if (!options.create) {
        throw new LayoutError(`${root} is not an OCI image layout (it has no oci-layout file).`, {
          hint: "Pass the directory that holds oci-layout, index.json and blobs/.",
        });
      }
      await mkdir(join(root, "blobs", "sha256"), { recursive: true });
      await writeFileAtomic(join(root, "oci-layout"), JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }));
      await layout.withIndexLock(async () => {
        try {
          await stat(join(root, "index.json"));
        } catch {
          await layout.writeIndex({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] });
        }
      });
      return layout;
    }
    try {
      const parsed = JSON.parse(marker) as { imageLayoutVersion?: unknown };
      if (typeof parsed.imageLayoutVersion !== "string") throw new Error("no imageLayoutVersion");
    } catch {
      throw new LayoutError(`${root}/oci-layout is not a valid OCI layout marker.`);
    }
    return layout;
  }

  blobPath(digest: Digest): string {
    return join(this.root, "blobs", digestAlgorithm(digest), digestHex(digest));
  }

  private get tempDir(): string {
    return join(this.root, ".tmp");
  }

  /** A new, empty file in the layout's temp dir (same filesystem as the blobs), for `adoptBlob`. */
  async createTempFile(): Promise<string> {
    await mkdir(this.tempDir, { recursive: true });
    const file = tempName(this.tempDir);
    await (await open(file, "wx", 0o600)).close();
    return file;
  }

  /**
   * Names `file` (written through `createTempFile`) as the blob `digest`. The caller has checked
   * that its bytes are that digest's; this makes it durable and visible.
   */
  async adoptBlob(file: string, digest: Digest): Promise<void> {
    const path = this.blobPath(digest);
    await mkdir(dirname(path), { recursive: true });
    await publishFile(file, path);
  }

  /** True when the blob is present with the expected size. Marks it recently used for `prune`. */
  async hasBlob(descriptor: Pick<Descriptor, "digest" | "size">): Promise<boolean> {
    const path = this.blobPath(parseDigest(descriptor.digest));
    try {
      const info = await stat(path);
      if (info.size !== descriptor.size) return false;
      const now = new Date();
      await utimes(path, now, now).catch(() => {});
      return true;
    } catch {
      return false;
    }
  }

  async writeBlob(
    descriptor: Descriptor,
    chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    onProgress?: (bytes: number) => void,
  ): Promise<void> {
    const digest = parseDigest(descriptor.digest);
    await writeVerified(
      this.blobPath(digest),
      this.tempDir,
      chunks,
      { digest, size: descriptor.size },
      `Blob ${digest}`,
      onProgress,
    );
  }

  /**
   * Downloads a blob resumably and once: `open(offset)` is asked for what an interrupted download
   * did not keep, and not at all when another pull (this process or another) is storing the same
   * blob, which this waits for instead. See `downloads.ts`.
   */
  async downloadBlob(
    descriptor: Descriptor,
    open: ResumableSource,
    events: DownloadEvents = {},
  ): Promise<void> {
    const digest = parseDigest(descriptor.digest);
    await downloadOnce(
      {
        digest,
        size: descriptor.size,
        path: this.blobPath(digest),
        tempDir: this.tempDir,
        what: `Blob ${digest}`,
        present: () => this.hasBlob(descriptor),
      },
      open,
      events,
    );
  }

  /** Writes bytes (a manifest, a config) and returns their descriptor. */
  async writeBytes(bytes: Uint8Array, mediaType: string): Promise<Descriptor> {
    const digest = digestOf(bytes);
    const descriptor = { mediaType, digest, size: bytes.length };
    if (!(await this.hasBlob(descriptor))) {
      await writeFileAtomic(this.blobPath(digest), bytes);
    }
    return descriptor;
  }

  /** Removes the temp directory when no write is using it; call after a batch of writes. */
  async removeTempDir(): Promise<void> {
    await rmdir(this.tempDir).catch(() => {});
  }

  /**
   * Removes what processes that died mid-write left in the temp directory: temp files, partial
   * downloads (which a later pull would otherwise resume from) and download locks.
   */
  async removeStaleTemp(isAlive: (pid: number) => boolean): Promise<{ removed: number; bytes: number }> {
    let removed = 0;
    let bytes = 0;
    for (const name of await readdir(this.tempDir).catch(() => [] as string[])) {
      const path = join(this.tempDir, name);
      const pid = Number(name.split("-")[0]);
      const stale = name.endsWith(".lock") ? await isStaleLock(path) : Number.isInteger(pid) && !isAlive(pid);
      if (!stale) continue;
      const info = await stat(path).catch(() => undefined);
      if (info === undefined) continue;
      await rm(path, { force: true });
      removed++;
      bytes += info.size;
    }
    return { removed, bytes };
  }

  /** Reads a whole blob into memory, verified, refusing anything larger than `limit`. */
  async readBlob(descriptor: Pick<Descriptor, "digest" | "size">, limit: number): Promise<Buffer> {
    const digest = parseDigest(descriptor.digest);
    if (descriptor.size > limit)
      throw new LayoutError(
        `Blob ${digest} is ${descriptor.size} bytes, over the ${limit}-byte limit for documents.`,
      );
    let bytes: Buffer;
    try {
      bytes = await readFile(this.blobPath(digest));
    } catch {
      throw new NotFoundError(`Blob ${digest} is missing from ${this.root}.`, {
        hint: "Pull the image again.",
      });
    }
    verifyBytes(bytes, digest, descriptor.size, `Blob ${digest} in ${this.root}`);
    return bytes;
  }

  /** Streams a blob; the stream fails at the end unless it verifies. */
  openBlob(descriptor: Pick<Descriptor, "digest" | "size">): Readable {
    const digest = parseDigest(descriptor.digest);
    const stream = createReadStream(this.blobPath(digest));
    const verify = verifyingStream(digest, descriptor.size, `Blob ${digest} in ${this.root}`);
    stream.on("error", (error) =>
      verify.destroy(new NotFoundError(`Blob ${digest} cannot be read from ${this.root}: ${error.message}.`)),
    );
    return stream.pipe(verify);
  }

  async readIndex(): Promise<ImageIndex> {
    let text: string;
    try {
      text = await readFile(join(this.root, "index.json"), "utf8");
    } catch {
      throw new LayoutError(`${this.root} has no index.json.`);
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new LayoutError(`${this.root}/index.json is not valid JSON.`);
    }
    const problems = checkIndex(value);
    if (problems.length > 0)
      throw new LayoutError(`${this.root}/index.json is not a valid image index (${problems.join("; ")}).`);
    const index = value as ImageIndex;
    for (const descriptor of index.manifests) parseDigest(descriptor.digest);
    return index;
  }

  private async writeIndex(index: ImageIndex): Promise<void> {
    await writeFileAtomic(join(this.root, "index.json"), JSON.stringify(index));
  }

  /** Runs `update` with exclusive access to index.json across processes. */
  async withIndexLock<T>(update: () => Promise<T>): Promise<T> {
    let release: () => Promise<void>;
    try {
      // Loaded when first needed: it and what it pulls in (graceful-fs patching fs, signal-exit)
      // cost every command's start-up, and most commands never write index.json.
      const { default: lockfile } = await import("proper-lockfile");
      release = await lockfile.lock(this.root, {
        lockfilePath: join(this.root, "index.json.lock"),
        realpath: false,
        stale: 15_000,
        retries: { retries: 200, factor: 1.2, minTimeout: 20, maxTimeout: 500 },
      });
    } catch (error) {
      throw new LayoutError(`Cannot lock ${this.root}/index.json: ${(error as Error).message}.`, {
        hint: "Another locald process may be stuck; if none is running, remove index.json.lock.",
      });
    }
    try {
      return await update();
    } finally {
      await release().catch(() => {});
    }
  }

  /**
   * Adds a manifest to index.json; an existing entry with the same ref name is replaced, so a
   * tag points at one image, as with skopeo.
   */
  async addManifest(descriptor: Descriptor, name?: string): Promise<void> {
    await this.withIndexLock(async () => {
      const index = await this.readIndex();
      const entry: Descriptor =
        name === undefined
          ? descriptor
          : { ...descriptor, annotations: { ...descriptor.annotations, [REF_NAME_ANNOTATION]: name } };
      const manifests = index.manifests.filter((d) =>
        name === undefined
          ? d.digest !== descriptor.digest || d.annotations?.[REF_NAME_ANNOTATION] !== undefined
          : d.annotations?.[REF_NAME_ANNOTATION] !== name,
      );
      manifests.push(entry);
      await this.writeIndex({ ...index, manifests });
    });
  }

  /** Makes `descriptor` the index's only manifest (tools that want exactly one, like the CNB lifecycle). */
  async setOnlyManifest(descriptor: Descriptor): Promise<void> {
    await this.withIndexLock(async () => {
      const index = await this.readIndex();
      await this.writeIndex({ ...index, manifests: [descriptor] });
    });
  }

  async removeManifest(name: string): Promise<Descriptor | undefined> {
    return this.withIndexLock(async () => {
      const index = await this.readIndex();
      const removed = index.manifests.find((d) => d.annotations?.[REF_NAME_ANNOTATION] === name);
      if (removed === undefined) return undefined;
      await this.writeIndex({ ...index, manifests: index.manifests.filter((d) => d !== removed) });
      return removed;
    });
  }

  /**
   * Finds an image by ref name, or the only image when no name is given (as skopeo's `oci:DIR`).
   */
  async resolve(name?: string): Promise<Descriptor> {
    const index = await this.readIndex();
    if (name === undefined) {
      const [only, ...others] = index.manifests;
      if (only !== undefined && others.length === 0) return only;
      throw new LayoutError(
        `${this.root} holds ${index.manifests.length} images; say which one with ${this.root}:<name>.`,
        {
          hint: `Names: ${index.manifests.map((d) => d.annotations?.[REF_NAME_ANNOTATION] ?? d.digest).join(", ") || "none"}.`,
        },
      );
    }
    const found = index.manifests.find(
      (d) => d.annotations?.[REF_NAME_ANNOTATION] === name || d.digest === name,
    );
    if (found === undefined)
      throw new NotFoundError(`No image named "${name}" in the OCI layout ${this.root}.`);
    return found;
  }

  /** Every blob file present, by digest. */
  async listBlobs(): Promise<Digest[]> {
    const found: Digest[] = [];
    for (const algorithm of ["sha256", "sha512"]) {
      let names: string[];
      try {
        names = await readdir(join(this.root, "blobs", algorithm));
      } catch {
        continue;
      }
      for (const name of names) {
        try {
          found.push(parseDigest(`${algorithm}:${name}`));
        } catch (error) {
          if (!(error instanceof OciError)) throw error;
        }
      }
    }
    return found;
  }

  async removeBlob(digest: Digest): Promise<void> {
    await rm(this.blobPath(digest), { force: true });
  }
}
