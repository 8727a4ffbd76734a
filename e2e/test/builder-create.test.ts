/**
 * `locald builder create` against the reference: from one builder.toml (our sample buildpacks,
 * the real lifecycle's release tarball, Debian build and run images) the real pack and locald
 * each make a builder; their `/cnb` trees (paths, modes, owners, content) and labels must agree,
 * and locald builds and runs an app with its own. Then the other destinations (store, layout), an
 * unprivileged caller, and the mistakes a user makes in a builder.toml, each said in words.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, cp, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { removeTree } from "@locald/oci";
import { parse as parseToml } from "smol-toml";
import {
  BUILD_IMAGE_MARKER,
  type CliOptions,
  type CliResult,
  callerIn,
  diffTrees,
  formatTree,
  LIFECYCLE,
  lifecycleTarball,
  makeTempDir,
  PACK_VERSION,
  packBinary,
  pushBuildImage,
  pushDebianImage,
  pushRunImage,
  requireBinary,
  runLocald,
  snapshotTree,
  startRegistry,
  TEST_CALLERS,
  type TestRegistry,
  writeBuilderToml,
} from "../src/index.js";

const run = promisify(execFile);
const EXAMPLES = fileURLToPath(new URL("../../../examples/", import.meta.url));
const shared: {
  registry?: TestRegistry;
  work?: string;
  config?: string;
  runImage?: string;
  buildImage?: string;
  lifecycle?: string;
} = {};

before(async () => {
  for (const tool of ["bwrap", "runc", "skopeo", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("builder-create");
  await chmod(shared.work, 0o755);
  shared.runImage = await pushRunImage(shared.registry, shared.work);
  shared.buildImage = await pushBuildImage(shared.registry, shared.work);
  shared.lifecycle = await lifecycleTarball(shared.work, LIFECYCLE);
  shared.config = await writeBuilderToml(shared.work, {
    buildpacks: ["nodejs", "procfile"],
    lifecycle: shared.lifecycle,
    buildImage: shared.buildImage,
    runImage: shared.runImage,
    env: { GREETING: "from the builder" },
    description: "made twice",
  });
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

const registry = () => shared.registry as TestRegistry;
const work = () => shared.work as string;

/** The image's config, as skopeo (not our code) reads it. */
async function imageConfig(
  ref: string,
): Promise<{ Labels: Record<string, string>; Env: string[]; User?: string }> {
  const { stdout } = await run("skopeo", ["inspect", "--tls-verify=false", "--config", `docker://${ref}`]);
  return (JSON.parse(stdout) as { config: { Labels: Record<string, string>; Env: string[]; User?: string } })
    .config;
}

/** The TOML files pack writes with its encoder's spacing: compared by what they say. */
const TOML_FILES = new Set(["cnb/order.toml", "cnb/run.toml", "cnb/stack.toml"]);

