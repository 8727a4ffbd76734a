import { Readable } from "node:stream";
import { parseImageConfig } from "../config.js";
import { type Digest, parseDigest } from "../digest.js";
import { DigestMismatchError, InvalidManifestError, PlatformNotFoundError } from "../errors.js";
import { type Descriptor, type ManifestDocument, parseManifestDocument } from "../manifest.js";
import { MediaType } from "../media-types.js";
import { formatPlatform, type Platform, platformMatches, selectPlatformManifest } from "../platform.js";
import { formatReference, type Reference, withIdentifier } from "../reference.js";
import type { BlobRead, RegistryClient } from "../registry/index.js";
import { readBody } from "../registry/index.js";
import type { OciLayout } from "./layout.js";
import { CREATED_ANNOTATION, PLATFORM_ANNOTATION, SOURCE_DIGEST_ANNOTATION, type Store } from "./store.js";

/** Where images come from: a registry, an OCI layout or the store, interchangeably. */
export interface ImageSource {
  readonly description: string;
  /** The top-level descriptor as cheaply as possible (a HEAD), or undefined if unknown. */
  head(): Promise<Descriptor | undefined>;
  /** The top-level manifest or index, verified. */
  resolve(): Promise<{ descriptor: Descriptor; bytes: Buffer }>;
  /** A child manifest, verified against its descriptor. */
  manifest(descriptor: Descriptor): Promise<Buffer>;
  /** A blob's bytes; the target verifies them. Each call starts again from the beginning. */
  blob(descriptor: Descriptor): AsyncIterable<Buffer>;
  /** A blob's bytes from `offset` on, where the source can skip ahead (a Range request). */
  blobFrom?(descriptor: Descriptor, offset: number): Promise<BlobRead>;
  /** Repository on the same registry a target may mount blobs from. */
  readonly origin?: Reference;
}

/** Where images go; every implementation verifies what it stores. */
export interface ImageTarget {
  readonly description: string;
  /** An image already present for this source digest and platform (warm re-pull). */
  upToDate(sourceDigest: string, platform: string | undefined): Promise<Descriptor | undefined>;
  hasBlob(descriptor: Descriptor): Promise<boolean>;
  /**
   * Stores a blob, verified. `open(offset)` reads it from `offset` on (a target that kept part of
   * an interrupted download asks for the rest); it is not called at all when another pull
   * stores the same blob meanwhile, which `onWait` reports.
   */
  writeBlob(
    descriptor: Descriptor,
    open: BlobOpener,
    origin: Reference | undefined,
    onProgress: (bytes: number) => void,
    onWait?: (owner: number) => void,
  ): Promise<void>;
  writeManifest(descriptor: Descriptor, bytes: Buffer): Promise<void>;
  /** Names the finished image (tag, index entry). */
  commit(
    descriptor: Descriptor,
    bytes: Buffer,
    info: { sourceDigest: string; platform: string | undefined },
  ): Promise<void>;
  finish(): Promise<void>;
}

/** A blob read from `offset` on; `start` says where its bytes really begin (0: the whole blob). */
export type BlobOpener = (offset: number) => Promise<BlobRead>;

export type CopyEvent =
  | { type: "resolved"; source: string; digest: string; mediaType: string; platform?: string }
  | { type: "up-to-date"; digest: string }
  | { type: "blob-start"; digest: string; size: number; role: "config" | "layer"; cached: boolean }
  | { type: "blob-progress"; digest: string; size: number; bytes: number }
  /** Another pull (process `owner`, maybe this one) is downloading the blob; this one waits for it. */
  | { type: "blob-wait"; digest: string; size: number; owner: number }
  | { type: "blob-done"; digest: string; size: number; cached: boolean }
  | { type: "manifest"; digest: string }
  /** An image manifest's blobs are about to be copied: config first, then layers in parallel. */
  | { type: "plan"; manifest: Descriptor; config: Descriptor; layers: readonly Descriptor[] };

export interface CopyOptions {
  /** One platform (default: the host's) or every manifest of an index. */
  platform: Platform | "all";
  /** Fail when a single-platform image is for another platform (the user asked for one explicitly). */
  strictPlatform?: boolean;
  /** Blobs transferred at once. */
  concurrency?: number;
  onEvent?: (event: CopyEvent) => void;
}

