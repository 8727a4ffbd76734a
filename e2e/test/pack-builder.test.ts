/**
 * Builders made by the reference platform: the real `pack` (built from the Go module proxy)
 * creates a builder of our sample buildpacks, the lifecycle and Debian build and run images with
 * `pack builder create --publish` (no Docker daemon); locald inspects it, builds the sample apps
 * with it in both isolations and runs them, and a probe tells which OS the build ran on — as root
 * and as an unprivileged user.
 */
import assert from "node:assert/strict";
import { chmod, cp, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { removeTree } from "@locald/oci";
import {
  BUILD_IMAGE_MARKER,
  buildNodeVersion,
  type CliOptions,
  type CliResult,
  callerIn,
  makeTempDir,
  PACK_VERSION,
  PREVIOUS_LIFECYCLE,
  pushPackBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  TEST_CALLERS,
  type TestRegistry,
} from "../src/index.js";

const EXAMPLES = fileURLToPath(new URL("../../../examples/", import.meta.url));
const shared: { registry?: TestRegistry; work?: string; builder?: string } = {};

before(async () => {
  for (const tool of ["bwrap", "runc", "setpriv", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("pack-builder");
  await chmod(shared.work, 0o755);
  ({ builder: shared.builder } = await pushPackBuilder(shared.registry, shared.work, [
    "nodejs",
    "procfile",
    "probe",
  ]));
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

for (const who of TEST_CALLERS) {
  describe(`a builder made by pack ${PACK_VERSION}, as ${who}`, () => {
    let home: string;
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    before(async () => {
      home = join(shared.work as string, `home-${who === "root" ? "root" : "user"}`);
      await mkdir(home, { recursive: true });
      for (const app of ["procfile-static", "hello-node"])
        await cp(join(EXAMPLES, app), join(home, app), { recursive: true });
      await mkdir(join(home, "probe"));
      await writeFile(join(home, "probe", "probe-paths"), `${BUILD_IMAGE_MARKER}\n`);
      ({ as, env } = await callerIn(who, home));
    });
    const locald = (args: string[]): Promise<CliResult> => runLocald(args, { env, ...(as ? { as } : {}) });

    test("builder inspect reads what pack wrote: lifecycle, buildpacks, order, run image", async () => {
      const inspected = await locald(["builder", "inspect", shared.builder as string]);
      assert.equal(inspected.code, 0, inspected.stderr);
      assert.match(
        inspected.stdout,
        new RegExp(`Lifecycle:\\s+${PREVIOUS_LIFECYCLE.version.replaceAll(".", "\\.")}`),
      );
      assert.match(inspected.stdout, /locald-samples\/nodejs@0\.1\.0/);
      assert.match(inspected.stdout, /Group #2: locald-samples\/procfile@0\.1\.0/);
      assert.match(inspected.stdout, /Run images:\s+\S+\/cnb\/run:bookworm/);
    });

    test("the sample apps build with it, in both isolations, and run on the run image", async () => {
      const builder = shared.builder as string;
      const procfile = await locald([
        "build",
        join(home, "procfile-static"),
        "--builder",
        builder,
        "-t",
        "by-pack",
      ]);
      assert.equal(procfile.code, 0, procfile.stderr);
      const ran = await locald(["container", "run", "--rm", "by-pack"]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, "Hello from a Procfile app built by locald with the CNB lifecycle.\n");
      for (const isolation of ["builder", "host"] as const) {
        const node = await locald([
          "build",
          join(home, "hello-node"),
          "--builder",
          builder,
          "-t",
          `node-by-pack-${isolation}`,
          "--isolation",
          isolation,
        ]);
        assert.equal(node.code, 0, node.stderr);
        // Builder isolation: the build image's node; host isolation: the host's.
        assert.match(
          node.stderr,
          new RegExp(`Node\\.js ${(await buildNodeVersion(isolation)).replaceAll(".", "\\.")}: installed`),
        );
        const served = await locald([
          "container",
          "run",
          "--rm",
          "--entrypoint",
          "/cnb/lifecycle/launcher",
          `node-by-pack-${isolation}`,
          "node",
          "-v",
        ]);
        assert.equal(served.code, 0, served.stderr);
        assert.equal(served.stdout, `${await buildNodeVersion(isolation)}\n`);
      }
    });

    test("in builder isolation the build runs in pack's build image; in host isolation on the host", async () => {
      for (const isolation of ["builder", "host"] as const) {
        const probed = await locald([
          "build",
          join(home, "probe"),
          "--builder",
          shared.builder as string,
          "-t",
          `probe-by-pack-${isolation}`,
          "--isolation",
          isolation,
        ]);
        assert.equal(probed.code, 0, probed.stderr);
        const seen = isolation === "builder" ? "readable" : "absent";
        assert.match(probed.stdout + probed.stderr, new RegExp(`^${seen}: ${BUILD_IMAGE_MARKER}`, "m"));
      }
    });
  });
}
