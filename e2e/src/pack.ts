import { execFile } from "node:child_process";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  lifecycleTarball,
  PREVIOUS_LIFECYCLE,
  pushBuildImage,
  pushRunImage,
  writeBuilderToml,
} from "./cnb-fixtures.js";
import { fixtureCacheDir } from "./debian.js";
import { buildGoModule } from "./go-module.js";
import type { TestRegistry } from "./registry.js";

/**
 * The real `pack` CLI as the reference platform: built once per machine from the Go module proxy
 * (`go install` refuses it — its go.mod has a replace directive — so the module is downloaded,
 * copied somewhere writable and built there), and `pack builder create --publish`, which needs no
 * Docker daemon, making builders of our sample buildpacks and the lifecycle.
 */

const run = promisify(execFile);

export const PACK_VERSION = "0.40.6";

let building: Promise<string> | undefined;

/** The path of the pack binary, built on first use and kept in the fixture cache. */
export function packBinary(): Promise<string> {
  building ??= (async () => {
    const binary = join(fixtureCacheDir(), `pack-${PACK_VERSION}`, "pack");
    if ((await stat(binary).catch(() => undefined))?.isFile()) return binary;
    const scratch = join(fixtureCacheDir(), `pack-${PACK_VERSION}.${process.pid}.partial`);
    try {
      await rm(scratch, { recursive: true, force: true });
      await mkdir(scratch, { recursive: true });
      await buildGoModule(
        {
          module: "github.com/buildpacks/pack",
          version: PACK_VERSION,
          pkg: ".",
          binary: "pack",
          ldflags: `-X github.com/buildpacks/pack/pkg/client.Version=${PACK_VERSION}`,
        },
        scratch,
      );
      await rm(join(binary, ".."), { recursive: true, force: true });
      await rename(join(scratch, "bin"), join(binary, ".."));
      return binary;
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr?.trim() ?? "";
      throw new Error(`Cannot build pack ${PACK_VERSION} from the Go module proxy: ${stderr || error}`);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  })();
  return building;
}

/**
 * A builder made by the real pack from the named sample buildpacks (one order group each), the
 * lifecycle and Debian build and run images, published to `registry` with no daemon.
 */
export async function pushPackBuilder(
  registry: TestRegistry,
  work: string,
  buildpacks: readonly string[],
): Promise<{ builder: string; runImage: string }> {
  const pack = await packBinary();
  const runImage = await pushRunImage(registry, work);
  const buildImage = await pushBuildImage(registry, work);
  const lifecycle = await lifecycleTarball(work, PREVIOUS_LIFECYCLE);
  const config = await writeBuilderToml(work, { buildpacks, lifecycle, buildImage, runImage });
  const builder = `${registry.host}/cnb/pack-builder:bookworm`;
  const home = join(work, "pack-home");
  await mkdir(home, { recursive: true });
  try {
    await run(pack, ["builder", "create", builder, "--config", config, "--publish"], {
      cwd: work,
      env: { ...process.env, PACK_HOME: home, DOCKER_HOST: "unix:///nonexistent/docker.sock" },
      maxBuffer: 16 * 1024 * 1024,
    });
  } catch (error) {
    const { stdout = "", stderr = "" } = error as { stdout?: string; stderr?: string };
    throw new Error(`pack builder create failed: ${`${stdout}\n${stderr}`.trim()}`);
  }
  return { builder, runImage };
}
