import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";

/**
 * The one way to walk a tree that an image controls (unpacked roots, the unpack cache, their
 * copies). A symlink is an entry like any other and is never entered, whatever it points at, so a
 * link to `/run` or `..` cannot take a walk out of the tree and a loop of links cannot recurse.
 *
 * Never readdir's `recursive` option for such trees: without `withFileTypes` it follows symlinked
 * directories on every Node line, and since Node 22.12 / 23.3 (nodejs/node#55714) the synchronous
 * form with `withFileTypes` does too, while Node 20's did not.
 */

/** The entries of one directory, by what each entry itself is. */
export interface DirectoryListing {
  readonly directories: string[];
  readonly files: string[];
  readonly symlinks: string[];
  /** Fifos, sockets and devices. */
  readonly special: string[];
}

/**
 * Lists `dir` (one level). Types come from the kernel's `d_type`, which describes the entry and
 * not what a link points at; where a filesystem reports none, Node falls back to `lstat`. A
 * directory is confirmed with `lstat` too, so even a `Dirent` that followed a link would not make
 * a walk descend through it.
 */
export function listDirectory(dir: string): DirectoryListing {
  const listing: DirectoryListing = { directories: [], files: [], symlinks: [], special: [] };
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isFile()) listing.files.push(entry.name);
    else if (entry.isSymbolicLink()) listing.symlinks.push(entry.name);
    else if (!entry.isDirectory()) listing.special.push(entry.name);
    else {
      const info = lstatSync(join(dir, entry.name));
      if (info.isDirectory()) listing.directories.push(entry.name);
      else if (info.isSymbolicLink()) listing.symlinks.push(entry.name);
      else listing.special.push(entry.name);
    }
  }
  return listing;
}

export type TreeEntryKind = "directory" | "file" | "symlink" | "special";

export interface TreeEntry {
  /** Relative to the root, `/`-separated. */
  readonly path: string;
  /** The path on the host. */
  readonly host: string;
  readonly kind: TreeEntryKind;
}

/**
 * Every entry under `root` (not the root itself), each directory before what it holds. Iterative,
 * so a deep tree costs no stack; synchronous, for the worker threads and short walks it serves.
 */
export function* walkTree(root: string): Generator<TreeEntry> {
  const pending: Array<{ host: string; path: string }> = [{ host: root, path: "" }];
  for (;;) {
    const next = pending.pop();
    if (next === undefined) return;
    const { directories, files, symlinks, special } = listDirectory(next.host);
    const prefix = next.path === "" ? "" : `${next.path}/`;
    const entry = (name: string, kind: TreeEntryKind): TreeEntry => ({
      path: prefix + name,
      host: join(next.host, name),
      kind,
    });
    for (const name of files) yield entry(name, "file");
    for (const name of symlinks) yield entry(name, "symlink");
    for (const name of special) yield entry(name, "special");
    for (const name of directories) {
      const directory = entry(name, "directory");
      yield directory;
      pending.push({ host: directory.host, path: directory.path });
    }
  }
}
