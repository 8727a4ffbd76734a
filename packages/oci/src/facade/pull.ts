import type { Digest } from "../digest.js";
import { diskFullError } from "../disk-space.js";
import { PlatformNotFoundError } from "../errors.js";
import { type Platform, platformOrHost } from "../platform.js";
import { formatReference, parseReference, type Reference } from "../reference.js";
import { type ClientOptions, clientFor } from "../registry/index.js";
import {
  copyImage,
  layoutTarget,
  OciLayout,
  type PullResult,
  registrySource,
  Store,
  storeTarget,
} from "../store/index.js";
import { type UnpackEvent, unpackImage } from "../unpack/index.js";

/** Where `pull` puts an image. */
export type Destination =
  | { readonly kind: "store"; readonly store?: Store }
  | { readonly kind: "layout"; readonly dir: string; readonly name?: string }
  | {
      readonly kind: "directory";
      readonly dir: string;
      readonly paths?: readonly string[];
      readonly store?: Store;
      readonly cacheDir?: string | false;
    };

/** The local image store (default `$LOCALD_HOME/store`). */
export function store(instance?: Store): Destination {
  return instance === undefined ? { kind: "store" } : { kind: "store", store: instance };
}

/** An OCI image layout directory, created if needed; `name` becomes the ref-name annotation. */
export function ociLayout(dir: string, options: { name?: string } = {}): Destination {
  return { kind: "layout", dir, ...(options.name === undefined ? {} : { name: options.name }) };
}

/**
 * A root filesystem written into `dir` (new or empty), optionally only some subtrees; the image
 * goes through the store, and unpacked roots are cached (see `unpackImage`).
 */
export function directory(
  dir: string,
  options: { paths?: readonly string[]; store?: Store; cacheDir?: string | false } = {},
): Destination {
  return { kind: "directory", dir, ...options };
}

export interface PullOptions extends ClientOptions {
  to?: Destination;
  /** `os/arch[/variant]`, a Platform, or "all" to keep every platform of an index. Default: the host. */
  platform?: string | Platform | "all";
  /** Blobs downloaded at once (default 4). */
  concurrency?: number;
  onEvent?: (event: UnpackEvent) => void;
}

function platformOption(value: PullOptions["platform"]): Platform | "all" {
  return value === "all" ? "all" : platformOrHost(value);
}

/**
 * Pulls an image from its registry into the store or an OCI layout. Every blob is verified
 * before it becomes visible; an image already present is not downloaded again.
 */
export async function pull(reference: string | Reference, options: PullOptions = {}): Promise<PullResult> {
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  const platform = platformOption(options.platform);
  const destination = options.to ?? store();
  if (destination.kind === "directory") {
    if (options.platform === "all")
      throw new PlatformNotFoundError('A root filesystem is for one platform; pick one instead of "all".');
    const { to: _to, platform: _platform, ...rest } = options;
    return unpackImage(ref, destination.dir, {
      ...rest,
      ...(options.platform !== undefined ? { platform: options.platform } : {}),
      ...(destination.paths ? { paths: destination.paths } : {}),
      ...(destination.store ? { store: destination.store } : {}),
      ...(destination.cacheDir !== undefined ? { cacheDir: destination.cacheDir } : {}),
    });
  }
  const { client, owned } = clientFor(options);
  try {
    const source = registrySource(client, ref);
    // What the image's blobs add up to, for a full disk's message.
    let needed = 0;
    const copyOptions = {
      platform,
      strictPlatform: options.platform !== undefined,
      ...(options.concurrency ? { concurrency: options.concurrency } : {}),
      onEvent: (event: UnpackEvent) => {
        if (event.type === "blob-start" && !event.cached) needed += event.size;
        options.onEvent?.(event);
      },
    };
    let result: Awaited<ReturnType<typeof copyImage>>;
    let where: string | undefined;
    try {
      if (destination.kind === "store") {
        const target = destination.store ?? (await Store.open());
        where = target.root;
        const release = await target.lease();
        try {
          result = await copyImage(source, storeTarget(target, formatReference(ref)), copyOptions);
        } finally {
          await release();
        }
      } else {
        where = destination.dir;
        const layout = await OciLayout.open(destination.dir, { create: true });
        const name = destination.name ?? ref.tag;
        result = await copyImage(source, layoutTarget(layout, name), copyOptions);
      }
    } catch (error) {
      const full =
        where === undefined
          ? undefined
          : diskFullError(error, where, `Cannot pull ${formatReference(ref)}`, needed || undefined);
      throw full ?? error;
    }
    return {
      reference: ref,
      descriptor: result.descriptor,
      digest: result.descriptor.digest as Digest,
      sourceDigest: result.sourceDigest,
      platform: result.platform,
      upToDate: result.upToDate,
      bytesTransferred: result.bytesTransferred,
    };
  } finally {
    if (owned) await client.transport.close();
  }
}
