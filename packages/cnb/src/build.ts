import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFile, cp, lstat, mkdir, stat, writeFile } from "node:fs/promises";
import { join, posix, resolve } from "node:path";
import { promisify } from "node:util";
import {
  type BindMount,
  BubblewrapRuntime,
  type ClientOptions,
  defaultDataDir,
  deliverImage,
  diskFullError,
  dockerConfigCredentials,
  type ImageDestination,
  removeTree,
  Store,
  type StoreRegistry,
} from "@locald/oci";
import { stringify as stringifyToml } from "smol-toml";
import {
  type BuildRegistry,
  finishBuiltImage,
  openBuildRegistry,
  previousImage,
  rememberImage,
} from "./build-registry.js";
import { type Builder, type BuildpackRef, fetchBuilder, type PullPolicy, pullByPolicy } from "./builder.js";
import { extendBuilder } from "./create/index.js";
import { BuildConfigError, BuildError } from "./errors.js";
import type { Phase } from "./lifecycle.js";
import { compareApi, imageName, negotiatePlatformApi, platformEnv, registryReference } from "./platform.js";
import { projectFilter, readProjectDescriptor } from "./project-descriptor.js";
import { insecureFlags, reportedDigest, writeRegistryConfig } from "./registry-access.js";
import {
  type Isolation,
  isolationMode,
  isolationOf,
  LifecycleSandbox,
  phaseEnvironment,
  processOutput,
} from "./sandbox/index.js";
import { copySbomTree } from "./sbom.js";

/**
 * `locald build`: source → OCI image with the official lifecycle, phase by phase, in a sandbox
 * (see sandbox/: the builder's own OS by default, or the host's) that shows the app at
 * /workspace, layers at /layers, the platform dir at /platform (and, to the lifecycle's own
 * phases only, the cache at /cache) — so the image comes out as pack makes it (WORKDIR
 * /workspace, CNB_LAYERS_DIR=/layers).
 */

const run = promisify(execFile);

export type BuildOutput =
  /** Into the local store under `name` (default). */
  | { kind: "store"; name: string }
  /** An OCI image layout directory, the image named `name` in it. */
  | { kind: "layout"; dir: string; name: string }
  /** Pushed by the lifecycle's exporter to the registry `name` names (`--publish`). */
  | { kind: "registry"; name: string };

export interface BuildEvent {
  type: "phase";
  phase: Phase;
}

export interface BuildOptions {
  builder: string;
  output: BuildOutput;
  /** `-e K=V` (or `K`: taken from this environment) → `<platform>/env/K`. */
  env?: readonly string[];
  /** Instead of the builder's run image. */
  runImage?: string;
  /**
   * Buildpacks of the builder to run, in this order (`id` or `id@version`), instead of its
   * detection order (`-b`).
   */
  buildpacks?: readonly string[];
  clearCache?: boolean;
  /** `SOURCE_DATE_EPOCH` for the image's created time (default: the lifecycle's 1980). */
  creationTime?: Date;
  home?: string;
  store?: Store;
  client?: ClientOptions;
  /** Phase output (headers, buildpack output); default: this process's stdout/stderr. */
  onOutput?: (chunk: Buffer, stream: "stdout" | "stderr") => void;
  onEvent?: (event: BuildEvent) => void;
  /** Lifecycle `-log-level` (default info). */
  logLevel?: "info" | "debug";
  /** Where the phases run: the builder's own OS (default) or the host's. */
  isolation?: Isolation;
  /** When the builder and run image are asked of their registries (default always, as pack). */
  pullPolicy?: PullPolicy;
  /** Buildpacks run before / after every group (pack's `--pre-buildpack` / `--post-buildpack`), after project.toml's. */
  preBuildpacks?: readonly string[];
  postBuildpacks?: readonly string[];
  /** Host directories shown to detect and build (pack's `--volume`); never part of the image. */
  volumes?: readonly BindMount[];
  /** The network detect and build see: the host's (default) or none, for hermetic builds. */
  network?: "host" | "none";
  /** The image's default process type (the exporter's `-process-type`). */
  defaultProcess?: string;
  /** `CNB_EXEC_ENV` for the buildpacks: production (the default), test, development (Platform API 0.15). */
  execEnv?: "production" | "test" | "development";
  /** Where to copy the lifecycle's report.toml after export. */
  reportOutputDir?: string;
  /** The build user's ids instead of the builder's CNB_USER_ID / CNB_GROUP_ID. */
  uid?: number;
  gid?: number;
  /** More names for the image (pack's repeated `-t`): pushed with it, or named in the store. */
  additionalTags?: readonly string[];
  /** A registry image to keep the build cache in (the lifecycle's `-cache-image`), instead of the per-app cache. */
  cacheImage?: string;
  /** The image whose layers the analyzer reuses, when not the image being written (registry builds). */
  previousImage?: string;
  /** Where to copy the SBOMs the buildpacks wrote (`launch/`, `build/`, `cache/`), as pack's `--sbom-output-dir`. */
  sbomOutputDir?: string;
  /** false: the lifecycle prints no ANSI colour (CNB_NO_COLOR), for output that is not a terminal. */
  colour?: boolean;
}

