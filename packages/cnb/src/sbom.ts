import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { copyFile, lstat, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { type ClientOptions, type Store, unpackImage, walkTree } from "@locald/oci";
import { BuildConfigError } from "./errors.js";

/**
 * SBOMs, as pack gives them: after a build, what the lifecycle gathered from the buildpacks under
 * `<layers>/sbom` (`launch/`, `build/`, `cache/`, per buildpack and layer); from an image, the SBOM
 * layer the exporter added (`/layers/sbom`).
 */

/**
 * Copies the regular files and directories under `from` into `to` (created), never following or
 * copying a link: the tree was written by buildpacks, and a link in it may point anywhere.
 * Returns the files copied; 0 when `from` does not exist.
 */
export async function copySbomTree(from: string, to: string): Promise<number> {
  if (!(await lstat(from).catch(() => undefined))?.isDirectory()) return 0;
  let files = 0;
  await mkdir(to, { recursive: true });
  for (const entry of walkTree(from)) {
    const target = join(to, entry.path);
    if (entry.kind === "directory") await mkdir(target, { recursive: true });
    else if (entry.kind === "file") {
      await rm(target, { force: true });
      await copyFile(entry.host, target, constants.COPYFILE_EXCL);
      files++;
    }
  }
  return files;
}

/**
 * The SBOM layer of an image (pulled into the store when not there) written under
 * `<dir>/layers/sbom`, as `pack sbom download` writes it. Returns how many files.
 */
export async function downloadSbom(
  image: string,
  dir: string,
  options: { store: Store; client?: ClientOptions; scratchDir: string },
): Promise<number> {
  const scratch = join(options.scratchDir, `sbom-${randomBytes(6).toString("hex")}`);
  try {
    // The secure unpacker writes only that subtree, every path resolved inside the scratch root.
    await unpackImage(image, scratch, {
      ...options.client,
      store: options.store,
      pull: "missing",
      paths: ["/layers/sbom"],
      cacheDir: false,
    });
    const files = await copySbomTree(join(scratch, "layers", "sbom"), join(dir, "layers", "sbom"));
    if (files === 0)
      throw new BuildConfigError(`${image} has no SBOM: no buildpack that built it wrote one.`, {
        hint: "SBOMs come from buildpacks (Buildpack API 0.7 and later) that write <layer>.sbom.<ext> files.",
      });
    return files;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
