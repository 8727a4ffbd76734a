import { accessSync, constants, statfsSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { DiskFullError, errnoReason } from "./errors.js";

/** An errno error, or one caused by it, that says the disk (or the user's quota) is full. */
export function isDiskFull(error: unknown): boolean {
  for (let e = error; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT" || /no space left on device/i.test(e.message)) return true;
  }
  return false;
}

/** Bytes free to this user on the filesystem that holds `path` (or its nearest parent that exists). */
export function freeBytes(path: string): number | undefined {
  for (let dir = path; ; dir = dirname(dir)) {
    try {
      const info = statfsSync(dir);
      return info.bavail * info.bsize;
    } catch {
      if (dirname(dir) === dir) return undefined;
    }
  }
}

const mebibytes = (bytes: number) =>
  bytes < 1024 * 1024 ? `${bytes} bytes` : `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;

/**
 * `error` said as a full disk under `dir` — how much is free there and, when known, how much the
 * work needed — or undefined when it is some other failure. Callers remove their partial files.
 */
export function diskFullError(
  error: unknown,
  dir: string,
  what: string,
  needed?: number,
): DiskFullError | undefined {
  if (error instanceof DiskFullError) return error;
  if (!isDiskFull(error)) return undefined;
  const free = freeBytes(dir);
  const amounts = [
    free === undefined ? undefined : `${mebibytes(free)} free`,
    needed === undefined ? undefined : `${mebibytes(needed)} needed`,
  ].filter((part) => part !== undefined);
  return new DiskFullError(
    `${what}: the disk that holds ${dir} is full${amounts.length > 0 ? ` (${amounts.join(", ")})` : ""}. Nothing partial was kept.`,
    {
      hint: "Free some space there (locald image prune removes unused images and blobs), or point LOCALD_HOME at a larger disk, and try again.",
      cause: error,
    },
  );
}

/**
 * Why `path` could not be created, in words: `mkdir -p` on a read-only disk or under a file
 * reports ENOENT or EEXIST, which say nothing useful, so the nearest part that exists is asked.
 */
export function creationFailure(path: string, error: unknown): string {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const info = statSync(dir, { throwIfNoEntry: false });
    if (info !== undefined) {
      if (!info.isDirectory()) return `${dir} is a file, not a directory`;
      try {
        accessSync(dir, constants.W_OK);
      } catch (denied) {
        const code = (denied as NodeJS.ErrnoException).code;
        if (code === "EROFS") return `${dir} is on a read-only filesystem`;
        if (code === "EACCES" || code === "EPERM") return `you may not write in ${dir}`;
      }
      break;
    }
    if (dirname(dir) === dir) break;
  }
  const code = (error as NodeJS.ErrnoException).code;
  return errnoReason(code === "EEXIST" ? "ENOTDIR" : code) ?? (error as Error).message;
}
