import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { linkSync, lstatSync } from "node:fs";
import { copyFile, lstat, lutimes, mkdir, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { promisify } from "node:util";
import { Worker } from "node:worker_threads";
import { parseImageConfig } from "../config.js";
import { type Digest, parseDigest } from "../digest.js";
import {
  DigestMismatchError,
  InvalidLayerError,
  InvalidManifestError,
  type OciError,
  SizeLimitError,
  UnpackError,
  UnsafeLayerError,
} from "../errors.js";
import { writeFileAtomic } from "../files.js";
import { type Descriptor, parseManifestDocument } from "../manifest.js";
import { formatPlatform, type Platform, platformOrHost } from "../platform.js";
import { formatReference, parseReference, type Reference } from "../reference.js";
import { type ClientOptions, clientFor } from "../registry/index.js";
import {
  type CopyEvent,
  type CopyResult,
  copyImage,
  isAlive,
  type PullResult,
  registrySource,
  Store,
  storeTarget,
} from "../store/index.js";
import type { ChangesetOptions, LayerBlob, UnpackReport } from "./changeset.js";
import { FileWriters, type WriteFailure } from "./file-writers.js";
import { isHostRoot } from "./privilege.js";
import { copyDirectories, finishDirectories, keepMetadata, realEntry, restoreModes } from "./rootfs.js";
import { samePrint, type TreePrint, TreePrinter } from "./tree-print.js";
import { walkTree } from "./tree-walk.js";
import type { SerializedError, WorkerInit, WorkerReply, WorkerRequest } from "./unpack-worker.js";

export type { ChangesetOptions, LayerBlob, SkippedEntry, UnpackLimits, UnpackReport } from "./changeset.js";
export { DEFAULT_UNPACK_LIMITS } from "./changeset.js";

const run = promisify(execFile);

const ERRORS: Record<string, new (message: string, options?: { hint?: string }) => OciError> = {
  UNSAFE_LAYER: UnsafeLayerError,
  INVALID_LAYER: InvalidLayerError,
  SIZE_LIMIT: SizeLimitError,
  DIGEST_MISMATCH: DigestMismatchError,
  UNPACK: UnpackError,
};

function revive(error: SerializedError): OciError {
  const ErrorClass = ERRORS[error.code] ?? UnpackError;
  return new ErrorClass(error.message, error.hint === undefined ? {} : { hint: error.hint });
}

/**
 * Layers applied on a worker thread, one after another, while the caller may still be fetching
 * later ones. The root is created 0700: an image's setuid files and devices are nobody else's.
 */
export class LayerApplication {
  private readonly pending: Array<{ resolve: (reply: WorkerReply) => void; reject: (e: Error) => void }> = [];
  private failure: Error | undefined;

  private constructor(private readonly worker: Worker) {
    worker.on("message", (reply: WorkerReply) => {
      const waiter = this.pending.shift();
      if (reply.type === "error") {
        this.failure = revive(reply.error);
        waiter?.reject(this.failure);
        for (const other of this.pending.splice(0)) other.reject(this.failure);
        return;
      }
      waiter?.resolve(reply);
    });
    const crashed = (error: Error) => {
      this.failure ??= new UnpackError(`The unpack thread failed: ${error.message}.`);
      for (const waiter of this.pending.splice(0)) waiter.reject(this.failure);
    };
    worker.on("error", crashed);
    worker.on("exit", (code) => crashed(new Error(`it exited with code ${code}`)));
  }

  static async start(root: string, options: ChangesetOptions = {}): Promise<LayerApplication> {
    await mkdir(root, { recursive: true, mode: 0o700 });
    const init: WorkerInit = { root: resolve(root), options };
    const worker = new Worker(new URL("./unpack-worker.js", import.meta.url), {
      workerData: init,
      // Most of what it allocates dies young; a smaller nursery costs no measurable time here
      // and keeps ~30 MiB off the peak RSS.
      resourceLimits: { maxYoungGenerationSizeMb: 8 },
    });
    return new LayerApplication(worker);
  }

  private request(message: WorkerRequest): Promise<WorkerReply> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.worker.postMessage(message);
    });
  }

  async apply(layer: LayerBlob): Promise<void> {
    await this.request({ type: "layer", layer });
  }

  /**
   * Applies directory metadata, ends the thread and reports what was done. With `linkInto`, the
   * tree is also hardlinked there (see `ChangesetApplier.finish`): `print` says it was.
   */
  async finish(linkInto?: string): Promise<{ report: UnpackReport; print?: TreePrint }> {
    const reply = await this.request({ type: "finish", ...(linkInto === undefined ? {} : { linkInto }) });
    await this.close();
    if (reply.type !== "done") throw new UnpackError("The unpack thread answered out of turn.");
    return reply;
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners("exit");
    await this.worker.terminate();
  }
}