describe(`builder create, compared with pack ${PACK_VERSION}`, () => {
  const home = () => join(work(), "home-compare");
  const env = () => ({ LOCALD_HOME: home() });
  let byPack: string;
  let byLocald: string;

  before(async () => {
    byPack = `${registry().host}/cnb/by-pack:1`;
    byLocald = `${registry().host}/cnb/by-locald:1`;
    const pack = await packBinary();
    await mkdir(join(work(), "pack-home"), { recursive: true });
    await run(pack, ["builder", "create", byPack, "--config", shared.config as string, "--publish"], {
      env: {
        ...process.env,
        PACK_HOME: join(work(), "pack-home"),
        DOCKER_HOST: "unix:///nonexistent/docker.sock",
      },
      maxBuffer: 16 * 1024 * 1024,
    });
    const created = await runLocald(
      [
        "--insecure-registry",
        registry().host,
        "builder",
        "create",
        byLocald,
        "--config",
        shared.config as string,
        "--publish",
      ],
      { env: env() },
    );
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^Published .*\/cnb\/by-locald:1$/m);
    assert.match(
      created.stdout,
      new RegExp(`^Lifecycle:\\s+${LIFECYCLE.version.replaceAll(".", "\\.")}$`, "m"),
    );
  });

  test("the /cnb trees are the same: paths, modes, owners, content", async () => {
    const trees = [];
    for (const [ref, dir] of [
      [byPack, "tree-pack"],
      [byLocald, "tree-locald"],
    ] as const) {
      const unpacked = await runLocald(
        [
          "--insecure-registry",
          registry().host,
          "image",
          "unpack",
          ref,
          join(work(), dir),
          "--no-cache",
        ].concat(
          ...["/cnb", "/workspace", "/layers", "/platform", "/lifecycle"].map((path) => ["--path", path]),
        ),
        { env: env() },
      );
      assert.equal(unpacked.code, 0, unpacked.stderr);
      trees.push(await snapshotTree(join(work(), dir)));
    }
    const [pack, locald] = trees as [
      Awaited<ReturnType<typeof snapshotTree>>,
      Awaited<ReturnType<typeof snapshotTree>>,
    ];
    assert.ok(pack.has("cnb/buildpacks/locald-samples_nodejs/0.1.0/bin/build"), formatTree(pack));
    assert.ok(pack.has("cnb/build-config/env/GREETING"), formatTree(pack));
    const differences = diffTrees(pack, locald, {
      mtimes: false,
      ownership: true,
      labels: ["pack", "locald"],
      typeOnly: (path) => TOML_FILES.has(path),
    });
    assert.deepEqual(
      differences,
      [],
      `${differences.join("\n")}\n\npack:\n${formatTree(pack)}\n\nlocald:\n${formatTree(locald)}`,
    );
    for (const file of TOML_FILES)
      assert.deepEqual(
        parseToml(await readFile(join(work(), "tree-locald", file), "utf8")),
        parseToml(await readFile(join(work(), "tree-pack", file), "utf8")),
        file,
      );
    // The build user owns what the phases write into.
    assert.equal(locald.get("workspace")?.uid, 1000);
    assert.equal(locald.get("layers")?.gid, 1000);
  });

  test("the labels say the same: order, buildpacks, run images, lifecycle, stack", async () => {
    const [pack, locald] = [await imageConfig(byPack), await imageConfig(byLocald)];
    const metadata = (labels: Record<string, string>) =>
      JSON.parse(labels["io.buildpacks.builder.metadata"] as string) as {
        description: string;
        buildpacks: Array<{ id: string; version: string; name?: string }>;
        images: Array<{ image: string }>;
        lifecycle: { version: string; apis: unknown };
      };
    const [mp, ml] = [metadata(pack.Labels), metadata(locald.Labels)];
    assert.deepEqual(ml.buildpacks, mp.buildpacks);
    assert.deepEqual(
      ml.images.map((image) => image.image),
      mp.images.map((image) => image.image),
    );
    assert.equal(ml.lifecycle.version, LIFECYCLE.version);
    assert.equal(ml.lifecycle.version, mp.lifecycle.version);
    assert.deepEqual(ml.lifecycle.apis, mp.lifecycle.apis);
    assert.equal(ml.description, "made twice");
    assert.deepEqual(
      JSON.parse(locald.Labels["io.buildpacks.buildpack.order"] as string),
      JSON.parse(pack.Labels["io.buildpacks.buildpack.order"] as string),
    );
    const layers = (labels: Record<string, string>) =>
      Object.entries(
        JSON.parse(labels["io.buildpacks.buildpack.layers"] as string) as Record<
          string,
          Record<string, { api: string }>
        >,
      ).map(([id, versions]) => [id, Object.entries(versions).map(([version, info]) => [version, info.api])]);
    assert.deepEqual(layers(locald.Labels), layers(pack.Labels));
    assert.equal(locald.Labels["io.buildpacks.stack.id"], pack.Labels["io.buildpacks.stack.id"]);
    assert.deepEqual(locald.Env, pack.Env);
    assert.equal(locald.User, pack.User);
  });

  test("the same builder.toml made again gives the same digest (normalised times and owners)", async () => {
    const again = await runLocald(
      [
        "--insecure-registry",
        registry().host,
        "builder",
        "create",
        `${registry().host}/cnb/by-locald:2`,
        "--config",
        shared.config as string,
        "--publish",
        "-q",
      ],
      { env: env() },
    );
    assert.equal(again.code, 0, again.stderr);
    const { stdout } = await run("skopeo", [
      "inspect",
      "--tls-verify=false",
      "--format",
      "{{.Digest}}",
      `docker://${byLocald}`,
    ]);
    assert.equal(again.stdout.trim(), stdout.trim());
  });
});

