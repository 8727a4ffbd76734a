import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { RuntimeError } from "../errors.js";
import { defaultDataDir } from "../store/index.js";
import { removeTree } from "./containers.js";
import { type ContainerRuntime, type SandboxHandle, type SandboxProcess, stdioOf } from "./runners.js";
import { findRunc, pipeOutput, rootlessIds, waitForRuntime } from "./runtime.js";
import { runtimeSpec } from "./runtime-spec.js";

/** A runc bundle per process, over a root directory of its own (not the host's, not a shared one). */
export class RuncRuntime implements ContainerRuntime {
  readonly name = "runc";

  constructor(
    private readonly runc: string,
    private readonly home: string = defaultDataDir(),
  ) {}

  static async find(home?: string): Promise<RuncRuntime> {
    return new RuncRuntime(await findRunc(), home);
  }

  /** A bundle for the process, its runc id and state dir. */
  private async prepare(process: SandboxProcess): Promise<{ bundle: string; id: string; state: string }> {
    if (typeof process.root !== "string" || process.root === "host")
      throw new RuntimeError(
        "runc needs a root filesystem directory of its own; the host's root and shared roots are bubblewrap's job.",
      );
    const uid = globalThis.process.geteuid?.() ?? 0;
    const id = `sandbox-${randomBytes(6).toString("hex")}`;
    const bundle = join(this.home, "sandboxes", id);
    await mkdir(bundle, { recursive: true, mode: 0o700 });
    try {
      const spec = runtimeSpec(
        {
          Entrypoint: [...process.args],
          Env: [...process.env],
          WorkingDir: process.cwd,
          User: `${process.uid ?? 0}:${process.gid ?? 0}`,
        },
        process.root,
        {
          hostEnv: {},
          ...(process.hostname ? { hostname: process.hostname } : {}),
          volumes: process.mounts ?? [],
          ...(uid !== 0 ? { rootless: await rootlessIds(uid) } : {}),
        },
      );
      spec.root = { path: process.root, readonly: false };
      await writeFile(join(bundle, "config.json"), JSON.stringify(spec));
      const state = join(this.home, "runc");
      await mkdir(state, { recursive: true, mode: 0o700 });
      return { bundle, id, state };
    } catch (error) {
      await removeTree(bundle);
      throw error;
    }
  }

  async run(process: SandboxProcess): Promise<number> {
    const { bundle, id, state } = await this.prepare(process);
    try {
      const child = spawn(this.runc, ["--root", state, "run", "--bundle", bundle, id], {
        stdio: [...stdioOf(process)],
      });
      pipeOutput(child, process.output);
      return await waitForRuntime(child, "runc");
    } finally {
      await removeTree(bundle);
    }
  }

  async start(process: Omit<SandboxProcess, "terminal">): Promise<SandboxHandle> {
    const { bundle, id, state } = await this.prepare(process);
    const child = spawn(this.runc, ["--root", state, "run", "--bundle", bundle, id], {
      stdio: [...stdioOf(process)],
      detached: true,
    });
    pipeOutput(child, process.output);
    const exited = waitForRuntime(child, "runc", false).finally(() => removeTree(bundle));
    return {
      exited,
      kill: (signal) => {
        execFile(this.runc, ["--root", state, "kill", id, signal.replace(/^SIG/, "")], () => {
          // a container that already exited has nothing to signal
        });
      },
    };
  }
}
