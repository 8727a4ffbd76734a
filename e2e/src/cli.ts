import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const LOCALD_BIN = fileURLToPath(new URL("../../../packages/locald/bin/locald.js", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  input?: string;
  cwd?: string;
  /** Run as this user (through setpriv), as an unprivileged user would. */
  as?: { uid: number; gid: number };
  /** Words put before `node` (e.g. `/usr/bin/time -f …`), inside the setpriv of `as`. */
  wrapper?: readonly string[];
  /** Kill the CLI (SIGKILL) after this long; the result then says so in `stderr`, code 137. */
  timeoutMs?: number;
  /**
   * Another copy of the CLI to run, as is (e.g. an npm-installed `bin/locald`): its shebang finds
   * `node` on PATH. Default: this checkout's, with the node running the tests.
   */
  executable?: string;
}

/** Starts the real CLI in a child process, as a user would. */
export function startLocald(
  args: readonly string[],
  options: CliOptions = {},
): ChildProcessWithoutNullStreams {
  const cli = options.executable === undefined ? [process.execPath, LOCALD_BIN] : [options.executable];
  const command = [...(options.wrapper ?? []), ...cli, ...args];
  const [file, ...argv] =
    options.as === undefined
      ? command
      : [
          "setpriv",
          `--reuid=${options.as.uid}`,
          `--regid=${options.as.gid}`,
          "--clear-groups",
          "--",
          ...command,
        ];
  return spawn(file as string, argv, {
    env: { ...process.env, NO_COLOR: "1", ...options.env },
    cwd: options.cwd,
    stdio: ["pipe", "pipe", "pipe"],
    // Its own process group, so that a timeout kills a wrapper's child (the CLI) with it.
    detached: options.timeoutMs !== undefined,
  });
}

/** Runs the real CLI to completion and collects its output. */
export function runLocald(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = startLocald(args, options);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    let killed = false;
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            killed = true;
            if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
          }, options.timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString("utf8");
      resolve({
        code: code ?? (signal ? 128 + (signal === "SIGKILL" ? 9 : 0) : 1),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: killed ? `${stderr}\n(killed after ${options.timeoutMs} ms)` : stderr,
      });
    });
    child.stdin.end(options.input ?? "");
  });
}