export interface BuildResult {
  readonly image: string;
  readonly digest: string;
  readonly builder: Builder;
  readonly platformApi: string;
  readonly isolation: Isolation;
  /** The layout directory written, for `{ kind: "layout" }`. */
  readonly layout?: string;
}

/**
 * Per-app state kept between builds: the lifecycle's cache, and the layout repository holding the
 * previous image. One per isolation: layers built on one OS are no cache for another, and the two
 * leave different owners on disk.
 */
export function appStateDir(home: string, app: string, image: string, isolation: Isolation): string {
  const key = createHash("sha256").update(`${app}\n${image}\n${isolation}`).digest("hex").slice(0, 32);
  return join(home, "cache", "builds", key);
}

/**
 * What a build and a dev environment both start from: the app, the store, bubblewrap, the builder,
 * and the root its phases run in.
 */
export async function startingPoint(
  appDir: string,
  options: BuilderContextOptions & Pick<BuildOptions, "buildpacks">,
  /** The builder's pull policy unless `options.pullPolicy` says otherwise. */
  defaultPolicy: PullPolicy,
) {
  const app = resolve(appDir);
  if (!(await stat(app).catch(() => undefined))?.isDirectory())
    throw new BuildConfigError(`The app directory ${app} does not exist.`, {
      hint: "Pass the directory of the app.",
    });
  const context = await builderContext(options, defaultPolicy);
  const { store, cacheDir } = context;
  const client = options.client ? { client: options.client } : {};
  // -b with buildpacks from outside the builder: they are added to it, in an extended builder.
  const extended = options.buildpacks?.length
    ? await extendBuilder(context.builder, options.buildpacks, { store, ...client })
    : undefined;
  if (extended?.reference === undefined) return { ...context, app, buildpacks: extended?.buildpacks ?? [] };
  const builder = await fetchBuilder(extended.reference, { store, cacheDir, pullPolicy: "never", ...client });
  const root = await context.mode.root(builder, {
    store,
    cacheDir: join(context.home, "cache", "rootfs"),
    ...client,
  });
  return { ...context, app, builder, root, buildpacks: extended.buildpacks };
}

export type BuilderContextOptions = Pick<
  BuildOptions,
  "builder" | "home" | "store" | "client" | "isolation" | "pullPolicy"
>;

/** The store, bubblewrap, the builder, and the root its phases run in: what every lifecycle run needs. */
export async function builderContext(options: BuilderContextOptions, defaultPolicy: PullPolicy) {
  const home = options.home ?? defaultDataDir();
  const store = options.store ?? (await Store.open(options.home ? join(home, "store") : undefined));
  const runtime = await BubblewrapRuntime.find();
  const cacheDir = join(home, "cache", "builders");
  const client = options.client ? { client: options.client } : {};
  const builder = await fetchBuilder(options.builder, {
    store,
    cacheDir,
    pullPolicy: options.pullPolicy ?? defaultPolicy,
    ...client,
  });
  const platformApi = negotiatePlatformApi(builder.platformApis, builder.lifecycleVersion);
  const isolation = isolationOf(options.isolation);
  const mode = isolationMode(isolation);
  const root = await mode.root(builder, { store, cacheDir: join(home, "cache", "rootfs"), ...client });
  const privileged = mode.privileged();
  return { home, store, runtime, builder, cacheDir, platformApi, isolation, mode, root, privileged };
}