export interface CopyResult {
  /** The descriptor committed at the target (platform-specific unless copying all). */
  readonly descriptor: Descriptor;
  /** What the source name resolved to (an index for multi-platform images). */
  readonly sourceDigest: Digest;
  readonly platform: string | undefined;
  /** True when the target already had it and nothing was transferred. */
  readonly upToDate: boolean;
  readonly blobsTransferred: number;
  readonly bytesTransferred: number;
}

/**
 * An image copied from its registry to a place it is known by name: what `pull` returns, and
 * `unpackImage` with it (which is why it lives here, below both).
 */
export interface PullResult {
  readonly reference: Reference;
  /** The manifest stored (platform-specific unless platform is "all"). */
  readonly descriptor: Descriptor;
  readonly digest: Digest;
  /** The digest the reference resolved to at the registry. */
  readonly sourceDigest: Digest;
  readonly platform: string | undefined;
  readonly upToDate: boolean;
  readonly bytesTransferred: number;
}

const CONFIG_MEDIA_TYPES = new Set<string>([MediaType.OciConfig, MediaType.DockerConfig]);

/** Runs `work` over `items` with at most `limit` in flight, failing fast. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failed = false;
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await work(items[i] as T);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  });
  await Promise.all(workers);
  return results;
}

/** Copies an image between any source and target, blobs first and the name last. */
export async function copyImage(
  source: ImageSource,
  target: ImageTarget,
  options: CopyOptions,
): Promise<CopyResult> {
  const emit = options.onEvent ?? (() => {});
  const platformKey = options.platform === "all" ? undefined : formatPlatform(options.platform);
  const stats = { blobs: 0, bytes: 0 };

  const head = await source.head();
  if (head !== undefined) {
    const present = await target.upToDate(head.digest, platformKey);
    if (present !== undefined) {
      emit({ type: "up-to-date", digest: present.digest });
      return {
        descriptor: present,
        sourceDigest: parseDigest(head.digest),
        platform: platformKey,
        upToDate: true,
        blobsTransferred: 0,
        bytesTransferred: 0,
      };
    }
  }
  const top = await source.resolve();
  const topDocument = parseManifestDocument(
    top.bytes,
    top.descriptor.mediaType,
    `The manifest of ${source.description}`,
  );
  emit({
    type: "resolved",
    source: source.description,
    digest: top.descriptor.digest,
    mediaType: top.descriptor.mediaType,
    ...(platformKey ? { platform: platformKey } : {}),
  });

  const validatedConfig = async (descriptor: Descriptor): Promise<Buffer> => {
    const bytes = await readBody(
      Readable.from(source.blob(descriptor)),
      Math.min(descriptor.size, 64 * 1024 * 1024),
      `The config of ${source.description}`,
    );
    const config = parseImageConfig(bytes, `The config of ${source.description}`);
    const wanted = options.platform;
    if (
      options.strictPlatform &&
      wanted !== "all" &&
      !platformMatches(
        {
          os: config.os,
          architecture: config.architecture,
          ...(config.variant ? { variant: config.variant } : {}),
        },
        wanted,
      )
    ) {
      throw new PlatformNotFoundError(
        `${source.description} is an image for ${formatPlatform({ os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) })}, not ${formatPlatform(wanted)}.`,
        { hint: "Pull it without --platform, or pick the platform the image was built for." },
      );
    }
    return bytes;
  };

  const copyBlob = async (descriptor: Descriptor, role: "config" | "layer"): Promise<void> => {
    if (await target.hasBlob(descriptor)) {
      emit({ type: "blob-start", digest: descriptor.digest, size: descriptor.size, role, cached: true });
      emit({ type: "blob-done", digest: descriptor.digest, size: descriptor.size, cached: true });
      return;
    }
    emit({ type: "blob-start", digest: descriptor.digest, size: descriptor.size, role, cached: false });
    const progress = (bytes: number) =>
      emit({ type: "blob-progress", digest: descriptor.digest, size: descriptor.size, bytes });
    let open: BlobOpener = async (offset) =>
      source.blobFrom !== undefined
        ? source.blobFrom(descriptor, offset)
        : { start: 0, chunks: source.blob(descriptor) };
    if (role === "config" && CONFIG_MEDIA_TYPES.has(descriptor.mediaType)) {
      // The config is a document: validate it before anything stores or uses it. Fetched only
      // once a blob is really to be written, so a pull that waits for another fetches nothing.
      open = async () => {
        const bytes = await validatedConfig(descriptor);
        return { start: 0, chunks: Readable.from([bytes]) };
      };
    }
    const onWait = (owner: number) =>
      emit({ type: "blob-wait", digest: descriptor.digest, size: descriptor.size, owner });
    try {
      await target.writeBlob(descriptor, open, source.origin, progress, onWait);
    } catch (error) {
      // A corrupted transfer (a flipped byte, an error page, a damaged kept prefix) is worth one
      // fresh attempt; the target dropped what failed the check, so this one starts over.
      if (!(error instanceof DigestMismatchError)) throw error;
      await target.writeBlob(descriptor, open, source.origin, progress, onWait);
    }
    stats.blobs++;
    stats.bytes += descriptor.size;
    emit({ type: "blob-done", digest: descriptor.digest, size: descriptor.size, cached: false });
  };

  const copyManifest = async (
    descriptor: Descriptor,
    bytes: Buffer,
    document: ManifestDocument,
  ): Promise<void> => {
    if (document.kind === "index") {
      for (const child of document.index.manifests) {
        const childBytes = await source.manifest(child);
        await copyManifest(
          child,
          childBytes,
          parseManifestDocument(
            childBytes,
            child.mediaType,
            `Manifest ${child.digest} of ${source.description}`,
          ),
        );
      }
    } else {
      const { config, layers } = document.manifest;
      emit({ type: "plan", manifest: descriptor, config, layers });
      const unique = [...new Map(layers.map((layer) => [layer.digest, layer])).values()].filter(
        (layer) => layer.digest !== config.digest,
      );
      await copyBlob(config, "config");
      await mapLimit(unique, options.concurrency ?? 4, (layer) => copyBlob(layer, "layer"));
    }
    await target.writeManifest(descriptor, bytes);
    emit({ type: "manifest", digest: descriptor.digest });
  };

  let committed: Descriptor = top.descriptor;
  let committedBytes = top.bytes;
  if (topDocument.kind === "index" && options.platform !== "all") {
    const child = selectPlatformManifest(topDocument.index, options.platform, source.description);
    const childBytes = await source.manifest(child);
    const childDocument = parseManifestDocument(
      childBytes,
      child.mediaType,
      `Manifest ${child.digest} of ${source.description}`,
    );
    if (childDocument.kind !== "manifest")
      throw new InvalidManifestError(
        `${source.description}: nested indexes are not supported for platform selection.`,
      );
    committed = { mediaType: childDocument.mediaType, digest: child.digest, size: child.size };
    committedBytes = childBytes;
    await copyManifest(committed, childBytes, childDocument);
  } else {
    await copyManifest(top.descriptor, top.bytes, topDocument);
  }
  await target.commit(committed, committedBytes, {
    sourceDigest: top.descriptor.digest,
    platform: platformKey,
  });
  await target.finish();
  return {
    descriptor: committed,
    sourceDigest: parseDigest(top.descriptor.digest),
    platform: platformKey,
    upToDate: false,
    blobsTransferred: stats.blobs,
    bytesTransferred: stats.bytes,
  };
}

