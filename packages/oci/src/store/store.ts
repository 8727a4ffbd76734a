import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { type ImageConfig, parseImageConfig } from "../config.js";
import type { Digest } from "../digest.js";
import { parseDigest } from "../digest.js";
import { creationFailure } from "../disk-space.js";
import { InvalidManifestError, OciError, StoreError } from "../errors.js";
import { writeFileAtomic } from "../files.js";
import { type Descriptor, type ImageManifest, parseManifestDocument } from "../manifest.js";
import { type Platform, parsePlatform, platformMatches, platformOrHost } from "../platform.js";
import { isAlive } from "./downloads.js";
import { OciLayout, REF_NAME_ANNOTATION } from "./layout.js";

/** Annotations the store keeps on each image entry. */
export const SOURCE_DIGEST_ANNOTATION = "io.locald.source.digest";
export const PLATFORM_ANNOTATION = "io.locald.platform";
export const CREATED_ANNOTATION = "io.locald.pulled";

export interface StoredImage {
  readonly name: string;
  readonly descriptor: Descriptor;
  /** Digest the name resolved to at the registry (an index for multi-platform images). */
  readonly sourceDigest: string | undefined;
  readonly platform: string | undefined;
  readonly pulledAt: string | undefined;
}

/** `$LOCALD_HOME`, else `$XDG_DATA_HOME/locald`, else `~/.local/share/locald`: locald's state. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LOCALD_HOME) return env.LOCALD_HOME;
  return join(env.XDG_DATA_HOME || join(env.HOME ?? homedir(), ".local", "share"), "locald");
}

/** `$LOCALD_HOME/store`, else `$XDG_DATA_HOME/locald/store`, else `~/.local/share/locald/store`. */
export function defaultStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(defaultDataDir(env), "store");
}

export { isAlive } from "./downloads.js";

/** What `prune` removed, each with its size in bytes. */
export interface PruneResult {
  /** Blobs no image references. */
  readonly removed: number;
  readonly bytes: number;
  /** Temp files, partial downloads and download locks of processes that died. */
  readonly temp: { readonly removed: number; readonly bytes: number };
  /** Lease files of pulls that died. */
  readonly leases: { readonly removed: number; readonly bytes: number };
}

/**
 * The local image store: an OCI layout whose index names images by full reference, plus leases
 * so that `prune` never deletes blobs an in-flight pull is about to reference.
 */
export class Store {
  private constructor(
    readonly root: string,
    readonly layout: OciLayout,
  ) {}

  static async open(root: string = defaultStoreDir()): Promise<Store> {
    try {
      await mkdir(root, { recursive: true, mode: 0o700 });
      const layout = await OciLayout.open(root, { create: true });
      return new Store(root, layout);
    } catch (error) {
      if (error instanceof OciError) throw error;
      throw new StoreError(`Cannot open the image store at ${root}: ${creationFailure(root, error)}.`, {
        hint: "Check the owner and mode of that path, or set LOCALD_HOME to a directory you can write.",
      });
    }
  }

  /** Marks a pull in progress until the returned function is called. */
  async lease(): Promise<() => Promise<void>> {
    const dir = join(this.root, "leases");
    await mkdir(dir, { recursive: true });
    const path = join(dir, `${process.pid}-${randomBytes(6).toString("hex")}.json`);
    await writeFileAtomic(path, JSON.stringify({ pid: process.pid, started: Date.now() }));
    return async () => {
      await rm(path, { force: true });
    };
  }

  async list(): Promise<StoredImage[]> {
    const index = await this.layout.readIndex();
    return index.manifests
      .filter((d) => d.annotations?.[REF_NAME_ANNOTATION] !== undefined)
      .map((descriptor) => ({
        name: descriptor.annotations?.[REF_NAME_ANNOTATION] as string,
        descriptor,
        sourceDigest: descriptor.annotations?.[SOURCE_DIGEST_ANNOTATION],
        platform: descriptor.annotations?.[PLATFORM_ANNOTATION],
        pulledAt: descriptor.annotations?.[CREATED_ANNOTATION],
      }));
  }

