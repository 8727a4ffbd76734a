import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { deliverImage, formatReference, MediaType, parseReference, removeTree, Store } from "@locald/oci";
import { type BuilderContextOptions, type BuildOutput, builderContext } from "./build.js";
import { pullByPolicy } from "./builder.js";
import { BuildConfigError } from "./errors.js";
import type { Phase } from "./lifecycle.js";
import { LIFECYCLE_METADATA, registryReference } from "./platform.js";
import { insecureFlags, reportedDigest, writeRegistryConfig } from "./registry-access.js";
import { LifecycleSandbox, type OutputSink, phaseEnvironment, processOutput } from "./sandbox/index.js";

/**
 * `locald rebase`: an app image put on a newer run image — the app layers stay as they are, byte
 * for byte; the base layers become the run image's. In a registry (`--publish`) the lifecycle's
 * own `rebaser` does it (run from a builder's `/cnb`, in its sandbox). The rebaser reads and writes
 * only registries and docker daemons, not OCI layouts, so an image in the store is rebased here,
 * the same way: the layers above the old run image's top layer (`io.buildpacks.lifecycle.metadata`
 * `runImage.topLayer`) over the new run image's, and that metadata and the `io.buildpacks.base.*`
 * labels made the new run image's. The e2e suite checks both give the same layers and labels.
 */

const run = promisify(execFile);

export interface RebaseOptions extends Omit<BuilderContextOptions, "builder"> {
  /** The builder whose lifecycle runs the rebaser (needed for images in a registry only). */
  readonly builder?: string;
  /** The app image: a store name, or (with output registry) the registry image. */
  readonly image: string;
  /** The run image to put it on (default: the one it was built on, pulled again). */
  readonly runImage?: string;
  /** Default: back into the store under the same name. */
  readonly output?: BuildOutput;
  readonly onOutput?: OutputSink;
  readonly onPhase?: (phase: Phase) => void;
  readonly logLevel?: "info" | "debug";
  readonly colour?: boolean;
}

export interface RebaseResult {
  readonly image: string;
  readonly digest: string;
  readonly runImage: string;
}

const REBASABLE = "io.buildpacks.rebasable";

/** The labels that describe the base, which follow the run image (the rebaser's rule for Platform API 0.12+). */
const isBaseLabel = (name: string) =>
  name.startsWith("io.buildpacks.base.") || name.startsWith("io.buildpacks.stack.");

export async function rebase(options: RebaseOptions): Promise<RebaseResult> {
  const output: BuildOutput = options.output ?? { kind: "store", name: options.image };
  return output.kind === "registry" ? rebaseInRegistry(options) : rebaseStored(options, output);
}

/** The rebaser, against the registry image. */
async function rebaseInRegistry(options: RebaseOptions): Promise<RebaseResult> {
  const image = formatReference(parseReference(options.image));
  const runImage = options.runImage;
  if (runImage === undefined)
    throw new BuildConfigError(`Which run image to rebase ${image} on is not known.`, {
      hint: "Pass --run-image with the run image to put it on.",
    });
  if (options.builder === undefined)
    throw new BuildConfigError(
      `Rebasing ${image} in its registry needs a builder: its lifecycle's rebaser does it.`,
      {
        hint: "Pass --builder, or set [project] builder in locald.toml.",
      },
    );
  // The builder only lends its lifecycle: the stored one will do.
  const { home, runtime, builder, platformApi, isolation, mode, root, privileged } = await builderContext(
    { ...options, builder: options.builder },
    "if-not-present",
  );
  const work = join(home, "tmp", `rebase-${randomBytes(6).toString("hex")}`);
  try {
    const layers = join(work, "layers");
    const config = join(work, "docker-config");
    await mkdir(layers, { recursive: true });
    // The rebaser talks to the registry itself, with the caller's credentials in a private config.
    await writeRegistryConfig(config, [image, runImage], options.client);
    if (privileged) await run("chown", ["-R", `${builder.uid}:${builder.gid}`, "--", work]);
    const sandbox = new LifecycleSandbox({
      runtime,
      root,
      privileged,
      uid: builder.uid,
      gid: builder.gid,
      mounts: [
        { source: layers, destination: "/layers", readonly: false },
        { source: config, destination: "/docker-config", readonly: true },
        ...mode.mounts(builder),
      ],
      env: [
        ...phaseEnvironment(builder, isolation, platformApi, options.colour),
        "DOCKER_CONFIG=/docker-config",
      ],
      layersDir: layers,
      logLevel: options.logLevel ?? "info",
      onOutput: options.onOutput ?? processOutput,
      ...(options.onPhase ? { onPhase: options.onPhase } : {}),
    });
    await sandbox.phase("rebaser", [
      ...insecureFlags(options.client, [image, runImage]),
      "-run-image",
      runImage,
      "-report",
      "/layers/report.toml",
      image,
    ]);
    return { image, digest: await reportedDigest(join(layers, "report.toml")), runImage };
  } finally {
    await removeTree(work);
  }
}

interface LifecycleMetadata {
  runImage?: { topLayer?: string; reference?: string; image?: string; mirrors?: string[] };
  stack?: { runImage?: { image?: string } };
  [key: string]: unknown;
}

