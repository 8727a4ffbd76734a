import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { constants, createWriteStream, type Stats } from "node:fs";
import { access, chmod, mkdir, readFile, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { dirname, join, posix, resolve } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { describeNetworkError, OciError, tarEntries } from "@locald/oci";

const run = promisify(execFile);

/**
 * The `limactl` locald drives. By default locald's own, under `$LOCALD_HOME/tools/lima/<version>/`
 * and never looked up on PATH (a Lima the user installed, at another version, is left alone and
 * does not silently change ours): a release tarball from a known URL, checked before a byte of it
 * is unpacked — against a SHA-256 pinned in this source when there is one, else against the
 * release's own SHA256SUMS — unpacked by our tar reader (no `tar` program, entries that climb out
 * refused) into a temp directory that is renamed into place only when complete: a wrong sum, a
 * truncated download or a bad archive leave nothing behind. A user who would rather use the Lima
 * they installed says so (`LOCALD_LIMACTL`, `[host] limactl`), and that one is checked to be a
 * Lima ≥ 1.0 instead.
 */

export class LimaInstallError extends OciError {
  readonly code = "LIMA_INSTALL";
}

export interface LimaRelease {
  version: string;
  /** Where `lima-<version>-<Os>-<arch>.tar.gz` is; `LOCALD_LIMA_BASE_URL` replaces it (a mirror). */
  baseUrl: string;
  /** SHA-256 (hex) per asset name, copied from the release's SHA256SUMS. */
  sha256: Readonly<Record<string, string>>;
}

/**
 * The Lima locald drives: the release the e2e suite builds `limactl` of (v1.2.3, the newest v1.2
 * the Go module proxy serves). No sum is pinned: they are to be copied from the release's
 * SHA256SUMS on a machine that can reach GitHub — this one could not, and a sum we have not read
 * is not a pin. Until then the install checks the download against the release's SHA256SUMS,
 * fetched over HTTPS from the same release: that catches a truncated, corrupted or swapped file,
 * but trusts GitHub and the release itself, which a pin here would not need to. A pinned sum,
 * once present, wins and SHA256SUMS is not fetched at all.
 */
export const LIMA_RELEASE: LimaRelease = {
  version: "1.2.3",
  baseUrl: "https://github.com/lima-vm/lima/releases/download/v1.2.3",
  sha256: {},
};

/** Releases are tens of MB; anything far larger is not one. */
const MAX_TARBALL_BYTES = 512 * 1024 * 1024;
/** A release's SHA256SUMS is a few dozen lines; a large one is not a sums file. */
export const MAX_SHA256SUMS_BYTES = 64 * 1024;
/** The oldest Lima whose limactl takes the commands and the VM config locald gives it. */
const MIN_LIMA_MAJOR = 1;

/** The advice whenever our own download cannot be trusted or had: use the Lima already installed. */
const USE_YOURS = "or use a Lima ≥ 1.0 you installed: LOCALD_LIMACTL=$(command -v limactl)";

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

/**
 * The SHA-256 a `sha256sum`-style file gives `asset`. Strict, because this file is what the
 * download is trusted against: UTF-8, every line `<64 hex> <space or *><name>` (text or binary
 * mode) with a newline only at the very end, the asset named on exactly one line. `source`
 * names the file in errors.
 */
export function sha256FromSums(bytes: Uint8Array, asset: string, source: string): string {
  const malformed = (why: string) =>
    new LimaInstallError(`${source} is not a SHA256SUMS file: ${why}.`, {
      hint: `Nothing was downloaded or installed. Check LOCALD_LIMA_BASE_URL if you set it, ${USE_YOURS}.`,
    });
  if (bytes.length > MAX_SHA256SUMS_BYTES) throw malformed(`it is larger than ${MAX_SHA256SUMS_BYTES} bytes`);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw malformed("it is not UTF-8 text");
  }
  if (text === "") throw malformed("it is empty");
  const lines = text.split("\n");
  // sha256sum ends its last line with a newline; the empty piece after it is not a line.
  if (lines[lines.length - 1] === "") lines.pop();
  const found: string[] = [];
  for (const [index, line] of lines.entries()) {
    const match = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
    if (match === null) throw malformed(`line ${index + 1} is not "<64 hex digits>  <file name>"`);
    if (match[2] === asset) found.push((match[1] as string).toLowerCase());
  }
  if (found.length === 0)
    throw new LimaInstallError(`${source} has no SHA-256 for ${asset}, so it will not be downloaded.`, {
      hint: `That release has no build for this Mac, or the file is not the release's. Nothing was installed; ${USE_YOURS}.`,
    });
  if (found.length > 1)
    throw malformed(`it names ${asset} on ${found.length} lines, where a release names each file once`);
  return found[0] as string;
}

