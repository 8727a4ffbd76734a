/**
 * The README's "run it" command on built-in defaults: a real registry on loopback, a sample image
 * built by our image factory, pushed and pulled back with the locald CLI, inspected, unpacked,
 * and a busybox image run as a container (twice: the second run stands on the cached root).
 */
import { join } from "node:path";
import { OciLayout } from "@locald/oci";
import { runLocald } from "./cli.js";
import { busyboxLayer, sampleImage } from "./fixtures.js";
import { writeImage } from "./image-factory.js";
import { startRegistry } from "./registry.js";
import { makeTempDir, removeDir } from "./util.js";

async function step(title: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  process.stdout.write(`\n$ locald ${args.join(" ")}\n`);
  const result = await runLocald(args, { env });
  process.stdout.write(result.stdout);
  process.stderr.write(result.stderr);
  if (result.code !== 0) throw new Error(`${title} failed with exit code ${result.code}`);
  return result.stdout;
}

const work = await makeTempDir("locald-demo-");
const registry = await startRegistry({ flavour: "anonymous" });
try {
  const env = { LOCALD_HOME: join(work, "home") };
  const layout = await OciLayout.open(join(work, "sample-layout"), { create: true });
  const image = await sampleImage(layout, { seed: 7 });
  await layout.addManifest(image.descriptor, "sample");
  process.stdout.write(`Built a sample image ${image.descriptor.digest} in ${layout.root}\n`);
  const ref = `${registry.host}/demo/sample:1`;
  await step("push", ["image", "push", `${layout.root}:sample`, ref], env);
  await step("pull", ["image", "pull", ref], env);
  await step("re-pull", ["image", "pull", ref], env);
  await step("inspect", ["image", "inspect", ref], env);
  await step("unpack", ["image", "unpack", ref, join(work, "rootfs")], env);
  await step("unpack again (from the cache)", ["image", "unpack", ref, join(work, "rootfs-2")], env);
  await step("ls", ["image", "ls"], env);
  const shell = await writeImage(layout, {
    layers: [await busyboxLayer()],
    config: {
      Entrypoint: ["/bin/sh", "-c"],
      Cmd: ['echo "Hello from a locald container (uid $(id -u) on $(hostname))"'],
    },
  });
  await layout.addManifest(shell.descriptor, "shell");
  const shellRef = `${registry.host}/demo/shell:1`;
  await step("push", ["image", "push", `${layout.root}:shell`, shellRef], env);
  await step("run", ["container", "run", "--rm", shellRef], env);
  await step(
    "run again (overlay over the cached root)",
    ["container", "run", "--rm", shellRef, "echo again"],
    env,
  );
  process.stdout.write(
    "\nDemo finished: pushed, pulled (then up to date), inspected, unpacked and run through a real registry.\n",
  );
} finally {
  await registry.stop();
  await removeDir(work);
}