/** An image in the store, rebased as the rebaser would, to the store or a layout. */
async function rebaseStored(
  options: RebaseOptions,
  output: BuildOutput & { kind: "store" | "layout" },
): Promise<RebaseResult> {
  const image = formatReference(parseReference(options.image));
  const store = options.store ?? (await Store.open(options.home ? join(options.home, "store") : undefined));
  const client = options.client ? { client: options.client } : {};
  const release = await store.lease();
  try {
    const stored = await store.find(image);
    if (stored === undefined)
      throw new BuildConfigError(`${image} is not in the local store.`, {
        hint: "Build it first, or rebase the image in its registry with --publish --run-image.",
      });
    const app = await store.readImage(stored.descriptor, image);
    const labels = app.config.config?.Labels ?? {};
    const metadata = lifecycleMetadata(labels[LIFECYCLE_METADATA], image);
    const recorded = metadata.runImage?.image ?? metadata.stack?.runImage?.image;
    const runImage = options.runImage ?? recorded;
    // As the rebaser: an image its buildpacks marked unsafe to rebase is left alone.
    if (labels[REBASABLE] === "false")
      throw new BuildConfigError(
        `${image} cannot be rebased: its buildpacks marked it so (${REBASABLE}=false).`,
        {
          hint: "Rebuild it on the new run image instead (locald build … --run-image).",
        },
      );
    if (runImage === undefined)
      throw new BuildConfigError(`Which run image to rebase ${image} on is not known.`, {
        hint: "Pass --run-image with the run image to put it on.",
      });
    const top = metadata.runImage?.topLayer;
    const below = top === undefined ? -1 : app.config.rootfs.diff_ids.indexOf(top);
    if (below < 0)
      throw new BuildConfigError(
        `${image} does not say which of its layers are its run image's (no runImage.topLayer among its layers).`,
        {
          hint: "Rebuild it with a current lifecycle; only images it exported can be rebased.",
        },
      );
    const pulled = await pullByPolicy(runImage, "run image", {
      store,
      policy: options.pullPolicy ?? "always",
      ...client,
    });
    const base = await store.readImage(pulled.descriptor, runImage);
    if (base.config.os !== app.config.os || base.config.architecture !== app.config.architecture)
      throw new BuildConfigError(
        `The run image ${runImage} is for ${base.config.os}/${base.config.architecture}, ${image} for ${app.config.os}/${app.config.architecture}.`,
        { hint: "Rebase onto a run image of the app's platform." },
      );
    const appLayers = app.manifest.layers.slice(below + 1);
    const appDiffIds = app.config.rootfs.diff_ids.slice(below + 1);
    const history = app.config.history ?? [];
    const baseLabels = Object.entries(base.config.config?.Labels ?? {}).filter(([name]) => isBaseLabel(name));
    const newTop = base.config.rootfs.diff_ids.at(-1);
    const config = {
      ...app.config,
      rootfs: { type: "layers" as const, diff_ids: [...base.config.rootfs.diff_ids, ...appDiffIds] },
      // The history lines up with the layers only when none is empty; otherwise it is left out.
      ...(history.length === app.config.rootfs.diff_ids.length && !history.some((entry) => entry.empty_layer)
        ? {
            history: [
              ...(base.config.history ?? base.config.rootfs.diff_ids.map(() => ({}))),
              ...history.slice(below + 1),
            ],
          }
        : { history: undefined }),
      config: {
        ...app.config.config,
        Labels: {
          ...Object.fromEntries(Object.entries(labels).filter(([name]) => !isBaseLabel(name))),
          ...Object.fromEntries(baseLabels),
          [LIFECYCLE_METADATA]: JSON.stringify({
            ...metadata,
            runImage: {
              ...metadata.runImage,
              topLayer: newTop,
              reference: registryReference(runImage, pulled.digest),
              // Another run image than the one it was built on: the next rebase follows it.
              ...(runImage === recorded ? {} : { image: runImage, mirrors: [] }),
            },
          }),
        },
      },
    };
    const configDescriptor = await store.layout.writeBytes(
      Buffer.from(JSON.stringify(config)),
      MediaType.OciConfig,
    );
    const manifest = {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: configDescriptor,
      layers: [...base.manifest.layers, ...appLayers],
    };
    const descriptor = await store.layout.writeBytes(
      Buffer.from(JSON.stringify(manifest)),
      MediaType.OciManifest,
    );
    const name = output.kind === "layout" ? output.name : formatReference(parseReference(output.name));
    const digest = await deliverImage(
      store,
      descriptor,
      output.kind === "layout" ? { kind: "layout", dir: resolve(output.dir), name } : { kind: "store", name },
    );
    return { image: name, digest, runImage };
  } finally {
    await release();
  }
}

function lifecycleMetadata(text: string | undefined, image: string): LifecycleMetadata {
  if (text === undefined)
    throw new BuildConfigError(
      `${image} was not built by a CNB lifecycle (it has no ${LIFECYCLE_METADATA} label).`,
      {
        hint: "Only images built with buildpacks can be rebased.",
      },
    );
  try {
    const metadata = JSON.parse(text) as unknown;
    if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata))
      throw new TypeError("not a table");
    return metadata as LifecycleMetadata;
  } catch {
    throw new BuildConfigError(`The ${LIFECYCLE_METADATA} label of ${image} is not valid JSON.`);
  }
}
