import { type BindMount, type BubblewrapRuntime, isHostRoot, type SharedRoot } from "@locald/oci";
import { BuildConfigError } from "./errors.js";
import { BUILD_USER_PHASES, failedBuildpack, type Phase, phaseError } from "./lifecycle.js";

/**
 * Where the lifecycle's phases (and dev commands) run, in a bubblewrap sandbox with the build's
 * directories bound at the paths the lifecycle expects:
 * - builder isolation (the default): the builder image's own root filesystem is `/`, read-only,
 *   shared by every build from the unpack cache; nothing of the host is shown but its resolv.conf
 *   and hosts. Every phase runs as the build user, the caller (root or not) mapped to it in a
 *   user namespace.
 * - host isolation: the host's OS (its programs, libraries and /etc, read-only; nobody's data).
 *   As root the sandbox keeps root (analyze/restore/export chown for the build user) and
 *   detect/build drop to the build user with the host's setpriv; anyone else is mapped to the
 *   build user as above.
 * Either way the image records the build user as the owner of what the build made.
 */

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export const ISOLATIONS = ["builder", "host"] as const;
export type Isolation = (typeof ISOLATIONS)[number];

/** What each isolation promises, for help texts and `builder inspect`. */
export const ISOLATION_GUARANTEES: Readonly<Record<Isolation, string>> = {
  builder:
    "buildpacks run in the builder image's own OS (its build base), read-only, as its build user; the host shows only its resolv.conf and hosts",
  host: "buildpacks run over this machine's OS (/usr, /etc, the library dirs, read-only), as the builder's build user; no home, /root, /var, /opt or other data",
};

const PHASE_TITLES: Record<Phase, string> = {
  analyzer: "ANALYZING",
  detector: "DETECTING",
  restorer: "RESTORING",
  builder: "BUILDING",
  exporter: "EXPORTING",
};

/** `isolation` checked (for library callers that pass a string from elsewhere); default builder. */
export function isolationOf(isolation: string | undefined): Isolation {
  if (isolation === undefined) return "builder";
  if ((ISOLATIONS as readonly string[]).includes(isolation)) return isolation as Isolation;
  throw new BuildConfigError(`Isolation "${isolation}" is not one locald has: "builder" or "host".`);
}

export type OutputSink = (chunk: Buffer, stream: "stdout" | "stderr") => void;

export const processOutput: OutputSink = (chunk, stream) =>
  (stream === "stdout" ? process.stdout : process.stderr).write(chunk);

export interface LifecycleSandboxOptions {
  runtime: BubblewrapRuntime;
  /** The builder's root filesystem (builder isolation), or the host's OS. */
  root: SharedRoot | "host";
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

export class LifecycleSandbox {
  /** Root on the host, over the host's OS: the one case that keeps the caller's ids. */
  private readonly privileged: boolean;

  constructor(private readonly options: LifecycleSandboxOptions) {
    this.privileged = options.root === "host" && isHostRoot();
  }

  /** Runs one lifecycle phase; a non-zero exit becomes the typed error for that phase and code. */
  async phase(name: Phase, args: readonly string[]): Promise<void> {
    const { uid, gid, onOutput } = this.options;
    this.options.onPhase?.(name);
    onOutput(Buffer.from(`===> ${PHASE_TITLES[name]}\n`), "stdout");
    let output = "";
    const command = [`/cnb/lifecycle/${name}`, "-log-level", this.options.logLevel, ...args];
    const asBuildUser = this.privileged && BUILD_USER_PHASES.has(name);
    const code = await this.options.runtime.run({
      root: this.options.root,
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

  /**
   * Root over the host keeps its ids (it has to chown for the build user); anyone else, and
   * everyone in the builder's OS, is mapped to the build user.
   */
  ids(): { userNamespace: false } | { uid: number; gid: number } {
    return this.privileged ? { userNamespace: false } : { uid: this.options.uid, gid: this.options.gid };
  }
}