export async function build(appDir: string, options: BuildOptions): Promise<BuildResult> {
  // project.toml: below the caller's options (flags, locald.toml), above the builder's defaults.
  const project = await readProjectDescriptor(resolve(appDir));
  // project.toml's relative uris are the project's, not the caller's working directory's.
  const own = (specs: readonly string[] | undefined) =>
    (specs ?? []).map((spec) => (/^\.\.?\//.test(spec) ? resolve(appDir, spec) : spec));
  const group = options.buildpacks?.length ? options.buildpacks : own(project?.group);
  const pre = [...own(project?.pre), ...(options.preBuildpacks ?? [])];
  const post = [...own(project?.post), ...(options.postBuildpacks ?? [])];
  for (const volume of options.volumes ?? []) checkVolume(volume);
  const started = await startingPoint(
    appDir,
    { ...options, buildpacks: [...pre, ...group, ...post] },
    "always",
  );
  const { app, home, store, runtime, platformApi, isolation, mode, root, privileged } = started;
  const builder = {
    ...started.builder,
    uid: options.uid ?? started.builder.uid,
    gid: options.gid ?? started.builder.gid,
  };
  if (options.execEnv !== undefined && compareApi(platformApi, "0.15") < 0)
    throw new BuildConfigError(
      `--exec-env needs Platform API 0.15; the builder's lifecycle ${builder.lifecycleVersion} speaks ${platformApi}.`,
      { hint: "Use a builder with lifecycle 0.21 or later, or build without --exec-env." },
    );
  const order = {
    pre: started.buildpacks.slice(0, pre.length),
    group: started.buildpacks.slice(pre.length, pre.length + group.length),
    post: started.buildpacks.slice(pre.length + group.length),
  };
  const runImage = options.runImage ?? builder.runImages[0];
  if (runImage === undefined)
    throw new BuildConfigError(`The builder ${builder.reference} names no run image.`, {
      hint: "Pass one with --run-image.",
    });
  const image = imageName(options.output.name);
  // The builder's user runs the build (see sandbox.ts), so the image's files belong to the user
  // the image runs as, whoever built it.
  const { uid, gid } = builder;

  const state = appStateDir(home, app, image, isolation);
  const cache = join(state, "cache");
  if (options.clearCache) await removeTree(cache);
  // Where earlier versions kept the previous image as an OCI layout (see build-registry.ts).
  await removeTree(join(state, "layout-repo"));
  const work = join(home, "builds", `${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`);
  const publish = options.output.kind === "registry";
  // Blobs the exporter pushes into the store are nobody's until the image is named: no prune
  // may take them meanwhile.
  const release = publish ? undefined : await store.lease();
  let local: BuildRegistry | undefined;
  try {
    const layers = join(work, "layers");
    const platform = join(work, "platform");
    const workspace = join(work, "workspace");
    // Private (it may hold registry credentials); the phases reach its dirs through bind mounts.
    await mkdir(work, { recursive: true, mode: 0o700 });
    for (const dir of [cache, layers, join(platform, "env")])
      await mkdir(dir, { recursive: true, mode: 0o755 });
    // The app is copied: buildpacks may write into /workspace, and the user's files stay theirs.
    // (never .git; with project.toml, only what its include / exclude let through)
    const reaches = projectFilter(app, project);
    await cp(app, workspace, {
      recursive: true,
      verbatimSymlinks: true,
      filter: async (src) => reaches(src, (await lstat(src)).isDirectory()),
    });
    for (const [name, value] of platformEnv([...(project?.env ?? []), ...(options.env ?? [])]))
      await writeFile(join(platform, "env", name), value);
    // The detector reads <layers>/order.toml before the builder's own order.
    if (started.buildpacks.length > 0)
      await writeFile(join(layers, "order.toml"), orderToml(builder, order.group, order.pre, order.post));

    // Into the store or a layout: the run image and the previous image from the store, shown to
    // the lifecycle as a registry on loopback that the new image is pushed to.
    const pulledRun = publish
      ? undefined
      : await pullByPolicy(runImage, "run image", {
          store,
          policy: options.pullPolicy ?? "always",
          ...(options.client ? { client: options.client } : {}),
        });
    if (pulledRun !== undefined)
      local = await openBuildRegistry(store, pulledRun.descriptor, await previousImage(state, store));
    // The phases that drop to the build user write here.
    if (privileged) await run("chown", ["-R", `${uid}:${gid}`, "--", workspace, layers, cache]);

    const mounts: BindMount[] = [
      { source: workspace, destination: "/workspace", readonly: false },
      { source: layers, destination: "/layers", readonly: false },
      { source: platform, destination: "/platform", readonly: true },
      // The builder's own /cnb is in its root; over the host it is the extracted copy.
      ...mode.mounts(builder),
    ];
    // The lifecycle's own: buildpacks reach their cache through /layers, as with pack.
    const lifecycleMounts: BindMount[] = [{ source: cache, destination: "/cache", readonly: false }];
    const env = [
      ...phaseEnvironment(builder, isolation, platformApi, options.colour),
      "CNB_EXPERIMENTAL_MODE=warn",
      ...(options.execEnv ? [`CNB_EXEC_ENV=${options.execEnv}`] : []),
      ...(options.creationTime
        ? [`SOURCE_DATE_EPOCH=${Math.floor(options.creationTime.getTime() / 1000)}`]
        : []),
    ];
    const ids = ["-uid", String(uid), "-gid", String(gid)];
    const tags = publish ? (options.additionalTags ?? []).map(imageName) : [];
    const cacheImage = options.cacheImage === undefined ? undefined : imageName(options.cacheImage);
    // What the lifecycle itself reads or writes in registries: the published image and its
    // tags, the run image it is based on, the cache image.
    const remote = [
      ...(publish ? [image, ...tags, runImage] : []),
      ...(local ? [local.appImage] : []),
      ...(cacheImage ? [cacheImage] : []),
    ];
    if (options.previousImage !== undefined) remote.push(imageName(options.previousImage));
    // The lifecycle gets the caller's credentials for those through a private docker config
    // (never argv or the environment, which other users can read), in the phases that talk to
    // registries only: buildpacks never see it.
    const registryMounts: BindMount[] = [];
    const registryEnv: string[] = [];
    if (remote.length > 0) {
      const configDir = join(work, "docker-config");
      await writeRegistryConfig(configDir, remote, withLocalRegistry(options.client, local?.registry));
      if (privileged) await run("chown", ["-R", `${uid}:${gid}`, "--", configDir]);
      registryMounts.push({ source: configDir, destination: "/docker-config", readonly: true });
      registryEnv.push("DOCKER_CONFIG=/docker-config");
    }
    const insecure = insecureFlags(options.client, remote);
    // A cache image in a registry (CI machines that start empty) instead of the per-app cache dir.
    const cacheArgs = cacheImage ? ["-cache-image", cacheImage] : ["-cache-dir", "/cache"];
    const lifecycleImage = local?.appImage ?? image;
    const sandbox = new LifecycleSandbox({
      runtime,
      root,
      privileged,
      uid,
      gid,
      mounts,
      lifecycleMounts,
      env,
      layersDir: layers,
      logLevel: options.logLevel ?? "info",
      onOutput: options.onOutput ?? processOutput,
      ...(options.onEvent ? { onPhase: (phase: Phase) => options.onEvent?.({ type: "phase", phase }) } : {}),
      ...(options.network ? { buildpackNetwork: options.network } : {}),
      ...(options.volumes ? { buildpackMounts: options.volumes } : {}),
      registryMounts,
      registryEnv,
    });
    const phase = (name: Phase, args: string[]) => sandbox.phase(name, args);

    await phase("analyzer", [
      ...insecure,
      ...ids,
      "-run-image",
      local?.runImage ?? runImage,
      ...(options.previousImage !== undefined ? ["-previous-image", imageName(options.previousImage)] : []),
      lifecycleImage,
    ]);
    await phase("detector", ["-app", "/workspace", "-layers", "/layers", "-platform", "/platform"]);
    await phase("restorer", [...cacheArgs, "-layers", "/layers", ...ids, ...insecure]);
    await phase("builder", ["-app", "/workspace", "-layers", "/layers", "-platform", "/platform"]);
    await phase("exporter", [
      ...ids,
      "-app",
      "/workspace",
      "-layers",
      "/layers",
      ...cacheArgs,
      "-launcher",
      "/cnb/lifecycle/launcher",
      ...(options.defaultProcess ? ["-process-type", options.defaultProcess] : []),
      "-report",
      "/layers/report.toml",
      ...insecure,
      lifecycleImage,
      ...tags,
    ]);
    if (options.reportOutputDir !== undefined) {
      // /layers is the buildpacks' to write: only a plain file is copied, never what a link names.
      const report = join(layers, "report.toml");
      if (!(await lstat(report).catch(() => undefined))?.isFile())
        throw new BuildError(`The exporter left no report.toml (${report} is missing or not a plain file).`);
      await mkdir(resolve(options.reportOutputDir), { recursive: true });
      await copyFile(report, join(resolve(options.reportOutputDir), "report.toml"));
    }
    if (options.sbomOutputDir !== undefined)
      await copySbomTree(join(layers, "sbom"), resolve(options.sbomOutputDir));
    if (local === undefined || pulledRun === undefined)
      return {
        image,
        digest: await reportedDigest(join(layers, "report.toml")),
        builder,
        platformApi,
        isolation,
      };

    const built = await finishBuiltImage(
      store,
      local,
      pulledRun.digest,
      registryReference(runImage, pulledRun.digest),
    );
    const destinations: ImageDestination[] =
      options.output.kind === "layout"
        ? [{ kind: "layout", dir: resolve(options.output.dir), name: options.output.name }]
        : [image, ...(options.additionalTags ?? []).map(imageName)].map((name) => ({ kind: "store", name }));
    try {
      for (const destination of destinations) await deliverImage(store, built, destination);
    } catch (error) {
      throw diskFullError(error, store.root, "Cannot put the built image into the store") ?? error;
    }
    await rememberImage(state, built);
    return {
      image,
      digest: built.digest,
      builder,
      platformApi,
      isolation,
      ...(options.output.kind === "layout" ? { layout: resolve(options.output.dir) } : {}),
    };
  } finally {
    await local?.registry.stop();
    await release?.();
    await removeTree(work);
  }
}

/** The caller's registry credentials, and the build's own for the store's loopback registry. */
function withLocalRegistry(client: ClientOptions | undefined, local: StoreRegistry | undefined) {
  if (local === undefined) return client;
  const credentials = client?.credentials ?? dockerConfigCredentials();
  return {
    ...client,
    credentials: async (registry: string) =>
      registry === local.host
        ? { username: local.username, password: local.password }
        : credentials(registry),
  };
}

/**
 * The detection order: one group of the builder's buildpacks (`id` or `id@version`) as `-b` or
 * project.toml asked for them, else the builder's own order; with project.toml's pre and post
 * groups around every group.
 */
export function orderToml(
  builder: Builder,
  wanted: readonly string[],
  pre: readonly string[] = [],
  post: readonly string[] = [],
): string {
  const member = (spec: string): BuildpackRef => {
    const [id, version] = spec.split("@") as [string, string | undefined];
    const found = builder.buildpacks.find(
      (bp) => bp.id === id && (version === undefined || bp.version === version),
    );
    if (found === undefined)
      throw new BuildConfigError(`The builder ${builder.reference} has no buildpack ${spec}.`, {
        hint: `It has: ${builder.buildpacks.map((bp) => `${bp.id}@${bp.version}`).join(", ") || "none listed"}.`,
      });
    return { id: found.id, version: found.version };
  };
  const groups: ReadonlyArray<readonly BuildpackRef[]> =
    wanted.length > 0 ? [wanted.map(member)] : builder.order.map((entry) => entry.group);
  const around = (group: readonly BuildpackRef[]) => [...pre.map(member), ...group, ...post.map(member)];
  return stringifyToml({ order: groups.map((group) => ({ group: around(group) })) });
}

/** The lifecycle's own directories, and the root: a `--volume` may not cover them. */
const RESERVED = ["/", "/cnb", "/layers", "/workspace", "/platform", "/cache", "/proc", "/dev", "/tmp"];

function checkVolume(volume: BindMount): void {
  const target = posix.normalize(volume.destination);
  if (
    !posix.isAbsolute(target) ||
    RESERVED.some((dir) => target === dir || (dir !== "/" && target.startsWith(`${dir}/`)))
  )
    throw new BuildConfigError(`--volume cannot mount at ${volume.destination}.`, {
      hint: `Mount at an absolute path outside ${RESERVED.slice(1).join(", ")} (for example /secrets).`,
    });
}
