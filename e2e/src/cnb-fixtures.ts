import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import {
  access,
  copyFile,
  cp,
  mkdir,
  mkdtemp,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  type ContainerConfig,
  digestOf,
  MediaType,
  OciLayout,
  parseDigest,
  push,
  removeTree,
} from "@locald/oci";
import { parse as parseToml } from "smol-toml";
import { runLocald } from "./cli.js";
import {
  BUILD_IMAGE_NODE,
  debianBuildImageLayer,
  debianMinbaseLayer,
  fixtureCacheDir,
  type GzipLayerFile,
} from "./debian.js";
import { type BuiltLayer, writeImage } from "./image-factory.js";
import type { TestRegistry } from "./registry.js";
import { requireBinary } from "./util.js";

/**
 * A CNB test builder from real parts: the real lifecycle (built from source through the Go
 * module proxy, pinned in e2e/fixtures/lifecycle), our sample buildpacks (e2e/fixtures/buildpacks)
 * and Debian build and run images, made into a builder by `locald builder create --publish`.
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

/** A shell's PATH, for the Debian images' configs. */
export const DEBIAN_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

let debianLayer: Promise<BuiltLayer> | undefined;

/** The Debian minbase root (see debianMinbaseLayer) as a layer, read once per process. */
function minbaseImageLayer(): Promise<BuiltLayer> {
  debianLayer ??= debianMinbaseLayer().then(layerOfFile);
  return debianLayer;
}

/**
 * The Debian minbase root filesystem (mmdebstrap) as an image with `config`, pushed to `registry`
 * as `name`. The layer is compressed once per machine, whatever images are made of it.
 */
export async function pushDebianImage(
  registry: TestRegistry,
  work: string,
  name: string,
  config: ContainerConfig,
  /** minbase, or the sample build image (see debianBuildImageLayer). */
  base: "minbase" | "build" = "minbase",
  /** Files of a second layer over the base (`path` → content), for an updated image. */
  extra?: Readonly<Record<string, string>>,
): Promise<string> {
  const layer = await (base === "build" ? sampleBuildImageLayer() : minbaseImageLayer());
  const layout = await OciLayout.open(
    join(
      work,
      `layout-${name.replace(/[^a-z0-9]+/g, "-")}-${extra === undefined ? "base" : randomBytes(4).toString("hex")}`,
    ),
    { create: true },
  );
  const extraLayer =
    extra === undefined ? [] : [Object.entries(extra).map(([path, content]) => ({ path, content }))];
  const image = await writeImage(layout, { layers: [layer, ...extraLayer], config });
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
  /** Files of a layer over Debian: a newer version of the run image. */
  extra?: Readonly<Record<string, string>>,
): Promise<string> {
  return pushDebianImage(
    registry,
    work,
    name,
    { Env: [DEBIAN_PATH], Labels: { ...DEBIAN_STACK_LABELS, "io.buildpacks.base.maintainer": "locald e2e" } },
    "minbase",
    extra,
  );
}

/**
 * The lifecycle as a release tarball (`lifecycle.toml` and `lifecycle/…`) in `work`, which pack
 * and `locald builder create` read by `uri`. Made once per machine beside the binaries (gzipping
 * them took a second or two in every test file) and copied where the caller can reach it.
 */
export async function lifecycleTarball(work: string, release: LifecycleRelease = LIFECYCLE): Promise<string> {
  const tarball = join(work, `lifecycle-v${release.version}.tgz`);
  if (await stat(tarball).catch(() => undefined)) return tarball;
  const cached = await lifecycleReleaseTarball(release);
  await mkdir(work, { recursive: true });
  await copyFile(cached, tarball);
  return tarball;
}

/** The release tarball of `release` in the fixture cache (made on first use); see lifecycleTarball. */
export async function lifecycleReleaseTarball(release: LifecycleRelease = LIFECYCLE): Promise<string> {
  const binaries = await lifecycleBinaries(release);
  const cached = `${binaries}.tgz`;
  if (!(await stat(cached).catch(() => undefined))?.isFile())
    await makeLifecycleTarball(binaries, release, cached);
  return cached;
}

