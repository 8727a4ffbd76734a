/**
 * `locald build` with the real CNB lifecycle and a test builder assembled by our own code
 * (e2e/src/cnb-fixtures.ts), served by a real registry: the sample Procfile app builds into the
 * store and into an OCI layout, runs with `locald container run`, rebuilds reusing its layers,
 * and fails clearly when nothing detects the app or the builder cannot be reached — as root and
 * as an unprivileged user.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createReadStream } from "node:fs";
import { chmod, cp, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createGunzip } from "node:zlib";
import { formatReference, parseDigest, parseReference, removeTree, Store } from "@locald/oci";
import tarStream from "tar-stream";
import {
  BUILDER_GID,
  BUILDER_UID,
  buildNodeVersion,
  type CliOptions,
  type CliResult,
  findFreePort,
  LIFECYCLE,
  makeTempDir,
  pushSampleBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  TEST_CALLERS,
  type TestRegistry,
  unprivilegedUser,
} from "../src/index.js";

const run = promisify(execFile);
const EXAMPLES = fileURLToPath(new URL("../../../examples/", import.meta.url));

const SAMPLE_APPS = ["procfile-static", "hello-node", "hello-rust"] as const;
/** The sample build image has no Rust (see debianBuildImageLayer): the host's cargo builds it. */
const isolationFor = (app: string): string[] => (app === "hello-rust" ? ["--isolation", "host"] : []);

const shared: {
  registry?: TestRegistry;
  secured?: TestRegistry;
  work?: string;
  builder?: string;
  runImage?: string;
} = {};