// ---- sources ----

export function registrySource(client: RegistryClient, ref: Reference): ImageSource {
  return {
    description: formatReference(ref),
    origin: ref,
    head: () => client.headManifest(ref),
    async resolve() {
      const fetched = await client.getManifest(ref);
      return { descriptor: fetched.descriptor, bytes: fetched.bytes };
    },
    async manifest(descriptor) {
      return (
        await client.getManifest(withIdentifier(ref, { digest: parseDigest(descriptor.digest) }), descriptor)
      ).bytes;
    },
    blob: (descriptor) => client.blobChunks(ref, descriptor),
    blobFrom: (descriptor, offset) => client.readBlob(ref, descriptor, offset),
  };
}

export function layoutSource(
  layout: OciLayout,
  name: string | undefined,
  limits: { manifest: number },
): ImageSource {
  const description = name === undefined ? layout.root : `${layout.root}:${name}`;
  return {
    description,
    head: () => layout.resolve(name),
    async resolve() {
      const descriptor = await layout.resolve(name);
      const bytes = await layout.readBlob(descriptor, limits.manifest);
      const { annotations: _ignored, ...plain } = descriptor;
      return { descriptor: plain, bytes };
    },
    manifest: (descriptor) => layout.readBlob(descriptor, limits.manifest),
    blob: (descriptor) => layout.openBlob(descriptor),
  };
}

