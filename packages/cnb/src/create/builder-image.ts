import { dirname } from "node:path";
import {
  type AuthoredLayer,
  archiveLayer,
  type ClientOptions,
  type CopyEvent,
  composeImage,
  deliverImage,
  directoryEntry,
  fileEntry,
  formatReference,
  type ImageDestination,
  type LayerEntry,
  type PullOptions,
  parseReference,
  pull,
  type Store,
} from "@locald/oci";
import { stringify as toToml } from "smol-toml";
import { CreateConfigError } from "../errors.js";
import { type BuilderConfig, buildEnvFiles, parseBuilderConfig } from "./builder-config.js";
import { type LocatorContext, locateBuildpacks } from "./buildpack-locator.js";
import {
  type BuildpackSource,
  buildpackLayerEntries,
  buildpackKey as key,
  layersLabel,
} from "./buildpack-source.js";
import { type LifecycleSource, readLifecycle } from "./lifecycle-source.js";
import { readConfigFile } from "./tree-source.js";

/**
 * `builder create`: a CNB builder image from pack's builder.toml — the build image's layers, then
 * (as pack lays them out, so the two tools' builders have the same `/cnb`) a layer of the
 * platform's directories, the lifecycle, one layer per buildpack, and `order.toml`, `stack.toml`,
 * `run.toml` and the build environment — with the labels the distribution spec defines.
 */

export interface CreateBuilderOptions {
  readonly store: Store;
  readonly destination: ImageDestination;
  readonly client?: ClientOptions;
  /** The build image's platform (`os/arch[/variant]`), default the host's. */
  readonly platform?: string;
  readonly onPull?: PullOptions["onEvent"];
  readonly onCopy?: (event: CopyEvent) => void;
  /** The tool named in the metadata's `createdBy`. */
  readonly createdBy?: { name: string; version: string };
}

export interface CreatedBuilder {
  readonly digest: string;
  readonly lifecycleVersion: string;
  readonly buildpacks: ReadonlyArray<{ id: string; version: string }>;
  readonly runImages: readonly string[];
}

/** The spec's names for the labels a builder carries. */
export const BuilderLabel = {
  metadata: "io.buildpacks.builder.metadata",
  buildpackLayers: "io.buildpacks.buildpack.layers",
  buildpackOrder: "io.buildpacks.buildpack.order",
  lifecycleVersion: "io.buildpacks.lifecycle.version",
  stackId: "io.buildpacks.stack.id",
} as const;