/** The version a `limactl --version` printed (`limactl version 1.2.3`), or undefined if none. */
export function limactlVersion(
  output: string,
): { major: number; minor: number; patch: number; text: string } | undefined {
  const match = /^limactl version v?(\d+)\.(\d+)\.(\d+)(\S*)\s*$/m.exec(output);
  if (match === null) return undefined;
  const [, major, minor, patch, rest] = match as unknown as [string, string, string, string, string];
  return {
    major: Number(major),
    minor: Number(minor),
    patch: Number(patch),
    text: `${major}.${minor}.${patch}${rest}`,
  };
}

/** A limactl the user chose, and where they chose it (named in errors). */
export interface ChosenLimactl {
  path: string;
  /** `LOCALD_LIMACTL`, or `[host] limactl in /path/locald.toml`. */
  from: string;
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
  /**
   * The `[host] limactl` of locald.toml, read only when `LOCALD_LIMACTL` is not set (the
   * environment overrides the file, as for every other setting).
   */
  limactl?: () => Promise<ChosenLimactl | undefined>;
  /** Where `LOCALD_LIMACTL` and `LOCALD_LIMA_BASE_URL` are read; default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

/** Checked user limactls of this process: a command calls limactl several times, `--version` once. */
const checked = new Map<string, Promise<string>>();

/**
 * The path of the limactl to run: the one the user chose (`LOCALD_LIMACTL`, else `[host]
 * limactl`), checked, else ours, installed first if it is not there yet.
 */
export async function ensureLimactl(options: InstallOptions): Promise<string> {
  const env = options.env ?? process.env;
  const chosen: ChosenLimactl | undefined = env.LOCALD_LIMACTL
    ? { path: resolve(env.LOCALD_LIMACTL), from: "LOCALD_LIMACTL" }
    : await options.limactl?.();
  if (chosen !== undefined) {
    let check = checked.get(chosen.path);
    if (check === undefined) {
      check = checkUserLimactl(chosen);
      checked.set(chosen.path, check);
      // A refusal is not remembered: the user may fix it and call again in the same process.
      check.catch(() => checked.delete(chosen.path));
    }
    return check;
  }
  return installLimactl(options, env);
}

/** `chosen.path` if it is an executable limactl of Lima ≥ 1.0; a LimaInstallError if not. */
async function checkUserLimactl(chosen: ChosenLimactl): Promise<string> {
  const { path, from } = chosen;
  const refuse = (why: string, hint: string) =>
    new LimaInstallError(`${from} names ${path}, which ${why}, so locald will not use it as limactl.`, {
      hint,
    });
  const fix = `Point ${from} at the limactl of a Lima ≥ ${MIN_LIMA_MAJOR}.0 (\`command -v limactl\` after \`brew install lima\`), or ${from === "LOCALD_LIMACTL" ? "unset it" : "remove it"} to let locald download Lima ${LIMA_RELEASE.version} itself.`;
  let info: Stats;
  try {
    info = await stat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EACCES")
      throw refuse(
        "this user cannot reach (a directory on its path is not searchable)",
        `Run locald as a user who can, or ${fix.charAt(0).toLowerCase()}${fix.slice(1)}`,
      );
    if (code === "ELOOP") throw refuse("is a symlink loop", fix);
    throw refuse("does not exist", fix);
  }
  if (!info.isFile()) throw refuse("is not a file", fix);
  try {
    await access(path, constants.X_OK);
  } catch {
    throw refuse("is not executable", `Make it executable (chmod +x ${path}). ${fix}`);
  }
  let output: string;
  try {
    const { stdout, stderr } = await run(path, ["--version"], {
      timeout: 30_000,
      maxBuffer: 64 * 1024,
      env: { ...process.env, LC_ALL: "C" },
    });
    output = `${stdout}${stderr}`;
  } catch (error) {
    const failed = error as { code?: unknown; signal?: unknown; killed?: boolean };
    const how = failed.killed
      ? "did not answer `--version` within 30 s"
      : typeof failed.code === "number"
        ? `exited with status ${failed.code} on \`--version\``
        : typeof failed.signal === "string"
          ? `was killed by ${failed.signal} on \`--version\``
          : "cannot be run";
    throw refuse(`${how}: it is not Lima's limactl`, fix);
  }
  const version = limactlVersion(output);
  if (version === undefined) {
    const said = output.trim().split("\n")[0]?.slice(0, 80) ?? "";
    throw refuse(
      `printed ${said === "" ? "nothing" : `"${said}"`} for \`--version\` where limactl prints "limactl version X.Y.Z": it is not Lima's limactl (or a build without a version)`,
      fix,
    );
  }
  if (version.major < MIN_LIMA_MAJOR)
    throw refuse(
      `is Lima ${version.text}, older than ${MIN_LIMA_MAJOR}.0 (locald's VM config and commands need Lima ≥ ${MIN_LIMA_MAJOR}.0)`,
      `Upgrade Lima (\`brew upgrade lima\`). ${fix}`,
    );
  return path;
}

/** Our own limactl, downloaded and installed under `$LOCALD_HOME/tools/lima/<version>/` if absent. */
async function installLimactl(options: InstallOptions, env: NodeJS.ProcessEnv): Promise<string> {
  const release = options.release ?? LIMA_RELEASE;
  const dir = limaDir(options.home, release.version);
  const limactl = join(dir, "bin", "limactl");
  if ((await stat(limactl).catch(() => undefined))?.isFile()) return limactl;

  const asset = limaAsset(
    release.version,
    options.platform ?? process.platform,
    options.arch ?? process.arch,
  );
  // A base the user (or a test) gave is theirs to trust; the built-in one must be HTTPS before
  // a sums file from it means anything.
  const given = options.baseUrl || env.LOCALD_LIMA_BASE_URL || undefined;
  const base = (given ?? release.baseUrl).replace(/\/+$/, "");
  const url = `${base}/${asset}`;
  const pinned = release.sha256[asset]?.toLowerCase();
  const trust =
    pinned !== undefined ? "checked against the pinned SHA-256" : "checked against the release's SHA256SUMS";
  // Fetched before the tarball: a release we cannot check costs no tens of MB.
  const expected = pinned ?? (await releaseSum(`${base}/SHA256SUMS`, asset, given === undefined));

  const parent = dirname(dir);
  await mkdir(parent, { recursive: true });
  // Both temp paths sit next to the final one: same filesystem, so the rename is atomic, and a
  // dot name that is never mistaken for an installed version.
  const stamp = `${process.pid}.${Date.now()}`;
  const download = join(parent, `.${asset}.${stamp}.download`);
  const staging = join(parent, `.${release.version}.${stamp}.partial`);
  try {
    options.log?.(`Downloading Lima ${release.version} from ${url}, to be ${trust}`);
    const actual = await downloadTo(url, download);
    if (actual !== expected)
      throw new LimaInstallError(
        pinned !== undefined
          ? `${url} does not match its pinned SHA-256: expected ${expected}, got ${actual}.`
          : `${url} does not match the SHA-256 the release's SHA256SUMS (${base}/SHA256SUMS) gives it: expected ${expected}, got ${actual}.`,
        {
          hint: `The download was truncated or altered (or LOCALD_LIMA_BASE_URL serves another file); nothing was installed. Try again, check the mirror, ${USE_YOURS}.`,
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
    options.log?.(`Installed Lima ${release.version} in ${dir} (${trust})`);
    return limactl;
  } finally {
    await rm(download, { force: true });
    await rm(staging, { recursive: true, force: true });
  }
}

/** The SHA-256 the release's SHA256SUMS at `url` gives `asset`; over HTTPS only when `https`. */
async function releaseSum(url: string, asset: string, https: boolean): Promise<string> {
  const refuse = (why: string, options: { cause?: unknown } = {}) =>
    new LimaInstallError(
      `No SHA-256 is pinned for ${asset} in this build of locald, and the release's SHA256SUMS (${url}) ${why}, so it will not be downloaded.`,
      {
        hint: `Nothing was installed. Try again when the release can be reached, ${USE_YOURS}.`,
        ...options,
      },
    );
  if (https && !url.startsWith("https://"))
    throw refuse("would come over plain HTTP, which anyone on the way could rewrite");
  let response: Response;
  try {
    response = await fetch(url, { redirect: "follow" });
  } catch (error) {
    throw refuse(`cannot be fetched: ${describeNetworkError(error)}`, { cause: error });
  }
  // A redirect (GitHub's go to its object store) must not lead the sums off HTTPS either.
  if (https && !response.url.startsWith("https://")) {
    await response.body?.cancel();
    throw refuse(`was redirected to plain HTTP (${response.url})`);
  }
  if (!response.ok || response.body === null) {
    await response.body?.cancel();
    throw refuse(`cannot be fetched: HTTP ${response.status}`);
  }
  const declared = Number(response.headers.get("content-length") ?? "0");
  if (declared > MAX_SHA256SUMS_BYTES) {
    await response.body.cancel();
    throw refuse(`is ${declared} bytes, larger than a sums file can be`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const chunk of response.body) {
      size += chunk.length;
      // One byte over the cap is enough for the parser to refuse; reading on would be waste.
      chunks.push(chunk);
      if (size > MAX_SHA256SUMS_BYTES) break;
    }
  } catch (error) {
    throw refuse(`broke off while downloading: ${describeNetworkError(error)}`, { cause: error });
  }
  return sha256FromSums(Buffer.concat(chunks), asset, url);
}

/** Streams `url` to `file` and returns the SHA-256 of what arrived. */
async function downloadTo(url: string, file: string): Promise<string> {
  let response: Response;
  try {
    // A release file, not a registry blob: the registry transport's auth and retry policies do
    // not apply; the pinned sum is what makes it safe.
    response = await fetch(url, { redirect: "follow" });
  } catch (error) {
    throw new LimaInstallError(`Cannot download ${url}: ${describeNetworkError(error)}.`, {
      cause: error,
      hint: `Nothing was installed. Check the network (or LOCALD_LIMA_BASE_URL if you set it) and try again, ${USE_YOURS}.`,
    });
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
    throw new LimaInstallError(`The download of ${url} broke off: ${describeNetworkError(error)}.`, {
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
