import type { BindMount, BubblewrapRuntime, SharedRoot } from "@locald/oci";
import { BUILD_USER_PHASES, failedBuildpack, type Phase, phaseError } from "../lifecycle.js";

/**
 * Where the lifecycle's phases (and dev commands) run: a bubblewrap sandbox over the root its
 * isolation chose (builder-isolation.ts, host-isolation.ts), with the build's directories bound at
 * the paths the lifecycle expects. Either way the image records the build user as the owner of
 * what the build made.
 */

const PHASE_TITLES: Record<Phase, string> = {
  analyzer: "ANALYZING",
  detector: "DETECTING",
  restorer: "RESTORING",
  builder: "BUILDING",
  exporter: "EXPORTING",
  rebaser: "REBASING",
};

export type OutputSink = (chunk: Buffer, stream: "stdout" | "stderr") => void;

export const processOutput: OutputSink = (chunk, stream) =>
  (stream === "stdout" ? process.stdout : process.stderr).write(chunk);

export interface LifecycleSandboxOptions {
  runtime: BubblewrapRuntime;
  /** The builder's root filesystem (builder isolation), or the host's OS. */
  root: SharedRoot | "host";
  /** Keep the caller's ids (see `IsolationMode.privileged`); detect and build then drop to the build user. */
  privileged: boolean;
  /** The build user's ids: the builder's CNB_USER_ID and CNB_GROUP_ID. */
  uid: number;
  gid: number;
  mounts: BindMount[];
  env: string[];
  /** Host path bound at /layers, where a failed build leaves the trail of which buildpack ran. */
  layersDir: string;
  logLevel: "info" | "debug";
  onOutput: OutputSink;
  onPhase?: (phase: Phase) => void;
  /** Only for the phases that run buildpacks (detect, build): "none" for hermetic builds. */
  buildpackNetwork?: "host" | "none";
  /** Never for the phases that run buildpacks: the lifecycle's own cache. */
  lifecycleMounts?: readonly BindMount[];
  /** Only for the phases that run buildpacks: the caller's `--volume`s, which the export never sees. */
  buildpackMounts?: readonly BindMount[];
  /**
   * Only for the phases that talk to registries (never detect or build): the caller's
   * credentials, which buildpacks must not see.
   */
  registryMounts?: readonly BindMount[];
  registryEnv?: readonly string[];
}

/** The phases in which buildpacks run (their own bin/detect and bin/build). */
const BUILDPACK_PHASES: ReadonlySet<Phase> = new Set(["detector", "builder"]);

export class LifecycleSandbox {
  constructor(private readonly options: LifecycleSandboxOptions) {}

  /** Runs one lifecycle phase; a non-zero exit becomes the typed error for that phase and code. */
  async phase(name: Phase, args: readonly string[]): Promise<void> {
    const { uid, gid, onOutput } = this.options;
    this.options.onPhase?.(name);
    onOutput(Buffer.from(`===> ${PHASE_TITLES[name]}\n`), "stdout");
    let output = "";
    const command = [`/cnb/lifecycle/${name}`, "-log-level", this.options.logLevel, ...args];
    const asBuildUser = this.options.privileged && BUILD_USER_PHASES.has(name);
    const code = await this.options.runtime.run({
      root: this.options.root,
      args: asBuildUser
        ? ["setpriv", `--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", "--", ...command]
        : command,
      env: BUILDPACK_PHASES.has(name)
        ? this.options.env
        : [...this.options.env, ...(this.options.registryEnv ?? [])],
      cwd: "/workspace",
      mounts: BUILDPACK_PHASES.has(name)
        ? [...this.options.mounts, ...(this.options.buildpackMounts ?? [])]
        : [
            ...this.options.mounts,
            ...(this.options.lifecycleMounts ?? []),
            ...(this.options.registryMounts ?? []),
          ],
      ...(BUILDPACK_PHASES.has(name) && this.options.buildpackNetwork === "none"
        ? { network: "none" as const }
        : {}),
      ...this.ids(),
      output: (chunk, stream) => {
        output += chunk.toString("utf8");
        if (output.length > 256 * 1024) output = output.slice(-128 * 1024);
        onOutput(chunk, stream);
      },
    });
    if (code !== 0)
      throw phaseError(
        name,
        code,
        output,
        code === 51 ? await failedBuildpack(this.options.layersDir) : undefined,
      );
  }

  /**
   * Root over the host keeps its ids (it has to chown for the build user); anyone else, and
   * everyone in the builder's OS, is mapped to the build user.
   */
  ids(): { userNamespace: false } | { uid: number; gid: number } {
    return this.options.privileged
      ? { userNamespace: false }
      : { uid: this.options.uid, gid: this.options.gid };
  }
}
