import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  realpathSync,
  rmSync,
  type Stats,
  symlinkSync,
  unlinkSync,
} from "node:fs";
import { join } from "node:path";
import { InvalidLayerError, UnsafeLayerError } from "../errors.js";
import type { FileJob } from "./file-writers.js";
import { listDirectory } from "./tree-walk.js";

/**
 * The one place where the unpacker touches the filesystem. Every path is resolved component by
 * component against what is on disk now (no cache that a later entry could poison), symlinks are
 * followed only as if the root were `/`, and the final component is never followed: metadata is
 * set through file descriptors or l* calls. Calls are synchronous on purpose: they run on the
 * unpack worker thread, where a libuv round trip per syscall would cost more than the syscall.
 */

/** Linux's own limit on symlinks followed while resolving one path. */
const MAX_SYMLINK_HOPS = 40;
/** Linux PATH_MAX, including the terminating NUL. */
const PATH_MAX = 4096;
const NAME_MAX = 255;

export type EntryPath = readonly string[];

/**
 * The components of a layer entry name inside the root: leading `/` and `./` dropped, `.`
 * removed, `..` applied lexically. A name that climbs above the root is refused: the archive
 * was made to escape, and no honest tool writes one.
 */
export function entryPath(name: string): EntryPath {
  const parts: string[] = [];
  for (const part of name.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (parts.length === 0)
        throw new UnsafeLayerError(`Layer entry "${printable(name)}" climbs out of the root with "..".`);
      parts.pop();
      continue;
    }
    // The kernel's limits are in bytes: "é" is two.
    if (Buffer.byteLength(part) > NAME_MAX)
      throw new InvalidLayerError(
        `Layer entry "${printable(name).slice(0, 80)}…" has a name component longer than ${NAME_MAX} bytes.`,
      );
    parts.push(part);
  }
  return parts;
}

export function formatEntryPath(path: EntryPath): string {
  return `/${path.join("/")}`;
}

/** Names in error messages come from archives: keep them short and free of control characters. */
export function printable(name: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: replacing control characters is the point
  const clean = name.replace(/[\u0000-\u001f\u007f]/g, "?");
  return clean.length > 200 ? `${clean.slice(0, 200)}…` : clean;
}

function lstatOrUndefined(path: string): Stats | undefined {
  return lstatSync(path, { throwIfNoEntry: false });
}

type Walked =
  | { kind: "found"; host: string; at: string[]; directory: boolean }
  | { kind: "missing" | "loop" | "not-directory" | "too-long"; at: string[] };

/**
 * Walks `components` under `root` as if `root` were `/`, against the disk as it is now: `..`
 * stops at the root, every symlink (the last one too) is followed, an absolute target starting
 * again from the root. Every component but the last must be a directory. `create` makes a
 * missing component (as a directory) instead of stopping; `check` sees each host path first.
 */
function walkInRoot(
  root: string,
  components: readonly string[],
  options: { create?: (host: string) => void; check?: (host: string) => void } = {},
): Walked {
  const pending = [...components].reverse();
  const resolved: string[] = [];
  let directory = true;
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.pop() as string;
    if (part === "" || part === ".") continue;
    if (part === "..") {
      resolved.pop();
      directory = true;
      continue;
    }
    const host = join(root, ...resolved, part);
    options.check?.(host);
    // A symlink's target is not held to the limits an entry name is: past them lstat(2) fails.
    if (Buffer.byteLength(part) > NAME_MAX || Buffer.byteLength(host) >= PATH_MAX)
      return { kind: "too-long", at: [...resolved, part] };
    const info = lstatOrUndefined(host);
    if (info === undefined) {
      if (options.create === undefined) return { kind: "missing", at: [...resolved, part] };
      options.create(host);
      resolved.push(part);
      directory = true;
      continue;
    }
    if (info.isSymbolicLink()) {
      if (++hops > MAX_SYMLINK_HOPS) return { kind: "loop", at: [...resolved, part] };
      const target = readlinkSync(host);
      // An absolute target means the root of the image, never the host's `/`.
      if (target.startsWith("/")) resolved.length = 0;
      for (const next of target.split("/").reverse()) pending.push(next);
      continue;
    }
    directory = info.isDirectory();
    if (!directory && pending.some((next) => next !== "" && next !== "."))
      return { kind: "not-directory", at: [...resolved, part] };
    resolved.push(part);
  }
  return { kind: "found", host: join(root, ...resolved), at: resolved, directory };
}

