import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseImageConfig } from "../config.js";
import { parseDigest } from "../digest.js";
import { InvalidManifestError, UnpackError } from "../errors.js";
import { type Descriptor, parseManifestDocument } from "../manifest.js";
import { type Platform, platformOrHost } from "../platform.js";
import { formatReference, parseReference, type Reference } from "../reference.js";
import { type ClientOptions, clientFor } from "../registry/index.js";
import {
  type CopyEvent,
  type CopyResult,
  copyImage,
  type PullResult,
  registrySource,
  Store,
  storeTarget,
} from "../store/index.js";
import type { ChangesetOptions, UnpackReport } from "./changeset.js";
import { chainId, LayerApplication } from "./layers.js";
import { restoreModes } from "./rootfs.js";
import {
  cacheKey,
  defaultRootfsCacheDir,
  discardCache,
  intact,
  materialise,
  publishCache,
  readMarker,
  separateLoosened,
  survey,
} from "./rootfs-cache.js";
import type { TreePrint } from "./tree-print.js";

export type { LayerBlob } from "./archive.js";
export type { ChangesetOptions, SkippedEntry, UnpackLimits, UnpackReport } from "./changeset.js";
export { DEFAULT_UNPACK_LIMITS } from "./changeset.js";

export type UnpackEvent =
  | CopyEvent
  | { type: "unpack-layer"; digest: string; index: number; count: number }
  | { type: "unpack-cached"; chainId: string };

export interface UnpackOptions extends ClientOptions, Omit<ChangesetOptions, "limits"> {
  /** Caps on what the image may unpack to (`limits` is the transport's). */
  unpackLimits?: ChangesetOptions["limits"];
  platform?: string | Platform;
  store?: Store;
  /** Where unpacked roots are cached (default `defaultRootfsCacheDir()`); false to bypass it. */
  cacheDir?: string | false;
  /** Layers downloaded at once (default 2, see UNPACK_DOWNLOADS). */
  concurrency?: number;
  /**
   * "always" (default): ask the registry what the tag names now; "missing": use the store's
   * copy when it has one (docker run's default), pull otherwise.
   */
  pull?: "always" | "missing";
  onEvent?: (event: UnpackEvent) => void;
}

/** What `pull` reports for the image, plus where and how its root filesystem was written. */
export interface UnpackResult extends PullResult {
  readonly dir: string;
  /** The root came from the unpack cache: nothing was extracted. */
  readonly cached: boolean;
  readonly report: UnpackReport;
}

/**
 * Layers are applied in order, so the first one should land first: four downloads sharing the
 * bandwidth delayed it by ~0.35 s on a loopback registry (two: ~0.1 s), and extraction, the
 * slower part, waits for it. Two still overlap the next download with a slow one.
 */
const UNPACK_DOWNLOADS = 2;