/**
 * Applies layer blobs in order to `root` (created if missing). On failure the root holds a
 * partial tree: callers unpack into a directory they can discard, as `unpackImage` does.
 */
export async function applyLayers(
  root: string,
  layers: readonly LayerBlob[],
  options: ChangesetOptions = {},
): Promise<UnpackReport> {
  const application = await LayerApplication.start(root, options);
  try {
    for (const layer of layers) await application.apply(layer);
    const { report } = await application.finish();
    restoreModes(resolve(root), report.loosenedModes);
    return report;
  } finally {
    await application.close();
  }
}

/** ChainID of the layers so far (image-spec): the identity of a root filesystem. */
export function chainId(diffIds: readonly string[]): Digest {
  let chain = "";
  for (const diffId of diffIds)
    chain =
      chain === "" ? diffId : `sha256:${createHash("sha256").update(`${chain} ${diffId}`).digest("hex")}`;
  return parseDigest(chain);
}

/** `$LOCALD_HOME/cache/rootfs`, else `$XDG_CACHE_HOME/locald/rootfs`, else `~/.cache/locald/rootfs`. */
export function defaultRootfsCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LOCALD_HOME) return join(env.LOCALD_HOME, "cache", "rootfs");
  const cache = env.XDG_CACHE_HOME || join(env.HOME ?? homedir(), ".cache");
  return join(cache, "locald", "rootfs");
}

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

/** What a walk of a cached root found, besides directories. */
interface Survey {
  readonly print: TreePrint;
  /** The image's own hardlinks: a path, and the first path seen with the same inode. */
  readonly links: ReadonlyArray<readonly [path: string, first: string]>;
  /** Entries neither directory, regular file nor symlink (fifos, devices). */
  readonly special: boolean;
}

/** Synchronous on purpose: one lstat per file, and nothing else is waiting on this thread. */
function survey(root: string): Survey {
  const printer = new TreePrinter();
  const firsts = new Map<number, string>();
  const links: Array<[string, string]> = [];
  let special = false;
  for (const { path, host, kind } of walkTree(root)) {
    if (kind !== "file") {
      special ||= kind === "special";
      continue;
    }
    const info = lstatSync(host);
    printer.add(path, info);
    const first = firsts.get(info.ino);
    if (first === undefined) firsts.set(info.ino, path);
    else links.push([path, first]);
  }
  return { print: printer.print, links, special };
}

/**
 * The cache shares file inodes with the directory it was first unpacked into, so an edit made
 * there in place would show here: such an entry is not used. (Deleting that directory is fine.)
 */