/**
 * Thrown, before anything is changed, by an operation that would touch a file still being
 * written by a writer thread, or remove a directory while any is: the caller waits for the
 * writers to drain and applies the same entry again.
 */
export class WritesInFlight extends Error {
  constructor() {
    super("files of this layer are still being written");
  }
}

export interface Ownership {
  uid: number;
  gid: number;
}

export interface EntryTimes {
  mtime: Date;
}

/** A directory whose mode and mtime are applied at the end: children change mtimes, and a
 * read-only directory must stay writable while its layer is still being applied. */
interface DeferredDirectory {
  mode: number;
  mtime: Date;
  /** Where it was when last written, and `RootFs.generation` then. */
  host: string;
  generation: number;
}

export class RootFs {
  private readonly deferred = new Map<string, DeferredDirectory>();
  private readonly fresh: boolean;
  /**
   * In a root that started empty, every host path this unpack created (removed ones too): a
   * path not in it is free without asking the disk. Undefined for a root that had contents.
   */
  private readonly placed: Set<string> | undefined;
  /** Directories resolved since the last removal of a directory or symlink; see `resolveDirectory`. */
  private readonly resolved = new Map<string, string>();
  /** Counts those removals: an answer from an older generation may be stale. */
  private generation = 0;
  /** Host paths of files handed to writer threads and not yet written (see `fileWritten`). */
  private readonly inFlight = new Set<string>();
  private readonly umask = process.umask();
  private readonly uid = process.geteuid?.() ?? -1;
  private readonly gid = process.getegid?.() ?? -1;
  /**
   * Without root, a file the owner cannot read (or a directory it cannot enter) could not be
   * copied out of the unpack cache, so such modes are loosened on disk and listed here to be
   * restored on the final copy.
   */
  private readonly loosened = new Map<string, number>();

  readonly root: string;

  /**
   * @param root an existing directory; it is never replaced or re-moded.
   * @param owner whether ownership is applied (only root can).
   */
  constructor(
    root: string,
    private readonly owner: boolean,
  ) {
    // The real path, so that a symlink above the root does not defeat the realpath fast path.
    this.root = realpathSync.native(root);
    this.fresh = readdirSync(this.root).length === 0;
    this.placed = this.fresh ? new Set() : undefined;
    if (Buffer.byteLength(this.root) + 2 >= PATH_MAX)
      throw new InvalidLayerError(`The unpack target ${root} is too long.`);
  }

  /**
   * Resolves `path`'s parent directory inside the root, following symlinks as if the root were
   * `/`. Missing directories are created (0755, as docker and umoci do) when `create` is set,
   * else the result is undefined. Returns a host path whose every component is a real directory.
   */
  parentDirectory(path: EntryPath, create: boolean): string | undefined {
    return this.resolveDirectory(path.slice(0, -1), create, path);
  }

  /**
   * Host path of a directory inside the root, symlinks followed inside the root.
   *
   * Answers are kept, but only until a directory or a symlink is removed or replaced
   * (`forgetResolved`). Until then the tree has only gained new names and lost regular files,
   * neither of which can change what an existing directory path resolves to: a kept answer is
   * still what the disk says now. (A cache that outlived such a removal is what let node-tar's
   * CVE-2021-32803 write through a planted symlink; this one does not.) Without it every entry
   * costs a realpath(3): a readlink per path component.
   */
  resolveDirectory(
    components: EntryPath,
    create: boolean,
    forEntry: EntryPath = components,
  ): string | undefined {
    const key = components.join("/");
    const known = this.resolved.get(key);
    if (known !== undefined) return known;
    const host = this.walkDirectory(components, create, forEntry);
    if (host !== undefined) this.resolved.set(key, host);
    return host;
  }

  private forgetResolved(): void {
    this.resolved.clear();
    this.generation++;
  }

