import { readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { type Digest, digestAlgorithm, digestHex } from "../digest.js";
import { type ResumableSource, writeResumable } from "../files.js";

/**
 * One download per blob, however many pulls want it. Within a process, callers of the same blob
 * share one promise. Across processes, a lock file per digest in the layout's temp directory
 * (`<alg>-<hex>.lock`, created with O_EXCL) names the process downloading it; the others wait
 * until the blob appears, showing the owner's progress, and a lock whose owner died is taken over.
 *
 * Correctness never rests on the lock: each process writes its own partial file
 * (`<pid>-<alg>-<hex>.partial`, found by its digest), adopts a dead process's partial only by
 * renaming it (which one process alone can do), and publishes the blob by an atomic rename after
 * the digest check. Two owners at once (two waiters taking over the same dead lock) cost a
 * second download, never a mixed-up file.
 */

export interface DownloadEvents {
  /** Bytes of the blob present so far: ours, or those of the pull we wait for. */
  onProgress?: (bytes: number) => void;
  /** Another pull (process `owner`) is downloading the blob; called once before waiting. */
  onWait?: (owner: number) => void;
}

/** What a lock file holds: enough to tell its owner from a later process given the same pid. */
interface Owner {
  pid: number;
  /** The process's start time in clock ticks since boot (Linux), when known. */
  started?: number;
}

/** How often a waiting pull looks at the blob, the lock and the owner's partial file. */
const POLL_MS = 100;
/** A lock file that stays empty or unreadable this long was left by a process that died writing it. */
const UNREADABLE_LOCK_MS = 5000;

/** Whether a process (of any user) still runs: what leases, scratch names and locks are checked against. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Field 22 of `/proc/<pid>/stat`, the start time; undefined off Linux or for a process gone. */
function startTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: count from the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const value = Number(fields[19]);
    return Number.isSafeInteger(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

const ownStart = startTime(process.pid);

function ownerAlive(owner: Owner): boolean {
  if (!isAlive(owner.pid)) return false;
  if (owner.started === undefined) return true;
  const now = startTime(owner.pid);
  return now === undefined || now === owner.started;
}

function blobKey(digest: Digest): string {
  return `${digestAlgorithm(digest)}-${digestHex(digest)}`;
}

/** The partial file of `pid` for a blob, in a layout's temp directory. */
export function partialName(digest: Digest, pid: number): string {
  return `${pid}-${blobKey(digest)}.partial`;
}

function lockPath(tempDir: string, digest: Digest): string {
  return join(tempDir, `${blobKey(digest)}.lock`);
}

/** The owner a lock file names; undefined when it is gone, or unreadable and older than a writer needs. */
async function readOwner(path: string): Promise<Owner | "gone" | "stale"> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return "gone";
  }
  try {
    const parsed = JSON.parse(text) as Partial<Owner>;
    if (typeof parsed.pid === "number" && Number.isSafeInteger(parsed.pid) && parsed.pid > 0)
      return {
        pid: parsed.pid,
        ...(typeof parsed.started === "number" ? { started: parsed.started } : {}),
      };
  } catch {
    // being written right now, or left half-written by a process that died
  }
  const info = await stat(path).catch(() => undefined);
  if (info === undefined) return "gone";
  return Date.now() - info.mtimeMs > UNREADABLE_LOCK_MS ? "stale" : { pid: 0 };
}

/** Whether a temp-directory entry is a lock whose owner is gone (for `prune`). */
export async function isStaleLock(path: string): Promise<boolean> {
  if (!path.endsWith(".lock")) return false;
  const owner = await readOwner(path);
  return owner === "stale" || (owner !== "gone" && owner.pid !== 0 && !ownerAlive(owner));
}

async function tryLock(path: string): Promise<boolean> {
  const owner: Owner = { pid: process.pid, ...(ownStart === undefined ? {} : { started: ownStart }) };
  try {
    await writeFile(path, JSON.stringify(owner), { flag: "wx", mode: 0o644 });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  }
}

async function unlock(path: string): Promise<void> {
  const owner = await readOwner(path);
  // Only our own: after a takeover race the file may name another process.
  if (owner !== "gone" && owner !== "stale" && owner.pid === process.pid) await rm(path, { force: true });
}

/** Blob downloads of this process, by blob path, with the callers that wait for each. */
const inFlight = new Map<string, { done: Promise<void>; listeners: Set<(bytes: number) => void> }>();

export interface BlobDownload {
  readonly digest: Digest;
  readonly size: number;
  /** Where the verified blob goes. */
  readonly path: string;
  /** The layout's temp directory, on the same filesystem: partial files and locks. */
  readonly tempDir: string;
  readonly what: string;
  /** Whether the blob is in place (someone else stored it). */
  present(): Promise<boolean>;
}

