import { execFile } from "node:child_process";
import { cp, mkdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import type * as Host from "../../packages/locald/dist/src/host/index.js";
import { fixtureCacheDir } from "./debian.js";
import { buildGoModule } from "./go-module.js";

/**
 * The real `limactl`, for what a Linux machine can check of locald's Lima provider: its
 * `validate` judges the VM config locald writes, and a release-layout tarball of it is what the
 * installer downloads. Built once per machine from the Go module proxy like pack (downloaded,
 * copied somewhere writable, built there) and kept in the fixture cache. v1.2.3 is the newest
 * v1.2 the proxy serves; the v2 module path is refused.
 */

const run = promisify(execFile);

export const LIMA_VERSION = "1.2.3";
const MODULE = "github.com/lima-vm/lima";

export interface LimaBuild {
  /** The built limactl. */
  limactl: string;
  /** The module's source, for the release tarball's share/ files. */
  source: string;
}

let building: Promise<LimaBuild> | undefined;

/** limactl built from the module proxy; the first call on a machine takes minutes, later ones none. */
export function limactlBuild(): Promise<LimaBuild> {
  building ??= (async () => {
    const dir = join(fixtureCacheDir(), `limactl-${LIMA_VERSION}`);
    const built = { limactl: join(dir, "bin", "limactl"), source: join(dir, "src") };
    if ((await stat(built.limactl).catch(() => undefined))?.isFile()) return built;
    const scratch = `${dir}.${process.pid}.partial`;
    try {
      await rm(scratch, { recursive: true, force: true });
      await mkdir(scratch, { recursive: true });
      const { source } = await buildGoModule(
        {
          module: MODULE,
          version: LIMA_VERSION,
          pkg: "./cmd/limactl",
          binary: "limactl",
          ldflags: `-X ${MODULE}/pkg/version.Version=${LIMA_VERSION}`,
        },
        scratch,
      );
      // The whole source tree is not needed again: only what the release tarball carries.
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      await rename(join(scratch, "bin"), join(dir, "bin"));
      await mkdir(built.source);
      for (const keep of [
        "LICENSE",
        "README.md",
        "cmd/lima",
        "templates/default.yaml",
        "templates/_images/debian-12.yaml",
      ]) {
        await mkdir(join(built.source, keep, ".."), { recursive: true });
        await cp(join(source, keep), join(built.source, keep));
      }
      return built;
    } catch (error) {
      building = undefined;
      const stderr = (error as { stderr?: string }).stderr?.trim() ?? "";
      throw new Error(`Cannot build limactl ${LIMA_VERSION} from the Go module proxy: ${stderr || error}`);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  })();
  return building;
}

/**
 * A `.tar.gz` laid out as Lima's release tarballs are (bin/limactl, bin/lima, share/lima/
 * templates, share/doc/lima), made of the built limactl. The guest agents a real release also
 * carries (share/lima/lima-guestagent.Linux-*.gz) are left out: building them is another Go
 * build, and the installer treats share/ as opaque files.
 */
export async function limaReleaseTarball(work: string, name: string): Promise<string> {
  const { limactl, source } = await limactlBuild();
  const root = join(work, "release-root");
  await rm(root, { recursive: true, force: true });
  await mkdir(join(root, "bin"), { recursive: true });
  await mkdir(join(root, "share", "lima", "templates", "_images"), { recursive: true });
  await mkdir(join(root, "share", "doc", "lima"), { recursive: true });
  await cp(limactl, join(root, "bin", "limactl"));
  await cp(join(source, "cmd", "lima"), join(root, "bin", "lima"));
  await cp(
    join(source, "templates", "default.yaml"),
    join(root, "share", "lima", "templates", "default.yaml"),
  );
  await cp(
    join(source, "templates", "_images", "debian-12.yaml"),
    join(root, "share", "lima", "templates", "_images", "debian-12.yaml"),
  );
  await cp(join(source, "LICENSE"), join(root, "share", "doc", "lima", "LICENSE"));
  await cp(join(source, "README.md"), join(root, "share", "doc", "lima", "README.md"));
  const tarball = join(work, name);
  await run("tar", ["-czf", tarball, "-C", root, "bin", "share"]);
  await rm(root, { recursive: true, force: true });
  return tarball;
}

/** `limactl validate` run as `as` (limactl refuses root) with its own HOME; resolves with its output. */
export async function limactlValidate(
  files: readonly string[],
  as: { uid: number; gid: number },
  home: string,
): Promise<{ code: number; output: string }> {
  const { limactl } = await limactlBuild();
  try {
    const { stdout, stderr } = await run(
      "setpriv",
      [`--reuid=${as.uid}`, `--regid=${as.gid}`, "--clear-groups", "--", limactl, "validate", ...files],
      { env: { PATH: process.env.PATH, HOME: home, LIMA_HOME: join(home, ".lima") } },
    );
    return { code: 0, output: `${stdout}${stderr}` };
  } catch (error) {
    const { code, stdout = "", stderr = "" } = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof code === "number" ? code : 1, output: `${stdout}${stderr}` };
  }
}

/** locald's host-provider module as built by tsc (the CLI package exports no library API). */
export function localdHost(): Promise<typeof Host> {
  const file = fileURLToPath(new URL("../../../packages/locald/dist/src/host/index.js", import.meta.url));
  return import(pathToFileURL(file).href) as Promise<typeof Host>;
}
