import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import {
  type ClientOptions,
  copyImage,
  type Descriptor,
  diskFullError,
  hostPlatform,
  type ImageManifest,
  type ImageSource,
  type ImageTarget,
  MediaType,
  OciLayout,
  parseDigest,
  parseImageConfig,
  parseManifestDocument,
  removeTree,
  type Store,
} from "@locald/oci";
import { type PullPolicy, pullByPolicy } from "./builder.js";
import { BuildError } from "./errors.js";
import { registryReference } from "./platform.js";

/**
 * The lifecycle's OCI layout repository (layout mode): where the run image goes before analyze
 * and where the exporter leaves the app image.
 *
 * The lifecycle's layout reader decompresses every gzip layer of every image it opens, in each
 * phase: about a second per 60 MB layer here. So the run image goes in with its layers already
 * decompressed (once, kept while its digest is the same), and when the built image leaves for
 * the store or a user's layout its base layers get their original compressed blobs back — the
 * same DiffIDs, so the same image content.
 */

const GZIP_LAYERS = new Set<string>([MediaType.OciLayerGzip, MediaType.DockerLayerGzip]);
const MARKER = "locald-run-image.json";

/** Uncompressed layer digest → the run image's original (compressed) layer descriptor. */
export type LayerSwaps = ReadonlyMap<string, Descriptor>;

interface Marker {
  source: string;
  swaps: Array<[string, Descriptor]>;
}

/** Decompresses a stored gzip blob into the layout; its digest must be the DiffID the config names. */
async function decompressInto(layout: OciLayout, source: string, diffId: string): Promise<Descriptor> {
  const temp = join(layout.root, `.tmp-${process.pid}-${Date.now().toString(36)}`);
  const hash = createHash("sha256");
  let size = 0;
  try {
    await pipeline(
      createReadStream(source),
      createGunzip(),
      new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          hash.update(chunk);
          size += chunk.length;
          callback(null, chunk);
        },
      }),
      createWriteStream(temp),
    );
    const digest = `sha256:${hash.digest("hex")}`;
    if (digest !== diffId)
      throw new BuildError(`A run image layer decompresses to ${digest}, but its config says ${diffId}.`, {
        hint: "The run image is corrupt: pull it again, or use another one.",
      });
    await rename(temp, layout.blobPath(parseDigest(digest)));
    return { mediaType: MediaType.OciLayer, digest, size };
  } finally {
    await rm(temp, { force: true });
  }
}

/**
 * Each gzip layer decompressed into `layout` (named by its DiffID, which the write checks), the
 * others handed to `keep`; returns the new layer list and the swaps back to the compressed blobs.
 */
async function decompressLayers(
  layout: OciLayout,
  compressed: readonly Descriptor[],
  diffIds: readonly string[],
  source: (layer: Descriptor) => string,
  keep: (layer: Descriptor) => Promise<void>,
): Promise<{ layers: Descriptor[]; swaps: Map<string, Descriptor> }> {
  const swaps = new Map<string, Descriptor>();
  const layers: Descriptor[] = [];
  for (const [index, layer] of compressed.entries()) {
    const diffId = diffIds[index];
    if (diffId === undefined || !GZIP_LAYERS.has(layer.mediaType)) {
      await keep(layer);
      layers.push(layer);
      continue;
    }
    const plain = await decompressInto(layout, source(layer), diffId);
    swaps.set(plain.digest, layer);
    layers.push(plain);
  }
  return { layers, swaps };
}

/**
 * Pulls an image (the run image; the app image a rebase starts from) into the store as `policy`
 * says and lays it out at `dir` with decompressed layers.
 */
