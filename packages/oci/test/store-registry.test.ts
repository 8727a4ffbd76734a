import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, type TestContext, test } from "node:test";
import { composeImage } from "../src/authoring/image-composer.js";
import { archiveLayer } from "../src/authoring/layer-archive.js";
import { fileEntry } from "../src/authoring/layer-entry.js";
import { deliverImage } from "../src/facade/deliver.js";
import { pull } from "../src/facade/pull.js";
import { StoreRegistry } from "../src/serve/store-registry.js";
import { Store } from "../src/store/store.js";

async function storeIn(t: TestContext, name: string): Promise<Store> {
  const dir = await mkdtemp(join(tmpdir(), `locald-store-registry-${name}-`));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return Store.open(dir);
}

async function started(t: TestContext, store: Store): Promise<StoreRegistry> {
  const registry = await StoreRegistry.start(store.layout);
  t.after(() => registry.stop());
  return registry;
}

const basic = (registry: StoreRegistry) =>
  `Basic ${Buffer.from(`${registry.username}:${registry.password}`).toString("base64")}`;

describe("StoreRegistry: the store as a registry on loopback, for the lifecycle", () => {
  test("our own client pulls what it was shown and pushes into the store, with its credentials", async (t) => {
    const served = await storeIn(t, "served");
    const image = await composeImage(served.layout, {
      layers: [await archiveLayer([fileEntry("hello.txt", "hello")])],
      config: { Env: ["A=1"] },
    });
    const registry = await started(t, served);
    registry.show("locald/run", "latest", image.descriptor);
    const credentials = async (host: string) =>
      host === registry.host ? { username: registry.username, password: registry.password } : undefined;

    const other = await storeIn(t, "other");
    const pulled = await pull(`${registry.host}/locald/run:latest`, {
      to: { kind: "store", store: other },
      credentials,
    });
    assert.equal(pulled.digest, image.descriptor.digest);

    // Pushed back under another name: the blobs exist, the manifest is recorded under its tag.
    const pushed = await deliverImage(
      other,
      pulled.descriptor,
      { kind: "registry", reference: `${registry.host}/locald/app:latest` },
      { credentials },
    );
    assert.equal(pushed, image.descriptor.digest);
    assert.equal(registry.tagged("locald/app", "latest")?.digest, image.descriptor.digest);

    // A new blob pushed to it lands in the served store, verified.
    const extra = await composeImage(other.layout, {
      layers: [await archiveLayer([fileEntry("new.txt", "new")])],
      config: {},
    });
    await deliverImage(
      other,
      extra.descriptor,
      { kind: "registry", reference: `${registry.host}/locald/app:next` },
      {
        credentials,
      },
    );
    const stored = await served.readImage(extra.descriptor, "pushed");
    for (const blob of [stored.manifest.config, ...stored.manifest.layers])
      assert.ok(await served.layout.hasBlob(blob), `${blob.digest} is in the served store`);
  });

  test("no credentials, wrong ones, unknown names and manifests it was not shown: refused", async (t) => {
    const store = await storeIn(t, "refusals");
    const image = await composeImage(store.layout, {
      layers: [await archiveLayer([fileEntry("a", "1")])],
      config: {},
    });
    const registry = await started(t, store);
    registry.show("locald/run", "latest", image.descriptor);
    const url = (path: string) => `http://${registry.host}${path}`;

    const anonymous = await fetch(url("/v2/"));
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get("www-authenticate") ?? "", /^Basic /);
    const wrong = await fetch(url("/v2/"), {
      headers: { Authorization: `Basic ${Buffer.from("locald:guess").toString("base64")}` },
    });
    assert.equal(wrong.status, 401);
    const headers = { Authorization: basic(registry) };
    assert.equal((await fetch(url("/v2/"), { headers })).status, 200);
    assert.equal((await fetch(url("/v2/locald/run/manifests/latest"), { headers })).status, 200);
    assert.equal((await fetch(url("/v2/locald/run/manifests/other"), { headers })).status, 404);
    // The config is a blob of the store, but no manifest it was shown.
    const config = (await store.readImage(image.descriptor, "image")).manifest.config.digest;
    assert.equal((await fetch(url(`/v2/locald/run/manifests/${config}`), { headers })).status, 404);
    assert.equal((await fetch(url(`/v2/locald/run/blobs/${config}`), { headers })).status, 200);
    assert.equal((await fetch(url("/v2/Bad_Name/manifests/latest"), { headers })).status, 404);
    assert.equal(
      (await fetch(url("/v2/locald/run/manifests/latest"), { method: "DELETE", headers })).status,
      405,
    );
  });

  test("an upload whose bytes are not its digest is refused and names nothing; stop leaves no temp file", async (t) => {
    const store = await storeIn(t, "uploads");
    const registry = await started(t, store);
    const headers = { Authorization: basic(registry) };
    const url = (path: string) => new URL(path, `http://${registry.host}`).href;
    const begin = async () => {
      const response = await fetch(url("/v2/locald/app/blobs/uploads/"), { method: "POST", headers });
      assert.equal(response.status, 202);
      return response.headers.get("location") as string;
    };
    const bytes = Buffer.from("layer bytes");
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    const claimed = `sha256:${"0".repeat(64)}`;

    const location = await begin();
    const patched = await fetch(url(location), { method: "PATCH", headers, body: bytes });
    assert.equal(patched.status, 202);
    assert.equal(patched.headers.get("range"), `0-${bytes.length - 1}`);
    const refused = await fetch(url(`${location}?digest=${claimed}`), { method: "PUT", headers });
    assert.equal(refused.status, 400);
    assert.match(await refused.text(), /DIGEST_INVALID/);
    assert.equal(
      (await fetch(url(`/v2/locald/app/blobs/${claimed}`), { method: "HEAD", headers })).status,
      404,
    );

    // The same bytes under their own digest, in one request: named.
    const single = await fetch(url(`/v2/locald/app/blobs/uploads/?digest=${digest}`), {
      method: "POST",
      headers,
      body: bytes,
    });
    assert.equal(single.status, 201);
    assert.equal(
      (await fetch(url(`/v2/locald/app/blobs/${digest}`), { method: "HEAD", headers })).status,
      200,
    );
    // Mounting a blob the store has answers at once.
    const mounted = await fetch(url(`/v2/locald/other/blobs/uploads/?mount=${digest}&from=locald/app`), {
      method: "POST",
      headers,
    });
    assert.equal(mounted.status, 201);

    const unfinished = await begin();
    await fetch(url(unfinished), { method: "PATCH", headers, body: bytes });
    assert.equal((await readdir(join(store.root, ".tmp"))).length, 1, "the unfinished upload's file");
    await registry.stop();
    const temp = await readdir(join(store.root, ".tmp")).catch(() => [] as string[]);
    assert.deepEqual(temp, [], "no upload left in the store's temp");
  });
});
