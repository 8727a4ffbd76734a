import assert from "node:assert/strict";
import { lstat, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, type TestContext, test } from "node:test";
import { gzipSync } from "node:zlib";
import { digestOf } from "../src/digest.js";
import { ArchiveEnd } from "../src/unpack/archive.js";
import { applyLayers, chainId } from "../src/unpack/index.js";
import { BLOCK, DEFAULT_MTIME, dir, END_MARKER, entry, file, hardlink, symlink, tar } from "./tar-craft.js";

async function tempDir(t: TestContext): Promise<string> {
  const path = await mkdtemp(join(tmpdir(), "oci-unpack-"));
  t.after(() => rm(path, { recursive: true, force: true }));
  return path;
}

/** What ArchiveEnd lets through, fed in chunks of `chunk` bytes to exercise block boundaries. */
async function passed(archive: Buffer, chunk: number): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < archive.length; i += chunk) pieces.push(archive.subarray(i, i + chunk));
  const out: Buffer[] = [];
  await pipeline(Readable.from(pieces), new ArchiveEnd(), async (source: AsyncIterable<Buffer>) => {
    for await (const piece of source) out.push(piece);
  });
  return Buffer.concat(out);
}

async function layerFile(t: TestContext, archive: Buffer, gzip = true) {
  const blob = gzip ? gzipSync(archive) : archive;
  const path = join(await tempDir(t), "layer");
  await writeFile(path, blob);
  return {
    path,
    mediaType: gzip
      ? "application/vnd.oci.image.layer.v1.tar+gzip"
      : "application/vnd.oci.image.layer.v1.tar",
    digest: digestOf(blob),
    diffId: digestOf(archive),
  };
}

describe("ArchiveEnd", () => {
  // Data made of zero blocks must not be taken for the end marker, whatever the chunking.
  const zeros = Buffer.alloc(3 * BLOCK);
  const body = Buffer.concat([
    entry(file("zeros", zeros)),
    entry(file("big", Buffer.alloc(10), { pax: { size: String(2 * BLOCK) } })).subarray(0, -BLOCK),
    Buffer.alloc(2 * BLOCK),
    entry({ name: "long", type: "file", content: "x", gnuLongName: `${"d/".repeat(80)}long` }),
    entry(file("after", "still inside")),
  ]);

  for (const chunk of [1, 7, 512, 513, 4096, 1 << 20]) {
    test(`passes a whole archive and stops at its end marker (chunks of ${chunk})`, async () => {
      const archive = tar([body], {
        trailer: Buffer.concat([entry(file("smuggled", "x")), Buffer.alloc(100, 1)]),
      });
      const out = await passed(archive, chunk);
      assert.equal(out.length, body.length + END_MARKER.length);
      assert.ok(out.subarray(0, body.length).equals(body));
    });
  }
});

describe("applyLayers", () => {
  test("a PAX size and zero-filled data are applied in full; entries after the marker are not", async (t) => {
    const root = join(await tempDir(t), "root");
    const archive = tar(
      [file("a/zeros", Buffer.alloc(5 * BLOCK)), dir("a/b/"), symlink("a/l", "b"), file("a/l/x", "through")],
      { trailer: entry(file("after-end", "no")) },
    );
    const report = await applyLayers(root, [await layerFile(t, archive)]);
    assert.equal((await lstat(join(root, "a/zeros"))).size, 5 * BLOCK);
    assert.equal(await readFile(join(root, "a/b/x"), "utf8"), "through");
    await assert.rejects(lstat(join(root, "after-end")), { code: "ENOENT" });
    assert.equal(report.entries, 4);
    assert.equal(report.bytes, archive.length);
  });

  test("whiteouts and opaque markers only hide lower layers", async (t) => {
    const root = join(await tempDir(t), "root");
    const lower = tar([file("d/old", "1"), file("d/sub/old", "2"), file("keep", "3"), file("gone", "4")]);
    const upper = tar([
      file("d/sub/new", "5"),
      file("d/.wh..wh..opq"),
      file(".wh.gone"),
      file("fresh", "6"),
      file(".wh.fresh"),
      hardlink("keep-link", "keep"),
    ]);
    await applyLayers(root, [await layerFile(t, lower), await layerFile(t, upper, false)]);
    await assert.rejects(lstat(join(root, "d/old")), { code: "ENOENT" });
    await assert.rejects(lstat(join(root, "d/sub/old")), { code: "ENOENT" });
    assert.equal(await readFile(join(root, "d/sub/new"), "utf8"), "5");
    await assert.rejects(lstat(join(root, "gone")), { code: "ENOENT" });
    assert.equal(await readFile(join(root, "fresh"), "utf8"), "6", "a same-layer whiteout hides nothing");
    assert.equal((await lstat(join(root, "keep-link"))).ino, (await lstat(join(root, "keep"))).ino);
  });

  test("--path keeps only the subtree, with its whiteouts", async (t) => {
    const root = join(await tempDir(t), "root");
    const lower = tar([file("cnb/lifecycle/a", "1"), file("cnb/order.toml", "2"), file("etc/x", "3")]);
    const upper = tar([file("cnb/lifecycle/.wh.a"), file("cnb/lifecycle/b", "4"), file("etc/y", "5")]);
    const report = await applyLayers(root, [await layerFile(t, lower), await layerFile(t, upper)], {
      paths: ["/cnb"],
    });
    assert.equal(await readFile(join(root, "cnb/order.toml"), "utf8"), "2");
    assert.equal(await readFile(join(root, "cnb/lifecycle/b"), "utf8"), "4");
    await assert.rejects(lstat(join(root, "cnb/lifecycle/a")), { code: "ENOENT" });
    await assert.rejects(lstat(join(root, "etc")), { code: "ENOENT" });
    assert.equal(report.layers, 2);
  });

  test("a rootless unpack loosens modes that lock the owner out, then restores them", async (t) => {
    const root = join(await tempDir(t), "root");
    const archive = tar([
      dir("locked/", { mode: 0o000 }),
      file("locked/inside", "x"),
      file("shadow", "s", { mode: 0 }),
    ]);
    const report = await applyLayers(root, [await layerFile(t, archive)], { rootless: true });
    assert.deepEqual(
      report.loosenedModes.map((m) => m.path).sort(),
      ["locked", "shadow"],
      "both were loosened while unpacking",
    );
    assert.equal((await lstat(join(root, "shadow"))).mode & 0o7777, 0);
    assert.equal((await lstat(join(root, "locked"))).mode & 0o7777, 0);
    assert.ok(report.ownershipSkipped);
  });
});

