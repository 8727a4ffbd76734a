/**
 * The unpack facade against a real registry: `pull(ref, { to: directory(dir, { paths }) })`, the
 * ChainID cache (a second unpack is a copy, counted by the registry's blob requests), cleanup of
 * the target after a failure, and the overlap of downloading with applying.
 */
import assert from "node:assert/strict";
import { appendFile, lstat, mkdir, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  defaultRootfsCacheDir,
  digestOf,
  directory,
  MediaType,
  OciLayout,
  pull,
  push,
  Store,
  type UnpackEvent,
  unpackImage,
} from "@locald/oci";
import {
  makeTempDir,
  pseudoRandomBytes,
  removeDir,
  startRegistry,
  type TestRegistry,
  writeImage,
} from "../src/index.js";

describe("unpack through the library facade", () => {
  let registry: TestRegistry;
  let work: string;
  let ref: string;
  let corrupt: string;
  before(async () => {
    registry = await startRegistry({ flavour: "anonymous" });
    work = await makeTempDir("locald-unpack-facade-");
    const layout = await OciLayout.open(join(work, "layout"), { create: true });
    const image = await writeImage(layout, {
      layers: [
        [
          { path: "cnb/", type: "directory" },
          { path: "cnb/lifecycle/launcher", content: "#!/bin/sh\n", mode: 0o755 },
          { path: "etc/os-release", content: "ID=test\n" },
        ],
        [{ path: "cnb/buildpacks/big.bin", content: pseudoRandomBytes(2 * 1024 * 1024, 3) }],
        [{ path: "cnb/lifecycle/.wh.launcher" }, { path: "cnb/lifecycle/lifecycle", content: "v2" }],
      ],
    });
    await layout.addManifest(image.descriptor, "app");
    ref = `${registry.host}/facade/app:1`;
    await push({ kind: "layout", dir: layout.root, name: "app" }, ref);

    // The config lies about the last DiffID: the unpack must fail and clean up after itself.
    const honest = await writeImage(layout, {
      layers: [[{ path: "a", content: "1" }], [{ path: "b", content: "2" }]],
    });
    const first = honest.layers[0]?.diffId as string;
    const config = Buffer.from(
      JSON.stringify({ ...honest.config, rootfs: { type: "layers", diff_ids: [first, first] } }),
    );
    const configDescriptor = {
      mediaType: MediaType.OciConfig,
      digest: digestOf(config),
      size: config.length,
    };
    await layout.writeBlob(configDescriptor, [config]);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: configDescriptor,
        layers: honest.layers.map((l) => l.descriptor),
      }),
    );
    const manifestDescriptor = {
      mediaType: MediaType.OciManifest,
      digest: digestOf(manifest),
      size: manifest.length,
    };
    await layout.writeBlob(manifestDescriptor, [manifest]);
    await layout.addManifest(manifestDescriptor, "bad");
    corrupt = `${registry.host}/facade/bad:1`;
    await push({ kind: "layout", dir: layout.root, name: "bad" }, corrupt);
  });
  after(async () => {
    await registry.stop();
    await removeDir(work);
  });

  test("pull → directory() writes the root; a second unpack copies it from the cache", async () => {
    const home = join(work, "home-1");
    const store = await Store.open(join(home, "store"));
    const cacheDir = join(home, "cache", "rootfs");
    const events: UnpackEvent[] = [];
    const first = await unpackImage(ref, join(work, "root-1"), {
      store,
      cacheDir,
      onEvent: (e) => events.push(e),
    });
    assert.equal(first.cached, false);
    assert.equal(await readFile(join(work, "root-1/cnb/lifecycle/lifecycle"), "utf8"), "v2");
    await assert.rejects(lstat(join(work, "root-1/cnb/lifecycle/launcher")), { code: "ENOENT" });
    assert.equal((await lstat(join(work, "root-1"))).mode & 0o777, 0o700, "the target is private");
    const applied = events
      .filter((e) => e.type === "unpack-layer")
      .map((e) => (e as { index: number }).index);
    assert.deepEqual(applied, [0, 1, 2], "layers applied in order");

    const again: UnpackEvent[] = [];
    const second = await unpackImage(ref, join(work, "root-2"), {
      store,
      cacheDir,
      onEvent: (e) => again.push(e),
    });
    assert.equal(second.cached, true);
    assert.equal(second.upToDate, true, "the image was not downloaded again");
    assert.equal(second.report.entries, first.report.entries);
    assert.deepEqual(
      again.filter((e) => e.type === "unpack-layer" || e.type === "blob-start"),
      [],
      "no layer fetched or extracted for the second unpack",
    );
    assert.equal(await readFile(join(work, "root-2/cnb/lifecycle/lifecycle"), "utf8"), "v2");
    assert.equal((await readdir(cacheDir)).length, 2, "one cached root and its marker");
  });

  test("an edit in place in the first directory (which shares inodes with the cache) is never served", async () => {
    const home = join(work, "home-4");
    const store = await Store.open(join(home, "store"));
    const cacheDir = join(home, "cache", "rootfs");
    await unpackImage(ref, join(work, "edit-1"), { store, cacheDir });
    await appendFile(join(work, "edit-1/cnb/lifecycle/lifecycle"), " tampered");
    const again = await unpackImage(ref, join(work, "edit-2"), { store, cacheDir });
    assert.equal(again.cached, false, "the stale cache entry was dropped and the image extracted again");
    assert.equal(await readFile(join(work, "edit-2/cnb/lifecycle/lifecycle"), "utf8"), "v2");
    const third = await unpackImage(ref, join(work, "edit-3"), { store, cacheDir });
    assert.equal(third.cached, true, "and cached afresh");
    assert.equal(await readFile(join(work, "edit-3/cnb/lifecycle/lifecycle"), "utf8"), "v2");
    await rm(join(work, "edit-2"), { recursive: true });
    const fourth = await unpackImage(ref, join(work, "edit-4"), { store, cacheDir });
    assert.equal(fourth.cached, true, "deleting a directory made from the cache leaves the cache valid");
  });

  test("a copy from the cache keeps hardlinks across directories, setuid, symlinks and mtimes, and is a copy", async () => {
    const layout = await OciLayout.open(join(work, "layout"));
    const when = new Date("2001-02-03T04:05:06Z");
    const image = await writeImage(layout, {
      layers: [
        [
          { path: "z/orig", content: "data", mode: 0o4755, mtime: when },
          { path: "a/alias", type: "link", linkname: "z/orig" },
          { path: "a/link", type: "symlink", linkname: "../z/orig", mtime: when },
        ],
      ],
    });
    await layout.addManifest(image.descriptor, "links");
    const linksRef = `${registry.host}/facade/links:1`;
    await push({ kind: "layout", dir: layout.root, name: "links" }, linksRef);
    const home = join(work, "home-links");
    const store = await Store.open(join(home, "store"));
    const cacheDir = join(home, "cache", "rootfs");
    await unpackImage(linksRef, join(work, "links-1"), { store, cacheDir });
    const second = await unpackImage(linksRef, join(work, "links-2"), { store, cacheDir });
    assert.equal(second.cached, true);
    const root = join(work, "links-2");
    const orig = await lstat(join(root, "z/orig"));
    const alias = await lstat(join(root, "a/alias"));
    assert.equal(alias.ino, orig.ino, "the image's hardlink is a hardlink in the copy");
    assert.equal(orig.nlink, 2, "and shares nothing with the cache or the first directory");
    assert.equal(orig.mode & 0o7777, 0o4755);
    assert.equal(orig.mtimeMs, when.getTime());
    assert.equal(await readlink(join(root, "a/link")), "../z/orig");
    assert.equal((await lstat(join(root, "a/link"))).mtimeMs, when.getTime());

    await appendFile(join(root, "z/orig"), " edited");
    const third = await unpackImage(linksRef, join(work, "links-3"), { store, cacheDir });
    assert.equal(third.cached, true, "an edit in a copy does not touch the cache");
    assert.equal(await readFile(join(work, "links-3/a/alias"), "utf8"), "data");
  });

  test("pull(ref, { to: directory(dir, { paths: ['/cnb'] }) }) keeps only /cnb", async () => {
    const home = join(work, "home-2");
    const target = join(work, "cnb-only");
    const result = await pull(ref, {
      to: directory(target, {
        paths: ["/cnb"],
        store: await Store.open(join(home, "store")),
        cacheDir: join(home, "cache"),
      }),
    });
    assert.match(result.digest, /^sha256:/);
    assert.deepEqual((await readdir(target)).sort(), ["cnb"]);
    assert.equal((await readFile(join(target, "cnb/buildpacks/big.bin"))).length, 2 * 1024 * 1024);
  });

  test("a DiffID mismatch fails with a typed error, and the target and cache are left clean", async () => {
    const home = join(work, "home-3");
    const store = await Store.open(join(home, "store"));
    const cacheDir = join(home, "cache", "rootfs");
    const target = join(work, "root-bad");
    await assert.rejects(unpackImage(corrupt, target, { store, cacheDir }), { code: "DIGEST_MISMATCH" });
    await assert.rejects(lstat(target), { code: "ENOENT" }, "the target we created is gone again");
    assert.deepEqual(await readdir(cacheDir).catch(() => []), [], "no scratch left in the cache");

    // An empty directory the user made stays, empty.
    const own = join(work, "root-own");
    await mkdir(own);
    await assert.rejects(unpackImage(corrupt, own, { store, cacheDir }), { code: "DIGEST_MISMATCH" });
    assert.deepEqual(await readdir(own), []);
  });

  test("a non-empty target is refused before anything is downloaded", async () => {
    const target = join(work, "full");
    await mkdir(target);
    await writeFile(join(target, "mine"), "precious");
    await assert.rejects(unpackImage(ref, target, { cacheDir: false }), { code: "UNPACK" });
    assert.equal(await readFile(join(target, "mine"), "utf8"), "precious");
  });

  test("the default cache lives under LOCALD_HOME", () => {
    assert.equal(defaultRootfsCacheDir({ LOCALD_HOME: "/x" }), "/x/cache/rootfs");
  });
});
