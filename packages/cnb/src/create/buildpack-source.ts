import { posix } from "node:path";
import { type AuthoredLayer, directoryEntry, type LayerEntry, parentDirectories } from "@locald/oci";
import { parse as parseToml } from "smol-toml";
import { CreateConfigError } from "../errors.js";
import { entryText } from "./tree-source.js";

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
  if (
    !PLAIN_ID.test(id) ||
    !PLAIN_VERSION.test(version) ||
    `${id}/${version}`.split("/").some((part) => /^\.+$/.test(part))
  )
    throw new CreateConfigError(
      `The buildpack ${id}@${version} in ${where} has an id or version that is not a plain name.`,
      { hint: "Ids are names like team/buildpack (letters, digits, . _ -), versions like 1.2.3." },
    );
  checkLinks(entries, `${id}@${version} in ${where}`);
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

/** `id@version`, how buildpacks are told apart. */
export const buildpackKey = (bp: { id: string; version: string }): string => `${bp.id}@${bp.version}`;

/** The entries of a buildpack's own layer: its directories under `/cnb/buildpacks` and its files, root's. */
export function buildpackLayerEntries(bp: BuildpackSource): LayerEntry[] {
  const dir = buildpackDir(bp.id, bp.version);
  // Its own directories (`cnb/buildpacks/<id>/<version>/`), not the platform's above them.
  const parents = parentDirectories(`${dir}/x`).filter((parent) => parent.split("/").length > 3);
  const seen = new Set<string>();
  return [
    ...parents.map((parent) => directoryEntry(parent)),
    ...bp.entries.map((entry) => ({ ...entry, path: `${dir}/${entry.path}`, uid: 0, gid: 0 })),
  ].filter((entry) => {
    if (seen.has(entry.path)) return false;
    seen.add(entry.path);
    return true;
  });
}

/**
 * The `io.buildpacks.buildpack.layers` label of a builder or package: per id and version, the
 * API, a meta-buildpack's order, the stacks or targets, and the diff id of its layer.
 */
export function layersLabel(
  buildpacks: readonly BuildpackSource[],
  layers: ReadonlyMap<string, AuthoredLayer>,
): Record<string, Record<string, unknown>> {
  const label: Record<string, Record<string, unknown>> = {};
  for (const bp of buildpacks) {
    label[bp.id] ??= {};
    (label[bp.id] as Record<string, unknown>)[bp.version] = {
      api: bp.api,
      ...(bp.order ? { order: bp.order } : {}),
      ...(bp.stacks ? { stacks: bp.stacks } : {}),
      ...(bp.targets ? { targets: bp.targets } : {}),
      layerDiffID: layers.get(buildpackKey(bp))?.diffId,
      ...(bp.homepage ? { homepage: bp.homepage } : {}),
      ...(bp.name ? { name: bp.name } : {}),
    };
  }
  return label;
}

/** What ids and versions may be: they become directories under `/cnb/buildpacks`. */
const PLAIN_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;
const PLAIN_VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

/**
 * A buildpack's files stay in its own directory once unpacked: a symlink may only point inside
 * it (relative, never climbing out), and no entry may go through a symlink — otherwise its
 * layer could write into the lifecycle, which runs as root.
 */
function checkLinks(entries: readonly LayerEntry[], where: string): void {
  const links = new Set<string>();
  for (const entry of entries) {
    const path = entry.path.replace(/\/+$/, "");
    const parents = path.split("/").slice(0, -1);
    if (parents.some((_, index) => links.has(parents.slice(0, index + 1).join("/"))))
      throw new CreateConfigError(`The buildpack ${where} writes ${path} through a symlink of its own.`, {
        hint: "Ship the files themselves in the buildpack, not under a link.",
      });
    if (entry.type !== "symlink") continue;
    const target = entry.linkname ?? "";
    const resolved = posix.normalize(posix.join(posix.dirname(path), target));
    if (posix.isAbsolute(target) || resolved === ".." || resolved.startsWith("../"))
      throw new CreateConfigError(
        `The buildpack ${where} has a symlink ${path} -> ${target} that points outside it.`,
        { hint: "Links in a buildpack may only point to its own files, by relative paths." },
      );
    links.add(path);
  }
}