  private walkDirectory(components: EntryPath, create: boolean, forEntry: EntryPath): string | undefined {
    const direct = this.realDirectory(components);
    if (direct !== undefined) return direct;
    const walked = walkInRoot(this.root, components, {
      check: (host) => {
        this.checkLength(host, forEntry);
        this.notInFlight(host);
      },
      ...(create
        ? {
            create: (host: string) => {
              this.placed?.add(host);
              mkdirSync(host, { mode: 0o755 });
            },
          }
        : {}),
    });
    if (walked.kind === "loop")
      throw new InvalidLayerError(
        `Layer entry "${formatEntryPath(forEntry)}" goes through more than ${MAX_SYMLINK_HOPS} symlinks.`,
      );
    if (walked.kind === "too-long")
      throw new InvalidLayerError(
        `Layer entry "${printable(formatEntryPath(forEntry))}" leads through symlinks to a name longer than ${NAME_MAX} bytes or a path longer than ${PATH_MAX}.`,
      );
    if (walked.kind === "found" && walked.directory) return walked.host;
    if (!create || walked.kind === "missing") return undefined;
    throw new InvalidLayerError(
      `Layer entry "${formatEntryPath(forEntry)}" needs ${formatEntryPath(walked.at)} to be a directory, but an earlier entry made it a file.`,
    );
  }

  /**
   * The common case in one call: realpath(3) walks the components on disk, and a result equal to
   * the lexical path proves there is no symlink on the way and every component is a directory.
   * Anything else (missing parts, symlinks, files) takes the component-by-component walk.
   */
  private realDirectory(components: EntryPath): string | undefined {
    if (components.some((part) => part === ".." || part === "." || part === "")) return undefined;
    const lexical = components.length === 0 ? this.root : join(this.root, ...components);
    try {
      return realpathSync.native(`${lexical}/`) === lexical ? lexical : undefined;
    } catch {
      return undefined;
    }
  }

  /** Host path of `path` with its parent resolved (and created); the last component is not followed. */
  slot(path: EntryPath): string {
    if (path.length === 0)
      throw new UnsafeLayerError("A layer entry tries to replace the root directory itself.");
    const parent = this.parentDirectory(path, true) as string;
    const host = join(parent, path[path.length - 1] as string);
    this.checkLength(host, path);
    this.notInFlight(host);
    return host;
  }

  /** A file still being written is neither there nor free: wait for it (see WritesInFlight). */
  private notInFlight(host: string): void {
    if (this.inFlight.has(host)) throw new WritesInFlight();
  }

  /** The writer thread closed `host`: it is on disk like any other file now. */
  fileWritten(host: string): void {
    this.inFlight.delete(host);
  }

  private checkLength(host: string, path: EntryPath): void {
    if (Buffer.byteLength(host) >= PATH_MAX)
      throw new InvalidLayerError(
        `Layer entry "${printable(formatEntryPath(path)).slice(0, 80)}…" is longer than the ${PATH_MAX}-byte path limit.`,
      );
  }

  /**
   * Clears the slot for a new non-directory entry: whatever is there (a tree, too) is removed.
   * Only a directory or a symlink can be on the way to another path, so only their removal
   * invalidates resolved directories.
   */
  private clear(host: string, key: string): void {
    if (this.placed !== undefined && !this.placed.has(host)) return;
    const info = lstatOrUndefined(host);
    if (info === undefined) return;
    this.forgetLoosened(host);
    if (info.isDirectory()) {
      // Files being written may be anywhere below it.
      if (this.inFlight.size > 0) throw new WritesInFlight();
      this.forgetResolved();
      this.forgetDeferred(key);
      rmSync(host, { recursive: true, force: true });
      return;
    }
    if (info.isSymbolicLink()) this.forgetResolved();
    unlinkSync(host);
  }

  private forgetDeferred(key: string): void {
    const prefix = `${key}/`;
    for (const deferred of this.deferred.keys())
      if (deferred === key || deferred.startsWith(prefix)) this.deferred.delete(deferred);
  }

  /** `host` and everything below it are going: their loosened modes with them. */
  private forgetLoosened(host: string): void {
    const key = this.inRoot(host);
    const prefix = `${key}/`;
    for (const loose of this.loosened.keys())
      if (loose === key || loose.startsWith(prefix)) this.loosened.delete(loose);
  }

  /** A resolved host path below the root, as a path in the root (`usr/lib/x`). */
  private inRoot(host: string): string {
    if (!host.startsWith(`${this.root}/`)) throw new Error(`${host} is not below ${this.root}`);
    return host.slice(this.root.length + 1);
  }