async function makeLifecycleTarball(
  binaries: string,
  release: LifecycleRelease,
  tarball: string,
): Promise<void> {
  const dir = `${tarball}.${process.pid}.partial`;
  await rm(dir, { recursive: true, force: true });
  try {
    await mkdir(join(dir, "lifecycle"), { recursive: true });
    for (const name of ["lifecycle", "launcher"])
      await cp(join(binaries, name), join(dir, "lifecycle", name));
    // As in the lifecycle's releases: every phase is the one binary under its own name.
    for (const phase of LIFECYCLE_PHASES) await symlink("lifecycle", join(dir, "lifecycle", phase));
    const list = (apis: readonly string[]) => apis.map((api) => JSON.stringify(api)).join(", ");
    await writeFile(
      join(dir, "lifecycle.toml"),
      [
        "[apis]",
        "[apis.buildpack]",
        "deprecated = []",
        `supported = [${list(release.buildpackApis)}]`,
        "[apis.platform]",
        "deprecated = []",
        `supported = [${list(release.platformApis)}]`,
        "",
        "[lifecycle]",
        `version = "${release.version}"`,
        "",
      ].join("\n"),
    );
    await run("tar", ["-czf", join(dir, "release.tgz"), "-C", dir, "lifecycle.toml", "lifecycle"]);
    await rename(join(dir, "release.tgz"), tarball);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A build image: the Debian minbase root with the build user's ids, as pack asks of one. */
export function pushBuildImage(registry: TestRegistry, work: string): Promise<string> {
  return pushDebianImage(
    registry,
    work,
    "cnb/build:bookworm",
    {
      User: "1000:1000",
      Env: [DEBIAN_PATH, "CNB_USER_ID=1000", "CNB_GROUP_ID=1000"],
      Labels: { ...DEBIAN_STACK_LABELS },
    },
    "build",
  );
}

/**
 * A builder.toml in pack's format of the named sample buildpacks (one order group each), a
 * lifecycle release tarball and the given images; read by pack and by `locald builder create`.
 */
export async function writeBuilderToml(
  work: string,
  parts: {
    buildpacks: readonly string[];
    lifecycle: string;
    buildImage: string;
    runImage: string;
    env?: Record<string, string>;
    description?: string;
    /** The file name under `work` (default builder.toml). */
    file?: string;
  },
): Promise<string> {
  const samples = await Promise.all(parts.buildpacks.map(sampleBuildpack));
  const config = join(work, parts.file ?? "builder.toml");
  await writeFile(
    config,
    [
      ...(parts.description ? [`description = ${JSON.stringify(parts.description)}`, ""] : []),
      ...samples.flatMap((bp) => ["[[buildpacks]]", `uri = ${JSON.stringify(bp.dir)}`, ""]),
      ...samples.flatMap((bp) => [
        "[[order]]",
        "[[order.group]]",
        `id = ${JSON.stringify(bp.id)}`,
        `version = ${JSON.stringify(bp.version)}`,
        "",
      ]),
      "[lifecycle]",
      `uri = ${JSON.stringify(parts.lifecycle)}`,
      "",
      "[build]",
      `image = ${JSON.stringify(parts.buildImage)}`,
      "",
      ...Object.entries(parts.env ?? {}).flatMap(([name, value]) => [
        "[[build.env]]",
        `name = ${JSON.stringify(name)}`,
        `value = ${JSON.stringify(value)}`,
        "",
      ]),
      "[[run.images]]",
      `image = ${JSON.stringify(parts.runImage)}`,
      "",
    ].join("\n"),
  );
  return config;
}

let buildImageLayer: Promise<BuiltLayer> | undefined;

/** The sample build image (see debianBuildImageLayer) as a layer, read once per process. */
function sampleBuildImageLayer(): Promise<BuiltLayer> {
  buildImageLayer ??= debianBuildImageLayer().then(layerOfFile);
  return buildImageLayer;
}

/** A gzipped layer from the fixture cache, read into memory for writeImage. */
async function layerOfFile({ gzip, diffId }: GzipLayerFile): Promise<BuiltLayer> {
  const blob = await readFile(gzip);
  return {
    blob,
    diffId: parseDigest(diffId),
    descriptor: { mediaType: MediaType.OciLayerGzip, digest: digestOf(blob), size: blob.length },
  };
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

/** A build image with nothing in it but the build user's ids: a builder over it is a `/cnb` over nothing. */
async function pushScratchBuildImage(registry: TestRegistry, work: string): Promise<string> {
  const layout = await OciLayout.open(join(work, "layout-scratch-build"), { create: true });
  const image = await writeImage(layout, {
    layers: [],
    config: { Env: ["CNB_USER_ID=1000", "CNB_GROUP_ID=1000"], User: "1000:1000" },
  });
  await layout.addManifest(image.descriptor, "image");
  const ref = `${registry.host}/cnb/build:scratch`;
  await push({ kind: "layout", dir: layout.root, name: "image" }, ref);
  return ref;
}

/** Makes the builder with `locald builder create --publish` from a builder.toml, as a user would. */
export async function pushTestBuilder(
  registry: TestRegistry,
  work: string,
  options: TestBuilderOptions,
): Promise<string> {
  const release = options.lifecycle ?? LIFECYCLE;
  const name = options.name ?? "cnb/builder:test";
  const config = await writeBuilderToml(work, {
    buildpacks: options.buildpacks,
    lifecycle: await lifecycleTarball(work, release),
    buildImage:
      options.buildImage === "none"
        ? await pushScratchBuildImage(registry, work)
        : await pushBuildImage(registry, work),
    runImage: options.runImage,
    description: "locald test builder: the real lifecycle, locald's sample buildpacks, a Debian run image",
    file: `builder-${name.replace(/[^a-z0-9]+/g, "-")}.toml`,
  });
  const ref = `${registry.host}/${name}`;
  const home = await mkdtemp(join(work, "builder-create-"));
  try {
    const created = await runLocald(
      ["--insecure-registry", registry.host, "builder", "create", ref, "--config", config, "--publish", "-q"],
      { env: { LOCALD_HOME: home } },
    );
    if (created.code !== 0)
      throw new Error(`locald builder create ${ref} failed (exit ${created.code}): ${created.stderr}`);
  } finally {
    await removeTree(home);
  }
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
