import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { access } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { KpackBuildError, KubectlError, KubectlMissingError } from "./kpack-errors.js";
import type { KpackBuildStatus } from "./kpack-types.js";

/**
 * Handing resources to a cluster through the user's own `kubectl` (its kubeconfig, context and
 * credentials, which locald never reads), then following the Build kpack starts. kubectl is
 * reached through one function so tests can stand in for it without a cluster.
 */

/** Runs kubectl with `args` (and `input` on stdin); resolves with its stdout, rejects on failure. */
export type KubectlRunner = (args: readonly string[], input?: string) => Promise<string>;

/** The kubectl on PATH, or undefined. */
export async function findKubectl(path: string = process.env.PATH ?? ""): Promise<string | undefined> {
  for (const dir of path.split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, "kubectl");
    if (
      await access(candidate, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return candidate;
  }
  return undefined;
}

/** A KubectlRunner for the kubectl on PATH; a KubectlMissingError says what to do without one. */
export async function kubectlRunner(path?: string): Promise<KubectlRunner> {
  const kubectl = await findKubectl(path);
  if (kubectl === undefined)
    throw new KubectlMissingError(
      "locald hands kpack builds to the cluster with kubectl, and there is no kubectl on PATH, so nothing was pushed or applied.",
      {
        hint: "Install kubectl and point it at the cluster running kpack (kubectl config use-context …), or run with --dry-run and apply the printed YAML yourself.",
      },
    );
  return (args, input) =>
    new Promise((resolve, reject) => {
      const child = execFile(kubectl, [...args], { maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
        if (error)
          reject(
            new KubectlError(`kubectl ${args.join(" ")} failed: ${stderr.trim() || error.message}`, {
              hint: "Check kubectl's context (kubectl config current-context) and that kpack is installed there.",
            }),
          );
        else resolve(stdout);
      });
      // A kubectl that exits without reading its input (a refused flag) closes the pipe: its exit
      // status and stderr say why, an EPIPE here would only hide that.
      child.stdin?.on("error", () => {});
      child.stdin?.end(input ?? "");
    });
}

/** `kubectl apply -f -` of the rendered YAML, in `namespace`; returns kubectl's own summary. */
export async function applyKpack(kubectl: KubectlRunner, yaml: string, namespace: string): Promise<string> {
  return kubectl(["apply", "--namespace", namespace, "-f", "-"], yaml);
}

type Json = Record<string, unknown>;
const object = (value: unknown): Json | undefined =>
  typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Json) : undefined;
const text = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined);

/** The Builds of `kubectl get builds -o json`, oldest first by build number. */
export function parseBuilds(json: string): KpackBuildStatus[] {
  let list: Json | undefined;
  try {
    list = object(JSON.parse(json));
  } catch {
    list = undefined;
  }
  const items = list?.items;
  if (!Array.isArray(items))
    throw new KubectlError("kubectl get builds printed something that is not a list of Builds.");
  return items
    .map((item): KpackBuildStatus => {
      const metadata = object(object(item)?.metadata);
      const status = object(object(item)?.status);
      const conditions = Array.isArray(status?.conditions) ? status.conditions.map(object) : [];
      const succeeded = conditions.find((condition) => condition?.type === "Succeeded");
      const state = text(succeeded?.status);
      const number = Number(text(object(metadata?.labels)?.["image.kpack.io/buildNumber"]));
      const reason = text(succeeded?.reason);
      const message = text(succeeded?.message);
      const latestImage = text(status?.latestImage);
      return {
        name: text(metadata?.name) ?? "?",
        succeeded: state === "True" || state === "False" ? state : "Unknown",
        ...(reason ? { reason } : {}),
        ...(message ? { message } : {}),
        ...(latestImage ? { latestImage } : {}),
        ...(Number.isSafeInteger(number) ? { buildNumber: number } : {}),
      };
    })
    .sort((a, b) => (a.buildNumber ?? 0) - (b.buildNumber ?? 0));
}

export interface FollowOptions {
  /** Only Builds numbered above this count as new (the highest before the apply). */
  readonly after?: number;
  /** Called when the followed Build's state changes (and once when it is found). */
  readonly onStatus?: (status: KpackBuildStatus) => void;
  /** Waits between polls; tests pass one that returns at once. */
  readonly sleep?: (ms: number) => Promise<void>;
  /** Give up after this long in total waits (default 30 minutes, kpack's own build timeout is longer). */
  readonly timeoutMs?: number;
  /** Polls with no new Build before the latest old one is taken (the Image did not change). */
  readonly newBuildPolls?: number;
}

/** The number of the newest Build of `image`, 0 when it has none. */
export async function latestBuildNumber(
  kubectl: KubectlRunner,
  image: string,
  namespace: string,
): Promise<number> {
  const builds = parseBuilds(await getBuilds(kubectl, image, namespace));
  return builds.at(-1)?.buildNumber ?? 0;
}

function getBuilds(kubectl: KubectlRunner, image: string, namespace: string): Promise<string> {
  return kubectl([
    "get",
    "builds",
    "--namespace",
    namespace,
    "-l",
    `image.kpack.io/image=${image}`,
    "-o",
    "json",
  ]);
}

/**
 * Polls the Image's Builds with backoff (1 s doubling to 15 s) until the new one succeeds (its
 * status is returned) or fails (a KpackBuildError with kpack's reason and message).
 */
export async function followBuild(
  kubectl: KubectlRunner,
  image: string,
  namespace: string,
  options: FollowOptions = {},
): Promise<KpackBuildStatus> {
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const timeout = options.timeoutMs ?? 30 * 60_000;
  const patience = options.newBuildPolls ?? 10;
  let waited = 0;
  let delay = 1000;
  let polls = 0;
  let last: string | undefined;
  for (;;) {
    const builds = parseBuilds(await getBuilds(kubectl, image, namespace));
    polls++;
    const fresh = builds.filter((build) => (build.buildNumber ?? 0) > (options.after ?? 0));
    // kpack starts no Build when the applied Image is what it already built: follow the last one.
    const build = fresh.at(-1) ?? (polls >= patience ? builds.at(-1) : undefined);
    if (build) {
      const state = `${build.name} ${build.succeeded} ${build.reason ?? ""} ${build.message ?? ""}`;
      if (state !== last) options.onStatus?.(build);
      last = state;
      if (build.succeeded === "True") return build;
      if (build.succeeded === "False")
        throw new KpackBuildError(
          `kpack's Build ${build.name} failed${build.reason ? ` (${build.reason})` : ""}${build.message ? `: ${build.message}` : "."}`,
          {
            hint: `See its logs: kubectl logs --namespace ${namespace} -l image.kpack.io/image=${image} --all-containers.`,
          },
        );
    }
    if (waited >= timeout)
      throw new KpackBuildError(
        build
          ? `kpack's Build ${build.name} did not finish within ${Math.round(timeout / 1000)} s.`
          : `kpack started no Build for the Image ${image} within ${Math.round(timeout / 1000)} s.`,
        { hint: `kubectl describe image --namespace ${namespace} ${image} says what kpack makes of it.` },
      );
    await sleep(delay);
    waited += delay;
    delay = Math.min(delay * 2, 15_000);
  }
}
