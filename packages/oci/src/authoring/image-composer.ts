import type { ContainerConfig, ImageConfig } from "../config.js";
import type { Descriptor, ImageManifest } from "../manifest.js";
import { MediaType } from "../media-types.js";
import { hostPlatform, type Platform } from "../platform.js";
import type { OciLayout } from "../store/index.js";
import type { AuthoredLayer } from "./layer-archive.js";
import { NORMALIZED_TIME } from "./layer-entry.js";

/** An image to write: new layers over an optional base image, and the config to run it with. */
export interface ImageComposition {
  /** An image whose layers come first, unchanged (its blobs must be in the layout already). */
  readonly base?: { readonly manifest: ImageManifest; readonly config: ImageConfig };
  readonly layers: readonly AuthoredLayer[];
  /** The runtime config (replaces the base's). */
  readonly config: ContainerConfig;
  /** Default: the base's, else the host's. */
  readonly platform?: Platform;
  /** The config's `created` and each new history entry's (default: NORMALIZED_TIME). */
  readonly created?: Date;
  /** `created_by` of the new layers' history entries. */
  readonly createdBy?: string;
}

export interface ComposedImage {
  readonly descriptor: Descriptor;
  readonly config: ImageConfig;
}

/**
 * Writes the new layers, the config and an OCI manifest into `layout` (blobs only: naming the
 * image is the caller's, through copyImage to a target). Same inputs, same digest.
 */
export async function composeImage(layout: OciLayout, image: ImageComposition): Promise<ComposedImage> {
  for (const layer of image.layers) await layout.writeBlob(layer.descriptor, [layer.blob]);
  const created = (image.created ?? NORMALIZED_TIME).toISOString();
  const base = image.base;
  const platform: Platform =
    image.platform ??
    (base
      ? {
          os: base.config.os,
          architecture: base.config.architecture,
          ...(base.config.variant ? { variant: base.config.variant } : {}),
        }
      : hostPlatform());
  const baseHistory = base?.config.history ?? [];
  const config: ImageConfig = {
    ...(base?.config ?? {}),
    created,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: image.config,
    rootfs: {
      type: "layers",
      diff_ids: [...(base?.config.rootfs.diff_ids ?? []), ...image.layers.map((layer) => layer.diffId)],
    },
    history: [
      ...baseHistory,
      ...image.layers.map(() => ({ created, ...(image.createdBy ? { created_by: image.createdBy } : {}) })),
    ],
  };
  const configDescriptor = await layout.writeBytes(Buffer.from(JSON.stringify(config)), MediaType.OciConfig);
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: configDescriptor,
    layers: [...(base?.manifest.layers ?? []), ...image.layers.map((layer) => layer.descriptor)],
  };
  const descriptor = await layout.writeBytes(Buffer.from(JSON.stringify(manifest)), MediaType.OciManifest);
  return { descriptor, config };
}
