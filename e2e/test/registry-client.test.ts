import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  AuthenticationError,
  type Descriptor,
  NotFoundError,
  type OciLayout,
  ociLayout,
  PlatformNotFoundError,
  parseReference,
  pull,
  push,
  RegistryClient,
  Store,
  staticCredentials,
  store,
  Transport,
} from "@locald/oci";
import {
  multiPlatformImage,
  newLayout,
  sampleImage,
  startFaultProxy,
  startRegistry,
  type TestRegistry,
  tempDir,
} from "../src/index.js";

async function pushLayoutImage(
  layout: OciLayout,
  descriptor: Descriptor,
  ref: string,
  options: Parameters<typeof push>[2] = {},
) {
  const name = `img-${descriptor.digest.slice(7, 19)}`;
  await layout.addManifest(descriptor, name);
  return push({ kind: "layout", dir: layout.root, name }, ref, options);
}

async function blobFiles(layout: OciLayout): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for (const digest of await layout.listBlobs()) files.set(digest, await readFile(layout.blobPath(digest)));
  return files;
}

describe("anonymous registry", () => {
  let registry: TestRegistry;
  before(async () => {
    registry = await startRegistry({ flavour: "anonymous" });
  });
  after(() => registry.stop());

  test("push then pull round trip is byte-identical, for all four manifest media types", async (t) => {
    for (const format of ["oci", "docker"] as const) {
      const source = await newLayout(t, `src-${format}`);
      const image = await sampleImage(source, { format, seed: format === "oci" ? 11 : 12 });
      const ref = `${registry.host}/roundtrip/${format}:single`;
      const pushed = await pushLayoutImage(source, image.descriptor, ref);
      assert.equal(pushed.digest, image.descriptor.digest);

      const out = await newLayout(t, `out-${format}`);
      const pulled = await pull(ref, { to: ociLayout(out.root), platform: "linux/amd64" });
      assert.equal(pulled.digest, image.descriptor.digest);
      assert.deepEqual(await readFile(out.blobPath(pulled.digest)), image.manifest);
      for (const layer of image.layers)
        assert.deepEqual(await readFile(out.blobPath(layer.descriptor.digest as never)), layer.blob);

      // multi-platform: OCI index / Docker manifest list
      const multi = await multiPlatformImage(source, format);
      const listRef = `${registry.host}/roundtrip/${format}:multi`;
      await pushLayoutImage(source, multi.index, listRef);
      const all = await newLayout(t, `all-${format}`);
      const everything = await pull(listRef, { to: ociLayout(all.root), platform: "all" });
      assert.equal(everything.digest, multi.index.digest);
      const expected = await blobFiles(source);
      for (const [digest, bytes] of await blobFiles(all))
        assert.deepEqual(bytes, expected.get(digest), `blob ${digest} differs`);
      assert.equal(
        (await all.listBlobs()).length,
        1 + 5 * 4,
        "index + 5 manifests with config and two layers each",
      );
    }
  });

  test("platform selection picks the variant, treats arm64 as arm64/v8 and skips attestations", async (t) => {
    const source = await newLayout(t);
    const multi = await multiPlatformImage(source, "oci");
    const ref = `${registry.host}/platforms/app:1`;
    await pushLayoutImage(source, multi.index, ref);
    const cases: Array<[string, number]> = [
      ["linux/amd64", 0],
      ["linux/arm64", 1],
      ["linux/arm64/v8", 1],
      ["linux/arm/v7", 2],
      ["linux/arm/v6", 3],
      ["linux/arm", 2],
    ];
    for (const [platform, index] of cases) {
      const out = await newLayout(t, `p-${platform.replaceAll("/", "-")}`);
      const result = await pull(ref, { to: ociLayout(out.root), platform });
      assert.equal(result.digest, multi.images[index]?.descriptor.digest, platform);
      assert.equal(result.sourceDigest, multi.index.digest);
    }
    const out = await newLayout(t, "missing");
    await assert.rejects(
      pull(ref, { to: ociLayout(out.root), platform: "linux/s390x" }),
      (error: unknown) => {
        assert.ok(error instanceof PlatformNotFoundError);
        assert.match(error.message, /linux\/s390x/);
        assert.match(error.message, /linux\/arm\/v6/);
        assert.doesNotMatch(error.message, /unknown\/unknown/);
        return true;
      },
    );
  });

  test("warm re-pull into the store is a single manifest request and downloads nothing", async (t) => {
    const proxy = await startFaultProxy({ target: registry.url });
    t.after(() => proxy.stop());
    const source = await newLayout(t);
    const multi = await multiPlatformImage(source, "docker");
    await pushLayoutImage(source, multi.index, `${registry.host}/warm/app:1`);
    const local = await Store.open(join(await tempDir(t), "store"));
    const ref = `${proxy.host}/warm/app:1`;
    const first = await pull(ref, { to: store(local), platform: "linux/arm64" });
    assert.equal(first.upToDate, false);
    proxy.requests.length = 0;
    const second = await pull(ref, { to: store(local), platform: "linux/arm64" });
    assert.equal(second.upToDate, true);
    assert.equal(second.digest, first.digest);
    const manifestRequests = proxy.requests.filter((r) => r.path.includes("/manifests/"));
    const blobRequests = proxy.requests.filter((r) => r.path.includes("/blobs/"));
    assert.equal(
      manifestRequests.length,
      1,
      JSON.stringify(proxy.requests.map((r) => `${r.method} ${r.path}`)),
    );
    assert.equal(manifestRequests[0]?.method, "HEAD");
    assert.equal(blobRequests.length, 0);
    const listed = await local.list();
    assert.deepEqual(
      listed.map((i) => [i.name, i.platform]),
      [[`${proxy.host}/warm/app:1`, "linux/arm64/v8"].map((v, i) => (i === 1 ? "linux/arm64" : v))],
    );
  });

  test("chunked upload and cross-repository mount", async (t) => {
    const source = await newLayout(t);
    const image = await sampleImage(source, { seed: 21, layerBytes: 300 * 1024 });
    const ref = `${registry.host}/chunked/app:1`;
    await pushLayoutImage(source, image.descriptor, ref, { chunkSize: 64 * 1024 });
    const client = new RegistryClient(new Transport());
    t.after(() => client.transport.close());
    const other = parseReference(`${registry.host}/mounted/app:1`);
    const layer = image.layers[1]?.descriptor as Descriptor;
    const outcome = await client.uploadBlob(other, layer, () => source.openBlob(layer), {
      mountFrom: "chunked/app",
    });
    assert.equal(outcome, "mounted");
    assert.equal(await client.headBlob(other, layer.digest as never), layer.size);
    assert.deepEqual((await client.listTags(parseReference(ref))).sort(), ["1"]);
  });

  test("unknown image is a NotFoundError naming the reference", async (t) => {
    const out = await newLayout(t);
    await assert.rejects(
      pull(`${registry.host}/nope/missing:1`, { to: ociLayout(out.root) }),
      (error: unknown) => {
        assert.ok(error instanceof NotFoundError);
        assert.match(error.message, /nope\/missing:1/);
        return true;
      },
    );
  });
});

