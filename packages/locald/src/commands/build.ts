import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { build, PULL_POLICIES, type PullPolicy, readProjectDescriptor } from "@locald/cnb";
import type { BindMount } from "@locald/oci";
import { type Command, InvalidArgumentError, Option } from "commander";
import {
  CONFIG_FILE,
  chooseBuilder,
  chooseIsolation,
  envLines,
  ISOLATION_HELP,
  type LoadedConfig,
  loadConfig,
  nameOf,
  type ServiceBuild,
} from "../config.js";
import { clientOptions, readEnvFiles } from "../options.js";
import { useColour } from "../ui.js";
import { UsageError } from "../usage.js";
import { buildOnKpack } from "./build-kpack.js";
import type { CommandContext } from "./image.js";

const collect = (value: string, previous: string[]) => [...previous, value];

function creationTime(value: string): Date {
  if (value === "now") return new Date();
  if (/^\d+$/.test(value)) return new Date(Number(value) * 1000);
  throw new UsageError(`--creation-time must be "now" or seconds since the epoch, not "${value}".`);
}

interface BuildFlags {
  builder?: string;
  buildpack: string[];
  tag: string[];
  cacheImage?: string;
  previousImage?: string;
  layout?: string;
  publish?: boolean;
  env: string[];
  envFile: string[];
  runImage?: string;
  clearCache?: boolean;
  creationTime?: string;
  isolation?: string;
  pullPolicy: PullPolicy;
  sbomOutputDir?: string;
  reportOutputDir?: string;
  preBuildpack: string[];
  postBuildpack: string[];
  volume: string[];
  network?: "host" | "none";
  defaultProcess?: string;
  execEnv?: "production" | "test" | "development";
  uid?: number;
  gid?: number;
  remote?: "kpack";
  namespace?: string;
  serviceAccount?: string;
  cacheSize?: string;
  dryRun?: boolean;
}

/** Flags that only mean something for a build handed to kpack. */
const KPACK_ONLY = ["namespace", "serviceAccount", "cacheSize", "dryRun"] as const;
/** Flags of a build run here that kpack has no place for. */
const LOCAL_ONLY = [
  "publish",
  "layout",
  "isolation",
  "volume",
  "network",
  "cacheImage",
  "previousImage",
] as const;

/** pack's `--volume HOST:TARGET[:ro|rw]` (read-only unless `rw`), the host path made absolute. */
function volume(spec: string): BindMount {
  const parts = spec.split(":");
  const mode = parts.length === 3 ? parts[2] : undefined;
  if (
    parts.length < 2 ||
    parts.length > 3 ||
    parts[0] === "" ||
    parts[1] === "" ||
    (mode !== undefined && mode !== "ro" && mode !== "rw")
  )
    throw new UsageError(`--volume ${spec}: expected HOST:TARGET, HOST:TARGET:ro or HOST:TARGET:rw.`);
  return { source: resolve(parts[0] as string), destination: parts[1] as string, readonly: mode !== "rw" };
}

function buildUserId(value: string): number {
  const number = Number(value);
  if (!Number.isSafeInteger(number) || number < 0 || number > 0xfffffffe)
    throw new InvalidArgumentError("expected a user or group id (a whole number ≥ 0)");
  return number;
}

/** One thing to build: a directory, with what locald.toml says about it (if anything). */
interface BuildTarget {
  path: string;
  name: string;
  service?: ServiceBuild;
}

/**
 * `locald build web` builds service "web" of ./locald.toml; `locald build some/dir` a directory;
 * `locald build` every service with a [build] table, else the current directory.
 */
async function targets(arg: string | undefined, loaded: LoadedConfig | undefined): Promise<BuildTarget[]> {
  const services = Object.entries(loaded?.config.services ?? {}).filter(([, service]) => service.build);
  const serviceTarget = ([name, service]: (typeof services)[number]): BuildTarget => ({
    path: join((loaded as LoadedConfig).dir, service.build?.path ?? "."),
    name: service.build?.image ?? name,
    ...(service.build ? { service: service.build } : {}),
  });
  if (arg === undefined)
    return services.length > 0 ? services.map(serviceTarget) : [{ path: ".", name: nameOf(".") }];
  const service = services.find(([name]) => name === arg);
  if (service) return [serviceTarget(service)];
  if ((await stat(arg).catch(() => undefined))?.isDirectory()) return [{ path: arg, name: nameOf(arg) }];
  throw new UsageError(
    loaded
      ? `"${arg}" is neither a service with a [services.${arg}.build] table in ${loaded.file} nor a directory.`
      : `"${arg}" is not a directory (and there is no ${CONFIG_FILE} here to name services).`,
  );
}

