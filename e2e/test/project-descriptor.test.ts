/**
 * project.toml (project descriptor 0.2) as pack reads it: the builder, build-time env, `exclude`
 * (the file never reaches /workspace, asserted on the image's layers; the user's directory is not
 * written), the buildpack group and a post group; and the precedence: flags > locald.toml >
 * project.toml > the builder's defaults.
 */
import assert from "node:assert/strict";
import { createReadStream } from "node:fs";
import { chmod, cp, mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { createGunzip } from "node:zlib";
import { formatReference, parseDigest, parseReference, removeTree, Store } from "@locald/oci";
import tarStream from "tar-stream";
import {
  callerIn,
  makeTempDir,
  pushSampleBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  TEST_CALLERS,
  type TestRegistry,
} from "../src/index.js";

const EXAMPLES = fileURLToPath(new URL("../../../examples/", import.meta.url));
const HELLO = "Hello from a Procfile app built by locald with the CNB lifecycle.\n";
const shared: { registry?: TestRegistry; work?: string; builder?: string } = {};

before(async () => {
  for (const tool of ["bwrap", "runc", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("project-toml");
  await chmod(shared.work, 0o755);
  // The builder's own order: procfile alone; the probe is there but only project.toml asks for it.
  ({ builder: shared.builder } = await pushSampleBuilder(shared.registry, shared.work, [
    "procfile",
    "probe",
  ]));
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

/** Every path in the image's layers. */
async function layerPaths(home: string, image: string): Promise<string[]> {
  const store = await Store.open(join(home, "store"));
  const found = await store.find(formatReference(parseReference(image)));
  assert.ok(found, `${image} is in the store`);
  const manifest = JSON.parse(
    (await store.layout.readBlob(found.descriptor, 4 * 1024 * 1024)).toString(),
  ) as {
    layers: Array<{ digest: string }>;
  };
  const paths: string[] = [];
  for (const layer of manifest.layers) {
    const extract = tarStream.extract();
    extract.on("entry", (header, stream, next) => {
      paths.push(header.name.replace(/^\/+/, ""));
      stream.on("end", next);
      stream.resume();
    });
    await pipeline(
      createReadStream(store.layout.blobPath(parseDigest(layer.digest))),
      createGunzip(),
      extract,
    );
  }
  return paths;
}

for (const who of TEST_CALLERS)
  describe(`project.toml, as ${who}`, () => {
    const base = () => join(shared.work as string, who === "root" ? "root" : "user");
    const app = () => join(base(), "app");
    let caller: Awaited<ReturnType<typeof callerIn>>;
    const home = () => caller.env.LOCALD_HOME as string;
    const locald = (args: string[], cwd?: string) =>
      runLocald(["--insecure-registry", (shared.registry as TestRegistry).host, ...args], {
        env: { ...caller.env, LOCALD_BUILDER: "" },
        ...(caller.as ? { as: caller.as } : {}),
        ...(cwd ? { cwd } : {}),
      });

    before(async () => {
      await mkdir(base(), { recursive: true });
      await cp(join(EXAMPLES, "procfile-static"), app(), { recursive: true });
      await writeFile(join(app(), "secret.txt"), "not for the image\n");
      await mkdir(join(app(), "scratch"));
      await writeFile(join(app(), "scratch", "notes"), "neither\n");
      await writeFile(
        join(app(), "probe-paths"),
        "/platform/env/GREETING\n/workspace/secret.txt\n/workspace/scratch\n/workspace/Procfile\n",
      );
      caller = await callerIn(who, join(base(), "caller"));
      await writeFile(
        join(app(), "project.toml"),
        [
          "[_]",
          'schema-version = "0.2"',
          "[io.buildpacks]",
          `builder = ${JSON.stringify(shared.builder)}`,
          'exclude = ["secret.txt", "scratch/"]',
          "[[io.buildpacks.build.env]]",
          'name = "GREETING"',
          'value = "from project.toml"',
          "[[io.buildpacks.group]]",
          'id = "locald-samples/probe"',
          "[[io.buildpacks.post.group]]",
          'id = "locald-samples/procfile"',
          "",
        ].join("\n"),
      );
    });

    test("its builder, env, exclude, group and post group all reach the build", async () => {
      const before = (await readdir(app())).sort();
      const built = await locald(["build", app(), "-t", "described"]);
      assert.equal(built.code, 0, built.stderr);
      const output = built.stdout + built.stderr;
      // The group (probe) ran, then the post group (procfile).
      assert.match(output, /^readable: \/platform\/env\/GREETING: from project\.toml/m);
      assert.match(output, /^absent: \/workspace\/secret\.txt/m);
      assert.match(output, /^absent: \/workspace\/scratch/m);
      assert.match(output, /^readable: \/workspace\/Procfile/m);
      assert.match(output, /Procfile: process "web"/);
      const paths = await layerPaths(home(), "described");
      assert.ok(
        paths.includes("workspace/Procfile"),
        paths.filter((p) => p.startsWith("workspace")).join("\n"),
      );
      assert.ok(!paths.some((p) => p.includes("secret.txt") || p.startsWith("workspace/scratch")));
      const ran = await locald(["container", "run", "--rm", "described"]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, HELLO);
      assert.deepEqual((await readdir(app())).sort(), before, "the user's directory is not written");
    });

    test("flags win over project.toml, and locald.toml wins over it too", async () => {
      const flagged = await locald(["build", app(), "-t", "flagged", "-e", "GREETING=from a flag"]);
      assert.equal(flagged.code, 0, flagged.stderr);
      assert.match(flagged.stdout + flagged.stderr, /^readable: \/platform\/env\/GREETING: from a flag/m);
      // -b replaces project.toml's group: the procfile alone, then still the post group.
      const grouped = await locald(["build", app(), "-t", "grouped", "-b", "locald-samples/procfile"]);
      assert.equal(grouped.code, 0, grouped.stderr);
      assert.doesNotMatch(grouped.stdout + grouped.stderr, /GREETING/);
      const project = join(base(), "with-locald-toml");
      await mkdir(project, { recursive: true });
      await writeFile(
        join(project, "locald.toml"),
        '[project]\nbuilder = "127.0.0.1:9/not/a-builder:here"\n',
      );
      const overridden = await locald(["build", app(), "-t", "overridden"], project);
      assert.equal(overridden.code, 1, overridden.stdout + overridden.stderr);
      assert.match(overridden.stderr, /Cannot reach https:\/\/127\.0\.0\.1:9\//);
    });

    test("a broken project.toml is said in words", async () => {
      const broken = join(base(), "broken");
      await cp(join(EXAMPLES, "procfile-static"), broken, { recursive: true });
      await writeFile(join(broken, "project.toml"), '[io.buildpacks]\ninclude = ["a"]\nexclude = ["b"]\n');
      const both = await locald(["build", broken, "--builder", shared.builder as string]);
      assert.equal(both.code, 1, both.stderr);
      assert.match(both.stderr, /has both include and exclude/);
      await writeFile(join(broken, "project.toml"), "[io.buildpacks\n");
      const invalid = await locald(["build", broken, "--builder", shared.builder as string]);
      assert.equal(invalid.code, 1, invalid.stderr);
      assert.match(invalid.stderr, /project\.toml is not valid TOML/);
    });
  });
