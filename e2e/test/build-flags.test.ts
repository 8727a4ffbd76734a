/**
 * pack's build flags for CI: `--cache-image` keeps the build cache in a registry, so a machine
 * that starts empty restores it (a sample buildpack counts restores of its cache-only layer);
 * `-t` more than once names the image more than once, in the registry and in the store.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { removeTree } from "@locald/oci";
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
  await writeFile(join(shared.app, "probe-paths"), "/etc/os-release\n/docker-config\n/cache\n");
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
    // The lifecycle's registry credentials are never shown to buildpacks.
    assert.match(first.stdout + first.stderr, /^absent: \/docker-config$/m);
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
    // The lifecycle's cache directory and its credentials (for the cache image and the store's
    // loopback registry) are the lifecycle's own: buildpacks see neither.
    assert.match(first.stdout + first.stderr, /^absent: \/cache$/m);
    assert.match(first.stdout + first.stderr, /^absent: \/docker-config$/m);
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

for (const who of TEST_CALLERS)
  describe(`--volume, --network, --default-process, --report-output-dir, --exec-env, --post-buildpack, --uid, as ${who}`, () => {
    const procfileBuildpack = fileURLToPath(new URL("../../fixtures/buildpacks/procfile", import.meta.url));
    const base = () => join(shared.work as string, `flags-${who === "root" ? "root" : "user"}`);
    const app = () => join(base(), "app");
    const secrets = () => join(base(), "secrets");
    const execEnvBuildpack = () => join(base(), "exec-env-buildpack");
    let caller: Awaited<ReturnType<typeof callerIn>>;
    const locald = (args: string[]) =>
      runLocald(["--insecure-registry", registry().host, ...args], {
        env: caller.env,
        ...(caller.as ? { as: caller.as } : {}),
      });
    const build = (args: string[]) =>
      locald([
        "build",
        app(),
        "--builder",
        shared.builder as string,
        "--post-buildpack",
        procfileBuildpack,
        ...args,
      ]);

    before(async () => {
      await mkdir(app(), { recursive: true });
      caller = await callerIn(who, join(base(), "caller"));
      await writeFile(join(app(), "probe-paths"), "/secrets\n");
      await writeFile(join(app(), "probe-url"), `${registry().host.replace(":", " ")}\n`);
      await writeFile(
        join(app(), "Procfile"),
        "web: cat /etc/os-release\nother: echo from the other process\n",
      );
      // A Buildpack API 0.12 buildpack (the first the lifecycle gives CNB_EXEC_ENV to), as a pre-buildpack.
      await mkdir(join(execEnvBuildpack(), "bin"), { recursive: true });
      await writeFile(
        join(execEnvBuildpack(), "buildpack.toml"),
        'api = "0.12"\n[buildpack]\nid = "e2e/exec-env"\nversion = "1.0.0"\n[[targets]]\nos = "linux"\n',
      );
      await writeFile(join(execEnvBuildpack(), "bin", "detect"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
      await writeFile(
        join(execEnvBuildpack(), "bin", "build"),
        // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell script, not a template
        '#!/bin/sh\necho "exec-env: ${CNB_EXEC_ENV:-unset}"\n',
        {
          mode: 0o755,
        },
      );
      await mkdir(secrets(), { recursive: true });
      await writeFile(join(secrets(), "token"), "s3cr3t\n");
    });

    test("a volume the buildpacks see and the image does not hold; the default process, the report, the exec env", async () => {
      const reports = join(base(), "caller", "reports");
      const built = await build([
        "-t",
        "flags-a",
        "--volume",
        `${secrets()}:/secrets`,
        "--default-process",
        "other",
        "--report-output-dir",
        reports,
        "--exec-env",
        "test",
        "--pre-buildpack",
        execEnvBuildpack(),
      ]);
      assert.equal(built.code, 0, built.stderr);
      const output = built.stdout + built.stderr;
      assert.match(output, /^listed: \/secrets: token/m);
      assert.match(output, /^probe: reached /m);
      // The pre-buildpack ran first, and got the exec env.
      assert.match(output, /^exec-env: test$/m);
      assert.ok(output.indexOf("exec-env: test") < output.indexOf("listed: /secrets"));
      assert.match(output, /^user: 1000:1000$/m);
      assert.match(await readFile(join(reports, "report.toml"), "utf8"), /^\[image\]/m);
      const ran = await locald(["container", "run", "--rm", "flags-a"]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, "from the other process\n");
      const listed = await locald(["container", "run", "--rm", "--entrypoint", "ls", "flags-a", "-A", "/"]);
      assert.equal(listed.code, 0, listed.stderr);
      assert.doesNotMatch(listed.stdout, /^secrets$/m);
      const config = await locald(["image", "inspect", "flags-a", "--raw", "config"]);
      assert.doesNotMatch(config.stdout, /s3cr3t/);
    });

    test("--network none: a buildpack that needs the network fails, named, with its words", async () => {
      const built = await build(["-t", "flags-b", "--network", "none"]);
      assert.equal(built.code, 1, built.stdout + built.stderr);
      assert.match(built.stderr, /locald-samples\/probe/);
      assert.match(built.stderr, /cannot reach .*: this build has no network/);
      assert.doesNotMatch(built.stderr, /unexpected|\n\s+at /);
    });

    test("--uid and --gid make another build user", async () => {
      const built = await build(["-t", "flags-c", "--uid", "1234", "--gid", "2345"]);
      assert.equal(built.code, 0, built.stderr);
      assert.match(built.stdout + built.stderr, /^user: 1234:2345$/m);
    });

    test("a volume over the lifecycle's directories, or written wrong, is refused", async () => {
      const over = await build(["--volume", `${secrets()}:/workspace/x`]);
      assert.equal(over.code, 1, over.stderr);
      assert.match(over.stderr, /--volume cannot mount at \/workspace\/x/);
      const wrong = await build(["--volume", "only-one-part"]);
      assert.equal(wrong.code, 2, wrong.stderr);
      const missing = await build(["--volume", `${join(shared.work as string, "nope")}:/x`]);
      assert.equal(missing.code, 2, missing.stderr);
      assert.match(missing.stderr, /does not exist/);
    });
  });
