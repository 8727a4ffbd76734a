import type { Digest } from "../digest.js";
import type { Descriptor } from "../manifest.js";
import { formatReference, parseReference } from "../reference.js";
import { type ClientOptions, clientFor, DEFAULT_LIMITS } from "../registry/index.js";
import {
  type CopyEvent,
  copyImage,
  descriptorSource,
  layoutTarget,
  OciLayout,
  registryTarget,
  type Store,
  storeTarget,
} from "../store/index.js";

/** Where a composed image goes: named in the store, into an OCI layout, or to a registry. */
export type ImageDestination =
  | { readonly kind: "store"; readonly name: string }
  | { readonly kind: "layout"; readonly dir: string; readonly name?: string }
  | { readonly kind: "registry"; readonly reference: string };

export interface DeliverOptions extends ClientOptions {
  concurrency?: number;
  onEvent?: (event: CopyEvent) => void;
}

/**
 * Names an image whose blobs are in the store (written by `composeImage` into `store.layout`)
 * at `destination`: in the store itself, or copied — verified, blobs first — to a layout or a
 * registry. Returns the manifest digest there.
 */
export async function deliverImage(
  store: Store,
  descriptor: Descriptor,
  destination: ImageDestination,
  options: DeliverOptions = {},
): Promise<Digest> {
  const source = descriptorSource(store.layout, descriptor, DEFAULT_LIMITS);
  const copy = {
    platform: "all" as const,
    ...(options.concurrency ? { concurrency: options.concurrency } : {}),
  };
  const events = options.onEvent ? { onEvent: options.onEvent } : {};
  if (destination.kind === "store") {
    const name = formatReference(parseReference(destination.name));
    return (await copyImage(source, storeTarget(store, name), { ...copy, ...events })).descriptor
      .digest as Digest;
  }
  if (destination.kind === "layout") {
    const layout = await OciLayout.open(destination.dir, { create: true });
    return (await copyImage(source, layoutTarget(layout, destination.name), { ...copy, ...events }))
      .descriptor.digest as Digest;
  }
  const { client, owned } = clientFor(options);
  try {
    const target = registryTarget(client, parseReference(destination.reference));
    return (await copyImage(source, target, { ...copy, ...events })).descriptor.digest as Digest;
  } finally {
    if (owned) await client.transport.close();
  }
}
