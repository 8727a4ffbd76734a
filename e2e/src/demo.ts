/**
 * The README's "run it" command on built-in defaults: a real registry on loopback, a CNB
 * builder assembled by our own code (the real lifecycle built from source, our sample Procfile
 * buildpack, a Debian bookworm run image made with mmdebstrap) and pushed to it; then
 * `locald build` of the bundled sample app into an OCI image, and `locald container run` of it.
 */
import { chmod } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runLocald } from "./cli.js";
import { pushSampleBuilder } from "./cnb-fixtures.js";
import { startRegistry } from "./registry.js";
import { makeTempDir, removeDir } from "./util.js";

const SAMPLE_APP = fileURLToPath(new URL("../../../examples/procfile-static", import.meta.url));

async function step(title: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  process.stdout.write(`\n$ locald ${args.join(" ")}\n`);
  const result = await runLocald(args, { env });
  process.stdout.write(result.stdout);
  process.stderr.write(result.stderr);
  if (result.code !== 0) throw new Error(`${title} failed with exit code ${result.code}`);
  return result.stdout;
}

const work = await makeTempDir("demo");
await chmod(work, 0o755);
const registry = await startRegistry({ flavour: "anonymous" });
try {
  const env = { LOCALD_HOME: join(work, "home") };
  process.stdout.write(
    "Preparing the sample builder (first time on a machine: builds the lifecycle and Debian build and run images)…\n",
  );
  const { builder, runImage } = await pushSampleBuilder(registry, work, ["procfile"]);
  process.stdout.write(`Builder ${builder}, run image ${runImage}\n`);
  await step("build", ["build", SAMPLE_APP, "--builder", builder, "-t", "procfile-static"], env);
  await step("run", ["container", "run", "--rm", "procfile-static"], env);
  await step(
    "rebuild (layers reused)",
    ["build", SAMPLE_APP, "--builder", builder, "-t", "procfile-static"],
    env,
  );
  await step(
    "run another process type",
    ["container", "run", "--rm", "--entrypoint", "/cnb/process/shout", "procfile-static"],
    env,
  );
  await step("ls", ["image", "ls"], env);
  process.stdout.write(
    "\nDemo finished: the sample app was built with the CNB lifecycle into an OCI image and run.\n",
  );
} finally {
  await registry.stop();
  await removeDir(work);
}
