/**
 * The main paths once each, as root and as an unprivileged user: pull, unpack, build the sample
 * Procfile app with the test builder, and run it. The whole suite covers these in depth; this file
 * is what runs on the oldest Node line that `engines` still allows (see scripts/test.sh).
 */
import assert from "node:assert/strict";
import { chmod, cp, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { removeTree } from "@locald/oci";
import {
  type CliOptions,
  type CliResult,
  callerIn,
  makeTempDir,
  pushSampleBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  type TestRegistry,
} from "../src/index.js";

const SAMPLE_APP = fileURLToPath(new URL("../../../examples/procfile-static", import.meta.url));
const shared: { registry?: TestRegistry; work?: string; builder?: string; runImage?: string } = {};

before(async () => {
  for (const tool of ["bwrap", "runc", "setpriv", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("smoke");
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

for (const who of ["root", "an unprivileged user"] as const) {
  describe(`smoke, as ${who}, on Node ${process.version}`, () => {
    let home: string;
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    before(async () => {
      home = join(shared.work as string, `home-${who === "root" ? "root" : "user"}`);
      await mkdir(home, { recursive: true });
      await cp(SAMPLE_APP, join(home, "app"), { recursive: true });
      ({ as, env } = await callerIn(who, home));
    });
    const locald = (args: string[]): Promise<CliResult> => runLocald(args, { env, ...(as ? { as } : {}) });

    test("pull and unpack the run image", async () => {
      const ref = shared.runImage as string;
      const pulled = await locald(["image", "pull", "-q", ref]);
      assert.equal(pulled.code, 0, pulled.stderr);
      assert.match(pulled.stdout, /^sha256:[0-9a-f]{64}\n$/);
      const unpacked = await locald(["image", "unpack", ref, join(home, "rootfs")]);
      assert.equal(unpacked.code, 0, unpacked.stderr);
      assert.match(await readFile(join(home, "rootfs", "etc", "os-release"), "utf8"), /ID=debian/);
    });

    test("build the sample app and run it", async () => {
      const built = await locald([
        "build",
        join(home, "app"),
        "--builder",
        shared.builder as string,
        "-t",
        "smoke",
      ]);
      assert.equal(built.code, 0, built.stderr);
      const ran = await locald(["container", "run", "--rm", "smoke"]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, "Hello from a Procfile app built by locald with the CNB lifecycle.\n");
    });
  });
}