export function registerBuildCommand(program: Command, context: CommandContext): void {
  const { output } = context;
  program
    .command("build")
    .description("Build an app into an OCI image with Cloud Native Buildpacks (the official lifecycle)")
    .argument(
      "[service-or-path]",
      `a service of ./${CONFIG_FILE}, or the app's directory (default: all services, else .)`,
    )
    .option("-B, --builder <ref>", "builder image (e.g. paketobuildpacks/builder-jammy-base)")
    .option(
      "-b, --buildpack <id|path|image>",
      "a buildpack: an id of the builder's (id[@version]), a directory, .tgz or .cnb file, or an image (repeatable, in order)",
      collect,
      [],
    )
    .option(
      "-t, --tag <name>",
      "image name (default: the service's or the directory's name); repeat for more names",
      collect,
      [],
    )
    .option(
      "--cache-image <ref>",
      "keep the build cache in this registry image (for CI machines that start empty)",
    )
    .option(
      "--previous-image <ref>",
      "with --publish, reuse the layers of this image instead of the one being written",
    )
    .option("--layout <dir>", "write the image to this OCI layout directory instead of the store")
    .option("--publish", "push the image to the registry its name (-t) names, instead of the store")
    .option(
      "-e, --env <K=V>",
      "build-time environment variable for buildpacks (K alone: take it from here)",
      collect,
      [],
    )
    .option("--env-file <file>", "read build-time environment variables from a file", collect, [])
    .option("--run-image <ref>", "run image instead of the builder's")
    .option("--clear-cache", "start without the cache of previous builds")
    .option("--creation-time <now|seconds>", "the image's created time (default: 1980, reproducible)")
    .option("--isolation <builder|host>", ISOLATION_HELP)
    .option("--report-output-dir <dir>", "copy the lifecycle's report.toml into this directory")
    .option(
      "--pre-buildpack <id|path|image>",
      "run this buildpack before every group (repeatable)",
      collect,
      [],
    )
    .option(
      "--post-buildpack <id|path|image>",
      "run this buildpack after every group (repeatable)",
      collect,
      [],
    )
    .option(
      "--volume <host:target[:ro|rw]>",
      "show a host directory to the buildpacks (read-only unless rw); never in the image",
      collect,
      [],
    )
    .addOption(
      new Option("--network <mode>", "the network the buildpacks see: host (default) or none").choices([
        "host",
        "none",
      ]),
    )
    .option("--default-process <type>", "the image's default process type")
    .addOption(
      new Option("--exec-env <env>", "CNB_EXEC_ENV for the buildpacks (Platform API 0.15)").choices([
        "production",
        "test",
        "development",
      ]),
    )
    .option("--uid <id>", "the build user's uid instead of the builder's", buildUserId)
    .option("--gid <id>", "the build user's gid instead of the builder's", buildUserId)
    .option(
      "--sbom-output-dir <dir>",
      "copy the SBOMs the buildpacks wrote (launch/, build/, cache/) into this directory",
    )
    .addOption(
      new Option("--pull-policy <policy>", "when the builder and run image are pulled (pack's)")
        .choices(PULL_POLICIES)
        .default("always"),
    )
    .addOption(
      new Option(
        "--remote <platform>",
        "hand the build to a build service instead of running it here",
      ).choices(["kpack"]),
    )
    .option("--namespace <ns>", "with --remote kpack: the Kubernetes namespace (default: default)")
    .option(
      "--service-account <name>",
      "with --remote kpack: the service account builds run as (default: default)",
    )
    .option("--cache-size <quantity>", "with --remote kpack: the build cache volume's size (default: 2G)")
    .option("--dry-run", "with --remote kpack: print the kpack resources; push and apply nothing")
    .action(async (arg: string | undefined, opts: BuildFlags) => {
      const given = (flag: string) => {
        const value = (opts as unknown as Record<string, unknown>)[flag];
        return value !== undefined && value !== false && !(Array.isArray(value) && value.length === 0);
      };
      const dashed = (flag: string) => `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      if (opts.remote === undefined && KPACK_ONLY.some(given))
        throw new UsageError(
          `${dashed(KPACK_ONLY.find(given) as string)} is for builds handed to kpack (--remote kpack).`,
        );
      if (opts.remote === "kpack") {
        const local = LOCAL_ONLY.find(given);
        if (local)
          throw new UsageError(`${dashed(local)} is for builds run here; kpack pushes to -t itself.`);
        if (opts.tag.length !== 1)
          throw new UsageError(
            "--remote kpack needs the image's name with -t, once (for example -t registry.example.com/team/app).",
          );
        const loaded = await loadConfig(".");
        const chosen = await targets(arg, loaded);
        if (chosen.length > 1)
          throw new UsageError("-t names one image: pick a service (locald build <service>).");
        const target = chosen[0] as BuildTarget;
        const project = await readProjectDescriptor(target.path);
        const builder =
          opts.builder ?? target.service?.builder ?? loaded?.config.project?.builder ?? project?.builder;
        await buildOnKpack(
          {
            appDir: target.path,
            tag: opts.tag[0] as string,
            ...(project ? { descriptor: project } : {}),
            ...(builder ? { builder } : {}),
            buildpacks: [...(target.service?.buildpacks ?? []), ...opts.buildpack],
            env: [...envLines(target.service?.env), ...(await readEnvFiles(opts.envFile)), ...opts.env],
            ...(opts.namespace ? { namespace: opts.namespace } : {}),
            ...(opts.serviceAccount ? { serviceAccount: opts.serviceAccount } : {}),
            ...(opts.cacheSize ? { cacheSize: opts.cacheSize } : {}),
            dryRun: opts.dryRun === true,
            client: clientOptions(context.flags(), (line) => output.stderr.write(`${line}\n`)),
          },
          output,
        );
        return;
      }
      if (opts.publish && opts.layout) throw new UsageError("--publish and --layout exclude each other.");
      if (opts.layout && opts.tag.length > 1)
        throw new UsageError("--layout writes one image: give -t once.");
      if (opts.previousImage && !opts.publish)
        throw new UsageError(
          "--previous-image is for --publish builds (the store keeps each app's previous image itself).",
        );
      if (opts.publish && opts.tag.length === 0)
        throw new UsageError(
          "--publish needs the image's name with -t (for example -t registry.example.com/team/app:1).",
        );
      const volumes = opts.volume.map(volume);
      for (const mount of volumes)
        if (!(await stat(mount.source).catch(() => undefined)))
          throw new UsageError(`--volume: ${mount.source} does not exist.`);
      const loaded = await loadConfig(".");
      const chosen = await targets(arg, loaded);
      if (chosen.length > 1 && (opts.tag.length > 0 || opts.layout))
        throw new UsageError("-t and --layout name one image: pick a service (locald build <service>).");
      const fileLines = await readEnvFiles(opts.envFile);
      const flags = context.flags();
      for (const target of chosen) {
        const project = await readProjectDescriptor(target.path);
        const builder = chooseBuilder(loaded, [opts.builder, target.service?.builder], project?.builder);
        const name = opts.tag[0] ?? target.name;
        const serviceEnv = envLines(target.service?.env);
        const buildpacks = [...(target.service?.buildpacks ?? []), ...opts.buildpack];
        const result = await build(target.path, {
          builder,
          output: opts.publish
            ? { kind: "registry", name }
            : opts.layout
              ? { kind: "layout", dir: opts.layout, name }
              : { kind: "store", name },
          env: [...serviceEnv, ...fileLines, ...opts.env],
          ...(buildpacks.length > 0 ? { buildpacks } : {}),
          ...(opts.runImage ? { runImage: opts.runImage } : {}),
          ...(opts.clearCache ? { clearCache: true } : {}),
          ...(opts.creationTime ? { creationTime: creationTime(opts.creationTime) } : {}),
          isolation: chooseIsolation(loaded, opts.isolation, target.service),
          pullPolicy: opts.pullPolicy,
          ...(opts.tag.length > 1 ? { additionalTags: opts.tag.slice(1) } : {}),
          ...(opts.cacheImage ? { cacheImage: opts.cacheImage } : {}),
          ...(opts.previousImage ? { previousImage: opts.previousImage } : {}),
          ...(opts.sbomOutputDir ? { sbomOutputDir: opts.sbomOutputDir } : {}),
          ...(opts.reportOutputDir ? { reportOutputDir: opts.reportOutputDir } : {}),
          ...(opts.preBuildpack.length > 0 ? { preBuildpacks: opts.preBuildpack } : {}),
          ...(opts.postBuildpack.length > 0 ? { postBuildpacks: opts.postBuildpack } : {}),
          ...(volumes.length > 0 ? { volumes } : {}),
          ...(opts.network ? { network: opts.network } : {}),
          ...(opts.defaultProcess ? { defaultProcess: opts.defaultProcess } : {}),
          ...(opts.execEnv ? { execEnv: opts.execEnv } : {}),
          ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
          ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
          colour: useColour(output.stderr),
          client: clientOptions(flags, (line) => output.stderr.write(`${line}\n`)),
          logLevel: flags.verbose || process.env.LOCALD_DEBUG === "1" ? "debug" : "info",
          onOutput: (chunk) => output.stderr.write(chunk),
        });
        const where = result.layout
          ? `OCI layout ${result.layout}`
          : opts.publish
            ? "its registry"
            : "the local store";
        output.stdout.write(`Successfully built ${result.image} (${result.digest}) into ${where}\n`);
      }
    });
}
