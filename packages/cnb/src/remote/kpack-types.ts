/**
 * kpack's `kpack.io/v1alpha2` resources as plain data: the subset of fields locald writes, named
 * and nested as kpack's Go types spell them (pkg/apis/build/v1alpha2 in pivotal/kpack v0.16.1),
 * so that what we render decodes strictly into them. Nouns only: no I/O, no defaults here.
 */

export const KPACK_API_VERSION = "kpack.io/v1alpha2";

/** A Kubernetes object reference, as kpack reads `spec.builder`, `spec.stack` and `spec.store`. */
export interface KpackObjectReference {
  readonly kind: string;
  readonly name: string;
}

export interface KpackMetadata {
  readonly name: string;
  readonly namespace: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
}

export interface KpackEnvVar {
  readonly name: string;
  readonly value: string;
}

/** Where kpack fetches the app from: an image whose layers are the app, or a git commit. */
export type KpackSourceConfig =
  | { readonly registry: { readonly image: string } }
  | { readonly git: { readonly url: string; readonly revision: string } };

export interface KpackImage {
  readonly apiVersion: typeof KPACK_API_VERSION;
  readonly kind: "Image";
  readonly metadata: KpackMetadata;
  readonly spec: {
    readonly tag: string;
    readonly builder: KpackObjectReference;
    readonly serviceAccountName: string;
    readonly source: KpackSourceConfig;
    readonly cache?: { readonly volume: { readonly size: string } };
    readonly build?: { readonly env: readonly KpackEnvVar[] };
  };
}

/** One buildpack of a Builder's order, by id: kpack resolves it in the builder's store. */
export interface KpackBuildpackRef {
  readonly id: string;
  readonly version?: string;
  readonly optional?: boolean;
}

/** A namespaced Builder: kpack makes a builder image at `tag` from a stack, a store and an order. */
export interface KpackBuilder {
  readonly apiVersion: typeof KPACK_API_VERSION;
  readonly kind: "Builder";
  readonly metadata: KpackMetadata;
  readonly spec: {
    readonly tag: string;
    readonly stack: KpackObjectReference;
    readonly store: KpackObjectReference;
    readonly serviceAccountName: string;
    readonly order: ReadonlyArray<{ readonly group: readonly KpackBuildpackRef[] }>;
  };
}

export type KpackResource = KpackImage | KpackBuilder;

/** What `kubectl get builds -o json` says of one Build, reduced to what following it needs. */
export interface KpackBuildStatus {
  readonly name: string;
  /** The Succeeded condition: "True", "False" or "Unknown" (still running, or not started). */
  readonly succeeded: "True" | "False" | "Unknown";
  readonly reason?: string;
  readonly message?: string;
  /** The image kpack pushed, once it succeeded. */
  readonly latestImage?: string;
  /** The build number kpack gave it (`image.kpack.io/buildNumber`). */
  readonly buildNumber?: number;
}