for (const who of TEST_CALLERS) {
  describe(`builder create into the store and a layout, as ${who}`, () => {
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    let home: string;
    before(async () => {
      home = join(work(), `home-${who === "root" ? "root" : "user"}`);
      await mkdir(home, { recursive: true });
      await cp(join(EXAMPLES, "procfile-static"), join(home, "procfile-static"), { recursive: true });
      ({ as, env } = await callerIn(who, home));
    });
    const locald = (args: string[]): Promise<CliResult> =>
      runLocald(["--insecure-registry", registry().host, ...args], { env, ...(as ? { as } : {}) });

    test("a builder made into the store builds an app that runs", async () => {
      const created = await locald([
        "builder",
        "create",
        "team/builder:local",
        "--config",
        shared.config as string,
      ]);
      assert.equal(created.code, 0, created.stderr);
      assert.match(created.stdout, /^Created docker\.io\/team\/builder:local$/m);
      const listed = await locald(["image", "ls"]);
      assert.match(listed.stdout, /team\/builder/);
      const built = await locald([
        "build",
        join(home, "procfile-static"),
        "--builder",
        "team/builder:local",
        "--pull-policy",
        "if-not-present",
        "-t",
        "by-our-builder",
      ]);
      assert.equal(built.code, 0, built.stderr);
      const ran = await locald(["container", "run", "--rm", "by-our-builder"]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, "Hello from a Procfile app built by locald with the CNB lifecycle.\n");
    });

    test("buildpack package into the store, and -b with a directory and with that package", async () => {
      const probe = join(EXAMPLES, "..", "e2e", "fixtures", "buildpacks", "probe");
      const config = join(home, "package.toml");
      await writeFile(config, `[buildpack]\nuri = ${JSON.stringify(probe)}\n`);
      const packaged = await locald(["buildpack", "package", "team/probe:1", "--config", config]);
      assert.equal(packaged.code, 0, packaged.stderr);
      const app = join(home, "probe-app");
      await mkdir(app, { recursive: true });
      await writeFile(join(app, "probe-paths"), "/etc/os-release\n");
      for (const spec of [probe, "team/probe:1"]) {
        const built = await locald([
          "build",
          app,
          "--builder",
          "team/builder:local",
          "--pull-policy",
          "if-not-present",
          "-b",
          spec,
        ]);
        assert.equal(built.code, 0, built.stderr);
        assert.match(built.stdout + built.stderr, /^readable: \/etc\/os-release: /m);
      }
    });

    test("--layout writes an OCI layout skopeo reads", async () => {
      const dir = join(home, "builder-layout");
      const created = await locald([
        "builder",
        "create",
        "team/builder:layout",
        "--config",
        shared.config as string,
        "--layout",
        dir,
      ]);
      assert.equal(created.code, 0, created.stderr);
      const { stdout } = await run("skopeo", ["inspect", "--config", `oci:${dir}:layout`]);
      const labels = (JSON.parse(stdout) as { config: { Labels: Record<string, string> } }).config.Labels;
      assert.equal(labels["io.buildpacks.lifecycle.version"], LIFECYCLE.version);
    });
  });
}

