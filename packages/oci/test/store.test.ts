import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, type TestContext, test } from "node:test";
import { parseDigest } from "../src/digest.js";
import type { Descriptor } from "../src/manifest.js";
import { MediaType } from "../src/media-types.js";
import { REF_NAME_ANNOTATION } from "../src/store/layout.js";
import {
  CREATED_ANNOTATION,
  defaultStoreDir,
  PLATFORM_ANNOTATION,
  SOURCE_DIGEST_ANNOTATION,
  Store,
} from "../src/store/store.js";

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "oci-store-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function newStore(t: TestContext): Promise<Store> {
  return Store.open(join(await tempDir(t), "store"));
}

const LONG_AGO = new Date(Date.now() - 24 * 3600 * 1000);

/** Writes config + one layer + manifest for `seed` and returns the manifest descriptor and blob digests. */
async function writeImage(store: Store, seed: string) {
  const config = await store.layout.writeBytes(
    Buffer.from(
      JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, seed }),
    ),
    MediaType.OciConfig,
  );
  const layer = await store.layout.writeBytes(Buffer.from(`layer ${seed}`), MediaType.OciLayerGzip);
  const manifest = await store.layout.writeBytes(
    Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [layer] }),
    ),
    MediaType.OciManifest,
  );
  return { manifest, blobs: [manifest.digest, config.digest, layer.digest], config, layer };
}

async function age(store: Store, digest: string): Promise<void> {
  await utimes(store.layout.blobPath(parseDigest(digest)), LONG_AGO, LONG_AGO);
}

async function exists(store: Store, digest: string): Promise<boolean> {
  return stat(store.layout.blobPath(parseDigest(digest))).then(
    () => true,
    () => false,
  );
}

function named(descriptor: Descriptor, extra: Record<string, string> = {}): Descriptor {
  return { ...descriptor, annotations: { ...extra } };
}

describe("Store.open", () => {
  test("creates an OCI layout in a new directory", async (t) => {
    const root = join(await tempDir(t), "a", "b", "store");
    const store = await Store.open(root);
    assert.equal(store.root, root);
    assert.equal(store.layout.root, root);
    assert.equal((await stat(root)).mode & 0o777 & 0o077, 0, "the store is private to the user");
    assert.deepEqual((await store.layout.readIndex()).manifests, []);
    assert.deepEqual(await store.list(), []);
    // Opening it again works and sees the same content.
    await store.layout.addManifest((await writeImage(store, "x")).manifest, "x");
    assert.equal((await (await Store.open(root)).list()).length, 1);
  });

  test("defaultStoreDir honours LOCALD_HOME, then XDG_DATA_HOME, then HOME", () => {
    assert.equal(defaultStoreDir({ LOCALD_HOME: "/l", XDG_DATA_HOME: "/x", HOME: "/h" }), "/l/store");
    assert.equal(defaultStoreDir({ XDG_DATA_HOME: "/x", HOME: "/h" }), "/x/locald/store");
    assert.equal(defaultStoreDir({ HOME: "/h" }), "/h/.local/share/locald/store");
    assert.equal(defaultStoreDir({ XDG_DATA_HOME: "", HOME: "/h" }), "/h/.local/share/locald/store");
  });
});

describe("list, find, remove", () => {
  test("images are listed with their annotations, found by name and removed", async (t) => {
    const store = await newStore(t);
    const a = await writeImage(store, "a");
    const b = await writeImage(store, "b");
    await store.layout.addManifest(
      named(a.manifest, {
        [SOURCE_DIGEST_ANNOTATION]: `sha256:${"f".repeat(64)}`,
        [PLATFORM_ANNOTATION]: "linux/amd64",
        [CREATED_ANNOTATION]: "2024-01-01T00:00:00Z",
      }),
      "docker.io/library/a:latest",
    );
    await store.layout.addManifest(named(b.manifest), "127.0.0.1:5000/b:1");
    // An unnamed entry is not an image of the store.
    await store.layout.addManifest((await writeImage(store, "c")).manifest);

    const images = await store.list();
    assert.deepEqual(
      images.map((i) => i.name),
      ["docker.io/library/a:latest", "127.0.0.1:5000/b:1"],
    );
    const found = await store.find("docker.io/library/a:latest");
    assert.ok(found !== undefined);
    assert.equal(found.descriptor.digest, a.manifest.digest);
    assert.equal(found.sourceDigest, `sha256:${"f".repeat(64)}`);
    assert.equal(found.platform, "linux/amd64");
    assert.equal(found.pulledAt, "2024-01-01T00:00:00Z");
    assert.equal(found.descriptor.annotations?.[REF_NAME_ANNOTATION], "docker.io/library/a:latest");
    assert.equal(store.digestOf(found), a.manifest.digest);
    // Asked for a platform, the name answers only with that platform's image (aliases match).
    assert.equal((await store.find("docker.io/library/a:latest", "linux/x86_64"))?.name, found.name);
    assert.equal(await store.find("docker.io/library/a:latest", "linux/arm64"), undefined);
    assert.equal(
      await store.find("docker.io/library/a:latest", { os: "linux", architecture: "arm64" }),
      undefined,
    );

    const other = await store.find("127.0.0.1:5000/b:1");
    assert.equal(other?.sourceDigest, undefined);
    assert.equal(await store.find("nope"), undefined);

    assert.equal(await store.imageSize(a.manifest), a.manifest.size + a.config.size + a.layer.size);

    assert.equal(await store.remove("docker.io/library/a:latest"), true);
    assert.equal(await store.remove("docker.io/library/a:latest"), false);
    assert.deepEqual(
      (await store.list()).map((i) => i.name),
      ["127.0.0.1:5000/b:1"],
    );
  });
});

