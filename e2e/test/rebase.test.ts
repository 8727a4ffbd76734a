/**
 * `locald rebase` through the lifecycle's own rebaser: an app is built on the run image, the run
 * image is then updated (a new layer, same tag), and the rebased image must keep its app layers
 * byte for byte (same digests) while its base layers become the new run image's — and it runs,
 * on the new base. In the store, as root and as an unprivileged user, and in a registry.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, cp, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { removeTree } from "@locald/oci";
import {
  type CliOptions,
  type CliResult,
  callerIn,
  makeTempDir,
  pushRunImage,
  pushSampleBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  TEST_CALLERS,
  type TestRegistry,
} from "../src/index.js";

const run = promisify(execFile);
const EXAMPLES = fileURLToPath(new URL("../../../examples/", import.meta.url));
const HELLO = "Hello from a Procfile app built by locald with the CNB lifecycle.\n";
const shared: { registry?: TestRegistry; work?: string; builder?: string; runImage?: string } = {};

before(async () => {
  for (const tool of ["bwrap", "runc", "skopeo", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("rebase");
  await chmod(shared.work, 0o755);
  ({ builder: shared.builder, runImage: shared.runImage } = await pushSampleBuilder(
    shared.registry,
    shared.work,
    ["procfile"],
  ));
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

interface Manifest {
  layers: Array<{ digest: string }>;
}

/** The run image's manifest as the registry has it now (read by skopeo, not by our code). */
async function registryManifest(ref: string): Promise<Manifest> {
  const { stdout } = await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`]);
  return JSON.parse(stdout) as Manifest;
}

/** Pushes a newer run image under the same tag: Debian plus a layer saying which version it is. */
async function updateRunImage(version: string): Promise<Manifest> {
  await pushRunImage(shared.registry as TestRegistry, shared.work as string, "cnb/run:bookworm", {
    "etc/run-image-version": `${version}\n`,
  });
  return registryManifest(shared.runImage as string);
}

/** App layers of `after` are those of `before` above its old base, byte for byte; its base is `base`'s. */
function assertRebased(before: Manifest, after: Manifest, oldBase: Manifest, base: Manifest): void {
  const digests = (manifest: Manifest) => manifest.layers.map((layer) => layer.digest);
  assert.deepEqual(
    digests(before).slice(0, oldBase.layers.length),
    digests(oldBase),
    "built on the old run image",
  );
  const appLayers = digests(before).slice(oldBase.layers.length);
  assert.ok(appLayers.length > 0);
  assert.deepEqual(digests(after), [...digests(base), ...appLayers]);
}

for (const who of TEST_CALLERS) {
  describe(`rebase in the store, as ${who}`, () => {
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    let home: string;
    before(async () => {
      home = join(shared.work as string, `home-${who === "root" ? "root" : "user"}`);
      await mkdir(home, { recursive: true });
      await cp(join(EXAMPLES, "procfile-static"), join(home, "procfile-static"), { recursive: true });
      ({ as, env } = await callerIn(who, home));
    });
    const locald = (args: string[]): Promise<CliResult> =>
      runLocald(["--insecure-registry", (shared.registry as TestRegistry).host, ...args], {
        env,
        ...(as ? { as } : {}),
      });
    const manifestOf = async (image: string): Promise<Manifest> => {
      const shown = await locald(["image", "inspect", image, "--raw", "manifest"]);
      assert.equal(shown.code, 0, shown.stderr);
      return JSON.parse(shown.stdout) as Manifest;
    };

    test("the app keeps its layers, the base becomes the updated run image's, and it runs", async () => {
      const tag = `rebased-${who === "root" ? "root" : "user"}`;
      const oldBase = await registryManifest(shared.runImage as string);
      const built = await locald([
        "build",
        join(home, "procfile-static"),
        "--builder",
        shared.builder as string,
        "-t",
        tag,
      ]);
      assert.equal(built.code, 0, built.stderr);
      const before = await manifestOf(tag);
      const base = await updateRunImage(`2-${tag}`);
      const rebased = await locald(["rebase", tag, "--builder", shared.builder as string]);
      assert.equal(rebased.code, 0, rebased.stderr);
      assert.match(
        rebased.stdout,
        new RegExp(`^Rebased docker\\.io/library/${tag}:latest \\(sha256:[0-9a-f]{64}\\) on `, "m"),
      );
      assertRebased(before, await manifestOf(tag), oldBase, base);
      const ran = await locald(["container", "run", "--rm", tag]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, HELLO);
      const version = await locald([
        "container",
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        tag,
        "/etc/run-image-version",
      ]);
      assert.equal(version.code, 0, version.stderr);
      assert.equal(version.stdout, `2-${tag}\n`);
    });

    test("an image that is not there, or not built by buildpacks, is said in words", async () => {
      const missing = await locald(["rebase", "never-built", "--builder", shared.builder as string]);
      assert.equal(missing.code, 1, missing.stderr);
      assert.match(missing.stderr, /docker\.io\/library\/never-built:latest is not in the local store/);
      const pulled = await locald(["image", "pull", shared.runImage as string]);
      assert.equal(pulled.code, 0, pulled.stderr);
      const plain = await locald([
        "rebase",
        shared.runImage as string,
        "--builder",
        shared.builder as string,
      ]);
      assert.equal(plain.code, 1, plain.stderr);
      assert.match(plain.stderr, /was not built by a CNB lifecycle/);
      assert.doesNotMatch(missing.stderr + plain.stderr, /unexpected|\n\s+at /);
    });
  });
}

describe("rebase in a registry (--publish), and the same rebase in the store", () => {
  test("the rebaser rebases the registry image in place; the store's rebase gives the same layers and labels", async () => {
    const registry = shared.registry as TestRegistry;
    const home = join(shared.work as string, "home-publish");
    await mkdir(home, { recursive: true });
    await cp(join(EXAMPLES, "procfile-static"), join(home, "procfile-static"), { recursive: true });
    const env = { LOCALD_HOME: join(home, "locald") };
    const locald = (args: string[]) => runLocald(["--insecure-registry", registry.host, ...args], { env });
    const image = `${registry.host}/apps/rebased:1`;
    const oldBase = await registryManifest(shared.runImage as string);
    for (const output of [
      ["-t", image, "--publish"],
      ["-t", "side-by-side"],
    ]) {
      const built = await locald([
        "build",
        join(home, "procfile-static"),
        "--builder",
        shared.builder as string,
        ...output,
      ]);
      assert.equal(built.code, 0, built.stderr);
    }
    const before = await registryManifest(image);
    const base = await updateRunImage("3-published");
    const rebased = await locald([
      "rebase",
      image,
      "--publish",
      "--run-image",
      shared.runImage as string,
      "--builder",
      shared.builder as string,
    ]);
    assert.equal(rebased.code, 0, rebased.stderr);
    assert.match(rebased.stderr, /REBASING/);
    const byRebaser = await registryManifest(image);
    assertRebased(before, byRebaser, oldBase, base);

    const local = await locald(["rebase", "side-by-side", "--run-image", shared.runImage as string]);
    assert.equal(local.code, 0, local.stderr);
    const shown = await locald(["image", "inspect", "side-by-side", "--raw", "manifest"]);
    assert.deepEqual(
      (JSON.parse(shown.stdout) as Manifest).layers.map((layer) => layer.digest),
      byRebaser.layers.map((layer) => layer.digest),
    );
    const ours = JSON.parse(
      (await locald(["image", "inspect", "side-by-side", "--raw", "config"])).stdout,
    ) as {
      config: { Labels: Record<string, string> };
      rootfs: unknown;
    };
    // The rebaser writes a Docker manifest with OCI layer types, which skopeo refuses to read
    // further than raw: the config comes straight from the registry's blob endpoint.
    const configDigest = (byRebaser as Manifest & { config: { digest: string } }).config.digest;
    const theirs = (await (
      await fetch(`${registry.url}/v2/apps/rebased/blobs/${configDigest}`)
    ).json()) as typeof ours;
    assert.deepEqual(ours.rootfs, theirs.rootfs);
    assert.deepEqual(Object.keys(ours.config.Labels).sort(), Object.keys(theirs.config.Labels).sort());
    for (const [name, value] of Object.entries(theirs.config.Labels))
      if (name !== "io.buildpacks.lifecycle.metadata") assert.equal(ours.config.Labels[name], value, name);
    const runImageOf = (labels: Record<string, string>) =>
      (
        JSON.parse(labels["io.buildpacks.lifecycle.metadata"] as string) as {
          runImage: { topLayer: string; reference: string };
        }
      ).runImage;
    assert.equal(runImageOf(ours.config.Labels).topLayer, runImageOf(theirs.config.Labels).topLayer);
    assert.equal(
      runImageOf(ours.config.Labels).reference.split("@")[1],
      runImageOf(theirs.config.Labels).reference.split("@")[1],
    );
  });
});