export async function createBuilder(
  configFile: string,
  options: CreateBuilderOptions,
): Promise<CreatedBuilder> {
  const text = await readConfigFile(configFile, "builder.toml");
  const config = parseBuilderConfig(text, configFile);
  const baseDir = dirname(configFile);
  const lifecycle = await readLifecycle(config.lifecycle, baseDir);
  const buildpacks = await readBuildpacks(config, baseDir, {
    store: options.store,
    ...(options.client ? { client: options.client } : {}),
    ...(options.onPull ? { onPull: options.onPull } : {}),
  });
  checkApis(buildpacks, lifecycle);
  const order = resolveOrder(config, buildpacks);

  const release = await options.store.lease();
  try {
    const pulled = await pull(config.buildImage, {
      ...options.client,
      to: { kind: "store", store: options.store },
      ...(options.platform ? { platform: options.platform } : {}),
      ...(options.onPull ? { onEvent: options.onPull } : {}),
    });
    const base = await options.store.readImage(pulled.descriptor, config.buildImage);
    const baseConfig = base.config.config ?? {};
    const uid = buildUserId(baseConfig.Env ?? [], "CNB_USER_ID", config.buildImage);
    const gid = buildUserId(baseConfig.Env ?? [], "CNB_GROUP_ID", config.buildImage);
    const baseLabels = baseConfig.Labels ?? {};
    const stackId = config.stackId ?? baseLabels[BuilderLabel.stackId];

    const buildpackLayers = new Map<string, AuthoredLayer>();
    for (const bp of buildpacks) buildpackLayers.set(key(bp), await archiveLayer(buildpackLayerEntries(bp)));
    const layers = [
      await archiveLayer(platformDirectories(uid, gid)),
      await archiveLayer(lifecycleEntries(lifecycle)),
      ...buildpacks.map((bp) => buildpackLayers.get(key(bp)) as AuthoredLayer),
      await archiveLayer([fileEntry("cnb/order.toml", toToml({ order }))]),
      await archiveLayer([fileEntry("cnb/stack.toml", stackToml(config))]),
      await archiveLayer([
        fileEntry(
          "cnb/run.toml",
          toToml({
            images: config.runImages.map((run) => ({
              image: run.image,
              ...(run.mirrors.length > 0 ? { mirrors: [...run.mirrors] } : {}),
            })),
          }),
        ),
      ]),
      await archiveLayer(
        config.buildEnv
          .flatMap(buildEnvFiles)
          .map((file) => fileEntry(`cnb/build-config/env/${file.name}`, file.content)),
      ),
    ];
    const apis = {
      buildpack: {
        deprecated: [...lifecycle.apis.buildpack.deprecated],
        supported: [...lifecycle.apis.buildpack.supported],
      },
      platform: {
        deprecated: [...lifecycle.apis.platform.deprecated],
        supported: [...lifecycle.apis.platform.supported],
      },
    };
    const firstRun = config.runImages[0] as BuilderConfig["runImages"][number];
    const metadata = {
      description: config.description,
      buildpacks: buildpacks.map((bp) => ({
        id: bp.id,
        version: bp.version,
        ...(bp.name ? { name: bp.name } : {}),
        ...(bp.homepage ? { homepage: bp.homepage } : {}),
      })),
      stack: { runImage: { image: firstRun.image, mirrors: [...firstRun.mirrors] } },
      images: config.runImages.map((image) => ({ image: image.image, mirrors: [...image.mirrors] })),
      lifecycle: {
        version: lifecycle.version,
        api: { buildpack: apis.buildpack.supported[0] ?? "", platform: apis.platform.supported[0] ?? "" },
        apis,
      },
      createdBy: options.createdBy ?? { name: "locald", version: "0.1.0" },
    };
    const composed = await composeImage(options.store.layout, {
      base,
      layers,
      config: {
        ...baseConfig,
        WorkingDir: "/layers",
        Labels: {
          ...baseLabels,
          [BuilderLabel.metadata]: JSON.stringify(metadata),
          [BuilderLabel.buildpackLayers]: JSON.stringify(layersLabel(buildpacks, buildpackLayers)),
          [BuilderLabel.buildpackOrder]: JSON.stringify(order),
          [BuilderLabel.lifecycleVersion]: lifecycle.version,
          ...(stackId ? { [BuilderLabel.stackId]: stackId } : {}),
        },
      },
      createdBy: "locald builder create",
    });
    const digest = await deliverImage(options.store, composed.descriptor, options.destination, {
      ...options.client,
      ...(options.onCopy ? { onEvent: options.onCopy } : {}),
    });
    return {
      digest,
      lifecycleVersion: lifecycle.version,
      buildpacks: buildpacks.map((bp) => ({ id: bp.id, version: bp.version })),
      runImages: config.runImages.map((image) => image.image),
    };
  } finally {
    await release();
  }
}