before(async () => {
  for (const tool of ["bwrap", "runc", "skopeo", "umoci", "setpriv", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.secured = await startRegistry({ flavour: "token" });
  shared.work = await makeTempDir("build");
  await chmod(shared.work, 0o755);
  ({ builder: shared.builder, runImage: shared.runImage } = await pushSampleBuilder(
    shared.registry,
    shared.work,
    ["nodejs", "rust", "procfile"],
  ));
});

after(async () => {
  await shared.registry?.stop();
  await shared.secured?.stop();
  if (shared.work) await removeTree(shared.work);
});

/** GETs `url` once the server is up: connection refusals are retried for up to 20 s. */
async function httpGetWhenUp(url: string): Promise<string> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const response = await fetch(url);
      return await response.text();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      // A readiness poll, not a timing assumption: the next attempt comes as soon as this one fails.
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/**
 * Owners (`uid:gid`) of the entries under workspace/ and layers/ in an image's layer tars, read
 * from the blobs of the store under `localdHome`.
 */
async function layerOwners(localdHome: string, image: string): Promise<Map<string, string>> {
  const store = await Store.open(join(localdHome, "store"));
  const found = await store.find(formatReference(parseReference(image)));
  assert.ok(found, `${image} is in the store`);
  const manifest = JSON.parse(
    (await store.layout.readBlob(found.descriptor, 4 * 1024 * 1024)).toString(),
  ) as Manifest;
  const owners = new Map<string, string>();
  for (const layer of manifest.layers) {
    const extract = tarStream.extract();
    extract.on("entry", (header, stream, next) => {
      if (/^\/?(workspace|layers)\//.test(header.name))
        owners.set(header.name, `${header.uid}:${header.gid}`);
      stream.on("end", next);
      stream.resume();
    });
    await pipeline(
      createReadStream(store.layout.blobPath(parseDigest(layer.digest))),
      createGunzip(),
      extract,
    );
  }
  return owners;
}

interface Manifest {
  config: { digest: string };
  layers: Array<{ digest: string }>;
}

for (const who of TEST_CALLERS) {
  describe(`locald build, as ${who}`, () => {
    let home: string;
    let apps: string;
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    before(async () => {
      const slug = who === "root" ? "root" : "user";
      home = join(shared.work as string, `home-${slug}`);
      apps = join(home, "apps");
      await mkdir(apps, { recursive: true });
      await cp(join(EXAMPLES, "procfile-static"), join(apps, "procfile-static"), { recursive: true });
      await cp(join(EXAMPLES, "hello-node"), join(apps, "hello-node"), { recursive: true });
      await cp(join(EXAMPLES, "hello-rust"), join(apps, "hello-rust"), { recursive: true });
      await mkdir(join(apps, "broken"));
      await writeFile(join(apps, "broken", "Procfile"), "# no processes here\n");
      await mkdir(join(apps, "nothing"));
      await writeFile(join(apps, "nothing", "README"), "nothing a buildpack looks for\n");
      if (who !== "root") {
        as = await unprivilegedUser();
        await run("chown", ["-R", `${as.uid}:${as.gid}`, home]);
      }
      env = { HOME: home, LOCALD_HOME: join(home, "locald"), XDG_RUNTIME_DIR: home };
    });

    const locald = (args: string[], cwd?: string): Promise<CliResult> =>
      runLocald(args, { env, ...(as ? { as } : {}), ...(cwd ? { cwd } : {}) });
    /** Runs `image` detached on a free port, checks what it answers, and removes it. */
    const serveAndCheck = async (image: string, expected: string): Promise<void> => {
      const port = await findFreePort();
      const started = await locald(["container", "run", "-d", "--name", image, "-e", `PORT=${port}`, image]);
      assert.equal(started.code, 0, started.stderr);
      try {
        assert.equal(await httpGetWhenUp(`http://127.0.0.1:${port}/`), expected);
      } finally {
        await locald(["container", "rm", "-f", image]);
      }
    };
    const buildApp = (app: string, extra: string[] = []) =>
      locald(["build", join(apps, app), "--builder", shared.builder as string, ...extra]);

    test("the Procfile app builds into the store and runs; WORKDIR is /workspace", async () => {
      const built = await buildApp("procfile-static");
      assert.equal(built.code, 0, built.stderr);
      assert.match(
        built.stdout,
        /^Successfully built docker\.io\/library\/procfile-static:latest \(sha256:[0-9a-f]{64}\)/,
      );
      for (const header of ["ANALYZING", "DETECTING", "RESTORING", "BUILDING", "EXPORTING"])
        assert.match(built.stderr, new RegExp(`===> ${header}`));
      assert.match(built.stderr, /Procfile: process "web": cat message.txt/);
      // Not a terminal: the lifecycle's warnings come without ANSI colour (CNB_NO_COLOR).
      assert.match(built.stderr, /Warning: /);
      assert.ok(!built.stderr.includes("\u001b["), "no ANSI escape in piped output");
      const ran = await locald(["container", "run", "--rm", "procfile-static"]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, "Hello from a Procfile app built by locald with the CNB lifecycle.\n");
      const other = await locald([
        "container",
        "run",
        "--rm",
        "--entrypoint",
        "/cnb/process/shout",
        "procfile-static",
      ]);
      assert.equal(other.stdout, "HELLO FROM A PROCFILE APP BUILT BY LOCALD WITH THE CNB LIFECYCLE.\n");
      const inspected = JSON.parse(
        (await locald(["image", "inspect", "--json", "procfile-static"])).stdout,
      ) as {
        config: { WorkingDir: string; Env: string[] };
      };
      assert.equal(inspected.config.WorkingDir, "/workspace");
      assert.ok(inspected.config.Env.includes("CNB_LAYERS_DIR=/layers"));
    });

    test("the image's app and layers belong to the builder's user, so the app can write them", async () => {
      // Built by the test above. A rootless build used to record the caller's own uid instead.
      const owners = await layerOwners(join(home, "locald"), "procfile-static");
      assert.ok(owners.size > 0, "the image has /workspace and /layers entries");
      for (const [path, ids] of owners)
        assert.equal(ids, `${BUILDER_UID}:${BUILDER_GID}`, `${path} belongs to the build user`);
      // The image must let its user write: run it as root, where ownership is kept as recorded
      // (a rootless run sees every file as its own root's). The unprivileged user's image goes
      // through the registry to a root-owned store.
      let image = "procfile-static";
      let runAs: CliOptions = { env };
      if (as) {
        image = `${(shared.registry as TestRegistry).host}/e2e/procfile-static-by-user:1`;
        const published = await buildApp("procfile-static", ["-t", image, "--publish"]);
        assert.equal(published.code, 0, published.stderr);
        runAs = { env: { HOME: join(home, "root-run"), LOCALD_HOME: join(home, "root-run", "locald") } };
      }
      const wrote = await runLocald(
        [
          "container",
          "run",
          "--rm",
          // As real stacks' run images do (our test run image names no user).
          "-u",
          `${BUILDER_UID}:${BUILDER_GID}`,
          "--entrypoint",
          "/bin/sh",
          image,
          "-c",
          "id -u; touch /workspace/written && mkdir /layers/written && echo wrote",
        ],
        runAs,
      );
      assert.equal(wrote.code, 0, wrote.stderr);
      assert.equal(wrote.stdout, `${BUILDER_UID}\nwrote\n`);
    });

    test("the Node.js app builds, answers on its port, and a rebuild reuses its layers", async () => {
      const built = await buildApp("hello-node");
      assert.equal(built.code, 0, built.stderr);
      assert.match(built.stderr, /Node\.js v\d+\.\d+\.\d+: installed into the node layer/);
      await serveAndCheck("hello-node", `Hello from hello-node on Node.js ${await buildNodeVersion()}\n`);
      const layersOf = async () =>
        (
          JSON.parse(
            (await locald(["image", "inspect", "--raw", "manifest", "hello-node"])).stdout,
          ) as Manifest
        ).layers.map((l) => l.digest);
      const first = await layersOf();
      const rebuilt = await buildApp("hello-node");
      assert.equal(rebuilt.code, 0, rebuilt.stderr);
      assert.match(rebuilt.stderr, /reusing the node layer/);
      assert.match(rebuilt.stderr, /package-lock\.json unchanged, reusing the node_modules layer/);
      assert.deepEqual(await layersOf(), first, "same layer digests");
    });

    test("in host isolation the Rust app builds and answers; a one-line change recompiles on the restored target/", async () => {
      const built = await buildApp("hello-rust", isolationFor("hello-rust"));
      assert.equal(built.code, 0, built.stderr);
      assert.match(built.stderr, /Rust: no cached target\/, building from scratch/);
      await serveAndCheck("hello-rust", "Hello from hello-rust\n");
      const main = join(apps, "hello-rust", "src", "main.rs");
      const source = await readFile(main, "utf8");
      await writeFile(main, source.replace('"Hello from hello-rust"', '"Hello again from hello-rust"'));
      const rebuilt = await buildApp("hello-rust", isolationFor("hello-rust"));
      assert.equal(rebuilt.code, 0, rebuilt.stderr);
      assert.match(rebuilt.stderr, /Restoring data for "locald-samples\/rust:target" from cache/);
      assert.match(rebuilt.stderr, /Rust: reusing the cached target\/ \(\d+ files\)/);
      assert.match(rebuilt.stderr, /Rust: sources changed since the cached build/);
      assert.match(rebuilt.stderr, /Compiling hello-rust v1\.0\.0/);
      await serveAndCheck("hello-rust", "Hello again from hello-rust\n");
    });

    test("a rebuild with no change reuses every layer", async () => {
      const manifest = async (): Promise<Manifest> =>
        JSON.parse(
          (await locald(["image", "inspect", "--raw", "manifest", "procfile-static"])).stdout,
        ) as Manifest;
      const before = await manifest();
      const rebuilt = await buildApp("procfile-static");
      assert.equal(rebuilt.code, 0, rebuilt.stderr);
      assert.match(rebuilt.stderr, /Reusing (\d+\/\d+ app layer|layer)/);
      const afterBuild = await manifest();
      assert.deepEqual(
        afterBuild.layers.map((l) => l.digest),
        before.layers.map((l) => l.digest),
        "same layer digests",
      );
    });

    test("--publish pushes every sample app to a registry with token auth, with the caller's credentials", async () => {
      const secured = shared.secured as TestRegistry;
      const nameOf = (app: string) => `${secured.host}/apps/${app}-${who === "root" ? "root" : "user"}:1`;
      const refused = await buildApp("procfile-static", ["--publish", "-t", nameOf("procfile-static")]);
      assert.equal(refused.code, 1, "no credentials yet");
      const login = await runLocald(["login", secured.host, "-u", "alice", "--password-stdin"], {
        env,
        input: "wonderland\n",
        ...(as ? { as } : {}),
      });
      assert.equal(login.code, 0, login.stderr);
      for (const app of SAMPLE_APPS) {
        const published = await buildApp(app, ["--publish", "-t", nameOf(app), ...isolationFor(app)]);
        assert.equal(published.code, 0, published.stderr);
        assert.doesNotMatch(
          published.stderr + published.stdout,
          /wonderland|YWxpY2U6d29uZGVybGFuZA/,
          "no credential in the output",
        );
        const digest = /\((sha256:[0-9a-f]{64})\)/.exec(published.stdout)?.[1];
        const inspected = JSON.parse(
          (
            await run("skopeo", [
              "inspect",
              "--tls-verify=false",
              "--creds",
              "alice:wonderland",
              `docker://${nameOf(app)}`,
            ])
          ).stdout,
        ) as { Digest: string; Env: string[] };
        assert.equal(inspected.Digest, digest, app);
        assert.ok(inspected.Env.includes("CNB_APP_DIR=/workspace"), app);
      }
      const ran = await locald(["container", "run", "--rm", "--pull", "always", nameOf("procfile-static")]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, "Hello from a Procfile app built by locald with the CNB lifecycle.\n");
    });

    test("every sample app into an OCI layout that skopeo and umoci accept, WORKDIR /workspace", async () => {
      const layout = join(home, "layout");
      for (const app of SAMPLE_APPS) {
        const built = await buildApp(app, ["--layout", layout, "-t", app, ...isolationFor(app)]);
        assert.equal(built.code, 0, built.stderr);
        assert.match(built.stdout, /into OCI layout /);
        const inspected = JSON.parse(
          (await run("skopeo", ["inspect", "--config", `oci:${layout}:${app}`])).stdout,
        ) as {
          config: { WorkingDir: string; Env: string[] };
        };
        assert.equal(inspected.config.WorkingDir, "/workspace", app);
        assert.ok(inspected.config.Env.includes("CNB_APP_DIR=/workspace"), app);
      }
      const listed = await run("umoci", ["ls", "--layout", layout]);
      assert.deepEqual(listed.stdout.trim().split("\n").sort(), [...SAMPLE_APPS].sort());
      const unpacked = join(home, "umoci-bundle");
      await run("umoci", ["unpack", "--rootless", "--image", `${layout}:procfile-static`, unpacked]);
      assert.equal(
        await readFile(join(unpacked, "rootfs", "workspace", "message.txt"), "utf8"),
        "Hello from a Procfile app built by locald with the CNB lifecycle.\n",
      );
      await removeTree(unpacked);
    });

    test("the run image is named by its registry reference and digest; store, layout and --publish write one config", async () => {
      const pinned = ["--creation-time", "0"];
      const layout = join(home, "layout-pinned");
      const published = `${(shared.registry as TestRegistry).host}/e2e/pinned-${as ? "user" : "root"}:1`;
      for (const output of [
        ["-t", "pinned"],
        ["--layout", layout, "-t", "pinned"],
        ["-t", published, "--publish"],
      ]) {
        const built = await buildApp("procfile-static", [...pinned, ...output]);
        assert.equal(built.code, 0, built.stderr);
      }
      const configs = [
        (await locald(["image", "inspect", "--raw", "config", "pinned"])).stdout,
        (await run("skopeo", ["inspect", "--raw", "--config", `oci:${layout}:pinned`])).stdout,
        (await run("skopeo", ["inspect", "--raw", "--config", "--tls-verify=false", `docker://${published}`]))
          .stdout,
      ].map((text) => text.trim());
      const runImage = shared.runImage as string;
      const repository = runImage.slice(0, runImage.lastIndexOf(":"));
      for (const config of configs) {
        const labels = (JSON.parse(config) as { config: { Labels: Record<string, string> } }).config.Labels;
        const metadata = JSON.parse(labels["io.buildpacks.lifecycle.metadata"] as string) as {
          runImage: { reference: string; image: string };
        };
        assert.match(
          metadata.runImage.reference,
          new RegExp(`^${repository.replaceAll(".", "\\.")}@sha256:[0-9a-f]{64}$`),
        );
        assert.equal(metadata.runImage.image, runImage);
      }
      assert.equal(configs[1], configs[0], "the layout's config is the store's");
      assert.equal(configs[2], configs[0], "the published config is the store's");
    });

    test("an app nothing detects: a clear message listing what each buildpack said", async () => {
      const failed = await buildApp("nothing", ["-t", "nothing"]);
      assert.equal(failed.code, 1);
      assert.match(failed.stderr, /No buildpack detected this app/);
      assert.match(failed.stderr, /fail: locald-samples\/nodejs@0\.1\.0/);
      assert.match(failed.stderr, /fail: locald-samples\/rust@0\.1\.0/);
      assert.match(failed.stderr, /fail: locald-samples\/procfile@0\.1\.0/);
      assert.doesNotMatch(failed.stderr, /at .*\.js:\d+/);
    });

    test("a buildpack that fails: its id and its last output lines", async () => {
      const failed = await buildApp("broken", ["-t", "broken"]);
      assert.equal(failed.code, 1);
      assert.match(failed.stderr, /Buildpack locald-samples\/procfile@0\.1\.0 failed while building/);
      assert.match(failed.stderr, /no "type: command" line in the Procfile/);
      assert.doesNotMatch(failed.stderr, /at .*\.js:\d+/);
    });

    test("locald.toml: a service's build table, and a broken file refused with its line", async () => {
      const project = join(home, "project");
      await mkdir(project, { recursive: true });
      await cp(join(EXAMPLES, "procfile-static"), join(project, "site"), { recursive: true });
      await writeFile(
        join(project, "locald.toml"),
        [
          "[project]",
          `builder = "${shared.builder}"`,
          "",
          "[services.site.build]",
          'path = "site"',
          'buildpacks = ["locald-samples/procfile"]',
          'image = "site-image"',
        ].join("\n"),
      );
      if (as) await run("chown", ["-R", `${as.uid}:${as.gid}`, project]);
      const built = await locald(["build", "site"], project);
      assert.equal(built.code, 0, built.stderr);
      assert.match(built.stdout, /Successfully built docker\.io\/library\/site-image:latest/);
      const unknown = await locald(["build", "site", "-b", "no/such-buildpack"], project);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /has no buildpack no\/such-buildpack/);
      await writeFile(
        join(project, "locald.toml"),
        '[services.site.build]\npath = "site"\nbuidler = "typo"\n',
      );
      const broken = await locald(["build", "site"], project);
      assert.equal(broken.code, 1);
      assert.match(broken.stderr, /locald\.toml:3:1: services\.site\.build\.buidler: Unexpected property/);
      await writeFile(join(project, "locald.toml"), '[services.site.build\npath = "site"\n');
      const syntax = await locald(["build"], project);
      assert.equal(syntax.code, 1);
      assert.match(syntax.stderr, /locald\.toml:1:\d+: /);
      assert.doesNotMatch(broken.stderr + syntax.stderr, /at .*\.js:\d+/);
    });

    test("builder inspect shows the lifecycle, its APIs, the buildpacks, the order and the run image", async () => {
      const shown = await locald(["builder", "inspect", shared.builder as string]);
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(
        shown.stdout,
        new RegExp(`^Lifecycle: +${LIFECYCLE.version.replaceAll(".", "\\.")}$`, "m"),
      );
      assert.match(shown.stdout, /^Platform APIs: +0\.7, .*0\.14, 0\.15$/m);
      assert.match(shown.stdout, /^Isolation: +builder: buildpacks run in the builder image's own OS/m);
      assert.match(shown.stdout, /^Build user: +1000:1000$/m);
      assert.match(shown.stdout, /^Run images: +127\.0\.0\.1:\d+\/cnb\/run:bookworm$/m);
      assert.match(shown.stdout, /^ {2}Group #2: locald-samples\/rust@0\.1\.0$/m);
    });

    test("an unreachable builder: a clear message", async () => {
      const failed = await locald([
        "build",
        join(apps, "procfile-static"),
        "--builder",
        "127.0.0.1:9/no/builder:1",
      ]);
      assert.equal(failed.code, 1);
      assert.match(failed.stderr, /127\.0\.0\.1:9/);
      assert.doesNotMatch(failed.stderr, /at .*\.js:\d+/);
      const none = await locald(["build", join(apps, "procfile-static")]);
      assert.equal(none.code, 2);
      assert.match(none.stderr, /No builder: pass --builder/);
    });

    test("the app's own files are left as they were", async () => {
      const message = await readFile(join(apps, "procfile-static", "message.txt"), "utf8");
      assert.equal(message, "Hello from a Procfile app built by locald with the CNB lifecycle.\n");
      const { stdout } = await run("ls", ["-A", join(apps, "procfile-static")]);
      assert.deepEqual(stdout.trim().split("\n").sort(), ["Procfile", "message.txt"]);
    });
  });
}