/**
 * Stores a blob from `source` unless another pull does: see the module comment. Returns once the
 * blob is at `blob.path`, verified by whoever wrote it.
 */
export async function downloadOnce(
  blob: BlobDownload,
  source: ResumableSource,
  events: DownloadEvents = {},
): Promise<void> {
  const key = resolve(blob.path);
  for (;;) {
    const running = inFlight.get(key);
    if (running === undefined) break;
    if (events.onProgress) running.listeners.add(events.onProgress);
    events.onWait?.(process.pid);
    try {
      await running.done;
    } catch {
      // its failure is its caller's; we try ourselves below unless the blob is there
    } finally {
      if (events.onProgress) running.listeners.delete(events.onProgress);
    }
    if (await blob.present()) return;
  }
  const listeners = new Set<(bytes: number) => void>();
  if (events.onProgress) listeners.add(events.onProgress);
  const progress = (bytes: number) => {
    for (const listener of listeners) listener(bytes);
  };
  const done = acrossProcesses(blob, source, {
    onProgress: progress,
    ...(events.onWait ? { onWait: events.onWait } : {}),
  });
  const entry = { done, listeners };
  inFlight.set(key, entry);
  try {
    await done;
  } finally {
    if (inFlight.get(key) === entry) inFlight.delete(key);
  }
}

async function acrossProcesses(
  blob: BlobDownload,
  source: ResumableSource,
  events: { onProgress: (bytes: number) => void; onWait?: (owner: number) => void },
): Promise<void> {
  const lock = lockPath(blob.tempDir, blob.digest);
  let announced = false;
  await mkdir(blob.tempDir, { recursive: true });
  for (;;) {
    if (await blob.present()) return;
    if (await tryLock(lock)) {
      try {
        // The previous owner may have finished between our look and our lock.
        if (await blob.present()) return;
        await download(blob, source, events.onProgress);
      } finally {
        await unlock(lock);
      }
      return;
    }
    const owner = await readOwner(lock);
    if (owner === "gone") continue;
    // A lock naming this process that no caller here holds is left from an earlier attempt.
    if (owner === "stale" || (owner.pid !== 0 && (owner.pid === process.pid || !ownerAlive(owner)))) {
      await rm(lock, { force: true });
      continue;
    }
    if (!announced && owner.pid !== 0) {
      announced = true;
      events.onWait?.(owner.pid);
    }
    if (owner.pid !== 0) {
      const info = await stat(join(blob.tempDir, partialName(blob.digest, owner.pid))).catch(() => undefined);
      if (info !== undefined) events.onProgress(info.size);
    }
    await delay(POLL_MS);
  }
}

/** Downloads into this process's partial file, first adopting what dead processes left. */
async function download(
  blob: BlobDownload,
  source: ResumableSource,
  onProgress: (bytes: number) => void,
): Promise<void> {
  const mine = join(blob.tempDir, partialName(blob.digest, process.pid));
  await adoptPartials(blob, mine);
  await writeResumable(
    blob.path,
    mine,
    source,
    { digest: blob.digest, size: blob.size },
    blob.what,
    onProgress,
  );
}

/**
 * Takes over the largest partial file of this blob left by dead processes (renamed to ours, so no
 * one else can) unless ours is larger, and removes the others.
 */
async function adoptPartials(blob: BlobDownload, mine: string): Promise<void> {
  const suffix = `-${blobKey(blob.digest)}.partial`;
  const names = await readdir(blob.tempDir).catch(() => [] as string[]);
  const dead: { path: string; size: number }[] = [];
  for (const name of names) {
    if (!name.endsWith(suffix)) continue;
    const pid = Number(name.slice(0, -suffix.length));
    if (!Number.isSafeInteger(pid) || pid === process.pid || isAlive(pid)) continue;
    const path = join(blob.tempDir, name);
    const info = await stat(path).catch(() => undefined);
    if (info !== undefined) dead.push({ path, size: info.size });
  }
  if (dead.length === 0) return;
  dead.sort((a, b) => b.size - a.size);
  const own = (await stat(mine).catch(() => undefined))?.size ?? 0;
  const [best, ...rest] = dead;
  if (best !== undefined && best.size > own && best.size <= blob.size) {
    await rename(best.path, mine).catch((error: NodeJS.ErrnoException) => {
      // another process took it first: it is theirs now
      if (error.code !== "ENOENT") throw error;
    });
  } else if (best !== undefined) {
    rest.push(best);
  }
  for (const other of rest) await rm(other.path, { force: true });
}
