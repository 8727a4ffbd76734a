import { readFileSync } from "node:fs";
import { OciError } from "@locald/oci";
import { UsageError } from "../usage.js";

/**
 * Which host provider runs a command that needs Linux: `linux` runs it here, `lima` hands it to
 * a Lima VM (macOS), `wsl` to a WSL2 distribution (Windows). Pure functions over facts gathered
 * once, so every branch is unit-tested without the OS in question.
 */
export const HOST_PROVIDERS = ["linux", "lima", "wsl"] as const;
export type HostProviderName = (typeof HOST_PROVIDERS)[number];

export class HostProviderError extends OciError {
  readonly code = "HOST_PROVIDER";
}

/** What the choice depends on: the OS Node reports, the kernel's own words, the overrides. */
export interface HostFacts {
  platform: NodeJS.Platform;
  /** `/proc/sys/kernel/osrelease` (or `/proc/version`) on Linux; WSL's kernels name themselves. */
  kernelRelease?: string;
  /** `--host-provider`. */
  flag?: string;
  /** `LOCALD_HOST_PROVIDER`. */
  env?: string;
}

/** Microsoft's WSL kernels say "microsoft" (WSL2: "…-microsoft-standard-WSL2", WSL1: "…-Microsoft"). */
export function isWslKernel(release: string | undefined): boolean {
  return release !== undefined && /microsoft|wsl/i.test(release);
}

function parseName(value: string, from: string): HostProviderName {
  const name = value.trim().toLowerCase();
  if ((HOST_PROVIDERS as readonly string[]).includes(name)) return name as HostProviderName;
  // A name typed wrong (flag or environment) is a usage error, exit 2, like any bad flag value.
  throw new UsageError(`${from} must be one of ${HOST_PROVIDERS.join(", ")}, not ${JSON.stringify(value)}.`);
}

/**
 * The provider in force: the flag, else the environment, else the OS — Linux (WSL included: it
 * has a real Linux kernel, so the native path runs there) is `linux`, macOS `lima`, Windows `wsl`.
 */
export function chooseHostProvider(facts: HostFacts): HostProviderName {
  if (facts.flag !== undefined && facts.flag !== "") return parseName(facts.flag, "--host-provider");
  if (facts.env !== undefined && facts.env !== "") return parseName(facts.env, "LOCALD_HOST_PROVIDER");
  switch (facts.platform) {
    case "linux":
      return "linux";
    case "darwin":
      return "lima";
    case "win32":
      return "wsl";
    default:
      throw new HostProviderError(
        `locald runs builds on Linux, macOS (Lima) or Windows (WSL2), not ${facts.platform}.`,
        {
          hint: "Run it in a Linux VM, or set LOCALD_HOST_PROVIDER=linux if this OS can run Linux containers itself.",
        },
      );
  }
}

/** The kernel's release string, read once; undefined off Linux or where /proc is not there. */
export function readKernelRelease(): string | undefined {
  for (const file of ["/proc/sys/kernel/osrelease", "/proc/version"]) {
    try {
      return readFileSync(file, "utf8").trim();
    } catch {
      // not Linux, or /proc hidden; try the next source
    }
  }
  return undefined;
}

/**
 * Under WSL, Windows drives are mounted at /mnt/<letter> over a 9P bridge: every file operation
 * crosses into Windows, many times slower than the distribution's own ext4. Builds that read and
 * write thousands of files feel it, so we say so (once) when the app dir lives there.
 */
export function windowsDriveOf(path: string): string | undefined {
  const match = /^\/mnt\/([a-zA-Z])(?:\/|$)/.exec(path);
  return match?.[1]?.toLowerCase();
}

let warned = false;

/** The warning for an app dir on a Windows drive inside WSL, or undefined; each process says it once. */
export function wslDriveWarning(kernelRelease: string | undefined, dir: string): string | undefined {
  if (warned || !isWslKernel(kernelRelease)) return undefined;
  const drive = windowsDriveOf(dir);
  if (drive === undefined) return undefined;
  warned = true;
  return `warning: ${dir} is on the Windows drive ${drive.toUpperCase()}: (mounted at /mnt/${drive}); file access there is much slower than in the WSL distribution's own filesystem. Move the project under your Linux home (e.g. ~/src) for faster builds.`;
}
