import { formatReference, parseReference, type Reference } from "@locald/oci";
import { KpackConfigError } from "./kpack-errors.js";
import {
  KPACK_API_VERSION,
  type KpackBuilder,
  type KpackBuildpackRef,
  type KpackImage,
  type KpackObjectReference,
  type KpackResource,
} from "./kpack-types.js";

/**
 * From what the user asked (typed options) to kpack resources, in three steps as kpack lays out
 * its own types: `kpackDefaults` fills what was left out, `validateKpackOptions` applies kpack's
 * webhook rules (and Kubernetes' naming rules) so a mistake is reported here rather than by the
 * cluster, and `kpackResources` builds the values. Pure: no I/O.
 */

/** The app's source as kpack fetches it. */
export type KpackSource =
  | { readonly kind: "registry"; readonly image: string }
  | { readonly kind: "git"; readonly url: string; readonly revision: string };

/**
 * The builder: a ClusterBuilder or Builder the cluster already has (by name), or a builder
 * image, for which locald writes a namespaced Builder with that image's buildpack order — kpack
 * makes its builders itself, from a ClusterStack and a ClusterStore, and cannot run a prebuilt one.
 */
export type KpackBuilderChoice =
  | { readonly kind: "ClusterBuilder" | "Builder"; readonly name: string }
  | {
      readonly kind: "image";
      readonly reference: string;
      readonly order: ReadonlyArray<{ readonly group: readonly KpackBuildpackRef[] }>;
      /** The ClusterStack to build it on (default "default"). */
      readonly stack?: string;
      /** The ClusterStore holding its buildpacks (default "default"). */
      readonly store?: string;
    };

export interface KpackOptions {
  /** Where kpack pushes the app image (a tag, not a digest). */
  readonly tag: string;
  readonly source: KpackSource;
  /** The Image resource's name (default: from the tag's repository). */
  readonly name?: string;
  /** Default "default". */
  readonly namespace?: string;
  /** Default "default", as kpack's own default. */
  readonly serviceAccount?: string;
  /** Default: the ClusterBuilder named "default". */
  readonly builder?: KpackBuilderChoice;
  /** `NAME=value` build-time variables, in order (later wins). */
  readonly env?: readonly string[];
  /** The build cache volume's size as a Kubernetes quantity (default "2G", kpack's default). */
  readonly cacheSize?: string;
}

export type ResolvedKpackOptions = Required<Omit<KpackOptions, "env">> & { readonly env: readonly string[] };

export const KPACK_DEFAULTS = {
  namespace: "default",
  serviceAccount: "default",
  builder: { kind: "ClusterBuilder", name: "default" },
  cacheSize: "2G",
  stack: "default",
  store: "default",
} as const;

/** A Kubernetes name (RFC 1123 label): what kpack labels its Builds with must be one too. */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** A Kubernetes resource quantity, as resource.ParseQuantity reads sizes. */
const QUANTITY = /^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/;
/** A POSIX-style variable name; the build pod's env would refuse others. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** An RFC 1123 label made from anything (a repository's last part, a directory's name). */
export function kubernetesName(from: string): string {
  const name = from
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 63)
    .replace(/-+$/, "");
  return name === "" ? "app" : name;
}

/**
 * `--builder` as the user wrote it: `ClusterBuilder/NAME` or `Builder/NAME` explicitly, a bare
 * Kubernetes name (a ClusterBuilder), or else an image reference. Image repositories are lower
 * case, so the capitalised kinds cannot be mistaken for one.
 */
export function parseKpackBuilder(
  value: string,
): { kind: "ClusterBuilder" | "Builder"; name: string } | { kind: "image"; reference: string } {
  const explicit = /^(ClusterBuilder|Builder)\/(.+)$/.exec(value);
  if (explicit) return { kind: explicit[1] as "ClusterBuilder" | "Builder", name: explicit[2] as string };
  if (DNS_LABEL.test(value) && value.length <= 63) return { kind: "ClusterBuilder", name: value };
  return { kind: "image", reference: value };
}

function tagReference(tag: string): Reference {
  let ref: Reference;
  try {
    ref = parseReference(tag);
  } catch (error) {
    throw new KpackConfigError(
      `The image tag "${tag}" is not an image reference: ${(error as Error).message}`,
      {
        hint: "Give -t REGISTRY/REPOSITORY[:TAG], for example -t registry.example.com/team/app.",
      },
    );
  }
  return ref;
}

/** The options with every default filled in. */
export function kpackDefaults(options: KpackOptions): ResolvedKpackOptions {
  const repository = tagReference(options.tag).repository;
  return {
    tag: options.tag,
    source: options.source,
    name: options.name ?? kubernetesName(repository.slice(repository.lastIndexOf("/") + 1)),
    namespace: options.namespace ?? KPACK_DEFAULTS.namespace,
    serviceAccount: options.serviceAccount ?? KPACK_DEFAULTS.serviceAccount,
    builder: options.builder ?? KPACK_DEFAULTS.builder,
    env: options.env ?? [],
    cacheSize: options.cacheSize ?? KPACK_DEFAULTS.cacheSize,
  };
}