describe("builder create refuses a bad builder.toml in words", () => {
  const env = () => ({ LOCALD_HOME: join(work(), "home-errors") });
  const create = async (name: string, toml: string): Promise<CliResult> => {
    const file = join(work(), `${name}.toml`);
    await writeFile(file, toml);
    return runLocald(
      ["--insecure-registry", registry().host, "builder", "create", `x/${name}`, "--config", file],
      {
        env: env(),
      },
    );
  };
  const parts = () => ({
    lifecycle: `[lifecycle]\nuri = ${JSON.stringify(shared.lifecycle)}\n`,
    build: `[build]\nimage = ${JSON.stringify(shared.buildImage)}\n`,
    run: `[[run.images]]\nimage = ${JSON.stringify(shared.runImage)}\n`,
    procfile: `[[buildpacks]]\nuri = ${JSON.stringify(join(EXAMPLES, "..", "e2e", "fixtures", "buildpacks", "procfile"))}\n[[order]]\n[[order.group]]\nid = "locald-samples/procfile"\n`,
  });
  const clean = (result: CliResult, message: RegExp) => {
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, message);
    assert.doesNotMatch(result.stderr, /unexpected|\n\s+at |ENOENT|EACCES/);
  };

  test("a missing file, invalid TOML, no build image, no run image", async () => {
    const missing = await runLocald(["builder", "create", "x/y", "--config", join(work(), "nope.toml")], {
      env: env(),
    });
    clean(missing, /Cannot read the builder configuration .*nope\.toml: it does not exist\./);
    const { lifecycle, build, run: runImage, procfile } = parts();
    clean(await create("bad-toml", "[[buildpacks]\n"), /bad-toml\.toml is not valid TOML/);
    clean(await create("no-build", procfile + lifecycle + runImage), /names no build image/);
    clean(await create("no-run", procfile + lifecycle + build), /names no run image/);
    clean(await create("no-order", lifecycle + build + runImage), /has no detection order/);
  });

  test("an order naming a buildpack that is not there, a buildpack directory that is not one", async () => {
    const { lifecycle, build, run: runImage, procfile } = parts();
    clean(
      await create(
        "unknown-order",
        `${procfile}[[order]]\n[[order.group]]\nid = "nobody/here"\n${lifecycle}${build}${runImage}`,
      ),
      /The order names nobody\/here, which is not among the builder's \[\[buildpacks\]\]/,
    );
    clean(
      await create(
        "not-a-buildpack",
        `[[buildpacks]]\nuri = ${JSON.stringify(EXAMPLES)}\n[[order]]\n[[order.group]]\nid = "a"\n${lifecycle}${build}${runImage}`,
      ),
      /is not a buildpack: it has no buildpack\.toml/,
    );
    clean(
      await create(
        "gone",
        `[[buildpacks]]\nuri = "./not/here"\n[[order]]\n[[order.group]]\nid = "a"\n${lifecycle}${build}${runImage}`,
      ),
      /The buildpack at .*not\/here does not exist/,
    );
  });

  test("a lifecycle given only by version, and a build image without CNB_USER_ID", async () => {
    const { build, run: runImage, procfile } = parts();
    clean(
      await create("version-only", `${procfile}[lifecycle]\nversion = "0.21.12"\n${build}${runImage}`),
      /locald does not download lifecycle releases[\s\S]*lifecycle-v0\.21\.12\+linux\.x86-64\.tgz/,
    );
    const plain = await pushDebianImage(registry(), work(), "cnb/no-user:1", { Env: ["PATH=/usr/bin:/bin"] });
    const { lifecycle } = parts();
    clean(
      await create(
        "no-user",
        `${procfile}${lifecycle}[build]\nimage = ${JSON.stringify(plain)}\n${runImage}`,
      ),
      /does not set CNB_USER_ID/,
    );
  });
});