export async function placeImage(
  runImage: string,
  what: string,
  dir: string,
  store: Store,
  client: ClientOptions | undefined,
  policy: PullPolicy,
): Promise<{ swaps: LayerSwaps; reference: string }> {
  const pulled = await pullByPolicy(runImage, what, { store, policy, ...(client ? { client } : {}) });
  const reference = registryReference(runImage, pulled.digest);
  const marker = await readFile(join(dir, MARKER), "utf8")
    .then((text) => JSON.parse(text) as Marker)
    .catch(() => undefined);
  if (marker?.source === pulled.digest) return { swaps: new Map(marker.swaps), reference };
  await removeTree(dir);
  const release = await store.lease();
  try {
    const { manifest, config } = await store.readImage(pulled.descriptor, runImage);
    const layout = await OciLayout.open(dir, { create: true });
    const { layers, swaps } = await decompressLayers(
      layout,
      manifest.layers,
      config.rootfs.diff_ids,
      (layer) => store.layout.blobPath(parseDigest(layer.digest)),
      (layer) => layout.writeBlob(layer, store.layout.openBlob(layer)),
    );
    await layout.writeBlob(manifest.config, store.layout.openBlob(manifest.config));
    const bytes = Buffer.from(JSON.stringify({ ...manifest, mediaType: MediaType.OciManifest, layers }));
    const descriptor = await layout.writeBytes(bytes, MediaType.OciManifest);
    await layout.addManifest({ ...descriptor, platform: hostPlatform() }, undefined);
    await writeFile(
      join(dir, MARKER),
      JSON.stringify({ source: pulled.digest, swaps: [...swaps] } satisfies Marker),
    );
    return { swaps, reference };
  } finally {
    await release();
  }
}

/** Docker layer media types an OCI manifest should not carry, and their OCI names (same bytes). */
const OCI_LAYER_TYPES: Record<string, string> = {
  [MediaType.DockerLayerGzip]: MediaType.OciLayerGzip,
  "application/vnd.docker.image.rootfs.diff.tar": MediaType.OciLayer,
};

/**
 * The lifecycle's layout exporter writes Docker layer media types into OCI manifests, which
 * strict readers (umoci) refuse; the blobs are plain (gzipped) tars either way.
 */
function ociLayerType(manifestType: string, layer: Descriptor): Descriptor {
  const oci = OCI_LAYER_TYPES[layer.mediaType];
  return manifestType === MediaType.OciManifest && oci !== undefined ? { ...layer, mediaType: oci } : layer;
}

/**
 * The exported config with the run image named by `reference` (its registry reference and digest)
 * instead of the path in the layout repository that the lifecycle read it from, which means
 * nothing outside this build: only that string changes, so the config is the one a `--publish`
 * build of the same sources writes.
 */
async function pinnedConfig(
  layout: OciLayout,
  descriptor: Descriptor,
  reference: string,
): Promise<{ descriptor: Descriptor; bytes: Buffer }> {
  const bytes = await layout.readBlob(descriptor, 64 * 1024 * 1024);
  const labels = (parseImageConfig(bytes, `The exported config ${descriptor.digest}`).config?.Labels ??
    {}) as Record<string, string>;
  let recorded: string | undefined;
  try {
    recorded = (JSON.parse(labels[LIFECYCLE_METADATA] ?? "{}") as { runImage?: { reference?: string } })
      .runImage?.reference;
  } catch {
    recorded = undefined;
  }
  // Only a layout path is replaced, and only where it cannot stand for anything but itself.
  if (recorded === undefined || !recorded.startsWith("/layout-repo/") || !/^[\w./:@-]+$/.test(recorded))
    return { descriptor, bytes };
  const pinned = Buffer.from(bytes.toString("utf8").replaceAll(recorded, reference));
  return {
    descriptor: {
      ...descriptor,
      digest: `sha256:${createHash("sha256").update(pinned).digest("hex")}`,
      size: pinned.length,
    },
    bytes: pinned,
  };
}

const LIFECYCLE_METADATA = "io.buildpacks.lifecycle.metadata";

/** The one image manifest the exporter left in the layout `dir`. */
async function exportedImage(
  dir: string,
): Promise<{ layout: OciLayout; original: Descriptor; manifest: ImageManifest }> {
  const layout = await OciLayout.open(dir);
  const original = await layout.resolve(undefined);
  const document = parseManifestDocument(
    await layout.readBlob(original, 4 * 1024 * 1024),
    original.mediaType,
    `The exported image in ${dir}`,
  );
  if (document.kind !== "manifest")
    throw new BuildError(`The exporter left an index in ${dir}, not an image.`);
  return { layout, original, manifest: document.manifest };
}

