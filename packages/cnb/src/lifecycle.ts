import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { DiskFullError } from "@locald/oci";
import { parse as parseToml } from "smol-toml";
import { ApiMismatchError, BuildError, DetectError } from "./errors.js";
import { PLATFORM_APIS } from "./platform.js";

/**
 * The lifecycle's phases as locald runs them (separately, not `creator`), and what their exit
 * codes mean (platform spec, "Exit codes").
 */

export type Phase = "analyzer" | "detector" | "restorer" | "builder" | "exporter" | "rebaser";

/** Detect and build never run as root; the others do when locald does (they chown to the build user). */
export const BUILD_USER_PHASES: ReadonlySet<Phase> = new Set(["detector", "builder"]);

const MEANINGS: Record<number, string> = {
  1: "failed",
  3: "was given invalid arguments",
  11: "does not support this Platform API",
  12: "does not support a buildpack's Buildpack API",
  20: "found no buildpack group that detects this app",
  21: "found no buildpack group that detects this app (and a buildpack failed while detecting)",
  22: "failed while detecting",
  32: "failed to analyze the previous image",
  42: "failed to restore the cache",
  51: "ran a buildpack that failed",
  52: "failed while building",
  62: "failed to export the image",
  72: "failed to rebase the image",
};

/** The last lines of a phase's output, for the error message. */
function tailOf(output: string, lines = 12): string {
  return output.trimEnd().split("\n").slice(-lines).join("\n");
}

/** Buildpack lines of the detector's output (`pass: id@version`, `fail: …`, `skip: …`, `err: …`). */
function detectVerdicts(output: string): string[] {
  return output
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => /^(pass|fail|skip|err|error):/i.test(line) || /^=+\s*Results/.test(line));
}

/** The error for a phase that exited with `code`, given what it printed. */
export function phaseError(phase: Phase, code: number, output: string, failedBuildpack?: string): Error {
  const meaning = MEANINGS[code] ?? `exited with ${code}`;
  if (code === 20 || code === 21) {
    const verdicts = detectVerdicts(output);
    return new DetectError(
      `No buildpack detected this app: the lifecycle ${meaning}.` +
        (verdicts.length > 0 ? `\n${verdicts.join("\n")}` : `\n${tailOf(output)}`),
      {
        hint: "Check the app has what a buildpack looks for (package.json, Procfile, Cargo.toml…), or add one with -b.",
      },
    );
  }
  if (code === 11 || code === 12)
    return new ApiMismatchError(`The ${phase} ${meaning}.\n${tailOf(output, 5)}`, {
      hint: `Use a builder whose lifecycle and buildpacks support a Platform API locald speaks (${PLATFORM_APIS.join(", ")}).`,
    });
  if (code === 51) {
    const who = failedBuildpack === undefined ? "A buildpack" : `Buildpack ${failedBuildpack}`;
    return new BuildError(
      `${who} failed while building (lifecycle exit 51). Its last output:\n${tailOf(output)}`,
      {
        hint: "Fix what the buildpack's output above points at (in the app or in the buildpack), then build again.",
      },
    );
  }
  if (/no space left on device|disk quota exceeded/i.test(output))
    return new DiskFullError(
      `The lifecycle's ${phase} ran out of disk space (exit ${code}).\n${tailOf(output, 5)}`,
      {
        hint: "Free some space under LOCALD_HOME and the app's directory (locald image prune removes unused images), or point LOCALD_HOME at a larger disk, and build again.",
      },
    );
  if (/realm host "[^"]*" is a private or link-local address/.test(output))
    return new BuildError(
      `The lifecycle's ${phase} refused the registry's token server: its address is a private or loopback IP.\n${tailOf(output, 3)}`,
      {
        hint: "Lifecycles from 0.21 accept a token realm on such an address only by host name (or on the registry's own host:port): configure the registry's auth realm with a name, or use a builder with lifecycle 0.20.",
      },
    );
  return new BuildError(`The lifecycle's ${phase} ${meaning} (exit ${code}).\n${tailOf(output)}`, {
    hint: "Run again with --verbose for the lifecycle's debug output.",
  });
}

/**
 * The buildpack whose build failed: the lifecycle runs the group in order and makes each one's
 * layers directory before its bin/build, so it is the last of the group that has one.
 */
export async function failedBuildpack(layersDir: string): Promise<string | undefined> {
  try {
    const group = parseToml(await readFile(join(layersDir, "group.toml"), "utf8")) as {
      group?: Array<{ id: string; version?: string }>;
    };
    let last: string | undefined;
    for (const bp of group.group ?? [])
      if (await stat(join(layersDir, bp.id.replaceAll("/", "_"))).catch(() => undefined))
        last = bp.version ? `${bp.id}@${bp.version}` : bp.id;
    return last;
  } catch {
    return undefined;
  }
}
