import { HostProviderError } from "./detect.js";

/**
 * Windows ↔ WSL paths, as `wslpath` maps them, done here so a Windows host needs no round trip
 * into the distribution per argument: drive paths (`C:\Users\me` ↔ `/mnt/c/Users/me`) and the
 * UNC shares Windows uses for a distribution's own files (`\\wsl$\Debian\home\me`,
 * `\\wsl.localhost\Debian\home\me` ↔ `/home/me`). Pure functions; spaces are ordinary characters
 * because every path travels as its own argv element, never through a shell.
 */

export interface WslPathOptions {
  /**
   * The distribution the command runs in (`LOCALD_WSL_DISTRO`; unset: WSL's default one, whose
   * name we do not know): a UNC path into another one cannot be translated.
   */
  distro?: string;
}

const DRIVE = /^([a-zA-Z]):(?:[\\/](.*))?$/;
const UNC = /^[\\/]{2}(wsl\$|wsl\.localhost)[\\/]([^\\/]+)(?:[\\/](.*))?$/i;

/** A Windows path as the distribution sees it, or undefined when it is not a Windows path. */
export function windowsToWsl(path: string, options: WslPathOptions): string | undefined {
  const drive = DRIVE.exec(path);
  if (drive !== null) {
    const rest = (drive[2] ?? "").split(/[\\/]+/).filter((p) => p !== "");
    return ["/mnt", (drive[1] as string).toLowerCase(), ...rest].join("/");
  }
  const unc = UNC.exec(path);
  if (unc !== null) {
    const distro = unc[2] as string;
    if (options.distro !== undefined && distro.toLowerCase() !== options.distro.toLowerCase())
      throw new HostProviderError(
        `${path} is in the WSL distribution ${distro}, but locald runs in ${options.distro}.`,
        { hint: `Set LOCALD_WSL_DISTRO=${distro}, or move the project into ${options.distro}.` },
      );
    const rest = (unc[3] ?? "").split(/[\\/]+/).filter((p) => p !== "");
    return `/${rest.join("/")}`;
  }
  return undefined;
}

/** A distribution path as Windows sees it: `/mnt/c/x` → `C:\x`, anything else through `\\wsl.localhost\<distro>`. */
export function wslToWindows(path: string, options: { distro: string }): string {
  if (!path.startsWith("/")) throw new HostProviderError(`${path} is not an absolute Linux path.`);
  const parts = path.split("/").filter((p) => p !== "");
  const [mnt, drive, ...rest] = parts;
  if (mnt === "mnt" && drive !== undefined && /^[a-zA-Z]$/.test(drive))
    return `${drive.toUpperCase()}:\\${rest.join("\\")}`;
  return `\\\\wsl.localhost\\${options.distro}${parts.length === 0 ? "\\" : `\\${parts.join("\\")}`}`;
}

/**
 * One command-line argument with the Windows paths in it translated: a whole path
 * (`C:\app`), or the value of `--flag=C:\app`. Anything else (an image name, `-p 8080:80`) passes
 * as is — `C:` alone or `a:b` must not be taken for a drive, hence the separator in the pattern.
 */
export function translateArgument(arg: string, options: WslPathOptions): string {
  const whole = windowsToWsl(arg, options);
  if (whole !== undefined && isPathLike(arg)) return whole;
  const eq = /^(--?[A-Za-z0-9][A-Za-z0-9-]*=)(.*)$/.exec(arg);
  if (eq !== null) {
    const value = eq[2] as string;
    const translated = isPathLike(value) ? windowsToWsl(value, options) : undefined;
    if (translated !== undefined) return `${eq[1]}${translated}`;
  }
  return arg;
}

function isPathLike(value: string): boolean {
  return /^[a-zA-Z]:[\\/]/.test(value) || /^[a-zA-Z]:$/.test(value) || UNC.test(value);
}

/** What `wsl.exe` is asked to run: `wsl.exe -d <distro> --cd <dir> -- locald …`. */
export interface WslInvocation {
  file: string;
  args: string[];
}

/**
 * The `wsl.exe` call for a locald command typed on Windows. `--cd` takes the Windows working
 * directory (wsl.exe translates it itself, UNC included); arguments are translated here.
 */
export function wslInvocation(
  argv: readonly string[],
  options: WslPathOptions & { cwd: string; locald?: string },
): WslInvocation {
  const cwd = windowsToWsl(options.cwd, options) ?? options.cwd;
  return {
    file: "wsl.exe",
    args: [
      ...(options.distro === undefined ? [] : ["-d", options.distro]),
      "--cd",
      cwd,
      "--",
      options.locald ?? "locald",
      ...argv.map((a) => translateArgument(a, options)),
    ],
  };
}