/**
 * Copies the image the exporter left in `dir` to `target`, with the run image's original
 * compressed blobs (from the store) in place of the decompressed ones. Returns its descriptor.
 */
export async function exportBuiltImage(
  dir: string,
  swaps: LayerSwaps,
  store: Store,
  target: ImageTarget,
  runImageReference: string,
): Promise<Descriptor> {
  const { layout: exported, original, manifest: exportedManifest } = await exportedImage(dir);
  const config = await pinnedConfig(exported, exportedManifest.config, runImageReference);
  const manifest = { ...exportedManifest, config: config.descriptor };
  const layers: Descriptor[] = [];
  const fromStore = new Set<string>();
  for (const layer of manifest.layers) {
    const swap = swaps.get(layer.digest);
    // A compressed twin pruned from the store since: the decompressed blob is as valid.
    if (swap !== undefined && (await store.layout.hasBlob(swap))) {
      layers.push(ociLayerType(original.mediaType, swap));
      fromStore.add(swap.digest);
    } else layers.push(ociLayerType(original.mediaType, layer));
  }
  const bytes = Buffer.from(JSON.stringify({ ...manifest, layers }));
  const descriptor: Descriptor = {
    mediaType: original.mediaType,
    digest: `sha256:${createHash("sha256").update(bytes).digest("hex")}`,
    size: bytes.length,
  };
  const source: ImageSource = {
    description: dir,
    head: async () => descriptor,
    resolve: async () => ({ descriptor, bytes }),
    manifest: async () => bytes,
    blob: (blob) =>
      blob.digest === config.descriptor.digest
        ? (async function* () {
            yield config.bytes;
          })()
        : fromStore.has(blob.digest)
          ? store.layout.openBlob(blob)
          : exported.openBlob(blob),
  };
  const release = await store.lease();
  try {
    const result = await copyImage(source, target, { platform: hostPlatform() });
    return result.descriptor;
  } catch (error) {
    throw diskFullError(error, store.root, "Cannot put the built image into the store") ?? error;
  } finally {
    await release();
  }
}

/**
 * Decompresses the gzip layers of the image the exporter left in `dir`, in place, so that the
 * next build's phases open it as the previous image without gunzipping it again; returns the
 * new swaps (decompressed digest → the compressed layer, which is in the store by now).
 */
export async function decompressPreviousImage(dir: string): Promise<Map<string, Descriptor>> {
  const { layout, original, manifest } = await exportedImage(dir);
  const config = parseImageConfig(
    await layout.readBlob(manifest.config, 64 * 1024 * 1024),
    `The config of the exported image in ${dir}`,
  );
  const { layers, swaps } = await decompressLayers(
    layout,
    manifest.layers,
    config.rootfs.diff_ids,
    (layer) => layout.blobPath(parseDigest(layer.digest)),
    async () => {},
  );
  if (swaps.size === 0) return swaps;
  const bytes = Buffer.from(JSON.stringify({ ...manifest, layers }));
  const descriptor = await layout.writeBytes(bytes, original.mediaType);
  // The lifecycle wants exactly one manifest in the index: this one replaces the exporter's.
  await layout.setOnlyManifest({ ...original, digest: descriptor.digest, size: descriptor.size });
  for (const compressed of swaps.values()) await layout.removeBlob(parseDigest(compressed.digest));
  await layout.removeBlob(parseDigest(original.digest));
  return swaps;
}

const SWAPS_FILE = "layer-swaps.json";

/** The app's decompressed-layer swaps, kept in its build state between builds. */
export async function readSwaps(stateDir: string): Promise<Map<string, Descriptor>> {
  try {
    return new Map(
      JSON.parse(await readFile(join(stateDir, SWAPS_FILE), "utf8")) as Array<[string, Descriptor]>,
    );
  } catch {
    return new Map();
  }
}

/** Keeps the newest entries only: swaps of layers long gone are of no use. */
export async function writeSwaps(stateDir: string, swaps: ReadonlyMap<string, Descriptor>): Promise<void> {
  const entries = [...swaps].slice(-256);
  await writeFile(join(stateDir, SWAPS_FILE), JSON.stringify(entries));
}
