import { execFile } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { OciError } from "@locald/oci";
import { type ForwardIO, forwardedEnv, runForwarded, withoutHostProviderFlag } from "./forward.js";
import { ensureLimactl, type InstallOptions } from "./lima-install.js";

/**
 * The Lima provider: one VM named `locald`, in a Lima home of its own under
 * `$LOCALD_HOME/vm/lima` (so `limactl list` of a Lima the user runs does not see it, and ours
 * never touches theirs), driven by our own `limactl` — or by the one the user installed, when
 * `LOCALD_LIMACTL` or `[host] limactl` names it (see `ensureLimactl`).
 */

export class LimaError extends OciError {
  readonly code = "LIMA";
}

export const INSTANCE = "locald";

const run = promisify(execFile);

export interface LimaContext extends InstallOptions {
  /** The YAML `locald vm config` prints, written before the first start. */
  configYaml?: () => Promise<string>;
}

export function limaHome(home: string): string {
  return join(home, "vm", "lima");
}

function limaEnv(context: LimaContext): NodeJS.ProcessEnv {
  return { ...process.env, LIMA_HOME: limaHome(context.home) };
}

async function limactl(context: LimaContext, args: readonly string[]): Promise<string> {
  const file = await ensureLimactl(context);
  // limactl 1.2.3's `list` dies with a bare "no such file or directory" while LIMA_HOME does not
  // exist yet, which is the case before our first VM.
  await mkdir(limaHome(context.home), { recursive: true });
  try {
    const { stdout } = await run(file, [...args], { env: limaEnv(context), maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim() ?? "";
    throw new LimaError(`limactl ${args[0] ?? ""} failed: ${stderr || (error as Error).message}`, {
      cause: error,
    });
  }
}

/** The VM's state as limactl reports it ("Running", "Stopped", …), or "absent". */
export async function vmStatus(context: LimaContext): Promise<string> {
  const out = await limactl(context, ["list", "--format", "json"]);
  for (const line of out.split("\n")) {
    if (line.trim() === "") continue;
    const entry = JSON.parse(line) as { name?: string; status?: string };
    if (entry.name === INSTANCE) return entry.status ?? "Unknown";
  }
  return "absent";
}

export async function vmStart(context: LimaContext): Promise<void> {
  const status = await vmStatus(context);
  if (status === "Running") return;
  if (status !== "absent") {
    await limactl(context, ["start", "--tty=false", INSTANCE]);
    return;
  }
  if (context.configYaml === undefined) throw new LimaError("There is no VM config to create the VM from.");
  const file = join(context.home, "vm", `${INSTANCE}.yaml`);
  await mkdir(join(context.home, "vm"), { recursive: true });
  await writeFile(file, await context.configYaml());
  await limactl(context, ["start", "--tty=false", `--name=${INSTANCE}`, file]);
}

export async function vmStop(context: LimaContext): Promise<void> {
  if ((await vmStatus(context)) === "Running") await limactl(context, ["stop", INSTANCE]);
}

export async function vmRemove(context: LimaContext): Promise<void> {
  if ((await vmStatus(context)) !== "absent") await limactl(context, ["delete", "--force", INSTANCE]);
}

/**
 * `limactl shell` args that run `argv` as a locald command in the VM: in the same directory
 * (mounted at the same path), with the allow-listed environment set through `env` — limactl
 * shell runs its command through the guest's shell, quoting each word, so values with spaces
 * or quotes arrive as they were.
 */
export function limaShellArgs(
  argv: readonly string[],
  options: { cwd: string; env: NodeJS.ProcessEnv },
): string[] {
  const env = Object.entries(forwardedEnv(options.env)).map(([k, v]) => `${k}=${v}`);
  return [
    "shell",
    `--workdir=${options.cwd}`,
    INSTANCE,
    "env",
    ...env,
    "locald",
    ...withoutHostProviderFlag(argv),
  ];
}

/** Runs a locald command in the VM, starting it first, and returns its exit status. */
export async function forwardToLima(
  argv: readonly string[],
  context: LimaContext & { cwd: string; env: NodeJS.ProcessEnv; io?: ForwardIO },
): Promise<number> {
  await vmStart(context);
  const file = await ensureLimactl(context);
  return runForwarded(file, limaShellArgs(argv, context), { ...context.io, env: limaEnv(context) });
}