/** An image in a layout known by its descriptor alone (just composed, not yet named). */
export function descriptorSource(
  layout: OciLayout,
  descriptor: Descriptor,
  limits: { manifest: number },
): ImageSource {
  return {
    description: descriptor.digest,
    head: async () => descriptor,
    resolve: async () => ({ descriptor, bytes: await layout.readBlob(descriptor, limits.manifest) }),
    manifest: (child) => layout.readBlob(child, limits.manifest),
    blob: (child) => layout.openBlob(child),
  };
}

// ---- targets ----

/** An OCI layout (optionally the store's): names go into index.json's ref-name annotation. */
export function layoutTarget(
  layout: OciLayout,
  name: string | undefined,
  options: { keepTempDir?: boolean } = {},
): ImageTarget {
  return {
    description: layout.root,
    async upToDate(sourceDigest, platform) {
      if (name === undefined) return undefined;
      let entry: Descriptor;
      try {
        entry = await layout.resolve(name);
      } catch {
        return undefined;
      }
      if (entry.annotations?.[SOURCE_DIGEST_ANNOTATION] !== sourceDigest) return undefined;
      if (platform !== undefined && entry.annotations?.[PLATFORM_ANNOTATION] !== platform) return undefined;
      return (await imageComplete(layout, entry)) ? entry : undefined;
    },
    hasBlob: (descriptor) => layout.hasBlob(descriptor),
    writeBlob: (descriptor, open, _origin, onProgress, onWait) =>
      layout.downloadBlob(descriptor, open, { onProgress, ...(onWait ? { onWait } : {}) }),
    async writeManifest(descriptor, bytes) {
      await layout.writeBlob(descriptor, [bytes]);
    },
    async commit(descriptor, _bytes, info) {
      const annotations: Record<string, string> = {
        [SOURCE_DIGEST_ANNOTATION]: info.sourceDigest,
        [CREATED_ANNOTATION]: new Date().toISOString(),
      };
      if (info.platform !== undefined) annotations[PLATFORM_ANNOTATION] = info.platform;
      await layout.addManifest(
        { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size, annotations },
        name,
      );
    },
    async finish() {
      if (!options.keepTempDir) await layout.removeTempDir();
    },
  };
}

export function storeTarget(store: Store, name: string): ImageTarget {
  return layoutTarget(store.layout, name, { keepTempDir: true });
}

/** True when a manifest and every blob it needs are present (so no download is needed). */
async function imageComplete(layout: OciLayout, descriptor: Descriptor): Promise<boolean> {
  if (!(await layout.hasBlob(descriptor))) return false;
  try {
    const bytes = await layout.readBlob(descriptor, 64 * 1024 * 1024);
    const document = parseManifestDocument(bytes, descriptor.mediaType, `Manifest ${descriptor.digest}`);
    const children =
      document.kind === "index"
        ? document.index.manifests
        : [document.manifest.config, ...document.manifest.layers];
    for (const child of children) {
      if (document.kind === "index" ? !(await imageComplete(layout, child)) : !(await layout.hasBlob(child)))
        return false;
    }
    return true;
  } catch {
    return false;
  }
}

export function registryTarget(
  client: RegistryClient,
  ref: Reference,
  options: { chunkSize?: number } = {},
): ImageTarget {
  return {
    description: formatReference(ref),
    async upToDate() {
      return undefined;
    },
    async hasBlob(descriptor) {
      return (await client.headBlob(ref, parseDigest(descriptor.digest))) !== undefined;
    },
    async writeBlob(descriptor, open, origin, onProgress) {
      const mountFrom =
        origin !== undefined && origin.registry === ref.registry && origin.repository !== ref.repository
          ? origin.repository
          : undefined;
      let sent = 0;
      await client.uploadBlob(
        ref,
        descriptor,
        () =>
          Readable.from(
            (async function* () {
              for await (const chunk of (await open(0)).chunks) {
                sent += chunk.length;
                onProgress(sent);
                yield chunk;
              }
            })(),
          ),
        {
          ...(mountFrom ? { mountFrom } : {}),
          ...(options.chunkSize ? { chunkSize: options.chunkSize } : {}),
        },
      );
    },
    async writeManifest(descriptor, bytes) {
      await client.putManifest(
        withIdentifier(ref, { digest: parseDigest(descriptor.digest) }),
        bytes,
        descriptor.mediaType,
      );
    },
    async commit(descriptor, bytes) {
      if (ref.tag !== undefined)
        await client.putManifest(withIdentifier(ref, { tag: ref.tag }), bytes, descriptor.mediaType);
    },
    async finish() {},
  };
}
