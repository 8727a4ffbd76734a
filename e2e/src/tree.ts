import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, readFile, readlink } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { walkTree } from "@locald/oci";

export type NodeType =
  | "file"
  | "directory"
  | "symlink"
  | "fifo"
  | "character-device"
  | "block-device"
  | "socket";

/** What a filesystem object looks like, as far as an unpacked root filesystem is concerned. */
export interface TreeNode {
  type: NodeType;
  /** Permission bits plus setuid, setgid and sticky (`mode & 0o7777`). */
  mode: number;
  /** Regular files only; 0 for everything else (a directory's size is the filesystem's business). */
  size: number;
  /** Hex sha256 of a regular file's content. */
  sha256?: string;
  /** A symlink's target, verbatim. */
  linkTarget?: string;
  /** `major:minor` of a character or block device. */
  device?: string;
  /** Milliseconds: Node's utimes takes a double, so nanoseconds cannot round-trip exactly. */
  mtimeMs: number;
  uid: number;
  gid: number;
  /**
   * For a file that shares its inode with other paths of the same tree: the first of those paths
   * in sort order, so two trees with the same hardlink structure get the same labels.
   */
  linkGroup?: string;
}

/** Path relative to the root (`etc/passwd`; the root itself is left out) → node, sorted by path. */
export type TreeSnapshot = Map<string, TreeNode>;

function nodeType(info: import("node:fs").BigIntStats): NodeType {
  if (info.isFile()) return "file";
  if (info.isDirectory()) return "directory";
  if (info.isSymbolicLink()) return "symlink";
  if (info.isFIFO()) return "fifo";
  if (info.isCharacterDevice()) return "character-device";
  if (info.isBlockDevice()) return "block-device";
  return "socket";
}

