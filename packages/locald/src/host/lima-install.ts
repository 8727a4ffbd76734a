import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { chmod, mkdir, readFile, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { OciError, tarEntries } from "@locald/oci";

/**
 * locald's own `limactl`, under `$LOCALD_HOME/tools/lima/<version>/` and never on PATH (a Lima
 * the user installed, at another version, is left alone and does not change ours): a release
 * tarball from a pinned URL, checked against a pinned SHA-256 before a byte of it is unpacked,
 * unpacked by our tar reader (no `tar` program, entries that climb out refused) into a temp
 * directory that is renamed into place only when complete — a wrong sum, a truncated download
 * or a bad archive leave nothing behind.
 */

export class LimaInstallError extends OciError {
  readonly code = "LIMA_INSTALL";
}

export interface LimaRelease {
  version: string;
  /** Where `lima-<version>-<Os>-<arch>.tar.gz` is; `LOCALD_LIMA_BASE_URL` replaces it (a mirror). */
  baseUrl: string;
  /** SHA-256 (hex) per asset name, from the release's SHA256SUMS. */
  sha256: Readonly<Record<string, string>>;
}

/**
 * The Lima locald drives: the release the e2e suite builds `limactl` of (v1.2.3, the newest
 * v1.2 the Go module proxy serves). Its sums are to be copied from the release's SHA256SUMS on a
 * machine that can reach GitHub — this one could not, and a sum we have not read is not pinned,
 * so until then the install refuses with LIMA_INSTALL rather than trust an unchecked download.
 */
export const LIMA_RELEASE: LimaRelease = {
  version: "1.2.3",
  baseUrl: "https://github.com/lima-vm/lima/releases/download/v1.2.3",
  sha256: {},
};

/** Releases are tens of MB; anything far larger is not one. */
const MAX_TARBALL_BYTES = 512 * 1024 * 1024;

/** Lima's asset name for a host: `lima-1.2.3-Darwin-arm64.tar.gz`. */
export function limaAsset(version: string, platform: NodeJS.Platform, arch: string): string {
  const os = platform === "darwin" ? "Darwin" : platform === "linux" ? "Linux" : undefined;
  const cpu =
    arch === "arm64" ? (platform === "darwin" ? "arm64" : "aarch64") : arch === "x64" ? "x86_64" : undefined;
  if (os === undefined || cpu === undefined)
    throw new LimaInstallError(`Lima has no release for ${platform}/${arch}.`);
  return `lima-${version}-${os}-${cpu}.tar.gz`;
}

export function limaDir(home: string, version: string): string {
  return join(home, "tools", "lima", version);
}

export interface InstallOptions {
  /** `$LOCALD_HOME`. */
  home: string;
  release?: LimaRelease;
  platform?: NodeJS.Platform;
  arch?: string;
  /** Default `LOCALD_LIMA_BASE_URL` else the release's. */
  baseUrl?: string;
  log?: (line: string) => void;
}

/** The path of our `limactl`, installed first if it is not there yet. */
export async function ensureLimactl(options: InstallOptions): Promise<string> {
  const release = options.release ?? LIMA_RELEASE;
  const dir = limaDir(options.home, release.version);
  const limactl = join(dir, "bin", "limactl");
  if ((await stat(limactl).catch(() => undefined))?.isFile()) return limactl;

  const asset = limaAsset(
    release.version,
    options.platform ?? process.platform,
    options.arch ?? process.arch,
  );
  const expected = release.sha256[asset];
  if (expected === undefined)
    throw new LimaInstallError(
      `No SHA-256 is pinned for ${asset} in this build of locald, so it will not download it.`,
      {
        hint: `Install Lima ${release.version} yourself and copy its bin/ and share/ to ${dir}, or use a locald release that pins it.`,
      },
    );
  const base = (options.baseUrl ?? process.env.LOCALD_LIMA_BASE_URL ?? release.baseUrl).replace(/\/+$/, "");
  const url = `${base}/${asset}`;

  const parent = dirname(dir);
  await mkdir(parent, { recursive: true });
  // Both temp paths sit next to the final one: same filesystem, so the rename is atomic, and a
  // dot name that is never mistaken for an installed version.
  const stamp = `${process.pid}.${Date.now()}`;
  const download = join(parent, `.${asset}.${stamp}.download`);
  const staging = join(parent, `.${release.version}.${stamp}.partial`);
  try {
    options.log?.(`Downloading Lima ${release.version} from ${url}`);
    const actual = await downloadTo(url, download);
    if (actual !== expected.toLowerCase())
      throw new LimaInstallError(
        `${url} does not match its pinned SHA-256: expected ${expected}, got ${actual}.`,
        {
          hint: "The download was truncated or altered (or LOCALD_LIMA_BASE_URL serves another file); nothing was installed. Try again, or check the mirror.",
        },
      );
    await unpack(await readFile(download), staging, url);
    if (!(await stat(join(staging, "bin", "limactl")).catch(() => undefined))?.isFile())
      throw new LimaInstallError(`${url} has no bin/limactl: it is not a Lima release.`);
    try {
      await rename(staging, dir);
    } catch (error) {
      // Another locald installed the same version meanwhile: theirs is as good as ours.
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw error;
    }
    return limactl;
  } finally {
    await rm(download, { force: true });
    await rm(staging, { recursive: true, force: true });
  }
}

/** Streams `url` to `file` and returns the SHA-256 of what arrived. */
async function downloadTo(url: string, file: string): Promise<string> {
  let response: Response;
  try {
    // A release file, not a registry blob: the registry transport's auth and retry policies do
    // not apply; the pinned sum is what makes it safe.
    response = await fetch(url, { redirect: "follow" });
  } catch (error) {
    throw new LimaInstallError(`Cannot download ${url}: ${(error as Error).message}.`, { cause: error });
  }
  if (!response.ok || response.body === null)
    throw new LimaInstallError(`Cannot download ${url}: HTTP ${response.status}.`);
  const hash = createHash("sha256");
  let size = 0;
  const count = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      size += chunk.length;
      if (size > MAX_TARBALL_BYTES)
        callback(new LimaInstallError(`${url} is larger than a Lima release can be.`));
      else {
        hash.update(chunk);
        callback(null, chunk);
      }
    },
  });
  try {
    await pipeline(Readable.fromWeb(response.body), count, createWriteStream(file, { mode: 0o600 }));
  } catch (error) {
    if (error instanceof LimaInstallError) throw error;
    throw new LimaInstallError(`The download of ${url} broke off: ${(error as Error).message}.`, {
      cause: error,
    });
  }
  return hash.digest("hex");
}