function intact(root: string, print: TreePrint): Survey | undefined {
  try {
    const found = survey(root);
    return samePrint(found.print, print) ? found : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Copies a cached root into `dir` (reflinks where the filesystem has them), keeping modes,
 * owners, mtimes and the image's own hardlinks, then restores modes a rootless unpack loosened.
 * The file-writer threads copy a directory each at a time, since creating files is most of the
 * work and the kernel creates them in parallel for different directories; `cp` copies a tree
 * with fifos or device nodes, which Node cannot make.
 */
async function materialise(cached: string, dir: string, found: Survey, report: UnpackReport): Promise<void> {
  try {
    if (found.special) await copyWithCp(cached, dir);
    else await copyWithWriters(cached, dir, found.links);
    restoreModes(dir, report.loosenedModes);
  } catch (error) {
    const failure = error as Partial<WriteFailure> & { stderr?: string };
    const detail = failure.stderr?.trim() || failure.message;
    throw new UnpackError(`Cannot copy the unpacked image into ${dir}: ${detail}.`, {
      hint: failure.code === "ENOSPC" ? "Free some disk space and try again." : undefined,
    });
  }
}

async function copyWithCp(cached: string, dir: string): Promise<void> {
  await run(
    "cp",
    ["-dR", "--preserve=mode,ownership,timestamps,links", "--reflink=auto", "--", `${cached}/.`, `${dir}/`],
    { maxBuffer: 1024 * 1024 },
  );
}

async function copyWithWriters(
  cached: string,
  dir: string,
  links: ReadonlyArray<readonly [string, string]>,
): Promise<void> {
  const owner = isHostRoot();
  const linked = new Set(links.map(([path]) => path));
  const writers = new FileWriters(() => {});
  try {
    const copied = copyDirectories(
      cached,
      dir,
      (from, to, key, files, symlinks) => {
        const prefix = key === "" ? "" : `${key}/`;
        const copies = files.filter((name) => !linked.has(`${prefix}${name}`));
        writers.copy(from, to, copies, symlinks, owner);
      },
      true,
    );
    await writers.drained();
    for (const [path, first] of links) linkSync(join(dir, first), join(dir, path));
    finishDirectories(copied, owner);
  } catch (error) {
    await writers.stopped();
    throw error;
  } finally {
    await writers.close();
  }
}

/**
 * The cache shares the inodes of a freshly unpacked `dir` (linked by the unpack's writer threads
 * before its loosened modes are restored). Files whose modes were loosened get a copy of their
 * own, so restoring the user's copy does not lock the cache out.
 */
async function separateLoosened(
  dir: string,
  scratch: string,
  report: UnpackReport,
  print: TreePrint,
): Promise<TreePrint> {
  const printer = TreePrinter.from(print);
  for (const { path } of report.loosenedModes) {
    // Through real directories only, in both trees: never a link out of them.
    const linked = realEntry(scratch, path);
    const original = realEntry(dir, path);
    if (linked === undefined || original === undefined || !linked.info.isFile()) continue;
    const copy = `${linked.host}.locald-copy`;
    const parent = dirname(linked.host);
    const parentInfo = await lstat(parent);
    await copyFile(original.host, copy);
    // The copy's times are the image's, like every other file the cache holds, and so are its
    // directory's once the rename has touched them.
    keepMetadata(copy, original.info, false);
    await rename(copy, linked.host);
    await lutimes(parent, parentInfo.atimeMs / 1000, parentInfo.mtimeMs / 1000);
    printer.remove(path, linked.info);
    printer.add(path, await lstat(linked.host));
  }
  return printer.print;
}

function cacheKey(diffIds: readonly string[], options: ChangesetOptions): string {
  const rootless = options.rootless ?? !isHostRoot();
  const paths = [...(options.paths ?? [])].sort();
  return createHash("sha256")
    .update(JSON.stringify({ chain: chainId(diffIds), paths, rootless }))
    .digest("hex");
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
  const image = await store.find(formatReference(ref));
  if (image === undefined) return undefined;
  if (platform !== undefined && image.platform !== formatPlatform(platformOrHost(platform))) return undefined;
  return {
    descriptor: image.descriptor,
    sourceDigest: parseDigest(image.sourceDigest ?? image.descriptor.digest),
    platform: image.platform,
    upToDate: true,
    blobsTransferred: 0,
    bytesTransferred: 0,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Written beside a cached root once it is complete; prune reads the ChainID back. */
interface CacheMarker {
  chainId: string;
  report: UnpackReport;
  print: TreePrint;
  /**
   * Its files are hardlinks of a directory the unpack wrote for a caller, where an edit in place
   * would show: checked against `print` before every use. (Absent in markers of earlier versions.)
   */
  linked?: boolean;
}

async function readMarker(path: string): Promise<CacheMarker | undefined> {
  try {
    const marker = JSON.parse(await readFile(path, "utf8")) as Partial<CacheMarker>;
    // Markers of earlier versions (a print per file) are not read: that entry is made again.
    return marker.report !== undefined && marker.print !== undefined ? (marker as CacheMarker) : undefined;
  } catch {
    return undefined;
  }
}

/** Marker first: without it the entry is incomplete and nobody uses it. */
async function discardCache(root: string): Promise<void> {
  await rm(`${root}.json`, { force: true });
  await rm(root, { recursive: true, force: true });
}

/** The root is renamed into place first and its marker last: the marker means "complete". */
async function publishCache(work: string, root: string, marker: CacheMarker): Promise<void> {
  try {
    await rename(work, root);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // Another process cached the same root first; theirs is as good as ours, and theirs is marked.
    if (code !== "ENOTEMPTY" && code !== "EEXIST") throw error;
    await rm(work, { recursive: true, force: true });
    return;
  }
  await writeFileAtomic(`${root}.json`, JSON.stringify(marker));
}

/** ChainIDs of every image in the store: the unpacked roots still worth keeping. */
async function liveChains(store: Store): Promise<Set<string>> {
  const live = new Set<string>();
  const visit = async (descriptor: Descriptor): Promise<void> => {
    const bytes = await store.layout.readBlob(descriptor, 4 * 1024 * 1024);
    const document = parseManifestDocument(bytes, descriptor.mediaType, `Manifest ${descriptor.digest}`);
    if (document.kind === "index") {
      for (const child of document.index.manifests) if (await store.layout.hasBlob(child)) await visit(child);
      return;
    }
    const config = parseImageConfig(
      await store.layout.readBlob(document.manifest.config, 64 * 1024 * 1024),
      `The config of ${descriptor.digest}`,
    );
    live.add(chainId(config.rootfs.diff_ids));
  };
  for (const image of await store.list()) await visit(image.descriptor).catch(() => undefined);
  return live;
}

/**
 * Deletes cached roots of images no longer in the store (except the `keep` entries, which
 * containers use), incomplete entries, and scratch directories of unpacks that died. Returns how many entries went.
 */
export async function pruneRootfsCache(
  store: Store,
  cacheDir: string = defaultRootfsCacheDir(),
  options: { keep?: ReadonlySet<string> } = {},
): Promise<{ removed: number }> {
  const names = await readdir(cacheDir).catch(() => [] as string[]);
  const keep = options.keep ?? new Set<string>();
  const live = await liveChains(store);
  const complete = new Set<string>();
  let removed = 0;
  const remove = async (name: string) => {
    await rm(join(cacheDir, name), { recursive: true, force: true });
    removed++;
  };
  for (const name of names) {
    if (!name.endsWith(".json")) continue;
    const key = name.slice(0, -".json".length);
    try {
      const marker = JSON.parse(await readFile(join(cacheDir, name), "utf8")) as CacheMarker;
      if (live.has(marker.chainId) || keep.has(key)) {
        complete.add(key);
        continue;
      }
    } catch {
      // An unreadable marker is as good as none.
    }
    await rm(join(cacheDir, name), { force: true });
    await remove(key);
  }
  for (const name of names) {
    if (name.endsWith(".json") || complete.has(name)) continue;
    const scratch = /^\.tmp-(\d+)-/.exec(name);
    if (scratch !== null && isAlive(Number(scratch[1]))) continue;
    if (await exists(join(cacheDir, name))) await remove(name);
  }
  return { removed };
}

async function emptyDirectory(dir: string): Promise<void> {
  try {
    for (const name of await readdir(dir)) await rm(join(dir, name), { recursive: true, force: true });
  } catch {
    // Nothing there to clean.
  }
}