describe("basic auth registry", () => {
  let registry: TestRegistry;
  before(async () => {
    registry = await startRegistry({ flavour: "basic", users: { alice: "wonderland" } });
  });
  after(() => registry.stop());

  test("right credentials push and pull; wrong or missing ones fail with a typed error", async (t) => {
    const source = await newLayout(t);
    const image = await sampleImage(source, { seed: 31 });
    const ref = `${registry.host}/private/app:1`;
    const good = staticCredentials({ [registry.host]: { username: "alice", password: "wonderland" } });
    await pushLayoutImage(source, image.descriptor, ref, { credentials: good });
    const out = await newLayout(t, "out");
    assert.equal(
      (await pull(ref, { to: ociLayout(out.root), credentials: good })).digest,
      image.descriptor.digest,
    );

    const wrong = staticCredentials({ [registry.host]: { username: "alice", password: "not-the-password" } });
    await assert.rejects(pull(ref, { to: ociLayout(out.root), credentials: wrong }), (error: unknown) => {
      assert.ok(error instanceof AuthenticationError);
      assert.equal(error.code, "UNAUTHORIZED");
      assert.doesNotMatch(error.message, /not-the-password/);
      return true;
    });
    await assert.rejects(
      pull(ref, { to: ociLayout(out.root), credentials: staticCredentials({}) }),
      AuthenticationError,
    );
  });
});

