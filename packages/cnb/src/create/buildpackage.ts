import {
  type ClientOptions,
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  type LayerEntry,
  type PullOptions,
  parseDigest,
  parseImageConfig,
  parseManifestDocument,
  type Store,
  tarEntries,
  verifyBytes,
} from "@locald/oci";
import { pullByPolicy } from "../builder.js";
import { CreateConfigError } from "../errors.js";
import { type BuildpackSource, buildpackDir, buildpackFromEntries } from "./buildpack-source.js";

/**
 * Buildpackages (the distribution spec's buildpack images, and `.cnb` files: the same image as an
 * OCI layout in a tar): one layer per buildpack, found through the `io.buildpacks.buildpack.layers`
 * label, each read back into the buildpack it holds.
 */

export const BuildpackageLabel = {
  metadata: "io.buildpacks.buildpackage.metadata",
  layers: "io.buildpacks.buildpack.layers",
} as const;

/** Largest layer read from a stored package (layers are read whole into memory). */
const LAYER_LIMIT = 1024 * 1024 * 1024;

type LayersLabel = Record<string, Record<string, { api?: string; layerDiffID?: string }>>;

/** Every buildpack of a package image, read through `blob` (which verifies what it returns). */
export async function buildpacksFromPackage(
  image: { manifest: ImageManifest; config: ImageConfig },
  blob: (descriptor: Descriptor) => Promise<Buffer>,
  where: string,
): Promise<BuildpackSource[]> {
  const label = image.config.config?.Labels?.[BuildpackageLabel.layers];
  let layers: LayersLabel;
  try {
    layers = JSON.parse(label ?? "") as LayersLabel;
    const isTable = (value: unknown) => typeof value === "object" && value !== null && !Array.isArray(value);
    if (
      !isTable(layers) ||
      !Object.values(layers).every((versions) => isTable(versions) && Object.values(versions).every(isTable))
    )
      throw new TypeError("not a table of tables");
  } catch {
    throw new CreateConfigError(
      `${where} is not a buildpackage: it has no valid ${BuildpackageLabel.layers} label.`,
      {
        hint: "Give a buildpack image or .cnb made by `locald buildpack package` or `pack buildpack package`.",
      },
    );
  }
  const found: BuildpackSource[] = [];
  for (const [id, versions] of Object.entries(layers))
    for (const [version, info] of Object.entries(versions)) {
      const index = image.config.rootfs.diff_ids.indexOf(info.layerDiffID ?? "");
      const descriptor = image.manifest.layers[index];
      if (index < 0 || descriptor === undefined)
        throw new CreateConfigError(`${where} names a layer for ${id}@${version} that it does not have.`);
      const entries = await tarEntries(await blob(descriptor), `The layer of ${id}@${version} in ${where}`);
      const prefix = `${buildpackDir(id, version)}/`;
      const own: LayerEntry[] = entries
        .filter((entry) => entry.path.startsWith(prefix) && entry.path !== prefix)
        .map((entry) => ({ ...entry, path: entry.path.slice(prefix.length) }));
      const bp = buildpackFromEntries(own, `${id}@${version} in ${where}`);
      if (bp.id !== id || bp.version !== version)
        throw new CreateConfigError(
          `${where} labels a layer ${id}@${version}, but it holds ${bp.id}@${bp.version}.`,
        );
      found.push(bp);
    }
  if (found.length === 0) throw new CreateConfigError(`${where} is a buildpackage with no buildpacks in it.`);
  // The packaged buildpack first (the metadata label names it), its dependencies after.
  let main: { id?: string; version?: string } = {};
  try {
    main = JSON.parse(image.config.config?.Labels?.[BuildpackageLabel.metadata] ?? "{}") as typeof main;
  } catch {
    main = {};
  }
  const first = found.findIndex((bp) => bp.id === main.id && bp.version === main.version);
  return first <= 0
    ? found
    : [found[first] as BuildpackSource, ...found.filter((_, index) => index !== first)];
}

/** A package in the store (pulled first unless stored), its buildpacks. */
export async function buildpacksFromImage(
  reference: string,
  options: { store: Store; client?: ClientOptions; onPull?: PullOptions["onEvent"] },
): Promise<BuildpackSource[]> {
  const pulled = await pullByPolicy(reference, "buildpack image", {
    store: options.store,
    policy: "if-not-present",
    ...(options.client ? { client: options.client } : {}),
    ...(options.onPull ? { onEvent: options.onPull } : {}),
  });
  const image = await options.store.readImage(pulled.descriptor, reference);
  return buildpacksFromPackage(
    image,
    (layer) => options.store.layout.readBlob(layer, LAYER_LIMIT),
    reference,
  );
}

/** True when archive entries are an OCI layout (a `.cnb` file) rather than a buildpack's files. */
export function isLayoutArchive(entries: readonly LayerEntry[]): boolean {
  return entries.some((entry) => entry.path === "oci-layout" && entry.type === "file");
}

/** The buildpacks of a `.cnb` file whose entries are in memory; every blob verified by digest. */
export async function buildpacksFromLayoutArchive(
  entries: readonly LayerEntry[],
  where: string,
): Promise<BuildpackSource[]> {
  const files = new Map(
    entries.filter((entry) => entry.type === "file").map((entry) => [entry.path, entry.content]),
  );
  const blob = async (descriptor: Pick<Descriptor, "digest" | "size">): Promise<Buffer> => {
    const digest = parseDigest(descriptor.digest);
    const content = files.get(`blobs/${digest.replace(":", "/")}`);
    if (content === undefined)
      throw new CreateConfigError(`${where} is missing the blob ${descriptor.digest}.`, {
        hint: "The .cnb file is incomplete; package the buildpack again.",
      });
    const bytes = Buffer.from(content);
    verifyBytes(bytes, digest, descriptor.size, `Blob ${descriptor.digest} in ${where}`);
    return bytes;
  };
  const index = files.get("index.json");
  let top: Descriptor | undefined;
  try {
    top = (
      JSON.parse(Buffer.from(index ?? new Uint8Array()).toString("utf8")) as { manifests?: Descriptor[] }
    ).manifests?.[0];
  } catch {
    top = undefined;
  }
  if (top === undefined)
    throw new CreateConfigError(`${where} is not a buildpackage: its index.json names no image.`);
  let document = parseManifestDocument(await blob(top), top.mediaType, `The manifest in ${where}`);
  if (document.kind === "index") {
    const first = document.index.manifests[0];
    if (first === undefined) throw new CreateConfigError(`${where} holds an empty image index.`);
    document = parseManifestDocument(await blob(first), first.mediaType, `The manifest in ${where}`);
  }
  if (document.kind !== "manifest") throw new CreateConfigError(`${where} holds no image manifest.`);
  const manifest = document.manifest;
  const config = parseImageConfig(await blob(manifest.config), `The config in ${where}`);
  return buildpacksFromPackage({ manifest, config }, blob, where);
}