/** Linux `major()`/`minor()` of a device number. */
function deviceNumbers(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

/**
 * Walks `root` without ever following a symlink (lstat only; a symlinked directory is recorded
 * as the symlink it is) and records every object under it. Paths use `/`, relative to `root`.
 */
export async function snapshotTree(root: string): Promise<TreeSnapshot> {
  const found: [string, TreeNode][] = [];
  const inodes = new Map<string, string[]>();
  for (const { path: rel, host: path } of walkTree(root)) {
    const info = await lstat(path, { bigint: true });
    const type = nodeType(info);
    const node: TreeNode = {
      type,
      mode: Number(info.mode & 0o7777n),
      size: type === "file" ? Number(info.size) : 0,
      mtimeMs: Number(info.mtimeNs / 1_000_000n),
      uid: Number(info.uid),
      gid: Number(info.gid),
    };
    if (type === "file") node.sha256 = await sha256File(path);
    if (type === "symlink") node.linkTarget = await readlink(path);
    if (type === "character-device" || type === "block-device") node.device = deviceNumbers(info.rdev);
    if (type !== "directory" && info.nlink > 1n) {
      const key = `${info.dev}:${info.ino}`;
      const paths = inodes.get(key) ?? [];
      paths.push(rel);
      inodes.set(key, paths);
    }
    found.push([rel, node]);
  }
  found.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const snapshot: TreeSnapshot = new Map(found);
  for (const paths of inodes.values()) {
    if (paths.length < 2) continue;
    const label = [...paths].sort()[0] as string;
    for (const path of paths) (snapshot.get(path) as TreeNode).linkGroup = label;
  }
  return snapshot;
}

/**
 * What under `root` gives a secret away, by a walk that never follows links: paths whose name
 * contains one of `names` (marked "(name)") and regular files under 64 MiB whose content contains
 * `content` (marked "(content)"). A file that cannot be read fails the search.
 */
export async function findLeaks(
  root: string,
  { names = [], content }: { names?: readonly string[]; content: string },
): Promise<string[]> {
  const found: string[] = [];
  for (const { path, host, kind } of walkTree(root)) {
    if (names.some((name) => path.includes(name))) found.push(`${host} (name)`);
    if (kind !== "file" || (await lstat(host)).size >= 64 * 1024 * 1024) continue;
    if ((await readFile(host)).includes(content)) found.push(`${host} (content)`);
  }
  return found;
}

/** Only the entries at or under `prefix` (`cnb` keeps `cnb` and `cnb/…`). */
export function subtree(snapshot: TreeSnapshot, prefix: string): TreeSnapshot {
  const clean = prefix.replace(/^\/+|\/+$/g, "");
  const kept: TreeSnapshot = new Map();
  for (const [path, node] of snapshot)
    if (clean === "" || path === clean || path.startsWith(`${clean}/`)) kept.set(path, node);
  return kept;
}

export interface DiffOptions {
  /** Compare modification times: always, never, or for the paths the predicate accepts. */
  mtimes: boolean | ((path: string) => boolean);
  /** Compare uid and gid. */
  ownership: boolean;
  /** Names of the two trees in the messages. Default `["a", "b"]`. */
  labels?: readonly [string, string];
  /** Paths to leave out of the comparison altogether. */
  ignore?: (path: string) => boolean;
  /** Paths whose presence and type are compared, nothing else (e.g. directories a tool makes up). */
  typeOnly?: (path: string) => boolean;
}

const octal = (mode: number) => mode.toString(8).padStart(4, "0");

/**
 * Every way `b` differs from `a`, one human-readable line each (`/etc/x: mode 0644 (ours) vs 0755
 * (umoci)`); empty when the trees match.
 */
export function diffTrees(a: TreeSnapshot, b: TreeSnapshot, options: DiffOptions): string[] {
  const [la, lb] = options.labels ?? ["a", "b"];
  const compareMtime =
    typeof options.mtimes === "function" ? options.mtimes : () => options.mtimes as boolean;
  const differences: string[] = [];
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort();
  for (const path of paths) {
    if (options.ignore?.(path)) continue;
    const x = a.get(path);
    const y = b.get(path);
    const shown = `/${path}`;
    if (x === undefined || y === undefined) {
      const present = (x ?? y) as TreeNode;
      differences.push(`${shown}: only in ${x === undefined ? lb : la} (${present.type})`);
      continue;
    }
    if (x.type !== y.type) {
      differences.push(`${shown}: ${x.type} (${la}) vs ${y.type} (${lb})`);
      continue;
    }
    if (options.typeOnly?.(path)) continue;
    const field = (name: string, vx: unknown, vy: unknown, show: (v: never) => string = String) => {
      if (vx !== vy)
        differences.push(`${shown}: ${name} ${show(vx as never)} (${la}) vs ${show(vy as never)} (${lb})`);
    };
    // A symlink's own mode is fixed by Linux (0777) and means nothing.
    if (x.type !== "symlink") field("mode", x.mode, y.mode, octal);
    field("size", x.size, y.size);
    field("sha256", x.sha256, y.sha256);
    field("link target", x.linkTarget, y.linkTarget);
    field("device", x.device, y.device);
    field("hardlink group", x.linkGroup ?? "(none)", y.linkGroup ?? "(none)");
    if (compareMtime(path)) field("mtime", x.mtimeMs, y.mtimeMs, (ms: number) => new Date(ms).toISOString());
    if (options.ownership) {
      field("uid", x.uid, y.uid);
      field("gid", x.gid, y.gid);
    }
  }
  return differences;
}

/** The snapshot as indented text, for a failure message a human can read. */
export function formatTree(snapshot: TreeSnapshot): string {
  const lines: string[] = [];
  for (const [path, node] of snapshot) {
    const detail =
      node.type === "symlink"
        ? `-> ${node.linkTarget}`
        : node.type === "file"
          ? `${node.size}B ${node.sha256?.slice(0, 12)}${node.linkGroup ? ` link=${node.linkGroup}` : ""}`
          : (node.device ?? "");
    lines.push(
      `${octal(node.mode)} ${node.uid}:${node.gid} ${new Date(node.mtimeMs).toISOString()} ${node.type.padEnd(9)} /${path} ${detail}`,
    );
  }
  return lines.join("\n");
}
