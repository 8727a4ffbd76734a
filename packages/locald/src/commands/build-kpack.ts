import {
  applyKpack,
  followBuild,
  type KpackBuildStatus,
  kubectlRunner,
  latestBuildNumber,
  type ProjectDescriptor,
  prepareKpackHandOff,
} from "@locald/cnb";
import type { ClientOptions } from "@locald/oci";
import type { Output } from "../ui.js";
import { UsageError } from "../usage.js";

/**
 * `locald build --remote kpack`: the app goes to a kpack cluster instead of being built here.
 * Parse, call @locald/cnb's hand-off, render; the work is in packages/cnb/src/remote.
 */

export interface KpackBuildRequest {
  appDir: string;
  tag: string;
  descriptor?: ProjectDescriptor;
  builder?: string;
  buildpacks: readonly string[];
  env: readonly string[];
  namespace?: string;
  serviceAccount?: string;
  cacheSize?: string;
  dryRun: boolean;
  client: ClientOptions;
}

/** `K` alone takes K's value from here, as for local builds; kpack needs the value written down. */
function resolveEnv(lines: readonly string[]): string[] {
  return lines.map((line) => {
    if (line.includes("=")) return line;
    const value = process.env[line];
    if (value === undefined)
      throw new UsageError(`-e ${line}: ${line} is not set here, and kpack needs a value.`);
    return `${line}=${value}`;
  });
}

const describe = (build: KpackBuildStatus) =>
  `${build.name}: ${build.succeeded === "True" ? "succeeded" : build.succeeded === "False" ? "failed" : "running"}${
    build.reason ? ` (${build.reason})` : ""
  }${build.message ? ` — ${build.message}` : ""}`;

export async function buildOnKpack(request: KpackBuildRequest, output: Output): Promise<void> {
  // kubectl is looked for before anything is uploaded: without it the upload would be wasted.
  const kubectl = request.dryRun ? undefined : await kubectlRunner();
  const handOff = await prepareKpackHandOff({
    appDir: request.appDir,
    tag: request.tag,
    ...(request.descriptor ? { descriptor: request.descriptor } : {}),
    ...(request.builder ? { builder: request.builder } : {}),
    buildpacks: request.buildpacks,
    env: resolveEnv(request.env),
    ...(request.namespace ? { namespace: request.namespace } : {}),
    ...(request.serviceAccount ? { serviceAccount: request.serviceAccount } : {}),
    ...(request.cacheSize ? { cacheSize: request.cacheSize } : {}),
    dryRun: request.dryRun,
    client: request.client,
  });
  if (kubectl === undefined) {
    output.stdout.write(handOff.yaml);
    return;
  }
  const { source, image, namespace } = handOff;
  output.stderr.write(
    source.kind === "git"
      ? `Source: ${source.url} at ${source.revision} (a clean git checkout; kpack clones it)\n`
      : `Source: pushed the app's files as ${source.image}\n`,
  );
  const before = await latestBuildNumber(kubectl, image, namespace);
  output.stderr.write(await applyKpack(kubectl, handOff.yaml, namespace));
  const done = await followBuild(kubectl, image, namespace, {
    after: before,
    onStatus: (build) => output.stderr.write(`${describe(build)}\n`),
  });
  output.stdout.write(
    `kpack built ${done.latestImage ?? request.tag} (${done.name} in namespace ${namespace})\n`,
  );
}
