import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { access, mkdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type ContainerConfig, digestOf, MediaType, OciLayout, parseDigest, push } from "@locald/oci";
import { parse as parseToml } from "smol-toml";
import { BUILD_IMAGE_NODE, debianBuildImageLayer, debianMinbaseTar, fixtureCacheDir } from "./debian.js";
import {
  type BuiltLayer,
  buildLayer,
  compressLayer,
  entriesFromDirectory,
  type LayerEntry,
  writeImage,
} from "./image-factory.js";
import type { TestRegistry } from "./registry.js";
import { requireBinary } from "./util.js";

/**
 * A CNB test builder from real parts: the real lifecycle (built from source through the Go
 * module proxy, pinned in e2e/fixtures/lifecycle), our sample buildpacks (e2e/fixtures/buildpacks)
 * and a Debian minbase run image, assembled into images by our own code and pushed with it.
 */

const run = promisify(execFile);

/** A release of the CNB lifecycle the suite builds from source, and the APIs it supports. */
export interface LifecycleRelease {
  readonly version: string;
  /** The Go module under e2e/fixtures that pins it (go.mod and go.sum). */
  readonly module: string;
  readonly platformApis: readonly string[];
  readonly buildpackApis: readonly string[];
}

/** The current line (Platform API up to 0.15), which the sample builders carry. */
export const LIFECYCLE: LifecycleRelease = {
  version: "0.21.12",
  module: "lifecycle",
  platformApis: ["0.7", "0.8", "0.9", "0.10", "0.11", "0.12", "0.13", "0.14", "0.15"],
  buildpackApis: ["0.7", "0.8", "0.9", "0.10", "0.11", "0.12"],
};

/** The previous line (Platform API up to 0.14), which the pack-made builder carries. */
export const PREVIOUS_LIFECYCLE: LifecycleRelease = {
  version: "0.20.19",
  module: "lifecycle-0.20",
  platformApis: ["0.7", "0.8", "0.9", "0.10", "0.11", "0.12", "0.13", "0.14"],
  buildpackApis: ["0.7", "0.8", "0.9", "0.10", "0.11"],
};

export const LIFECYCLE_PHASES = [
  "analyzer",
  "detector",
  "restorer",
  "builder",
  "exporter",
  "creator",
  "rebaser",
  "extender",
];

const FIXTURES = fileURLToPath(new URL("../../fixtures/", import.meta.url));
export const SAMPLE_BUILDPACKS_DIR = join(FIXTURES, "buildpacks");

/** The builder's build user (its CNB_USER_ID / CNB_GROUP_ID). */
export const BUILDER_UID = 1000;
export const BUILDER_GID = 1000;

const lifecycles = new Map<string, Promise<string>>();

/**
 * The directory holding `lifecycle` and `launcher`, built once per machine with `go build`
 * against the committed go.sum (the proxy's checksum database has no entry for this version).
 */
export function lifecycleBinaries(release: LifecycleRelease = LIFECYCLE): Promise<string> {
  let building = lifecycles.get(release.version);
  building ??= (async () => {
    const dir = join(fixtureCacheDir(), `lifecycle-${release.version}`);
    if ((await stat(join(dir, "launcher")).catch(() => undefined))?.isFile()) return dir;
    const go = await requireBinary("go");
    const partial = `${dir}.${process.pid}.partial`;
    await mkdir(partial, { recursive: true });
    try {
      await run(
        go,
        [
          "build",
          "-trimpath",
          "-ldflags",
          `-s -w -X github.com/buildpacks/lifecycle/cmd.Version=${release.version}`,
          "-o",
          `${partial}/`,
          "github.com/buildpacks/lifecycle/cmd/lifecycle",
          "github.com/buildpacks/lifecycle/cmd/launcher",
        ],
        {
          cwd: join(FIXTURES, release.module),
          env: { ...process.env, CGO_ENABLED: "0", GOFLAGS: "-mod=readonly", GOSUMDB: "off" },
          maxBuffer: 16 * 1024 * 1024,
        },
      );
    } catch (error) {
      await rm(partial, { recursive: true, force: true });
      const stderr = (error as { stderr?: string }).stderr?.trim() ?? "";
      throw new Error(`Cannot build the CNB lifecycle ${release.version} with go: ${stderr || error}`);
    }
    await rm(dir, { recursive: true, force: true });
    await rename(partial, dir);
    return dir;
  })();
  lifecycles.set(release.version, building);
  return building;
}

export interface SampleBuildpack {
  id: string;
  version: string;
  api: string;
  dir: string;
}

