/**
 * The host-provider seam: commands that need Linux run here on Linux (WSL included) and are
 * forwarded to a Linux VM elsewhere — a Lima VM on macOS, a WSL2 distribution on Windows. The
 * library packages stay Linux-only; only this layer knows about other hosts.
 */
import { defaultDataDir } from "@locald/oci";
import { chooseHostProvider, type HostProviderName, readKernelRelease, wslDriveWarning } from "./detect.js";
import { type ForwardIO, forwardedEnv, runForwarded, withoutHostProviderFlag } from "./forward.js";
import { forwardToLima, type LimaContext } from "./lima.js";
import { wslInvocation } from "./wsl.js";

export {
  chooseHostProvider,
  HOST_PROVIDERS,
  type HostFacts,
  HostProviderError,
  type HostProviderName,
  isWslKernel,
  readKernelRelease,
  windowsDriveOf,
  wslDriveWarning,
} from "./detect.js";
export { forwardedEnv, runForwarded, withoutHostProviderFlag } from "./forward.js";
export * from "./lima.js";
export * from "./lima-config.js";
export * from "./lima-install.js";
export * from "./wsl.js";

/** Where a command runs: here, or forwarded through a provider (resolving with its exit status). */
export interface HostProvider {
  readonly name: HostProviderName;
  /** Undefined: run in this process (Linux). */
  readonly forward?: (argv: readonly string[]) => Promise<number>;
  /** Something to say before running here (an app dir on a Windows drive under WSL). */
  readonly warning?: string;
}

/** Global options that take a value, so the command name after them is found. */
const VALUE_OPTIONS = new Set(["--insecure-registry", "--ca-cert", "--host-provider"]);

/** The command word of a command line (`build` in `--verbose build .`), if any. */
export function commandOf(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--") return argv[i + 1];
    if (VALUE_OPTIONS.has(arg)) i++;
    else if (!arg.startsWith("-")) return arg;
  }
  return undefined;
}

/** `--host-provider X` / `--host-provider=X` as typed, before commander has parsed anything. */
export function hostProviderFlag(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--") break;
    if (arg === "--host-provider") return argv[i + 1] ?? "";
    if (arg.startsWith("--host-provider=")) return arg.slice("--host-provider=".length);
  }
  return undefined;
}

/**
 * Commands that run on the host whatever the provider: they manage the VM, or only print
 * (help, version). Everything else needs Linux.
 */
export function runsOnHost(argv: readonly string[]): boolean {
  const command = commandOf(argv);
  if (command === undefined || command === "vm" || command === "help") return true;
  return argv.some((a) => a === "--help" || a === "-h" || a === "--version" || a === "-V");
}

export interface ProviderOptions {
  env?: NodeJS.ProcessEnv;
  platform?: NodeJS.Platform;
  cwd?: string;
  io?: ForwardIO;
  lima?: Partial<LimaContext>;
}

/** The provider for this command line on this host. */
export function hostProvider(argv: readonly string[], options: ProviderOptions = {}): HostProvider {
  const env = options.env ?? process.env;
  const platform = options.platform ?? process.platform;
  const kernelRelease = platform === "linux" ? readKernelRelease() : undefined;
  const name = chooseHostProvider({
    platform,
    kernelRelease,
    flag: hostProviderFlag(argv),
    env: env.LOCALD_HOST_PROVIDER,
  });
  const cwd = options.cwd ?? process.cwd();
  switch (name) {
    case "linux":
      return { name, warning: wslDriveWarning(kernelRelease, cwd) };
    case "lima":
      return {
        name,
        forward: (args) =>
          forwardToLima(args, { home: defaultDataDir(env), ...options.lima, cwd, env, io: options.io }),
      };
    case "wsl":
      return {
        name,
        forward: (args) => {
          const call = wslInvocation(withoutHostProviderFlag(args), {
            cwd,
            distro: env.LOCALD_WSL_DISTRO || undefined,
          });
          // wsl.exe shares with Linux only the variables WSLENV names.
          const names = Object.keys(forwardedEnv(env));
          const wslenv = [env.WSLENV, ...names].filter((n) => n !== undefined && n !== "").join(":");
          return runForwarded(env.LOCALD_WSL_EXE || call.file, call.args, {
            ...options.io,
            env: { ...env, WSLENV: wslenv },
          });
        },
      };
  }
}
