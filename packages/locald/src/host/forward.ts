import { spawn } from "node:child_process";
import { constants } from "node:os";

/**
 * Running the same locald command on the other side of a host provider (`limactl shell`,
 * `wsl.exe`): the terminal, stdin and output are the child's own (inherited, so a TTY stays a
 * TTY and Ctrl-C reaches it from the terminal), signals sent to us are passed on, and its exit
 * status becomes ours, a signal death as a shell reports it (128 + n).
 */

/** Names passed through as they are: what changes how locald and buildpacks behave, nothing secret by default. */
const ENV_NAMES = new Set([
  "NO_COLOR",
  "FORCE_COLOR",
  "TERM",
  "COLORTERM",
  "LANG",
  "LANGUAGE",
  "TZ",
  "CI",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
  "http_proxy",
  "https_proxy",
  "no_proxy",
]);
/** Prefixes passed through: locald's own settings, locale, buildpack settings. */
const ENV_PREFIXES = ["LOCALD_", "LC_", "BP_", "BPE_", "BPL_"];
/**
 * Never passed: where locald keeps its state and which provider to use describe this host, not
 * the VM (a macOS path as LOCALD_HOME inside Linux would be wrong, the provider would loop).
 */
const ENV_DROPPED = new Set([
  "LOCALD_HOME",
  "LOCALD_HOST_PROVIDER",
  "LOCALD_LIMA_BASE_URL",
  "LOCALD_LIMACTL",
]);

/** The allow-listed part of `env`, sorted so the forwarded command line is stable. */
export function forwardedEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const picked: Record<string, string> = {};
  for (const name of Object.keys(env).sort()) {
    const value = env[name];
    if (value === undefined || ENV_DROPPED.has(name)) continue;
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) continue;
    if (ENV_NAMES.has(name) || ENV_PREFIXES.some((p) => name.startsWith(p))) picked[name] = value;
  }
  return picked;
}

/**
 * The command line without `--host-provider X` / `--host-provider=X`: the other side is Linux
 * and must run the command there, not forward it again.
 */
export function withoutHostProviderFlag(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--") {
      out.push(...argv.slice(i));
      break;
    }
    if (arg === "--host-provider") {
      i++;
      continue;
    }
    if (arg.startsWith("--host-provider=")) continue;
    out.push(arg);
  }
  return out;
}

export interface ForwardIO {
  /** Default "inherit": the user's terminal itself. Tests pass pipes or files. */
  stdio?: "inherit" | "pipe";
  /** Default process.env of the forwarder itself (what it needs to find its own programs). */
  env?: NodeJS.ProcessEnv;
}

const FORWARDED_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];

/** Runs `file args` as the forwarded command and resolves with the exit status to return. */
export function runForwarded(file: string, args: readonly string[], io: ForwardIO = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: io.stdio ?? "inherit", env: io.env ?? process.env });
    // A terminal's Ctrl-C already reaches the child (same process group); a signal sent to us
    // alone (kill, a supervisor, an IDE's stop button) must be passed on, and while a handler is
    // installed Node does not die of it, so the child decides the exit status.
    const pass = (signal: NodeJS.Signals) => () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    };
    const handlers = FORWARDED_SIGNALS.map((signal) => [signal, pass(signal)] as const);
    for (const [signal, handler] of handlers) process.on(signal, handler);
    const done = () => {
      for (const [signal, handler] of handlers) process.off(signal, handler);
    };
    child.on("error", (error) => {
      done();
      reject(error);
    });
    child.on("close", (code, signal) => {
      done();
      if (code !== null) resolve(code);
      else resolve(128 + (signal === null ? 1 : (constants.signals[signal] ?? 1)));
    });
  });
}
