import { randomBytes } from "node:crypto";
import { chmod, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  type ClientOptions,
  type ContainerConfig,
  cachedRootfs,
  type Descriptor,
  formatReference,
  type PullOptions,
  parseReference,
  pull,
  removeTree,
  resolveInRoot,
  type Store,
  unpackImage,
} from "@locald/oci";
import { parse as parseToml } from "smol-toml";
import { BuilderError } from "./errors.js";

/**
 * A builder image, reduced to what a build needs: its `/cnb` extracted (nothing else of the
 * image), cached by manifest digest, and what its labels and `/cnb/*.toml` say.
 */

export interface BuildpackRef {
  id: string;
  version?: string;
  optional?: boolean;
}

export interface Builder {
  /** The reference asked for, and the manifest digest it resolved to. */
  readonly reference: string;
  readonly digest: string;
  /** Host path of the builder's `/cnb`. */
  readonly cnbDir: string;
  readonly lifecycleVersion: string;
  readonly platformApis: readonly string[];
  readonly buildpackApis: readonly string[];
  readonly buildpacks: ReadonlyArray<{ id: string; version: string }>;
  readonly order: ReadonlyArray<{ group: readonly BuildpackRef[] }>;
  /** Run images from `/cnb/run.toml` (or the legacy stack.toml), first preferred. */
  readonly runImages: readonly string[];
  /** The build user, from `CNB_USER_ID` / `CNB_GROUP_ID`. */
  readonly uid: number;
  readonly gid: number;
  /** The image's environment (`KEY=value`), which its phases run with in builder isolation. */
  readonly env: readonly string[];
}

/** pack's `--pull-policy`: when an image (builder, run image) is asked of its registry. */
export type PullPolicy = "always" | "if-not-present" | "never";

export const PULL_POLICIES: readonly PullPolicy[] = ["always", "if-not-present", "never"];

/**
 * The image `reference` names, pulled into the store or found there as `policy` says; `never`
 * with nothing stored is a BuilderError naming `what` (the builder, the run image).
 */
export async function pullByPolicy(
  reference: string,
  what: string,
  options: { store: Store; client?: ClientOptions; onEvent?: PullOptions["onEvent"]; policy: PullPolicy },
): Promise<{ descriptor: Descriptor; digest: string }> {
  const ref = formatReference(parseReference(reference));
  const stored = options.policy === "always" ? undefined : await options.store.find(ref);
  if (stored !== undefined) return { descriptor: stored.descriptor, digest: stored.descriptor.digest };
  if (options.policy === "never")
    throw new BuilderError(`The ${what} ${ref} is not in the local store, and the pull policy is never.`, {
      hint: `Pull it first (locald image pull ${ref}), create it there, or use --pull-policy if-not-present.`,
    });
  const pulled = await pull(ref, {
    ...options.client,
    to: { kind: "store", store: options.store },
    ...(options.onEvent ? { onEvent: options.onEvent } : {}),
  });
  return { descriptor: pulled.descriptor, digest: pulled.digest };
}

interface BuilderMetadata {
  description?: string;
  buildpacks?: Array<{ id: string; version: string }>;
  lifecycle?: {
    version?: string;
    apis?: { platform?: { supported?: string[] }; buildpack?: { supported?: string[] } };
  };
}

function envValue(config: ContainerConfig, name: string): string | undefined {
  const entry = config.Env?.find((pair) => pair.startsWith(`${name}=`));
  return entry?.slice(name.length + 1);
}

async function readToml(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (error) {
    throw new BuilderError(
      `The builder's ${path.slice(path.lastIndexOf("/cnb/"))} is not valid TOML: ${(error as Error).message}`,
    );
  }
}

/**
 * Pulls the builder (the registry is asked what the tag names now, so a moved tag is followed)
 * and extracts its `/cnb` once per manifest digest under `cacheDir`.
 */
