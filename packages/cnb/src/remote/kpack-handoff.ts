import { join } from "node:path";
import { type ClientOptions, defaultDataDir, Store } from "@locald/oci";
import { fetchBuilder } from "../builder.js";
import type { ProjectDescriptor } from "../project-descriptor.js";
import { KpackConfigError } from "./kpack-errors.js";
import {
  type KpackBuilderChoice,
  type KpackSource,
  kpackDefaults,
  kpackResources,
  parseKpackBuilder,
} from "./kpack-resources.js";
import { gitSource, sourceImage, sourceImageFor } from "./kpack-source.js";
import type { KpackBuildpackRef, KpackResource } from "./kpack-types.js";
import { renderKpackYaml } from "./kpack-yaml.js";

/**
 * One app handed to kpack, from a directory to the YAML to apply: where the source goes (its git
 * commit, or an image pushed by us), which builder, and the resources. Applying and following
 * are kpack-apply's; this part needs a registry at most, never a cluster.
 */

export interface KpackHandOffOptions {
  readonly appDir: string;
  readonly tag: string;
  readonly descriptor?: ProjectDescriptor;
  /** `--builder`: a kpack builder's name or a builder image (default: ClusterBuilder "default"). */
  readonly builder?: string;
  /** `-b` ids (`id[@version]`): the order of the Builder made for a builder image. */
  readonly buildpacks?: readonly string[];
  readonly env?: readonly string[];
  readonly name?: string;
  readonly namespace?: string;
  readonly serviceAccount?: string;
  readonly cacheSize?: string;
  /** Upload the files even from a clean git checkout. */
  readonly upload?: boolean;
  /** Compose the source image only to know its digest; push nothing. */
  readonly dryRun: boolean;
  readonly home?: string;
  readonly store?: Store;
  readonly client?: ClientOptions;
  readonly git?: string;
}

export interface KpackHandOff {
  readonly resources: readonly KpackResource[];
  readonly yaml: string;
  readonly source: KpackSource;
  /** The Image's name and namespace, which its Builds are labelled with. */
  readonly image: string;
  readonly namespace: string;
}

function buildpackRef(spec: string): KpackBuildpackRef {
  // kpack finds buildpacks by id in its ClusterStore: directories, archives and images cannot go.
  const notAnId = /^[./~]/.test(spec) || /\.(tgz|cnb|tar\.gz)$/.test(spec) || spec.includes(":");
  if (notAnId)
    throw new KpackConfigError(
      `The buildpack ${spec} is not an id: kpack takes buildpacks from its ClusterStore by id.`,
      {
        hint: "Give -b ID[@VERSION] of a buildpack in the store, and add other buildpacks to the ClusterStore.",
      },
    );
  const at = spec.lastIndexOf("@");
  return at > 0 ? { id: spec.slice(0, at), version: spec.slice(at + 1) } : { id: spec };
}

async function builderChoice(options: KpackHandOffOptions): Promise<KpackBuilderChoice | undefined> {
  if (options.builder === undefined) return undefined;
  const parsed = parseKpackBuilder(options.builder);
  if (parsed.kind !== "image") return parsed;
  // The order, first from what the user gave, then project.toml's group, else the builder's own.
  const given = options.buildpacks ?? [];
  const group = given.length > 0 ? given : (options.descriptor?.group ?? []);
  if (group.length > 0) return { ...parsed, order: [{ group: group.map(buildpackRef) }] };
  const home = options.home ?? defaultDataDir();
  const store = options.store ?? (await Store.open(join(home, "store")));
  const builder = await fetchBuilder(parsed.reference, {
    store,
    cacheDir: join(home, "cache", "builders"),
    pullPolicy: "if-not-present",
    ...(options.client ? { client: options.client } : {}),
  });
  return {
    ...parsed,
    order: builder.order.map((entry) => ({
      group: entry.group.map((ref) => ({
        id: ref.id,
        ...(ref.version ? { version: ref.version } : {}),
        ...(ref.optional ? { optional: true } : {}),
      })),
    })),
  };
}

export async function prepareKpackHandOff(options: KpackHandOffOptions): Promise<KpackHandOff> {
  const builder = await builderChoice(options);
  const common = {
    tag: options.tag,
    ...(builder ? { builder } : {}),
    ...(options.env ? { env: options.env } : {}),
    ...(options.name ? { name: options.name } : {}),
    ...(options.namespace ? { namespace: options.namespace } : {}),
    ...(options.serviceAccount ? { serviceAccount: options.serviceAccount } : {}),
    ...(options.cacheSize ? { cacheSize: options.cacheSize } : {}),
  };
  // Everything is checked before anything is uploaded: a placeholder source stands in.
  kpackResources({ ...common, source: { kind: "git", url: "-", revision: "-" } });
  const git = options.upload
    ? undefined
    : await gitSource(options.appDir, options.git ? { git: options.git } : {});
  let source: KpackSource;
  if (git) source = { kind: "git", ...git };
  else {
    const store =
      options.dryRun || options.store
        ? options.store
        : await Store.open(join(options.home ?? defaultDataDir(), "store"));
    source = await sourceImage(options.appDir, sourceImageFor(options.tag), {
      push: !options.dryRun,
      ...(store ? { store } : {}),
      ...(options.descriptor ? { descriptor: options.descriptor } : {}),
      ...(options.client ? { client: options.client } : {}),
    });
  }
  const resources = kpackResources({ ...common, source });
  const resolved = kpackDefaults({ ...common, source });
  return {
    resources,
    yaml: renderKpackYaml(resources),
    source,
    image: resolved.name,
    namespace: resolved.namespace,
  };
}