/** Writes a release tarball's files, directories and in-tree symlinks under `root`. */
async function unpack(bytes: Buffer, root: string, what: string): Promise<void> {
  let entries: Awaited<ReturnType<typeof tarEntries>>;
  try {
    entries = await tarEntries(bytes, what);
  } catch (error) {
    throw new LimaInstallError(`${what} cannot be unpacked: ${(error as Error).message}`, { cause: error });
  }
  await mkdir(root, { recursive: true });
  for (const entry of entries) {
    const path = entry.path.replace(/\/+$/, "");
    if (path === "") continue;
    const target = join(root, path);
    await mkdir(dirname(target), { recursive: true });
    if (entry.type === "directory") await mkdir(target, { recursive: true });
    else if (entry.type === "file") {
      await writeFile(target, entry.content ?? new Uint8Array());
      // Only permission bits that make sense for a tool: no setuid from a download.
      await chmod(target, (entry.mode ?? 0o644) & 0o755);
    } else {
      const link = entry.linkname ?? "";
      const resolved = posix.normalize(posix.join(posix.dirname(path), link));
      if (posix.isAbsolute(link) || resolved === ".." || resolved.startsWith("../"))
        throw new LimaInstallError(`${what} has a symlink ${path} → ${link} that leaves the release.`);
      await symlink(link, target);
    }
  }
}
