import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { linkSync, lstatSync } from "node:fs";
import { copyFile, lstat, lutimes, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { parseImageConfig } from "../config.js";
import { diskFullError } from "../disk-space.js";
import { UnpackError } from "../errors.js";
import { writeFileAtomic } from "../files.js";
import { type Descriptor, parseManifestDocument } from "../manifest.js";
import { isAlive, type Store } from "../store/index.js";
import type { ChangesetOptions, UnpackReport } from "./changeset.js";
import { FileWriters, type WriteFailure } from "./file-writers.js";
import { chainId } from "./layers.js";
import { isHostRoot } from "./privilege.js";
import { copyDirectories, finishDirectories, keepMetadata, realEntry, restoreModes } from "./rootfs.js";
import { samePrint, type TreePrint, TreePrinter } from "./tree-print.js";
import { walkTree } from "./tree-walk.js";

// The unpack cache: roots unpacked before, under `<cacheDir>/<key>`, each beside a marker
// `<key>.json` (ChainID, report, tree print) written last, so that a marker means "complete".

/** `$LOCALD_HOME/cache/rootfs`, else `$XDG_CACHE_HOME/locald/rootfs`, else `~/.cache/locald/rootfs`. */
export function defaultRootfsCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LOCALD_HOME) return join(env.LOCALD_HOME, "cache", "rootfs");
  const cache = env.XDG_CACHE_HOME || join(env.HOME ?? homedir(), ".cache");
  return join(cache, "locald", "rootfs");
}

/** What a walk of a cached root found, besides directories. */
export interface Survey {
  readonly print: TreePrint;
  /** The image's own hardlinks: a path, and the first path seen with the same inode. */
  readonly links: ReadonlyArray<readonly [path: string, first: string]>;
  /** Entries neither directory, regular file nor symlink (fifos, devices). */
  readonly special: boolean;
}

/** Synchronous on purpose: one lstat per file, and nothing else is waiting on this thread. */
export function survey(root: string): Survey {
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
export function intact(root: string, print: TreePrint): Survey | undefined {
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
export async function materialise(
  cached: string,
  dir: string,
  found: Survey,
  report: UnpackReport,
): Promise<void> {
  try {
    if (found.special) await copyWithCp(cached, dir);
    else await copyWithWriters(cached, dir, found.links);
    restoreModes(dir, report.loosenedModes);
  } catch (error) {
    const failure = error as Partial<WriteFailure> & { stderr?: string };
    const detail = failure.stderr?.trim() || failure.message;
    const full = diskFullError(
      Object.assign(new Error(detail), failure.code ? { code: failure.code } : {}),
      dir,
      "Cannot copy the unpacked image",
    );
    if (full !== undefined) throw full;
    throw new UnpackError(`Cannot copy the unpacked image into ${dir}: ${detail}.`);
  }
}

const run = promisify(execFile);

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
export async function separateLoosened(
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

export function cacheKey(diffIds: readonly string[], options: ChangesetOptions): string {
  const rootless = options.rootless ?? !isHostRoot();
  const paths = [...(options.paths ?? [])].sort();
  return createHash("sha256")
    .update(JSON.stringify({ chain: chainId(diffIds), paths, rootless }))
    .digest("hex");
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
export interface CacheMarker {
  chainId: string;
  report: UnpackReport;
  print: TreePrint;
  /**
   * Its files are hardlinks of a directory the unpack wrote for a caller, where an edit in place
   * would show: checked against `print` before every use. (Absent in markers of earlier versions.)
   */
  linked?: boolean;
}

export async function readMarker(path: string): Promise<CacheMarker | undefined> {
  try {
    const marker = JSON.parse(await readFile(path, "utf8")) as Partial<CacheMarker>;
    // Markers of earlier versions (a print per file) are not read: that entry is made again.
    return marker.report !== undefined && marker.print !== undefined ? (marker as CacheMarker) : undefined;
  } catch {
    return undefined;
  }
}

/** Marker first: without it the entry is incomplete and nobody uses it. */
export async function discardCache(root: string): Promise<void> {
  await rm(`${root}.json`, { force: true });
  await rm(root, { recursive: true, force: true });
}

/** The root is renamed into place first and its marker last: the marker means "complete". */
export async function publishCache(work: string, root: string, marker: CacheMarker): Promise<void> {
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
