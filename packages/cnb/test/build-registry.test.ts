import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, type TestContext, test } from "node:test";
import { type Descriptor, MediaType, parseDigest, Store } from "@locald/oci";
import { finishBuiltImage, openBuildRegistry, previousImage, rememberImage } from "../src/build-registry.js";

const DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip";

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "locald-build-registry-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An image as the exporter pushes it: Docker layer types in an OCI manifest, the given labels. */
async function pushedImage(store: Store, labels: Record<string, string>): Promise<Descriptor> {
  const layer = await store.layout.writeBytes(Buffer.from("not really a tar"), DOCKER_LAYER);
  const config = await store.layout.writeBytes(
    Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: { Labels: labels },
        rootfs: { type: "layers", diff_ids: [layer.digest] },
      }),
    ),
    MediaType.OciConfig,
  );
  const manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [layer] };
  return store.layout.writeBytes(Buffer.from(JSON.stringify(manifest)), MediaType.OciManifest);
}

describe("the build's registry: what the exporter pushed, made the image a --publish build makes", () => {
  test("the loopback run image reference becomes the registry's, and the layer types OCI ones", async (t) => {
    const store = await Store.open(await tempDir(t));
    const run = await pushedImage(store, {});
    const build = await openBuildRegistry(store, run, undefined);
    t.after(() => build.registry.stop());
    const runDigest = `sha256:${"a".repeat(64)}`;
    const local = `${build.registry.host}/locald/run@${runDigest}`;
    const real = `registry.example.com/stacks/run@${runDigest}`;
    const metadata = JSON.stringify({
      runImage: { reference: local, image: "registry.example.com/stacks/run:1" },
    });
    const pushed = await pushedImage(store, { "io.buildpacks.lifecycle.metadata": metadata, other: "kept" });
    build.registry.show("locald/app", "latest", pushed);

    const finished = await finishBuiltImage(store, build, runDigest, real);
    const { manifest, config } = await store.readImage(finished, "the finished image");
    assert.equal(manifest.layers[0]?.mediaType, MediaType.OciLayerGzip);
    assert.equal(
      manifest.layers[0]?.digest,
      (await store.readImage(pushed, "pushed")).manifest.layers[0]?.digest,
    );
    const labels = config.config?.Labels ?? {};
    assert.equal(labels.other, "kept");
    const recorded = JSON.parse(labels["io.buildpacks.lifecycle.metadata"] as string) as {
      runImage: { reference: string; image: string };
    };
    assert.deepEqual(recorded.runImage, { reference: real, image: "registry.example.com/stacks/run:1" });
    assert.ok(!JSON.stringify(config).includes(build.registry.host), "no loopback name left in the config");
  });

  test("nothing pushed is an error, not an empty image", async (t) => {
    const store = await Store.open(await tempDir(t));
    const build = await openBuildRegistry(store, await pushedImage(store, {}), undefined);
    t.after(() => build.registry.stop());
    await assert.rejects(finishBuiltImage(store, build, `sha256:${"b".repeat(64)}`, "x"), /without pushing/);
  });

  test("the previous image is the last one built, while the store holds every blob of it", async (t) => {
    const dir = await tempDir(t);
    const store = await Store.open(join(dir, "store"));
    const state = join(dir, "state");
    await mkdir(state);
    assert.equal(await previousImage(state, store), undefined, "no build yet");
    const image = await pushedImage(store, {});
    await rememberImage(state, image);
    assert.equal((await previousImage(state, store))?.digest, image.digest);
    const { manifest } = await store.readImage(image, "image");
    await rm(store.layout.blobPath(parseDigest(manifest.layers[0]?.digest as string)));
    assert.equal(await previousImage(state, store), undefined, "a layer pruned since: no previous image");
  });
});