describe("applyLayers: entries that meet files still being written (same layer)", () => {
  // Files go to writer threads; whatever follows them in the layer must see them as if they
  // had been written at once. Many filler files keep the writers busy when the entry comes.
  const filler = (prefix: string) =>
    Array.from({ length: 300 }, (_, i) => file(`${prefix}/f${i}`, Buffer.alloc(2000 + i, i)));

  test("a directory, a file again, a hardlink and a symlink over files of the same layer", async (t) => {
    const root = join(await tempDir(t), "root");
    const big = Buffer.alloc(3 * 1024 * 1024 + 7, 9);
    // Each conflicting entry comes right after the file it meets, behind a queue of filler.
    const archive = tar([
      ...filler("a"),
      file("x", "first"),
      file("x", "second"),
      ...filler("b"),
      file("becomes-dir", "file"),
      dir("becomes-dir/"),
      file("becomes-dir/inside", "in"),
      ...filler("c"),
      file("target", "linked"),
      hardlink("link", "target"),
      ...filler("d"),
      file("big", big),
      hardlink("big-link", "big"),
      symlink("a/f299", "../x"),
    ]);
    const report = await applyLayers(root, [await layerFile(t, archive)]);
    assert.equal(await readFile(join(root, "x"), "utf8"), "second", "the later file wins");
    assert.equal(await readFile(join(root, "becomes-dir/inside"), "utf8"), "in");
    assert.ok((await lstat(join(root, "becomes-dir"))).isDirectory());
    assert.equal((await lstat(join(root, "link"))).ino, (await lstat(join(root, "target"))).ino);
    assert.equal(await readFile(join(root, "link"), "utf8"), "linked");
    assert.deepEqual(await readFile(join(root, "big-link")), big, "a file written in pieces is whole");
    assert.equal(await readFile(join(root, "a/f299"), "utf8"), "second", "a symlink replaced the file");
    assert.deepEqual(await readFile(join(root, "d/f299")), Buffer.alloc(2299, 299 % 256));
    assert.equal(report.entries, 4 * 300 + 10);
  });

  test("a directory of files being written, replaced by a symlink, then written through", async (t) => {
    const root = join(await tempDir(t), "root");
    const archive = tar([
      ...filler("d"),
      dir("elsewhere/"),
      symlink("d", "elsewhere"),
      file("d/through", "inside elsewhere"),
    ]);
    await applyLayers(root, [await layerFile(t, archive)]);
    assert.ok((await lstat(join(root, "d"))).isSymbolicLink());
    assert.equal(await readFile(join(root, "elsewhere/through"), "utf8"), "inside elsewhere");
    await assert.rejects(lstat(join(root, "elsewhere/f0")), { code: "ENOENT" });
  });

  test("a file used as a directory by a later entry is refused, as in a serial unpack", async (t) => {
    const root = join(await tempDir(t), "root");
    const archive = tar([...filler("a"), file("plain", "x"), file("plain/child", "y")]);
    await assert.rejects(applyLayers(root, [await layerFile(t, archive)]), {
      code: "INVALID_LAYER",
      message: /needs \/plain to be a directory/,
    });
  });

  test("modes, owners and mtimes are set by the writers", async (t) => {
    const root = join(await tempDir(t), "root");
    const archive = tar([
      ...filler("a"),
      file("setuid", "s", { mode: 0o4755 }),
      file("group-write", "g", { mode: 0o664 }),
      file("owned", "o", { uid: 1234, gid: 5678 }),
    ]);
    await applyLayers(root, [await layerFile(t, archive)]);
    const setuid = await lstat(join(root, "setuid"));
    assert.equal(setuid.mode & 0o7777, 0o4755);
    assert.equal((await lstat(join(root, "group-write"))).mode & 0o7777, 0o664);
    assert.equal(setuid.mtimeMs, DEFAULT_MTIME * 1000);
    if (process.getuid?.() === 0) {
      const owned = await lstat(join(root, "owned"));
      assert.deepEqual([owned.uid, owned.gid], [1234, 5678]);
    }
  });
});

describe("chainId", () => {
  test("follows the image-spec definition", () => {
    const a = digestOf(Buffer.from("a"));
    const b = digestOf(Buffer.from("b"));
    assert.equal(chainId([a]), a);
    assert.equal(chainId([a, b]), digestOf(Buffer.from(`${a} ${b}`)));
  });
});