function deferred<T>(): {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
} {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

async function prepareTarget(dir: string): Promise<boolean> {
  try {
    const info = await stat(dir);
    if (!info.isDirectory())
      throw new UnpackError(`Cannot unpack into ${dir}: it exists and is not a directory.`, {
        hint: "Choose a new directory; locald creates it.",
      });
    if ((await readdir(dir)).length > 0)
      throw new UnpackError(`Cannot unpack into ${dir}: the directory is not empty.`, {
        hint: "Choose a new or empty directory, so that nothing of yours is overwritten.",
      });
    return false;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return true;
  }
}

/**
 * Pulls `reference` into the store (if needed) and writes its root filesystem into `dir`,
 * which must be new or empty. Layers are applied as soon as they are stored, in order, while
 * later ones still download. Roots are cached by ChainID, so unpacking the same image again is a
 * copy, not an extraction.
 */
export async function unpackImage(
  reference: string | Reference,
  dir: string,
  options: UnpackOptions = {},
): Promise<UnpackResult> {
  const target = resolve(dir);
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  const { cacheKey: _key, ...result } = await unpackInto(ref, target, options);
  return { ...result, dir: target };
}

/** A cached root filesystem: read-only by contract, to be used as a lower layer (overlayfs). */
export interface CachedRootfs extends PullResult {
  /** The cached root itself; never write into it. */
  readonly dir: string;
  /** The unpack cache entry's name, for `pruneRootfsCache({ keep })`. */
  readonly cacheKey: string;
  /** The root came from the cache: nothing was extracted. */
  readonly cached: boolean;
  readonly report: UnpackReport;
}

/**
 * Pulls `reference` if needed and makes sure its root filesystem is in the unpack cache,
 * extracting it there (not into a directory of the caller's) when it is not.
 */
export async function cachedRootfs(
  reference: string | Reference,
  options: Omit<UnpackOptions, "cacheDir"> & { cacheDir?: string } = {},
): Promise<CachedRootfs> {
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  const { dir, cacheKey, ...result } = await unpackInto(ref, undefined, options);
  if (dir === undefined || cacheKey === undefined) throw new UnpackError("The unpack cache gave no root.");
  return { ...result, dir, cacheKey };
}

type UnpackOutcome = Omit<UnpackResult, "dir"> & { dir: string | undefined; cacheKey: string | undefined };

/** `target` undefined: the cache entry itself is the goal (extracted there, not copied out). */
async function unpackInto(
  ref: Reference,
  target: string | undefined,
  options: UnpackOptions,
): Promise<UnpackOutcome> {
  const platform = platformOrHost(options.platform);
  const created = target === undefined ? false : await prepareTarget(target);
  const store = options.store ?? (await Store.open());
  const emit = options.onEvent ?? (() => {});
  const release = await store.lease();
  const { client, owned } = clientFor(options);
  let scratch: string | undefined;
  let pulling: Promise<unknown> | undefined;
  try {
    const plan = deferred<{ manifest: Descriptor; config: Descriptor; layers: readonly Descriptor[] }>();
    const stored = new Map<string, ReturnType<typeof deferred<void>>>();
    const storedBlob = (digest: string) => {
      let entry = stored.get(digest);
      if (entry === undefined) {
        entry = deferred<void>();
        stored.set(digest, entry);
      }
      return entry;
    };
    const local = options.pull === "missing" ? await storedImage(store, ref, options.platform) : undefined;
    const copying: Promise<CopyResult> =
      local !== undefined
        ? Promise.resolve(local)
        : copyImage(registrySource(client, ref), storeTarget(store, formatReference(ref)), {
            platform,
            strictPlatform: options.platform !== undefined,
            concurrency: options.concurrency ?? UNPACK_DOWNLOADS,
            onEvent: (event) => {
              if (event.type === "plan") plan.resolve(event);
              if (event.type === "blob-done") storedBlob(event.digest).resolve();
              emit(event);
            },
          });
    // An image already in the store announces no plan: read it from there.
    const pulled = copying.then(async (result) => {
      const bytes = await store.layout.readBlob(result.descriptor, 4 * 1024 * 1024);
      const document = parseManifestDocument(
        bytes,
        result.descriptor.mediaType,
        `Image ${formatReference(ref)}`,
      );
      if (document.kind !== "manifest")
        throw new InvalidManifestError(`${formatReference(ref)} did not resolve to a single image manifest.`);
      plan.resolve({ manifest: result.descriptor, ...document.manifest });
      for (const entry of stored.values()) entry.resolve();
      return result;
    });
    pulling = pulled;
    pulled.catch((error: unknown) => {
      plan.reject(error);
      for (const entry of stored.values()) entry.reject(error);
    });
    const wait = async <T>(promise: Promise<T>): Promise<T> =>
      Promise.race([promise, pulled.then(() => promise)]);
    const { config, layers } = await wait(plan.promise);
    const blobReady = (digest: string) =>
      Promise.race([storedBlob(digest).promise, pulled.then(() => undefined)]);
    await blobReady(config.digest);
    const imageConfig = parseImageConfig(
      await store.layout.readBlob(config, 64 * 1024 * 1024),
      `The config of ${formatReference(ref)}`,
    );
    const diffIds = imageConfig.rootfs.diff_ids;
    if (diffIds.length !== layers.length)
      throw new InvalidManifestError(
        `${formatReference(ref)} lists ${layers.length} layers but its config has ${diffIds.length} DiffIDs.`,
      );
    const cacheDir = options.cacheDir === undefined ? defaultRootfsCacheDir() : options.cacheDir;
    const changeset: ChangesetOptions = {
      ...(options.paths ? { paths: options.paths } : {}),
      ...(options.rootless !== undefined ? { rootless: options.rootless } : {}),
      ...(options.unpackLimits ? { limits: options.unpackLimits } : {}),
    };
    const key = cacheKey(diffIds, changeset);
    const cachedRoot = cacheDir === false ? undefined : join(cacheDir, key);
    if (target === undefined && cachedRoot === undefined)
      throw new UnpackError("A cached root filesystem was asked for, but the unpack cache is off.");
    let report: UnpackReport | undefined;
    let cached = false;
    const marker = cachedRoot === undefined ? undefined : await readMarker(`${cachedRoot}.json`);
    // A root that shares no inode with a tree outside the cache cannot have been edited through
    // one: used in place (a sandbox's read-only `/`), it is not walked again on every use.
    const trusted = target === undefined && marker?.linked === false;
    const found =
      cachedRoot === undefined || marker === undefined || trusted
        ? undefined
        : intact(cachedRoot, marker.print);
    if (cachedRoot !== undefined && marker !== undefined && (trusted || found !== undefined)) {
      await pulled;
      report = marker.report;
      emit({ type: "unpack-cached", chainId: chainId(diffIds) });
      if (target !== undefined && found !== undefined) await materialise(cachedRoot, target, found, report);
      cached = true;
    } else {
      if (cachedRoot !== undefined && marker !== undefined) await discardCache(cachedRoot);
      if (cacheDir !== false) {
        await mkdir(cacheDir, { recursive: true, mode: 0o700 });
        scratch = join(cacheDir, `.tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
      }
      // Extract straight into the target (one write of every file), then cache it as
      // hardlinks; with no target, straight into the cache.
      const into = target ?? (scratch as string);
      // Into a target, the writer threads also link the finished tree into the cache.
      const linkInto = target === undefined ? undefined : scratch;
      let print: TreePrint | undefined;
      const application = await LayerApplication.start(into, changeset);
      try {
        for (const [index, layer] of layers.entries()) {
          await blobReady(layer.digest);
          await application.apply({
            path: store.layout.blobPath(parseDigest(layer.digest)),
            mediaType: layer.mediaType,
            digest: layer.digest,
            diffId: diffIds[index] as string,
            verified: true,
          });
          emit({ type: "unpack-layer", digest: layer.digest, index, count: layers.length });
        }
        ({ report, print } = await application.finish(linkInto));
      } finally {
        await application.close();
      }
      await pulled;
      if (cachedRoot !== undefined && scratch !== undefined) {
        if (target === undefined) print = survey(scratch).print;
        else if (print !== undefined) print = await separateLoosened(target, scratch, report, print);
        // Without a print the tree could not be linked (the cache is on another filesystem).
        if (print !== undefined) {
          await publishCache(scratch, cachedRoot, {
            chainId: chainId(diffIds),
            report,
            print,
            linked: target !== undefined,
          });
          scratch = undefined;
        }
      }
      if (target !== undefined) restoreModes(target, report.loosenedModes);
    }
    const result = await pulled;
    return {
      reference: ref,
      descriptor: result.descriptor,
      digest: parseDigest(result.descriptor.digest),
      sourceDigest: result.sourceDigest,
      platform: result.platform,
      upToDate: result.upToDate,
      bytesTransferred: result.bytesTransferred,
      dir: target ?? cachedRoot,
      cacheKey: cachedRoot === undefined ? undefined : key,
      cached,
      report,
    };
  } catch (error) {
    // Stop a download that no longer has a use, and let it settle before the lease goes.
    if (owned) await client.transport.destroy();
    if (pulling !== undefined) await Promise.allSettled([pulling]);
    if (target !== undefined) {
      if (created) await rm(target, { recursive: true, force: true });
      else await emptyDirectory(target);
    }
    throw error;
  } finally {
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
    await release();
    if (owned) await client.transport.close();
  }
}

/** The image as the store has it, when it is there for the platform asked for (else a pull). */
async function storedImage(
  store: Store,
  ref: Reference,
  platform: UnpackOptions["platform"],
): Promise<CopyResult | undefined> {
  const image = await store.find(formatReference(ref), platform);
  if (image === undefined) return undefined;
  return {
    descriptor: image.descriptor,
    sourceDigest: parseDigest(image.sourceDigest ?? image.descriptor.digest),
    platform: image.platform,
    upToDate: true,
    blobsTransferred: 0,
    bytesTransferred: 0,
  };
}

async function emptyDirectory(dir: string): Promise<void> {
  try {
    for (const name of await readdir(dir)) await rm(join(dir, name), { recursive: true, force: true });
  } catch {
    // Nothing there to clean.
  }
}