  /**
   * In a tree that started empty no directory has its setgid bit yet (directory modes are applied
   * at the end), so a new file belongs to this process: chown only when the archive differs.
   */
  private needsChown(owner: Ownership): boolean {
    return this.owner && (!this.fresh || owner.uid !== this.uid || owner.gid !== this.gid);
  }

  private chown(host: string, owner: Ownership): void {
    if (this.needsChown(owner)) lchownSync(host, owner.uid, owner.gid);
  }

  /**
   * Places a new regular file: its parent resolved (and created), its slot cleared. The file is
   * created, written and closed by a writer thread from the returned job; until `fileWritten`
   * its path counts as in flight.
   */
  createFile(path: EntryPath, mode: number, owner: Ownership, times: EntryTimes): FileJob {
    const host = this.slot(path);
    this.clear(host, path.join("/"));
    // Most files can get their final mode from open() itself (one syscall fewer per file):
    // not with setuid/setgid/sticky bits, nor bits the umask would take away.
    const wanted = this.loosen(host, mode & 0o7777, 0o400);
    const direct = (wanted & 0o7000) === 0 && (wanted & this.umask) === 0;
    this.inFlight.add(host);
    this.placed?.add(host);
    return {
      host,
      mode: direct ? wanted : 0o600,
      ...(direct ? {} : { chmod: wanted }),
      ...(this.needsChown(owner) ? { owner: { uid: owner.uid, gid: owner.gid } } : {}),
      mtime: times.mtime.getTime(),
    };
  }

  /**
   * The mode to set now: `needed` owner bits added when rootless, the real mode remembered under
   * the path where `host` is in the root — resolved, so symlinked parents in the entry's name
   * cannot send `restoreModes` or the cache's copies anywhere else later.
   */
  private loosen(host: string, mode: number, needed: number): number {
    const key = this.inRoot(host);
    this.loosened.delete(key);
    if (this.owner || (mode & needed) === needed) return mode;
    this.loosened.set(key, mode);
    return mode | needed;
  }

  /** Modes loosened for a rootless unpack, to restore with `restoreModes` on the final tree. */
  loosenedModes(): Array<{ path: string; mode: number }> {
    return [...this.loosened].map(([key, mode]) => ({ path: key, mode }));
  }