describe("prune", () => {
  test("deletes unreferenced old blobs and keeps every blob an image references", async (t) => {
    const store = await newStore(t);
    const kept = await writeImage(store, "kept");
    await store.layout.addManifest(kept.manifest, "kept");
    const orphan = await writeImage(store, "orphan");
    for (const d of [...kept.blobs, ...orphan.blobs]) await age(store, d);

    const result = await store.prune();
    assert.equal(result.removed, 3);
    assert.equal(result.bytes, orphan.manifest.size + orphan.config.size + orphan.layer.size);
    for (const d of kept.blobs) assert.ok(await exists(store, d), `referenced ${d} was deleted`);
    for (const d of orphan.blobs) assert.ok(!(await exists(store, d)), `orphan ${d} was kept`);
    assert.deepEqual((await store.prune()).removed, 0, "a second prune has nothing to do");
  });

  test("removing an image makes its blobs prunable", async (t) => {
    const store = await newStore(t);
    const image = await writeImage(store, "x");
    await store.layout.addManifest(image.manifest, "x");
    for (const d of image.blobs) await age(store, d);
    assert.equal((await store.prune()).removed, 0);
    await store.remove("x");
    for (const d of image.blobs) await age(store, d);
    assert.equal((await store.prune()).removed, 3);
    assert.deepEqual(await store.layout.listBlobs(), []);
  });

  test("a lease keeps blobs touched after it started; old unreferenced blobs still go", async (t) => {
    const store = await newStore(t);
    const old = await store.layout.writeBytes(Buffer.from("old unreferenced"), MediaType.OciLayerGzip);
    await age(store, old.digest);

    const release = await store.lease();
    const leases = await readdir(join(store.root, "leases"));
    assert.equal(leases.length, 1);
    assert.ok(leases[0]?.startsWith(`${process.pid}-`));

    // A pull in progress writes a blob that no index entry references yet.
    const fresh = await store.layout.writeBytes(
      Buffer.from("fresh, pull in progress"),
      MediaType.OciLayerGzip,
    );

    const during = await store.prune();
    assert.equal(during.removed, 1);
    assert.equal(during.bytes, old.size);
    assert.ok(!(await exists(store, old.digest)), "the old unreferenced blob is deleted");
    assert.ok(await exists(store, fresh.digest), "the blob touched after the lease started is kept");

    await release();
    assert.deepEqual(await readdir(join(store.root, "leases")), []);
    const after = await store.prune();
    assert.equal(after.removed, 1, "without a lease, the unreferenced blob goes");
    assert.ok(!(await exists(store, fresh.digest)));
  });

  test("an old blob re-touched during a lease (hasBlob) is kept", async (t) => {
    const store = await newStore(t);
    const blob = await store.layout.writeBytes(Buffer.from("already present layer"), MediaType.OciLayerGzip);
    await age(store, blob.digest);
    const release = await store.lease();
    t.after(release);
    assert.equal(await store.layout.hasBlob(blob), true); // the pull finds it present and reuses it
    assert.equal((await store.prune()).removed, 0);
    assert.ok(await exists(store, blob.digest));
  });

  test("a lease left by a dead process is ignored and cleaned up", async (t) => {
    const store = await newStore(t);
    const blob = await store.layout.writeBytes(Buffer.from("orphan"), MediaType.OciLayerGzip);
    const leases = join(store.root, "leases");
    const release = await store.lease();
    await release();
    const deadPid = 2 ** 22 + 12345; // above Linux's pid_max ceiling, so never alive
    await writeFile(join(leases, `${deadPid}-dead.json`), JSON.stringify({ pid: deadPid, started: 0 }));
    assert.equal((await store.prune()).removed, 1);
    assert.ok(!(await exists(store, blob.digest)));
    assert.deepEqual(await readdir(leases), []);
  });

  test("prune removes temp files of dead writers only", async (t) => {
    const store = await newStore(t);
    const tmp = join(store.root, ".tmp");
    await mkdir(tmp, { recursive: true });
    await writeFile(join(tmp, `${2 ** 22 + 1}-abc.tmp`), "dead");
    await writeFile(join(tmp, `${process.pid}-def.tmp`), "alive");
    await store.prune();
    assert.deepEqual(await readdir(tmp), [`${process.pid}-def.tmp`]);
  });

  test("a blob referenced only through an index child is kept", async (t) => {
    const store = await newStore(t);
    const image = await writeImage(store, "child");
    const index = await store.layout.writeBytes(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.OciIndex,
          manifests: [{ ...image.manifest, platform: { os: "linux", architecture: "amd64" } }],
        }),
      ),
      MediaType.OciIndex,
    );
    await store.layout.addManifest(index, "multi");
    for (const d of [...image.blobs, index.digest]) await age(store, d);
    assert.equal((await store.prune()).removed, 0);
    for (const d of image.blobs) assert.ok(await exists(store, d));
    assert.equal(await store.imageSize(index), index.size);
  });
});