export async function sampleBuildpack(name: string): Promise<SampleBuildpack> {
  const dir = join(SAMPLE_BUILDPACKS_DIR, name);
  const descriptor = parseToml(await readFile(join(dir, "buildpack.toml"), "utf8")) as {
    api: string;
    buildpack: { id: string; version: string };
  };
  return { id: descriptor.buildpack.id, version: descriptor.buildpack.version, api: descriptor.api, dir };
}

const root = (path: string, mode = 0o755): LayerEntry => ({ path, type: "directory", mode, uid: 0, gid: 0 });

/** A shell's PATH, for the Debian images' configs. */
export const DEBIAN_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

let debianLayer: Promise<BuiltLayer> | undefined;

/**
 * The Debian minbase root filesystem (mmdebstrap) as an image with `config`, pushed to `registry`
 * as `name`. The layer is compressed once per process, whatever images are made of it.
 */
export async function pushDebianImage(
  registry: TestRegistry,
  work: string,
  name: string,
  config: ContainerConfig,
  /** minbase, or the sample build image (see debianBuildImageLayer). */
  base: "minbase" | "build" = "minbase",
): Promise<string> {
  debianLayer ??= (async () => compressLayer(await readFile(await debianMinbaseTar()), "gzip", "oci"))();
  const layer = base === "build" ? await sampleBuildImageLayer() : await debianLayer;
  const layout = await OciLayout.open(join(work, `layout-${name.replace(/[^a-z0-9]+/g, "-")}`), {
    create: true,
  });
  const image = await writeImage(layout, { layers: [layer], config });
  await layout.addManifest(image.descriptor, "image");
  const ref = `${registry.host}/${name}`;
  await push({ kind: "layout", dir: layout.root, name: "image" }, ref);
  return ref;
}

/** The `io.buildpacks.base.*` labels the lifecycle matches targets by, for a Debian 12 stack. */
export const DEBIAN_STACK_LABELS: Readonly<Record<string, string>> = {
  "io.buildpacks.base.distro.name": "debian",
  "io.buildpacks.base.distro.version": "12",
  "io.buildpacks.stack.id": "io.locald.stacks.bookworm",
};

/** The Debian minbase run image with the `io.buildpacks.base.*` labels the lifecycle matches targets by. */
export function pushRunImage(
  registry: TestRegistry,
  work: string,
  name = "cnb/run:bookworm",
): Promise<string> {
  return pushDebianImage(registry, work, name, {
    Env: [DEBIAN_PATH],
    Labels: { ...DEBIAN_STACK_LABELS, "io.buildpacks.base.maintainer": "locald e2e" },
  });
}

let buildImageLayer: Promise<BuiltLayer> | undefined;

/** The sample build image (see debianBuildImageLayer) as a layer, read once per process. */
function sampleBuildImageLayer(): Promise<BuiltLayer> {
  buildImageLayer ??= (async () => {
    const { gzip, diffId } = await debianBuildImageLayer();
    const blob = await readFile(gzip);
    return {
      blob,
      diffId: parseDigest(diffId),
      descriptor: { mediaType: MediaType.OciLayerGzip, digest: digestOf(blob), size: blob.length },
    };
  })();
  return buildImageLayer;
}

export interface TestBuilderOptions {
  runImage: string;
  /** Default: the current line. */
  lifecycle?: LifecycleRelease;
  /**
   * The builder's build base: the sample build image (Debian with gcc, Node.js and npm;
   * default), or none — a /cnb over nothing, which only host isolation can build with.
   */
  buildImage?: "debian" | "none";
  /** Sample buildpack names (directories under e2e/fixtures/buildpacks), in detection order: one group each. */
  buildpacks: readonly string[];
  name?: string;
}