  /** A directory entry: created if missing, replacing a non-directory; metadata updated if present. */
  directory(path: EntryPath, mode: number, owner: Ownership, times: EntryTimes): void {
    if (path.length === 0) return; // The root keeps its own type, mode and owner.
    const host = this.slot(path);
    this.placed?.add(host);
    try {
      mkdirSync(host, { mode: 0o700 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      // A directory that reappears keeps its contents; anything else in the slot gives way.
      const info = lstatSync(host);
      if (!info.isDirectory()) {
        if (info.isSymbolicLink()) this.forgetResolved();
        unlinkSync(host);
        mkdirSync(host, { mode: 0o700 });
      } else if (this.owner) lchownSync(host, owner.uid, owner.gid);
    }
    this.chown(host, owner);
    const key = path.join("/");
    this.resolved.set(key, host);
    this.deferred.set(key, { mode: mode & 0o7777, mtime: times.mtime, host, generation: this.generation });
  }

  symlink(path: EntryPath, target: string, owner: Ownership, times: EntryTimes): void {
    // symlink(2) refuses both (ENOENT, ENAMETOOLONG): the archive is at fault, not the host.
    if (target === "")
      throw new InvalidLayerError(
        `Layer entry "${printable(formatEntryPath(path))}" is a symlink with an empty target.`,
      );
    if (Buffer.byteLength(target) >= PATH_MAX)
      throw new InvalidLayerError(
        `Layer entry "${printable(formatEntryPath(path))}" is a symlink whose target is longer than the ${PATH_MAX}-byte path limit.`,
      );
    const host = this.slot(path);
    // A new name is on the way to no resolved directory: only what clear() removes matters.
    this.clear(host, path.join("/"));
    this.placed?.add(host);
    symlinkSync(target, host);
    this.chown(host, owner);
    lutimesSync(host, times.mtime, times.mtime);
  }

  /** A hardlink to an entry already in the root; link() itself never follows a symlink target. */
  hardlink(path: EntryPath, targetName: string): void {
    const target = entryPath(targetName);
    if (target.length === 0)
      throw new UnsafeLayerError(
        `Layer entry "${formatEntryPath(path)}" is a hardlink to the root directory.`,
      );
    const targetParent = this.parentDirectory(target, false);
    const targetHost =
      targetParent === undefined ? undefined : join(targetParent, target[target.length - 1] as string);
    if (targetHost !== undefined) this.notInFlight(targetHost);
    const info = targetHost === undefined ? undefined : lstatOrUndefined(targetHost);
    if (targetHost === undefined || info === undefined)
      throw new InvalidLayerError(
        `Layer entry "${formatEntryPath(path)}" is a hardlink to "${printable(targetName)}", which is not in the image.`,
      );
    if (info.isDirectory())
      throw new InvalidLayerError(
        `Layer entry "${formatEntryPath(path)}" is a hardlink to the directory "${printable(targetName)}".`,
      );
    const host = this.slot(path);
    if (host === targetHost) return;
    this.clear(host, path.join("/"));
    this.placed?.add(host);
    linkSync(targetHost, host);
  }

  /** Special files are created by programs: Node has no mknod(2). */
  special(path: EntryPath, create: (host: string) => void, owner: Ownership, times: EntryTimes): void {
    const host = this.slot(path);
    this.clear(host, path.join("/"));
    this.placed?.add(host);
    create(host);
    this.chown(host, owner);
    lutimesSync(host, times.mtime, times.mtime);
  }

  /**
   * Removes `path` (a whiteout). Its parent is resolved inside the root and not created; a
   * missing path is fine. The last component is removed, never followed.
   */
  remove(path: EntryPath): void {
    if (path.length === 0) throw new UnsafeLayerError("A whiteout tries to delete the root directory.");
    const parent = this.parentDirectory(path, false);
    if (parent === undefined) return;
    const host = join(parent, path[path.length - 1] as string);
    this.notInFlight(host);
    this.clear(host, path.join("/"));
  }

  /**
   * An opaque directory: everything below `dir` that `keep` does not claim is removed. `keep`
   * answers for paths written by the current layer, whose content must survive.
   */
  makeOpaque(dir: EntryPath, keep: (path: string) => "keep" | "descend" | "remove"): void {
    if (this.inFlight.size > 0) throw new WritesInFlight();
    const host = this.resolveDirectory(dir, false);
    if (host === undefined) return;
    const prune = (hostDir: string, key: string): void => {
      for (const name of readdirSync(hostDir)) {
        const childKey = key === "" ? name : `${key}/${name}`;
        const verdict = keep(childKey);
        if (verdict === "keep") continue;
        const childHost = join(hostDir, name);
        if (verdict === "descend") {
          const info = lstatSync(childHost);
          if (info.isDirectory()) {
            prune(childHost, childKey);
            continue;
          }
        }
        this.clear(childHost, childKey);
      }
    };
    prune(host, dir.join("/"));
  }

  /**
   * Applies the deferred directory modes and mtimes, deepest first so that setting a parent's
   * mtime comes after its children changed. A directory written in the current generation is
   * still where it was (no directory or symlink was removed since, so nothing can have
   * redirected it); any other is re-checked to be a real directory reached through real
   * directories, so a later symlink cannot redirect the chmod.
   */
  finish(): void {
    if (this.inFlight.size > 0) throw new WritesInFlight();
    const keys = [...this.deferred.keys()].sort((a, b) => b.split("/").length - a.split("/").length);
    for (const key of keys) {
      const entry = this.deferred.get(key) as DeferredDirectory;
      const mode = this.loosen(entry.host, entry.mode, 0o700);
      if (entry.generation === this.generation) {
        chmodSync(entry.host, mode);
        lutimesSync(entry.host, entry.mtime, entry.mtime);
        continue;
      }
      const found = realEntry(this.root, key);
      if (found === undefined || !found.info.isDirectory()) {
        this.loosened.delete(this.inRoot(entry.host));
        continue;
      }
      const fd = openSync(found.host, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        fchmodSync(fd, mode);
        futimesSync(fd, entry.mtime, entry.mtime);
      } finally {
        closeSync(fd);
      }
    }
    this.deferred.clear();
  }
}

/**
 * `key` under `root` when every component before the last is a real directory and the last is
 * no symlink: a path nothing can have redirected since it was written.
 */
export function realEntry(root: string, key: string): { host: string; info: Stats } | undefined {
  let host = root;
  const parts = key.split("/");
  for (const [index, part] of parts.entries()) {
    host = join(host, part);
    const info = lstatOrUndefined(host);
    if (info === undefined || info.isSymbolicLink()) return undefined;
    if (index === parts.length - 1) return { host, info };
    if (!info.isDirectory()) return undefined;
  }
  return undefined;
}

/** A directory of a tree copied by `copyDirectories`, to get its metadata once it is filled. */
export interface CopiedDirectory {
  readonly to: string;
  readonly info: Stats;
}

/**
 * Re-creates the directories of a finished tree under `into` (which must not exist, unless
 * `intoExists`) and hands each one's other entries to `entries`, to be hardlinked or copied.
 * Symlinks are entries, never followed. Call `finishDirectories` once the entries are in.
 */
export function copyDirectories(
  root: string,
  into: string,
  entries: (from: string, to: string, key: string, files: string[], others: string[]) => void,
  intoExists = false,
): CopiedDirectory[] {
  const copied: CopiedDirectory[] = [];
  const visit = (from: string, to: string, key: string): void => {
    if (!intoExists || to !== into) mkdirSync(to, { mode: 0o700 });
    copied.push({ to, info: lstatSync(from) });
    const { directories, files, symlinks, special } = listDirectory(from);
    entries(from, to, key, files, [...symlinks, ...special]);
    for (const name of directories)
      visit(join(from, name), join(to, name), key === "" ? name : `${key}/${name}`);
  };
  visit(root, into, "");
  return copied;
}

/** Gives copied directories their originals' owner, mode and times, deepest first. */
export function finishDirectories(copied: readonly CopiedDirectory[], owner: boolean): void {
  for (let i = copied.length - 1; i >= 0; i--) {
    const { to, info } = copied[i] as CopiedDirectory;
    keepMetadata(to, info, owner);
  }
}

/**
 * Gives a copy its original's (`info`, an lstat) owner when `owner`, mode and times, never
 * following a link: chown first, since it clears setuid bits; a symlink has no mode of its own.
 */
export function keepMetadata(path: string, info: Stats, owner: boolean): void {
  if (owner) lchownSync(path, info.uid, info.gid);
  if (!info.isSymbolicLink()) chmodSync(path, info.mode & 0o7777);
  // Seconds as a float keep sub-millisecond times (a Date would cut them to whole ms).
  lutimesSync(path, info.atimeMs / 1000, info.mtimeMs / 1000);
}

/**
 * Puts back modes that a rootless unpack loosened (see `RootFs.loosenedModes`), deepest first so
 * that a directory is closed only after what is inside it.
 */
export function restoreModes(root: string, modes: ReadonlyArray<{ path: string; mode: number }>): void {
  const ordered = [...modes].sort((a, b) => b.path.split("/").length - a.path.split("/").length);
  for (const { path, mode } of ordered) {
    const found = realEntry(root, path);
    // Checked just above to be no symlink; nothing else writes in this tree.
    if (found !== undefined) chmodSync(found.host, mode);
  }
}

/**
 * The host path `path` names inside an unpacked image, every symlink (the last one too) followed
 * as if `root` were `/`; undefined when it does not exist. For reading image files such as
 * `/etc/passwd` on the host without ever leaving the root (CVE-2024-9676).
 */
export function resolveInRoot(root: string, path: string): string | undefined {
  const walked = walkInRoot(root, path.split("/"));
  return walked.kind === "found" ? walked.host : undefined;
}

/**
 * Reads a regular file of an unpacked image (see `resolveInRoot`), at most `limit` bytes;
 * undefined when it is missing or not a regular file. The final open never follows a link.
 */
export function readFileInRoot(root: string, path: string, limit = 4 * 1024 * 1024): Buffer | undefined {
  const host = resolveInRoot(root, path);
  if (host === undefined) return undefined;
  let fd: number;
  try {
    fd = openSync(host, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile() || info.size > limit) return undefined;
    const data = Buffer.alloc(info.size);
    let offset = 0;
    while (offset < data.length) {
      const read = readSync(fd, data, offset, data.length - offset, offset);
      if (read === 0) break;
      offset += read;
    }
    return data.subarray(0, offset);
  } finally {
    closeSync(fd);
  }
}
