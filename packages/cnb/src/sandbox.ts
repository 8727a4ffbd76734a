import type { BindMount, BubblewrapRuntime } from "@locald/oci";
import { BUILD_USER_PHASES, failedBuildpack, type Phase, phaseError } from "./lifecycle.js";

/**
 * Host mode: the lifecycle's phases (and dev commands) in a bubblewrap mount namespace over the
 * host's OS (its programs, libraries and /etc, read-only; nobody's data), with the build's
 * directories bound at the paths the lifecycle expects. As root the sandbox keeps root
 * (analyze/restore/export chown for the build user) and detect/build drop to the build user with
 * setpriv; anyone else runs every phase as the build user, the caller mapped to it in a user
 * namespace, so the image records the same owners either way.
 */

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const PHASE_TITLES: Record<Phase, string> = {
  analyzer: "ANALYZING",
  detector: "DETECTING",
  restorer: "RESTORING",
  builder: "BUILDING",
  exporter: "EXPORTING",
};

export type OutputSink = (chunk: Buffer, stream: "stdout" | "stderr") => void;

export const processOutput: OutputSink = (chunk, stream) =>
  (stream === "stdout" ? process.stdout : process.stderr).write(chunk);

export interface HostSandboxOptions {
  runtime: BubblewrapRuntime;
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
}

export class HostSandbox {
  readonly root = process.geteuid?.() === 0;

  constructor(private readonly options: HostSandboxOptions) {}

  /** Runs one lifecycle phase; a non-zero exit becomes the typed error for that phase and code. */
  async phase(name: Phase, args: readonly string[]): Promise<void> {
    const { uid, gid, onOutput } = this.options;
    this.options.onPhase?.(name);
    onOutput(Buffer.from(`===> ${PHASE_TITLES[name]}\n`), "stdout");
    let output = "";
    const command = [`/cnb/lifecycle/${name}`, "-log-level", this.options.logLevel, ...args];
    const asBuildUser = this.root && BUILD_USER_PHASES.has(name);
    const code = await this.options.runtime.run({
      root: "host",
      args: asBuildUser
        ? ["setpriv", `--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", "--", ...command]
        : command,
      env: this.options.env,
      cwd: "/workspace",
      mounts: this.options.mounts,
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

  /** Root keeps its ids (it has to chown for the build user); anyone else is mapped to the build user. */
  ids(): { userNamespace: false } | { uid: number; gid: number } {
    return this.root ? { userNamespace: false } : { uid: this.options.uid, gid: this.options.gid };
  }
}
