import type { LayerEntry } from "@locald/oci";
import { parse as parseToml } from "smol-toml";
import { CreateConfigError } from "../errors.js";
import { entryText, localTreeEntries } from "./tree-source.js";

export interface ApiSet {
  readonly deprecated: readonly string[];
  readonly supported: readonly string[];
}

/** A lifecycle release: `lifecycle.toml` and the `lifecycle/` directory of its binaries. */
export interface LifecycleSource {
  readonly version: string;
  readonly apis: { readonly buildpack: ApiSet; readonly platform: ApiSet };
  /** The files of its `lifecycle/` directory, relative to it (`lifecycle`, `launcher`, `detector`). */
  readonly entries: readonly LayerEntry[];
}

interface LifecycleToml {
  apis?: { buildpack?: Partial<ApiSet>; platform?: Partial<ApiSet> };
  api?: { buildpack?: string; platform?: string };
  lifecycle?: { version?: string };
}

/** Where the lifecycle's releases are, for the message that says locald does not fetch them. */
const RELEASES = "https://github.com/buildpacks/lifecycle/releases";

/**
 * `[lifecycle]` of builder.toml: a directory or `.tgz` in the release layout. A bare version
 * would be a download from GitHub, which locald leaves to the user (it fetches only from
 * registries): the message says which file to get.
 */
export async function readLifecycle(
  spec: { uri: string } | { version: string },
  baseDir: string,
): Promise<LifecycleSource> {
  if (!("uri" in spec)) {
    const version = spec.version || "0.21.12";
    throw new CreateConfigError(
      `The builder configuration names no lifecycle file${spec.version ? ` (only version ${spec.version})` : ""}, and locald does not download lifecycle releases.`,
      {
        hint: `Download lifecycle-v${version}+linux.x86-64.tgz from ${RELEASES}/tag/v${version} (or build it with go) and set [lifecycle] uri = "<path to it>".`,
      },
    );
  }
  const all = await localTreeEntries(spec.uri, baseDir, "lifecycle");
  const text = entryText(all, "lifecycle.toml");
  if (text === undefined)
    throw new CreateConfigError(
      `${spec.uri} is not a lifecycle release: it has no lifecycle.toml at its root.`,
      {
        hint: "Use the release tarball (lifecycle-vX+linux.x86-64.tgz) or a directory with lifecycle.toml and lifecycle/.",
      },
    );
  let toml: LifecycleToml;
  try {
    toml = parseToml(text) as LifecycleToml;
  } catch (error) {
    throw new CreateConfigError(
      `The lifecycle.toml of ${spec.uri} is not valid TOML: ${(error as Error).message}`,
    );
  }
  const entries = all
    .filter((entry) => entry.path.startsWith("lifecycle/") && entry.path !== "lifecycle/")
    .map((entry) => ({ ...entry, path: entry.path.slice("lifecycle/".length) }));
  if (!entries.some((entry) => entry.path === "lifecycle" && entry.type === "file"))
    throw new CreateConfigError(
      `${spec.uri} is not a lifecycle release: it has no lifecycle/lifecycle binary.`,
    );
  const version = toml.lifecycle?.version;
  if (typeof version !== "string" || version === "")
    throw new CreateConfigError(`The lifecycle.toml of ${spec.uri} has no [lifecycle] version.`);
  const set = (from: Partial<ApiSet> | undefined, legacy: string | undefined): ApiSet => ({
    deprecated: from?.deprecated ?? [],
    supported: from?.supported ?? (legacy ? [legacy] : []),
  });
  return {
    version,
    apis: {
      buildpack: set(toml.apis?.buildpack, toml.api?.buildpack),
      platform: set(toml.apis?.platform, toml.api?.platform),
    },
    entries,
  };
}
