import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { listDirectory, walkTree } from "../src/unpack/tree-walk.js";

describe("walkTree", () => {
  let work: string;
  let root: string;
  let outside: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "locald-walk-"));
    root = join(work, "root");
    outside = join(work, "outside");
    await mkdir(join(outside, "secret-dir"), { recursive: true });
    await writeFile(join(outside, "secret-dir", "secret"), "x");
    await mkdir(join(root, "a", "b"), { recursive: true });
    await writeFile(join(root, "a", "b", "file"), "y");
    await symlink(outside, join(root, "out"));
    await symlink("../../..", join(root, "a", "b", "up"));
    await symlink(".", join(root, "a", "self"));
    await symlink("..", join(root, "a", "parent"));
    await symlink("loop2", join(root, "loop1"));
    await symlink("loop1", join(root, "loop2"));
    await symlink("/proc/self", join(root, "proc-self"));
  });
  after(() => rm(work, { recursive: true, force: true }));

  test("lists every entry once, a symlink as a symlink, never what it points at", () => {
    const entries = [...walkTree(root)].map(({ path, kind }) => `${kind} ${path}`).sort();
    assert.deepEqual(entries, [
      "directory a",
      "directory a/b",
      "file a/b/file",
      "symlink a/b/up",
      "symlink a/parent",
      "symlink a/self",
      "symlink loop1",
      "symlink loop2",
      "symlink out",
      "symlink proc-self",
    ]);
  });

  test("a directory comes before what it holds; host paths are under the root", () => {
    const seen = new Set<string>();
    for (const entry of walkTree(root)) {
      const parent = entry.path.includes("/") ? entry.path.slice(0, entry.path.lastIndexOf("/")) : "";
      assert.ok(parent === "" || seen.has(parent), `${entry.path} after its parent`);
      assert.equal(entry.host, join(root, entry.path));
      seen.add(entry.path);
    }
  });

  test("listDirectory sorts one level by kind", () => {
    const listing = listDirectory(join(root, "a"));
    assert.deepEqual(listing.directories, ["b"]);
    assert.deepEqual(listing.files, []);
    assert.deepEqual([...listing.symlinks].sort(), ["parent", "self"]);
    assert.deepEqual(listing.special, []);
  });
});
