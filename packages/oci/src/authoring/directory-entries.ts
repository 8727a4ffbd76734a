import { lstat, readFile, readlink } from "node:fs/promises";
import { walkTree } from "../unpack/index.js";
import type { LayerEntry } from "./layer-entry.js";

/**
 * The files, directories and symlinks under `root` as layer entries below `prefix`, sorted by
 * path (so the same tree gives the same layer), with their permission bits and the given owner.
 * Symlinks are kept as links, never followed; sockets and devices are left out.
 */
export async function directoryEntries(
  root: string,
  prefix: string,
  owner: { uid: number; gid: number } = { uid: 0, gid: 0 },
): Promise<LayerEntry[]> {
  const base = prefix.replace(/\/+$/, "");
  const found = [...walkTree(root)].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const entries: LayerEntry[] = [];
  for (const { path, host, kind } of found) {
    const name = base === "" ? path : `${base}/${path}`;
    if (kind === "directory") {
      const mode = (await lstat(host)).mode & 0o7777;
      entries.push({ path: `${name}/`, type: "directory", mode, ...owner });
    } else if (kind === "symlink") {
      entries.push({ path: name, type: "symlink", linkname: await readlink(host), ...owner });
    } else if (kind === "file") {
      const mode = (await lstat(host)).mode & 0o7777;
      entries.push({ path: name, type: "file", content: await readFile(host), mode, ...owner });
    }
  }
  return entries;
}