/** Assembles the builder image (lifecycle layer, a layer per buildpack, order/run/stack), pushes it. */
export async function pushTestBuilder(
  registry: TestRegistry,
  work: string,
  options: TestBuilderOptions,
): Promise<string> {
  const release = options.lifecycle ?? LIFECYCLE;
  const binaries = await lifecycleBinaries(release);
  const buildpacks = await Promise.all(options.buildpacks.map(sampleBuildpack));
  const lifecycleLayer: LayerEntry[] = [
    root("cnb/"),
    root("cnb/lifecycle/"),
    { path: "cnb/lifecycle/lifecycle", content: await readFile(join(binaries, "lifecycle")), mode: 0o755 },
    { path: "cnb/lifecycle/launcher", content: await readFile(join(binaries, "launcher")), mode: 0o755 },
    ...LIFECYCLE_PHASES.map((phase) => ({
      path: `cnb/lifecycle/${phase}`,
      type: "symlink" as const,
      linkname: "lifecycle",
    })),
  ];
  const buildpackLayers: BuiltLayer[] = [];
  for (const bp of buildpacks) {
    const base = `cnb/buildpacks/${bp.id.replaceAll("/", "_")}`;
    buildpackLayers.push(
      await buildLayer([
        root("cnb/"),
        root("cnb/buildpacks/"),
        root(`${base}/`),
        ...(await entriesFromDirectory(bp.dir, `${base}/${bp.version}`)).map((entry) => ({
          ...entry,
          uid: 0,
          gid: 0,
        })),
      ]),
    );
  }
  const order = buildpacks
    .map((bp) => `[[order]]\n[[order.group]]\nid = "${bp.id}"\nversion = "${bp.version}"\n`)
    .join("\n");
  const configLayer: LayerEntry[] = [
    root("cnb/"),
    { path: "cnb/order.toml", content: order },
    { path: "cnb/run.toml", content: `[[images]]\nimage = "${options.runImage}"\n` },
    { path: "cnb/stack.toml", content: `[run-image]\nimage = "${options.runImage}"\n` },
    root("cnb/build-config/"),
    root("cnb/build-config/env/"),
    root("workspace/", 0o755),
    root("layers/", 0o755),
    root("platform/", 0o755),
  ];
  const apis = {
    buildpack: { deprecated: [], supported: release.buildpackApis },
    platform: { deprecated: [], supported: release.platformApis },
  };
  const layout = await OciLayout.open(join(work, "layout-builder"), { create: true });
  const base = options.buildImage === "none" ? [] : [await sampleBuildImageLayer()];
  const image = await writeImage(layout, {
    layers: [...base, lifecycleLayer, ...buildpackLayers, configLayer],
    config: {
      Env: [
        `CNB_USER_ID=${BUILDER_UID}`,
        `CNB_GROUP_ID=${BUILDER_GID}`,
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      ],
      User: `${BUILDER_UID}:${BUILDER_GID}`,
      WorkingDir: "/layers",
      Labels: {
        "io.buildpacks.builder.metadata": JSON.stringify({
          description:
            "locald test builder: the real lifecycle, locald's sample buildpacks, a Debian run image",
          buildpacks: buildpacks.map((bp) => ({ id: bp.id, version: bp.version })),
          stack: { runImage: { image: options.runImage, mirrors: [] } },
          images: [{ image: options.runImage }],
          lifecycle: { version: release.version, apis },
          createdBy: { name: "locald e2e", version: "0.1.0" },
        }),
        "io.buildpacks.buildpack.layers": JSON.stringify(
          Object.fromEntries(
            buildpacks.map((bp, index) => [
              bp.id,
              { [bp.version]: { api: bp.api, layerDiffID: buildpackLayers[index]?.diffId, homepage: "" } },
            ]),
          ),
        ),
        "io.buildpacks.buildpack.order": JSON.stringify(
          buildpacks.map((bp) => ({ group: [{ id: bp.id, version: bp.version }] })),
        ),
        "io.buildpacks.lifecycle.version": release.version,
        "io.buildpacks.lifecycle.apis": JSON.stringify(apis),
        "io.buildpacks.stack.id": "io.locald.stacks.bookworm",
      },
    },
  });
  await layout.addManifest(image.descriptor, "builder");
  const ref = `${registry.host}/${options.name ?? "cnb/builder:test"}`;
  await push({ kind: "layout", dir: layout.root, name: "builder" }, ref);
  return ref;
}

/** The run image and a builder of the named sample buildpacks over it, both pushed to `registry`. */
export async function pushSampleBuilder(
  registry: TestRegistry,
  work: string,
  buildpacks: readonly string[],
): Promise<{ builder: string; runImage: string }> {
  const runImage = await pushRunImage(registry, work);
  return { builder: await pushTestBuilder(registry, work, { runImage, buildpacks }), runImage };
}

/** The PATH the lifecycle phases get in host isolation (`DEFAULT_PATH` of @locald/cnb's sandbox). */
const BUILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * The version of the node that the sample Node buildpack copies into its layer: the first one on
 * the build's PATH — in builder isolation the sample build image's, in host isolation the build
 * host's (not necessarily the Node running these tests).
 */
export async function buildNodeVersion(isolation: "builder" | "host" = "builder"): Promise<string> {
  if (isolation === "builder") return `v${BUILD_IMAGE_NODE}`;
  for (const dir of BUILD_PATH.split(":")) {
    const node = join(dir, "node");
    if (
      !(await access(node, constants.X_OK).then(
        () => true,
        () => false,
      ))
    )
      continue;
    return (await run(node, ["--version"])).stdout.trim();
  }
  throw new Error(`The sample Node buildpack needs a node on ${BUILD_PATH}; none is there.`);
}
