import { stat } from "node:fs/promises";
import type { Digest } from "../digest.js";
import { NotFoundError } from "../errors.js";
import { formatReference, parseReference, type Reference } from "../reference.js";
import { type ClientOptions, clientFor, DEFAULT_LIMITS } from "../registry/index.js";
import {
  type CopyEvent,
  copyImage,
  type ImageSource,
  layoutSource,
  OciLayout,
  registryTarget,
  Store,
} from "../store/index.js";

/** What `push` reads: an image in the store by name, or an OCI layout directory. */
export type PushSource =
  | { readonly kind: "store"; readonly name: string; readonly store?: Store }
  | { readonly kind: "layout"; readonly dir: string; readonly name?: string };

export interface PushOptions extends ClientOptions {
  /** Upload blobs in PATCH chunks of this many bytes instead of a single PUT. */
  chunkSize?: number;
  concurrency?: number;
  onEvent?: (event: CopyEvent) => void;
}

export interface PushResult {
  readonly reference: Reference;
  readonly digest: Digest;
}

/**
 * Reads a CLI-style source: a directory holding `oci-layout` (optionally `DIR:name`), else an
 * image reference in the store.
 */
export async function parsePushSource(spec: string): Promise<PushSource> {
  const isLayout = async (dir: string) =>
    (await stat(`${dir}/oci-layout`).catch(() => undefined)) !== undefined;
  if (await isLayout(spec)) return { kind: "layout", dir: spec };
  const colon = spec.lastIndexOf(":");
  if (colon > 0 && (await isLayout(spec.slice(0, colon))))
    return { kind: "layout", dir: spec.slice(0, colon), name: spec.slice(colon + 1) };
  return { kind: "store", name: formatReference(parseReference(spec)) };
}

async function openSource(source: PushSource): Promise<ImageSource> {
  if (source.kind === "layout") {
    return layoutSource(await OciLayout.open(source.dir), source.name, DEFAULT_LIMITS);
  }
  const store = source.store ?? (await Store.open());
  const found = await store.find(source.name);
  if (found === undefined) {
    throw new NotFoundError(`The image ${source.name} is not in the local store.`, {
      hint: "Pull or build it first; `locald image ls` lists what is there.",
    });
  }
  return { ...layoutSource(store.layout, source.name, DEFAULT_LIMITS), description: source.name };
}

/** Pushes an image (every platform it has) from the store or an OCI layout to a registry. */
export async function push(
  source: PushSource | string,
  reference: string | Reference,
  options: PushOptions = {},
): Promise<PushResult> {
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  const from = await openSource(typeof source === "string" ? await parsePushSource(source) : source);
  const { client, owned } = clientFor(options);
  try {
    const result = await copyImage(
      from,
      registryTarget(client, ref, options.chunkSize ? { chunkSize: options.chunkSize } : {}),
      {
        platform: "all",
        ...(options.concurrency ? { concurrency: options.concurrency } : {}),
        ...(options.onEvent ? { onEvent: options.onEvent } : {}),
      },
    );
    return { reference: ref, digest: result.descriptor.digest as Digest };
  } finally {
    if (owned) await client.transport.close();
  }
}
