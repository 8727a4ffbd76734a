import type { LayerEntry } from "@locald/oci";
import { parse as parseToml } from "smol-toml";
import { CreateConfigError } from "../errors.js";
import { entryText, localTreeEntries } from "./tree-source.js";

/** A buildpack read from its `buildpack.toml` and files, ready to be one layer of a builder. */
export interface BuildpackSource {
  readonly id: string;
  readonly version: string;
  readonly api: string;
  readonly name?: string;
  readonly homepage?: string;
  /** A meta-buildpack's own detection order. */
  readonly order?: ReadonlyArray<{
    group: ReadonlyArray<{ id: string; version?: string; optional?: boolean }>;
  }>;
  readonly stacks?: ReadonlyArray<Record<string, unknown>>;
  readonly targets?: ReadonlyArray<Record<string, unknown>>;
  /** Its files, relative to its root (`buildpack.toml`, `bin/build`). */
  readonly entries: readonly LayerEntry[];
}

interface BuildpackToml {
  api?: unknown;
  buildpack?: { id?: unknown; version?: unknown; name?: unknown; homepage?: unknown };
  order?: unknown;
  stacks?: unknown;
  targets?: unknown;
}

/** `buildpack.toml` and the files next to it, from a directory or tarball. */
export async function readBuildpack(uri: string, baseDir: string): Promise<BuildpackSource> {
  const entries = await localTreeEntries(uri, baseDir, "buildpack");
  return buildpackFromEntries(entries, uri);
}

/** The buildpack whose files are `entries` (`where` names it in errors). */
export function buildpackFromEntries(entries: readonly LayerEntry[], where: string): BuildpackSource {
  const text = entryText(entries, "buildpack.toml");
  if (text === undefined)
    throw new CreateConfigError(`${where} is not a buildpack: it has no buildpack.toml at its root.`, {
      hint: "Point the uri at the buildpack's own directory (the one holding buildpack.toml and bin/).",
    });
  let toml: BuildpackToml;
  try {
    toml = parseToml(text) as BuildpackToml;
  } catch (error) {
    throw new CreateConfigError(
      `The buildpack.toml of ${where} is not valid TOML: ${(error as Error).message.split("\n")[0]}`,
    );
  }
  const { id, version, name, homepage } = toml.buildpack ?? {};
  if (typeof id !== "string" || id === "" || typeof version !== "string" || version === "")
    throw new CreateConfigError(`The buildpack.toml of ${where} has no [buildpack] id and version.`, {
      hint: 'A buildpack.toml needs api = "0.x" and [buildpack] id = "…", version = "…".',
    });
  if (id.includes("..") || id.startsWith("/") || version.includes("/") || version.includes(".."))
    throw new CreateConfigError(
      `The buildpack ${id}@${version} in ${where} has an id or version that is not a plain name.`,
    );
  const order = Array.isArray(toml.order) ? (toml.order as BuildpackSource["order"]) : undefined;
  if (
    order === undefined &&
    !entries.some((entry) => entry.path === "bin/build" || entry.path === "bin/build.exe")
  )
    throw new CreateConfigError(
      `The buildpack ${id}@${version} in ${where} has neither bin/build nor an [[order]].`,
      {
        hint: "A buildpack needs an executable bin/detect and bin/build; a meta-buildpack an [[order]] of others.",
      },
    );
  return {
    id,
    version,
    api: typeof toml.api === "string" ? toml.api : "0.1",
    ...(typeof name === "string" ? { name } : {}),
    ...(typeof homepage === "string" ? { homepage } : {}),
    ...(order ? { order } : {}),
    ...(Array.isArray(toml.stacks) ? { stacks: toml.stacks as Array<Record<string, unknown>> } : {}),
    ...(Array.isArray(toml.targets) ? { targets: toml.targets as Array<Record<string, unknown>> } : {}),
    entries,
  };
}

/** The directory of a buildpack under `/cnb/buildpacks` (`/` in ids becomes `_`, as the spec says). */
export function buildpackDir(id: string, version: string): string {
  return `cnb/buildpacks/${id.replaceAll("/", "_")}/${version}`;
}