describe("token auth registry", () => {
  let registry: TestRegistry;
  before(async () => {
    registry = await startRegistry({ flavour: "token", users: { alice: "wonderland" } });
  });
  after(() => registry.stop());

  test("scoped tokens are requested and reused; a token the registry rejects is refreshed once", async (t) => {
    const tokens = registry.tokenServer;
    assert.ok(tokens);
    const credentials = staticCredentials({ [registry.host]: { username: "alice", password: "wonderland" } });
    const source = await newLayout(t);
    const image = await sampleImage(source, { seed: 41 });
    const ref = `${registry.host}/team/app:1`;
    await pushLayoutImage(source, image.descriptor, ref, { credentials });
    const pushScopes = tokens.requests.flatMap((r) => r.scopes);
    assert.ok(pushScopes.includes("repository:team/app:pull,push"), JSON.stringify(pushScopes));

    const client = new RegistryClient(new Transport({ credentials }));
    t.after(() => client.transport.close());
    tokens.requests.length = 0;
    const out = await newLayout(t, "out");
    await pull(ref, { to: ociLayout(out.root), client });
    const pullTokenRequests = tokens.requests.filter((r) => r.scopes.includes("repository:team/app:pull"));
    assert.equal(pullTokenRequests.length, 1, "one token for the whole pull");
    assert.equal(pullTokenRequests[0]?.user, "alice");

    // The registry now rejects the next token although it claims a normal lifetime.
    tokens.requests.length = 0;
    tokens.staleTokensNext = 1;
    const other = await newLayout(t, "other");
    const again = await pull(`${registry.host}/team/app:1`, {
      to: ociLayout(other.root),
      client,
      platform: "linux/amd64",
    });
    assert.equal(again.digest, image.descriptor.digest);
  });

  test("wrong password at the token server is an AuthenticationError without the secret", async (t) => {
    const out = await newLayout(t);
    const credentials = staticCredentials({
      [registry.host]: { username: "alice", password: "s3cret-wrong" },
    });
    await assert.rejects(
      pull(`${registry.host}/team/app:1`, { to: ociLayout(out.root), credentials }),
      (error: unknown) => {
        assert.ok(error instanceof AuthenticationError);
        assert.doesNotMatch(`${error.message} ${error.hint}`, /s3cret-wrong/);
        return true;
      },
    );
  });

  test("a rejected cached token is refreshed with exactly one new token request", async (t) => {
    const tokens = registry.tokenServer;
    assert.ok(tokens);
    const credentials = staticCredentials({ [registry.host]: { username: "alice", password: "wonderland" } });
    const source = await newLayout(t);
    const image = await sampleImage(source, { seed: 42 });
    await pushLayoutImage(source, image.descriptor, `${registry.host}/refresh/app:1`, { credentials });
    const client = new RegistryClient(new Transport({ credentials }));
    t.after(() => client.transport.close());
    tokens.staleTokensNext = 1;
    tokens.requests.length = 0;
    // First call gets a stale token (401 from the registry) and must refresh it.
    const head = await client.headManifest(parseReference(`${registry.host}/refresh/app:1`));
    assert.equal(head?.digest, image.descriptor.digest);
    const scoped = tokens.requests.filter((r) => r.scopes.includes("repository:refresh/app:pull"));
    assert.equal(scoped.length, 2, "stale token, then one refresh");
    // The refreshed token is cached and reused.
    tokens.requests.length = 0;
    await client.headManifest(parseReference(`${registry.host}/refresh/app:1`));
    assert.equal(tokens.requests.length, 0);
  });
});

describe("TLS registry with our CA", () => {
  test("trusted with the CA, refused without it", async (t) => {
    const registry = await startRegistry({ flavour: "tls" });
    t.after(() => registry.stop());
    assert.ok(registry.caPem);
    const source = await newLayout(t);
    const image = await sampleImage(source, { seed: 51 });
    const ref = `${registry.host}/secure/app:1`;
    await pushLayoutImage(source, image.descriptor, ref, { caCertificates: [registry.caPem] });
    const out = await newLayout(t, "out");
    assert.equal(
      (await pull(ref, { to: ociLayout(out.root), caCertificates: [registry.caPem] })).digest,
      image.descriptor.digest,
    );
    const refused = await newLayout(t, "refused");
    await assert.rejects(pull(ref, { to: ociLayout(refused.root), retries: 0 }), (error: unknown) => {
      assert.match(String((error as Error).message), /certificate|self.signed|issuer/i);
      return true;
    });
  });
});
