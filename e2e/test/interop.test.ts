import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { OciLayout, ociLayout, pull, push } from "@locald/oci";
import {
  newLayout,
  requireBinary,
  sampleImage,
  startRegistry,
  type TestRegistry,
  tempDir,
} from "../src/index.js";

const run = promisify(execFile);

describe("interoperability with skopeo and umoci", () => {
  let registry: TestRegistry;
  before(async () => {
    await requireBinary("skopeo");
    await requireBinary("umoci");
    registry = await startRegistry({ flavour: "anonymous" });
  });
  after(() => registry.stop());

  test("skopeo copies our layout into the registry, umoci unpacks it, and we pull what skopeo pushed", async (t) => {
    const ours = await newLayout(t, "ours");
    const image = await sampleImage(ours, { seed: 91 });
    await ours.addManifest(image.descriptor, "v1");
    const ref = `${registry.host}/interop/from-skopeo:1`;
    await run("skopeo", [
      "copy",
      "--quiet",
      "--dest-tls-verify=false",
      `oci:${ours.root}:v1`,
      `docker://${ref}`,
    ]);

    const listed = await run("umoci", ["ls", "--layout", ours.root]);
    assert.deepEqual(listed.stdout.trim().split("\n"), ["v1"]);
    const bundle = join(await tempDir(t), "bundle");
    await run("umoci", ["unpack", "--rootless", "--image", `${ours.root}:v1`, bundle]);
    assert.equal(await readFile(join(bundle, "rootfs", "etc", "hello"), "utf8"), "hello 91\n");
    assert.equal((await stat(join(bundle, "rootfs", "data.bin"))).size, 64 * 1024);

    const back = await newLayout(t, "back");
    const pulled = await pull(ref, { to: ociLayout(back.root) });
    assert.equal(pulled.digest, image.descriptor.digest, "skopeo kept our manifest byte-exact");
  });

  test("we read a layout skopeo wrote and push it", async (t) => {
    const ours = await newLayout(t, "src");
    const image = await sampleImage(ours, { seed: 92, format: "docker" });
    await ours.addManifest(image.descriptor, "x");
    await push({ kind: "layout", dir: ours.root, name: "x" }, `${registry.host}/interop/docker:1`);
    const skopeoDir = join(await tempDir(t), "skopeo-layout");
    await run("skopeo", [
      "copy",
      "--quiet",
      "--src-tls-verify=false",
      `docker://${registry.host}/interop/docker:1`,
      `oci:${skopeoDir}:latest`,
    ]);
    const written = await OciLayout.open(skopeoDir);
    const entry = await written.resolve("latest");
    const result = await push(
      { kind: "layout", dir: skopeoDir, name: "latest" },
      `${registry.host}/interop/resaved:1`,
    );
    assert.equal(result.digest, entry.digest);
    const inspected = JSON.parse(
      (await run("skopeo", ["inspect", "--tls-verify=false", `docker://${registry.host}/interop/resaved:1`]))
        .stdout,
    ) as { Digest: string; Layers: string[] };
    assert.equal(inspected.Digest, entry.digest);
    assert.equal(inspected.Layers.length, 2);
  });
});
