/**
 * pack's build flags for CI: `--cache-image` keeps the build cache in a registry, so a machine
 * that starts empty restores it (a sample buildpack counts restores of its cache-only layer);
 * `-t` more than once names the image more than once, in the registry and in the store.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { removeTree } from "@locald/oci";
import {
  makeTempDir,
  pushSampleBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  type TestRegistry,
} from "../src/index.js";

const run = promisify(execFile);
const shared: { registry?: TestRegistry; work?: string; builder?: string; app?: string } = {};

before(async () => {
  for (const tool of ["bwrap", "skopeo", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("build-flags");
  await chmod(shared.work, 0o755);
  ({ builder: shared.builder } = await pushSampleBuilder(shared.registry, shared.work, ["probe"]));
  shared.app = join(shared.work, "app");
  await mkdir(shared.app);
  await writeFile(join(shared.app, "probe-paths"), "/etc/os-release\n");
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

const registry = () => shared.registry as TestRegistry;
/** A build in its own, fresh LOCALD_HOME: a CI machine that starts empty. */
const freshBuild = (machine: string, args: string[]) =>
  runLocald(
    [
      "--insecure-registry",
      registry().host,
      "build",
      shared.app as string,
      "--builder",
      shared.builder as string,
      ...args,
    ],
    { env: { LOCALD_HOME: join(shared.work as string, machine) } },
  );
const digestOf = async (ref: string) =>
  (
    await run("skopeo", ["inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${ref}`])
  ).stdout.trim();

describe("--cache-image and more than one -t", () => {
  test("a published build on an empty machine restores the cache a first machine left in the registry", async () => {
    const cache = `${registry().host}/cache/probe:1`;
    const [one, latest] = [`${registry().host}/apps/probe:1`, `${registry().host}/apps/probe:latest`];
    const first = await freshBuild("ci-1", ["-t", one, "-t", latest, "--publish", "--cache-image", cache]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout + first.stderr, /probe: cache restored 0 times/);
    assert.equal(await digestOf(latest), await digestOf(one));
    const second = await freshBuild("ci-2", ["-t", one, "--publish", "--cache-image", cache]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout + second.stderr, /probe: cache restored 1 times/);
  });

  test("a build into the store uses the cache image too, and -t names it twice there", async () => {
    const cache = `${registry().host}/cache/probe-local:1`;
    const first = await freshBuild("local-1", ["-t", "probe-a", "-t", "probe-b", "--cache-image", cache]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout + first.stderr, /probe: cache restored 0 times/);
    const listed = await runLocald(["image", "ls"], {
      env: { LOCALD_HOME: join(shared.work as string, "local-1") },
    });
    assert.match(listed.stdout, /probe-a/);
    assert.match(listed.stdout, /probe-b/);
    const second = await freshBuild("local-2", ["-t", "probe-a", "--cache-image", cache]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout + second.stderr, /probe: cache restored 1 times/);
  });

  test("--previous-image without --publish, and --layout with two -t, are usage errors", async () => {
    const previous = await freshBuild("usage", ["--previous-image", "x/y:1"]);
    assert.equal(previous.code, 2, previous.stderr);
    const layout = await freshBuild("usage", [
      "--layout",
      join(shared.work as string, "l"),
      "-t",
      "a",
      "-t",
      "b",
    ]);
    assert.equal(layout.code, 2, layout.stderr);
  });
});