/** Every problem kpack's webhook (or Kubernetes) would find, as one KpackConfigError. */
export function validateKpackOptions(options: ResolvedKpackOptions): void {
  const problems: string[] = [];
  const k8sName = (value: string, what: string) => {
    if (!DNS_LABEL.test(value) || value.length > 63)
      problems.push(
        `${what} "${value}" is not a Kubernetes name (lower-case letters, digits and "-", at most 63)`,
      );
  };
  k8sName(options.name, "the Image name");
  k8sName(options.namespace, "the namespace");
  // Service account names are RFC 1123 subdomains: dots are allowed there.
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(options.serviceAccount) || options.serviceAccount.length > 253)
    problems.push(`the service account "${options.serviceAccount}" is not a Kubernetes name`);
  const tag = tagReference(options.tag);
  // kpack's spec.tag goes through go-containerregistry's NewTag, which refuses digests.
  if (tag.digest !== undefined)
    problems.push(`the image tag "${options.tag}" names a digest; kpack needs a tag`);
  if (!QUANTITY.test(options.cacheSize))
    problems.push(`the cache size "${options.cacheSize}" is not a Kubernetes quantity (like 2G or 500Mi)`);
  for (const line of options.env) {
    const eq = line.indexOf("=");
    const name = eq < 0 ? line : line.slice(0, eq);
    if (eq < 0) problems.push(`the build variable "${line}" has no value (NAME=value)`);
    else if (!ENV_NAME.test(name)) problems.push(`"${name}" is not a variable name`);
  }
  const source = options.source;
  if (source.kind === "registry") {
    try {
      parseReference(source.image);
    } catch {
      problems.push(`the source image "${source.image}" is not an image reference`);
    }
  } else {
    if (source.url === "") problems.push("the git source has no url");
    if (source.revision === "") problems.push("the git source has no revision");
  }
  const builder = options.builder;
  if (builder.kind === "image") {
    try {
      parseReference(builder.reference);
    } catch {
      problems.push(`the builder "${builder.reference}" is neither a Kubernetes name nor an image reference`);
    }
    if (builder.order.length === 0 || builder.order.some((entry) => entry.group.length === 0))
      problems.push(`the builder ${builder.reference} gives no buildpack order for kpack's Builder`);
    for (const entry of builder.order)
      for (const ref of entry.group) if (ref.id === "") problems.push("a buildpack of the order has no id");
    k8sName(builder.stack ?? KPACK_DEFAULTS.stack, "the ClusterStack");
    k8sName(builder.store ?? KPACK_DEFAULTS.store, "the ClusterStore");
  } else if (builder.name === "") problems.push(`the ${builder.kind} has no name`);
  if (problems.length > 0)
    throw new KpackConfigError(`kpack would refuse these resources: ${problems.join("; ")}.`, {
      hint: "Fix the flags or locald.toml; `--dry-run` prints what would be applied.",
    });
}

/** The tag kpack writes the Builder it makes for a builder image to: next to the app's. */
function builderTag(appTag: string): string {
  const ref = tagReference(appTag);
  return formatReference({ registry: ref.registry, repository: `${ref.repository}-builder`, tag: "latest" });
}

/** The Builder for a builder image (when one was chosen) and the Image, in the order to apply. */
export function kpackResources(input: KpackOptions): KpackResource[] {
  const options = kpackDefaults(input);
  validateKpackOptions(options);
  const { builder, namespace, serviceAccount } = options;
  const resources: KpackResource[] = [];
  let builderRef: KpackObjectReference;
  if (builder.kind === "image") {
    const resource: KpackBuilder = {
      apiVersion: KPACK_API_VERSION,
      kind: "Builder",
      metadata: {
        name: kubernetesName(`${options.name}-builder`),
        namespace,
        // Which builder image it mirrors: kpack itself never reads that image.
        annotations: { "locald.dev/builder-image": builder.reference },
      },
      spec: {
        tag: builderTag(options.tag),
        stack: { kind: "ClusterStack", name: builder.stack ?? KPACK_DEFAULTS.stack },
        store: { kind: "ClusterStore", name: builder.store ?? KPACK_DEFAULTS.store },
        serviceAccountName: serviceAccount,
        order: builder.order.map((entry) => ({
          group: entry.group.map((ref) => ({
            id: ref.id,
            ...(ref.version ? { version: ref.version } : {}),
            ...(ref.optional ? { optional: true } : {}),
          })),
        })),
      },
    };
    resources.push(resource);
    builderRef = { kind: "Builder", name: resource.metadata.name };
  } else builderRef = { kind: builder.kind, name: builder.name };
  const env = new Map<string, string>();
  for (const line of options.env) {
    const eq = line.indexOf("=");
    env.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const image: KpackImage = {
    apiVersion: KPACK_API_VERSION,
    kind: "Image",
    metadata: { name: options.name, namespace },
    spec: {
      tag: options.tag,
      builder: builderRef,
      serviceAccountName: serviceAccount,
      source:
        options.source.kind === "registry"
          ? { registry: { image: options.source.image } }
          : { git: { url: options.source.url, revision: options.source.revision } },
      cache: { volume: { size: options.cacheSize } },
      ...(env.size > 0 ? { build: { env: [...env].map(([name, value]) => ({ name, value })) } } : {}),
    },
  };
  resources.push(image);
  return resources;
}
