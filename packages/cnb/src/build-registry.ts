import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  type Descriptor,
  MediaType,
  parseDigest,
  parseImageConfig,
  parseManifestDocument,
  type Store,
  StoreRegistry,
} from "@locald/oci";
import { BuildError } from "./errors.js";
import { LIFECYCLE_METADATA, registryReference } from "./platform.js";

/**
 * How a build into the store (or a layout) meets the lifecycle: the store shown as a registry
 * on loopback for the build's length. The lifecycle then reads the run image and the previous
 * image as it reads any registry's — manifests and configs, never a layer it does not need —
 * and pushes the new image's blobs straight into the store, each checked against its digest.
 * (Its OCI layout mode gunzipped and re-hashed every layer of both images in every phase that
 * opened them, and left the image to be copied into the store afterwards.)
 */

/** Repository names the lifecycle sees: fixed, so nothing of them reaches the image. */
const RUN_REPOSITORY = "locald/run";
const APP_REPOSITORY = "locald/app";
const TAG = "latest";

export interface BuildRegistry {
  readonly registry: StoreRegistry;
  /** The run image as the lifecycle names it (`127.0.0.1:PORT/locald/run:latest`). */
  readonly runImage: string;
  /** The image the lifecycle reads as previous and pushes (`127.0.0.1:PORT/locald/app:latest`). */
  readonly appImage: string;
}

/**
 * Starts the registry showing `run` (the run image's manifest, in the store) and, when there is
 * one, the image this app's last build made.
 */
export async function openBuildRegistry(
  store: Store,
  run: Descriptor,
  previous: Descriptor | undefined,
): Promise<BuildRegistry> {
  const registry = await StoreRegistry.start(store.layout);
  registry.show(RUN_REPOSITORY, TAG, run);
  if (previous !== undefined) registry.show(APP_REPOSITORY, TAG, previous);
  return {
    registry,
    runImage: `${registry.host}/${RUN_REPOSITORY}:${TAG}`,
    appImage: `${registry.host}/${APP_REPOSITORY}:${TAG}`,
  };
}

/** Docker layer media types an OCI manifest should not carry, and their OCI names (same bytes). */
const OCI_LAYER_TYPES: Record<string, string> = {
  [MediaType.DockerLayerGzip]: MediaType.OciLayerGzip,
  "application/vnd.docker.image.rootfs.diff.tar": MediaType.OciLayer,
};

/**
 * The image the exporter pushed, made what a `--publish` build of the same sources makes: the
 * run image named by `runReference` (its registry reference and digest) instead of the loopback
 * name the lifecycle read it under, and OCI layer types in an OCI manifest (the lifecycle writes
 * Docker ones, which strict readers such as umoci refuse). Written into the store; returns its
 * descriptor.
 */
export async function finishBuiltImage(
  store: Store,
  build: BuildRegistry,
  runDigest: string,
  runReference: string,
): Promise<Descriptor> {
  const pushed = build.registry.tagged(APP_REPOSITORY, TAG);
  if (pushed === undefined) throw new BuildError("The exporter finished without pushing the image.");
  const document = parseManifestDocument(
    await store.layout.readBlob(pushed, 4 * 1024 * 1024),
    pushed.mediaType,
    "The exported image",
  );
  if (document.kind !== "manifest") throw new BuildError("The exporter pushed an index, not an image.");
  const manifest = document.manifest;
  const configBytes = await store.layout.readBlob(manifest.config, 64 * 1024 * 1024);
  const local = registryReference(build.runImage, runDigest);
  const recorded = runImageRecorded(configBytes, manifest.config.digest);
  const config =
    recorded === local
      ? await store.layout.writeBytes(
          Buffer.from(configBytes.toString("utf8").replaceAll(local, runReference)),
          manifest.config.mediaType,
        )
      : manifest.config;
  const oci = pushed.mediaType === MediaType.OciManifest;
  const layers = manifest.layers.map((layer) => {
    const type = OCI_LAYER_TYPES[layer.mediaType];
    return oci && type !== undefined ? { ...layer, mediaType: type } : layer;
  });
  const bytes = Buffer.from(JSON.stringify({ ...manifest, config, layers }));
  return store.layout.writeBytes(bytes, pushed.mediaType);
}

function runImageRecorded(config: Buffer, digest: string): string | undefined {
  const labels = (parseImageConfig(config, `The exported config ${digest}`).config?.Labels ?? {}) as Record<
    string,
    string
  >;
  try {
    return (JSON.parse(labels[LIFECYCLE_METADATA] ?? "{}") as { runImage?: { reference?: string } }).runImage
      ?.reference;
  } catch {
    return undefined;
  }
}

const PREVIOUS_FILE = "previous-image.json";

/** The image this app's last build made, while the store still has it. */
export async function previousImage(stateDir: string, store: Store): Promise<Descriptor | undefined> {
  let descriptor: Descriptor;
  try {
    descriptor = JSON.parse(await readFile(join(stateDir, PREVIOUS_FILE), "utf8")) as Descriptor;
    parseDigest(descriptor.digest);
  } catch {
    return undefined;
  }
  // Pruned since, in part or whole: no previous image rather than one the exporter cannot reuse.
  try {
    const { manifest } = await store.readImage(descriptor, "The previous image");
    for (const blob of [manifest.config, ...manifest.layers])
      if (!(await store.layout.hasBlob(blob))) return undefined;
  } catch {
    return undefined;
  }
  return descriptor;
}

export async function rememberImage(stateDir: string, descriptor: Descriptor): Promise<void> {
  const { mediaType, digest, size } = descriptor;
  await writeFile(join(stateDir, PREVIOUS_FILE), JSON.stringify({ mediaType, digest, size }));
}
