import { formatReference, parseReference, type Reference } from "@locald/oci";
import { ApiMismatchError, BuildConfigError } from "./errors.js";

/**
 * What locald speaks to the lifecycle: the Platform API versions it implements, the env allow-list
 * and the OCI-layout path rules of the platform spec.
 */

/**
 * Platform API versions locald drives (layout export needs 0.12+). 0.15 (lifecycle 0.21) adds
 * system buildpacks (`-system`, default /cnb/system.toml) and CNB_EXEC_ENV (default production),
 * whose defaults are what a build wants; the phases' flags are the same as under 0.14.
 */
export const PLATFORM_APIS = ["0.12", "0.13", "0.14", "0.15"] as const;

/** Orders API versions (`0.9` before `0.12`). */
export function compareApi(a: string, b: string): number {
  const [am = 0, an = 0] = a.split(".").map(Number);
  const [bm = 0, bn = 0] = b.split(".").map(Number);
  return am - bm || an - bn;
}

/** The newest Platform API both sides support. */
export function negotiatePlatformApi(
  lifecycleSupported: readonly string[],
  lifecycleVersion: string,
): string {
  const common = PLATFORM_APIS.filter((api) => lifecycleSupported.includes(api)).sort(compareApi);
  const chosen = common.at(-1);
  if (chosen === undefined)
    throw new ApiMismatchError(
      `The builder's lifecycle ${lifecycleVersion} supports Platform API ${lifecycleSupported.join(", ") || "(none listed)"}, ` +
        `but locald drives ${PLATFORM_APIS.join(", ")}.`,
      { hint: "Use a builder with a lifecycle from v0.17 or later." },
    );
  return chosen;
}

/** `<registry>/<repository>` as the lifecycle (go-containerregistry) spells it: Docker Hub is `index.docker.io`. */
function lifecycleRepository(ref: Reference): string {
  return `${ref.registry === "docker.io" ? "index.docker.io" : ref.registry}/${ref.repository}`;
}

/** The label where the lifecycle records how an app image was made (layers, run image). */
export const LIFECYCLE_METADATA = "io.buildpacks.lifecycle.metadata";

/** How the lifecycle names an image it read from a registry: `<registry>/<repository>@<digest>`. */
export function registryReference(image: string, digest: string): string {
  return `${lifecycleRepository(parseReference(image))}@${digest}`;
}

/** `name` fully qualified, as the store and layouts name it. */
export function imageName(reference: string): string {
  return formatReference(parseReference(reference));
}

/** `-e K=V` pairs as `<platform>/env/K` files; names a shell could not export are refused. */
export function platformEnv(pairs: readonly string[]): Array<[name: string, value: string]> {
  return pairs.map((pair) => {
    const eq = pair.indexOf("=");
    const name = eq < 0 ? pair : pair.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
      throw new BuildConfigError(`"${name}" is not a valid environment variable name.`);
    return [name, eq < 0 ? (process.env[name] ?? "") : pair.slice(eq + 1)];
  });
}