  /**
   * The image stored under `name`; with `platform`, only when it is for that platform (one name
   * holds one platform's image, so asking for another must not answer with this one).
   */
  async find(name: string, platform?: string | Platform): Promise<StoredImage | undefined> {
    const image = (await this.list()).find((candidate) => candidate.name === name);
    if (image === undefined || platform === undefined || image.platform === undefined) return image;
    return platformMatches(parsePlatform(image.platform), platformOrHost(platform)) ? image : undefined;
  }

  async remove(name: string): Promise<boolean> {
    return (await this.layout.removeManifest(name)) !== undefined;
  }

  /** Blobs reachable from the index: manifests, their configs and layers, index children present. */
  private async reachable(): Promise<Set<string>> {
    const index = await this.layout.readIndex();
    const seen = new Set<string>();
    const visit = async (descriptor: Descriptor): Promise<void> => {
      if (seen.has(descriptor.digest)) return;
      seen.add(descriptor.digest);
      if (!(await this.layout.hasBlob(descriptor))) return;
      if (!/manifest|index/.test(descriptor.mediaType)) return;
      const bytes = await this.layout.readBlob(descriptor, 64 * 1024 * 1024);
      const document = parseManifestDocument(bytes, descriptor.mediaType, `Manifest ${descriptor.digest}`);
      const children =
        document.kind === "index"
          ? document.index.manifests
          : [document.manifest.config, ...document.manifest.layers];
      for (const child of children) await visit(child);
    };
    for (const descriptor of index.manifests) await visit(descriptor);
    return seen;
  }

  /**
   * Deletes blobs no image references. Blobs touched since the oldest live lease started are
   * kept, because a pull in progress may be about to reference them.
   */
  async prune(): Promise<PruneResult> {
    return this.layout.withIndexLock(async () => {
      const keep = await this.reachable();
      const leases = { removed: 0, bytes: 0 };
      const cutoff = await this.oldestLiveLease(leases);
      let removed = 0;
      let bytes = 0;
      for (const digest of await this.layout.listBlobs()) {
        if (keep.has(digest)) continue;
        const path = this.layout.blobPath(digest);
        const info = await stat(path).catch(() => undefined);
        if (info === undefined || info.mtimeMs >= cutoff) continue;
        await this.layout.removeBlob(digest);
        removed++;
        bytes += info.size;
      }
      const temp = await this.layout.removeStaleTemp(isAlive);
      return { removed, bytes, temp, leases };
    });
  }

  private async oldestLiveLease(removed: { removed: number; bytes: number }): Promise<number> {
    const dir = join(this.root, "leases");
    let oldest = Number.POSITIVE_INFINITY;
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const path = join(dir, name);
      try {
        const lease = JSON.parse(await readFile(path, "utf8")) as { pid: number; started: number };
        if (isAlive(lease.pid)) oldest = Math.min(oldest, lease.started - 1000);
        else {
          const info = await stat(path).catch(() => undefined);
          await rm(path, { force: true });
          removed.removed++;
          removed.bytes += info?.size ?? 0;
        }
      } catch {
        // a lease being written right now; it is younger than any blob we could delete
      }
    }
    return oldest;
  }

  /** Total bytes of an image's blobs (manifest, config, layers). */
  async imageSize(descriptor: Descriptor): Promise<number> {
    const bytes = await this.layout.readBlob(descriptor, 64 * 1024 * 1024);
    const document = parseManifestDocument(bytes, descriptor.mediaType, `Manifest ${descriptor.digest}`);
    if (document.kind === "index") return descriptor.size;
    return document.manifest.layers.reduce(
      (sum, layer) => sum + layer.size,
      descriptor.size + document.manifest.config.size,
    );
  }

  /** The manifest and config of a single-platform image whose manifest is `descriptor`. */
  async readImage(
    descriptor: Descriptor,
    what: string,
  ): Promise<{ manifest: ImageManifest; config: ImageConfig }> {
    const bytes = await this.layout.readBlob(descriptor, 4 * 1024 * 1024);
    const document = parseManifestDocument(bytes, descriptor.mediaType, what);
    if (document.kind !== "manifest")
      throw new InvalidManifestError(`${what} is not a single-platform image.`);
    const config = parseImageConfig(
      await this.layout.readBlob(document.manifest.config, 64 * 1024 * 1024),
      `The config of ${what}`,
    );
    return { manifest: document.manifest, config };
  }

  digestOf(image: StoredImage): Digest {
    return parseDigest(image.descriptor.digest);
  }
}