describe("buildpack package, and -b with buildpacks from outside the builder", () => {
  const home = () => join(work(), "home-package");
  const env = () => ({ LOCALD_HOME: home() });
  const locald = (args: string[]) =>
    runLocald(["--insecure-registry", registry().host, ...args], { env: env() });
  const probeDir = join(EXAMPLES, "..", "e2e", "fixtures", "buildpacks", "probe");
  let cnb: string;
  let image: string;
  let builder: string;
  let app: string;

  before(async () => {
    await mkdir(home(), { recursive: true });
    await writeFile(join(work(), "package.toml"), `[buildpack]\nuri = ${JSON.stringify(probeDir)}\n`);
    cnb = join(work(), "probe.cnb");
    image = `${registry().host}/cnb/probe-package:1`;
    app = join(work(), "probe-app");
    await mkdir(app, { recursive: true });
    await writeFile(join(app, "probe-paths"), `${BUILD_IMAGE_MARKER}\n`);
    builder = `${registry().host}/cnb/no-probe:1`;
    const created = await locald([
      "builder",
      "create",
      builder,
      "--config",
      shared.config as string,
      "--publish",
      "-q",
    ]);
    assert.equal(created.code, 0, created.stderr);
  });

  test("a buildpack packaged as a .cnb file and as an image, by locald", async () => {
    const file = await locald([
      "buildpack",
      "package",
      cnb,
      "--config",
      join(work(), "package.toml"),
      "--format",
      "file",
    ]);
    assert.equal(file.code, 0, file.stderr);
    assert.match(file.stdout, /Buildpacks: locald-samples\/probe@0\.1\.0/);
    // A .cnb is an OCI layout in a tar: skopeo reads it once unpacked.
    const layout = join(work(), "probe-layout");
    await mkdir(layout);
    await run("tar", ["-xf", cnb, "-C", layout]);
    const { stdout } = await run("skopeo", ["inspect", "--config", `oci:${layout}`]);
    const labels = (JSON.parse(stdout) as { config: { Labels: Record<string, string> } }).config.Labels;
    assert.equal(
      JSON.parse(labels["io.buildpacks.buildpackage.metadata"] as string).id,
      "locald-samples/probe",
    );
    const published = await locald([
      "buildpack",
      "package",
      image,
      "--config",
      join(work(), "package.toml"),
      "--publish",
    ]);
    assert.equal(published.code, 0, published.stderr);
  });

  test("pack builder create and locald builder create both take them (a .cnb file and an image)", async () => {
    const text = (await readFile(shared.config as string, "utf8")).replace(
      "[[order]]",
      `[[buildpacks]]\nuri = ${JSON.stringify(cnb)}\n[[buildpacks]]\nimage = "${image}"\n[[order]]\n[[order.group]]\nid = "locald-samples/probe"\n\n[[order]]`,
    );
    const config = join(work(), "with-packages.toml");
    await writeFile(config, text);
    const pack = await packBinary();
    await run(
      pack,
      ["builder", "create", `${registry().host}/cnb/pack-with-probe:1`, "--config", config, "--publish"],
      {
        env: {
          ...process.env,
          PACK_HOME: join(work(), "pack-home"),
          DOCKER_HOST: "unix:///nonexistent/docker.sock",
        },
        maxBuffer: 16 * 1024 * 1024,
      },
    );
    const created = await locald([
      "builder",
      "create",
      `${registry().host}/cnb/locald-with-probe:1`,
      "--config",
      config,
      "--publish",
    ]);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /locald-samples\/probe@0\.1\.0/);
    for (const made of ["pack-with-probe", "locald-with-probe"]) {
      const built = await locald([
        "build",
        app,
        "--builder",
        `${registry().host}/cnb/${made}:1`,
        "-t",
        `probed-${made}`,
      ]);
      assert.equal(built.code, 0, built.stderr);
      assert.match(built.stdout + built.stderr, new RegExp(`^readable: ${BUILD_IMAGE_MARKER}`, "m"));
    }
  });

  for (const [what, spec] of [
    ["a directory", () => probeDir],
    ["a .cnb file", () => cnb],
    ["an image", () => image],
  ] as const)
    test(`-b with ${what} adds the buildpack to a builder that lacks it`, async () => {
      const built = await locald(["build", app, "--builder", builder, "-b", spec(), "-t", "probed"]);
      assert.equal(built.code, 0, built.stderr);
      assert.match(built.stdout + built.stderr, new RegExp(`^readable: ${BUILD_IMAGE_MARKER}`, "m"));
    });

  test("-b with a directory of a buildpack the builder has (same id and version) builds with the directory's", async () => {
    const edited = join(work(), "procfile-edited");
    await cp(join(EXAMPLES, "..", "e2e", "fixtures", "buildpacks", "procfile"), edited, { recursive: true });
    const script = join(edited, "bin", "build");
    await writeFile(script, `${await readFile(script, "utf8")}echo "the edited copy ran" >&2\n`);
    const procfileApp = join(work(), "procfile-app");
    await cp(join(EXAMPLES, "procfile-static"), procfileApp, { recursive: true });
    const built = await locald(["build", procfileApp, "--builder", builder, "-b", edited, "-t", "edited"]);
    assert.equal(built.code, 0, built.stderr);
    assert.match(built.stderr, /the edited copy ran/);
    const plain = await locald(["build", procfileApp, "--builder", builder, "-t", "plain"]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.doesNotMatch(plain.stderr, /the edited copy ran/);
  });

  test("-b naming nothing there says so in words", async () => {
    const built = await locald(["build", app, "--builder", builder, "-b", "no-such-buildpack"]);
    assert.equal(built.code, 1, built.stderr);
    assert.match(
      built.stderr,
      /-b no-such-buildpack: the builder .* has no such buildpack, and there is no such directory or file/,
    );
  });
});
