/**
 * One entry of a layer being authored: what goes into its tar, nothing more. Paths are relative
 * to the image root (`cnb/order.toml`); directories may end in `/`.
 */
export interface LayerEntry {
  readonly path: string;
  readonly type: "file" | "directory" | "symlink";
  /** A file's bytes. */
  readonly content?: Uint8Array;
  /** Permission bits (default 0755 for directories, 0644 for files). */
  readonly mode?: number;
  /** A symlink's target. */
  readonly linkname?: string;
  readonly uid?: number;
  readonly gid?: number;
  /** Default: `NORMALIZED_TIME`. */
  readonly mtime?: Date;
}

/**
 * The time authored layers carry unless told otherwise, so that the same inputs give the same
 * digests on every machine: 1980-01-01T00:00:01Z, the date pack and the lifecycle normalise to
 * (the earliest a zip-era tool round-trips).
 */
export const NORMALIZED_TIME = new Date("1980-01-01T00:00:01Z");

/** A directory entry owned by `uid:gid` (default root). */
export function directoryEntry(
  path: string,
  options: { mode?: number; uid?: number; gid?: number } = {},
): LayerEntry {
  return { path, type: "directory", ...options };
}

/** A file entry with `content` (a string is UTF-8). */
export function fileEntry(
  path: string,
  content: string | Uint8Array,
  options: { mode?: number; uid?: number; gid?: number } = {},
): LayerEntry {
  return {
    path,
    type: "file",
    content: typeof content === "string" ? Buffer.from(content) : content,
    ...options,
  };
}

/** The directories leading to `path` (`a/`, `a/b/` for `a/b/c`), parents first. */
export function parentDirectories(path: string): string[] {
  const parts = path.replace(/\/+$/, "").split("/").slice(0, -1);
  return parts.map((_, index) => `${parts.slice(0, index + 1).join("/")}/`);
}
