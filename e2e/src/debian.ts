import { execFile } from "node:child_process";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { requireBinary } from "./util.js";

const run = promisify(execFile);

/** The release our Debian fixtures are built from (the machine's own). */
export const DEBIAN_SUITE = "bookworm";

/** Where built fixtures are kept between runs of the suite on one machine. */
export function fixtureCacheDir(): string {
  return (
    process.env.LOCALD_FIXTURE_CACHE ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "locald-e2e")
  );
}

let building: Promise<string> | undefined;

/**
 * A Debian minbase root filesystem as a tar file, made by `mmdebstrap --variant=minbase` from
 * the Debian mirror (about 170 MB, ~15 s), built once per machine and then reused.
 */
export function debianMinbaseTar(): Promise<string> {
  building ??= (async () => {
    const dir = fixtureCacheDir();
    const tar = join(dir, `debian-${DEBIAN_SUITE}-minbase.tar`);
    if ((await stat(tar).catch(() => undefined))?.isFile()) return tar;
    const mmdebstrap = await requireBinary("mmdebstrap");
    await mkdir(dir, { recursive: true });
    const partial = `${tar}.${process.pid}.partial.tar`;
    try {
      await run(
        mmdebstrap,
        [
          "--variant=minbase",
          "--quiet",
          ...(process.getuid?.() === 0 ? [] : ["--mode=unshare"]),
          DEBIAN_SUITE,
          partial,
        ],
        { maxBuffer: 16 * 1024 * 1024 },
      );
    } catch (error) {
      await rm(partial, { force: true });
      const stderr = (error as { stderr?: string }).stderr?.trim() ?? "";
      throw new Error(
        `mmdebstrap could not build the Debian ${DEBIAN_SUITE} minbase fixture: ${stderr || error}`,
      );
    }
    await rename(partial, tar);
    return tar;
  })();
  return building;
}