export async function fetchBuilder(
  reference: string,
  options: {
    store: Store;
    cacheDir: string;
    client?: ClientOptions;
    onEvent?: PullOptions["onEvent"];
    /** Default always: the registry is asked what the tag names now. */
    pullPolicy?: PullPolicy;
  },
): Promise<Builder> {
  const ref = formatReference(parseReference(reference));
  const pulled = await pullByPolicy(ref, "builder", {
    store: options.store,
    policy: options.pullPolicy ?? "always",
    ...(options.client ? { client: options.client } : {}),
    ...(options.onEvent ? { onEvent: options.onEvent } : {}),
  });
  const digest = pulled.descriptor.digest;
  const { config } = await options.store.readImage(pulled.descriptor, ref);
  const container = config.config ?? {};
  const labels = container.Labels ?? {};
  const dir = join(options.cacheDir, digest.replace(":", "-"));
  const cnbDir = join(dir, "cnb");
  if (!(await stat(join(dir, ".complete")).catch(() => undefined))) {
    const scratch = `${dir}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
    try {
      await unpackImage(ref, scratch, {
        store: options.store,
        pull: "missing",
        paths: ["/cnb"],
        cacheDir: false,
      });
      // The build user reads /cnb through a bind mount of this directory alone.
      await chmod(scratch, 0o755);
      await rm(dir, { recursive: true, force: true });
      await rename(scratch, dir);
      await writeFile(join(dir, ".complete"), digest);
    } finally {
      await removeTree(scratch);
    }
  }
  if (!(await stat(join(cnbDir, "lifecycle", "lifecycle")).catch(() => undefined)))
    throw new BuilderError(`${ref} is not a CNB builder: it has no /cnb/lifecycle/lifecycle.`, {
      hint: "Pass a builder image (for example paketobuildpacks/builder-jammy-base), not a run or app image.",
    });
  let metadata: BuilderMetadata = {};
  try {
    metadata = JSON.parse(labels["io.buildpacks.builder.metadata"] ?? "{}") as BuilderMetadata;
  } catch {
    throw new BuilderError(`The io.buildpacks.builder.metadata label of ${ref} is not valid JSON.`);
  }
  const orderToml = await readToml(join(cnbDir, "order.toml"));
  const runToml = await readToml(join(cnbDir, "run.toml"));
  const stackToml = await readToml(join(cnbDir, "stack.toml"));
  const fromRunToml = (
    (runToml?.images as Array<{ image?: string; mirrors?: string[] }> | undefined) ?? []
  ).flatMap((image) => (image.image ? [image.image, ...(image.mirrors ?? [])] : []));
  const legacy = (stackToml?.["run-image"] as { image?: string; mirrors?: string[] } | undefined) ?? {};
  const runImages = [...fromRunToml, ...(legacy.image ? [legacy.image, ...(legacy.mirrors ?? [])] : [])];
  const uid = Number(envValue(container, "CNB_USER_ID") ?? 1000);
  const gid = Number(envValue(container, "CNB_GROUP_ID") ?? 1000);
  return {
    reference: ref,
    digest,
    cnbDir,
    lifecycleVersion: metadata.lifecycle?.version ?? labels["io.buildpacks.lifecycle.version"] ?? "unknown",
    platformApis: metadata.lifecycle?.apis?.platform?.supported ?? [],
    buildpackApis: metadata.lifecycle?.apis?.buildpack?.supported ?? [],
    buildpacks: metadata.buildpacks ?? [],
    order: (orderToml?.order as Array<{ group: BuildpackRef[] }> | undefined) ?? [],
    runImages: [...new Set(runImages)],
    uid: Number.isSafeInteger(uid) ? uid : 1000,
    gid: Number.isSafeInteger(gid) ? gid : 1000,
    env: container.Env ?? [],
  };
}

/**
 * The builder image's whole root filesystem (its build base, `/cnb` and all), unpacked once per
 * digest into the unpack cache, where builds share it read-only. A builder with no shell is a
 * `/cnb` over nothing: it cannot run buildpacks in its own stack.
 */
export async function builderRootfs(
  builder: Builder,
  options: { store: Store; cacheDir: string; client?: ClientOptions },
): Promise<string> {
  const { dir } = await cachedRootfs(builder.reference, {
    ...options.client,
    store: options.store,
    cacheDir: options.cacheDir,
    pull: "missing",
  });
  if (resolveInRoot(dir, "/bin/sh") === undefined)
    throw new BuilderError(
      `The builder ${builder.reference} has no operating system to build in (no /bin/sh in its image): ` +
        "it carries buildpacks and the lifecycle, but no build base.",
      {
        hint: "Build with --isolation host to run its buildpacks over this machine's OS, or use a builder made over a build image.",
      },
    );
  return dir;
}