/** Each `[[buildpacks]]` read (a package gives all it holds), duplicates once, sorted as pack sorts them. */
async function readBuildpacks(
  config: BuilderConfig,
  baseDir: string,
  context: LocatorContext,
): Promise<BuildpackSource[]> {
  const found = new Map<string, BuildpackSource>();
  for (const entry of config.buildpacks) {
    const located = await locateBuildpacks(entry.uri, baseDir, context);
    const named = located.filter(
      (bp) =>
        (entry.id === undefined || entry.id === bp.id) &&
        (entry.version === undefined || entry.version === bp.version),
    );
    if (named.length === 0)
      throw new CreateConfigError(
        `[[buildpacks]] names ${entry.id ?? "?"}@${entry.version ?? "?"}, but ${entry.uri} holds ${located.map(key).join(", ")}.`,
        { hint: "Correct the id and version in builder.toml, or drop them (the buildpack's own are used)." },
      );
    for (const bp of located) if (!found.has(key(bp))) found.set(key(bp), bp);
  }
  return [...found.values()].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

/** The order with every version filled in from the buildpacks present; a missing one is an error. */
function resolveOrder(
  config: BuilderConfig,
  buildpacks: readonly BuildpackSource[],
): Array<{ group: Array<{ id: string; version: string; optional?: boolean }> }> {
  return config.order.map((entry) => ({
    group: entry.group.map((member) => {
      const candidates = buildpacks.filter(
        (bp) => bp.id === member.id && (member.version === undefined || bp.version === member.version),
      );
      const chosen = candidates[0];
      if (chosen === undefined || candidates.length > 1)
        throw new CreateConfigError(
          candidates.length > 1
            ? `The order names ${member.id} without a version, and the builder has ${candidates.map(key).join(" and ")}.`
            : `The order names ${member.id}${member.version ? `@${member.version}` : ""}, which is not among the builder's [[buildpacks]].`,
          { hint: "Add the buildpack to [[buildpacks]] with its uri, or give the version that is there." },
        );
      return { id: chosen.id, version: chosen.version, ...(member.optional ? { optional: true } : {}) };
    }),
  }));
}

/** A buildpack whose API the lifecycle cannot run would fail every build: refused now. */
function checkApis(buildpacks: readonly BuildpackSource[], lifecycle: LifecycleSource): void {
  const supported = [...lifecycle.apis.buildpack.supported, ...lifecycle.apis.buildpack.deprecated];
  for (const bp of buildpacks)
    if (supported.length > 0 && !supported.includes(bp.api))
      throw new CreateConfigError(
        `The buildpack ${key(bp)} uses Buildpack API ${bp.api}, which lifecycle ${lifecycle.version} does not support (it supports ${supported.join(", ")}).`,
        {
          hint: "Use a lifecycle release that supports that API, or a version of the buildpack written for one of those.",
        },
      );
}

function buildUserId(env: readonly string[], name: string, image: string): number {
  const value = env.find((pair) => pair.startsWith(`${name}=`))?.slice(name.length + 1);
  const id = Number(value);
  if (value === undefined || value === "" || !Number.isSafeInteger(id) || id < 0)
    throw new CreateConfigError(
      `The build image ${image} does not set ${name} (the build user's id) in its environment.`,
      {
        hint: "A CNB build image sets CNB_USER_ID and CNB_GROUP_ID (ENV in its Dockerfile); use one that does.",
      },
    );
  return id;
}

/** The directories every builder has: the build user's workspace and layers, root's /cnb and /platform. */
function platformDirectories(uid: number, gid: number): LayerEntry[] {
  return [
    directoryEntry("workspace/", { uid, gid }),
    directoryEntry("layers/", { uid, gid }),
    directoryEntry("cnb/"),
    directoryEntry("cnb/buildpacks/"),
    directoryEntry("cnb/extensions/"),
    directoryEntry("platform/"),
    directoryEntry("platform/env/"),
    directoryEntry("cnb/build-config/"),
    directoryEntry("cnb/build-config/env/"),
  ];
}

function lifecycleEntries(lifecycle: LifecycleSource): LayerEntry[] {
  return [
    directoryEntry("cnb/lifecycle/"),
    ...lifecycle.entries.map((entry) => ({ ...entry, path: `cnb/lifecycle/${entry.path}`, uid: 0, gid: 0 })),
    // Older platforms looked for the lifecycle at /lifecycle; pack keeps the link, so do we.
    { path: "lifecycle", type: "symlink" as const, linkname: "/cnb/lifecycle" },
  ];
}

/** The legacy stack.toml, which platforms before Platform API 0.12 read the run image from. */
function stackToml(config: BuilderConfig): string {
  const first = config.runImages[0] as BuilderConfig["runImages"][number];
  return toToml({
    "run-image": { image: first.image, ...(first.mirrors.length > 0 ? { mirrors: [...first.mirrors] } : {}) },
  });
}

/** The reference as locald stores it (`docker.io/library/x:latest`). */
export function builderName(reference: string): string {
  return formatReference(parseReference(reference));
}
