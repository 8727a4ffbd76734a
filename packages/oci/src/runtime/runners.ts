import { lstatSync, mkdirSync } from "node:fs";
import { join, posix } from "node:path";
import { ContainerConfigError } from "../errors.js";
import { resolveInRoot } from "../unpack/index.js";
import type { BindMount } from "./runtime-spec.js";

/**
 * The seam between "what to run" and "what runs it" (RFC 0068's ContainerRuntime): one process
 * in a root filesystem with some bind mounts, by runc or by bubblewrap. The CNB layer runs
 * lifecycle phases through it, over the host's own OS or over a builder's root.
 */

/**
 * An image's root filesystem shared by many sandboxes (an unpack cache entry): shown read-only,
 * entry by entry over a private tmpfs, so mount points and `/etc/resolv.conf` never have to be
 * written into it.
 */
export interface SharedRoot {
  readonly shared: string;
}

export interface SandboxProcess {
  /**
   * A directory used as `/` (read-write, owned by the caller when rootless), a shared root shown
   * read-only, or the host's own OS, read-only.
   */
  root: string | SharedRoot | "host";
  args: readonly string[];
  /** The whole environment: nothing of the caller's leaks in. */
  env: readonly string[];
  cwd: string;
  /** Ids inside the sandbox (default 0:0, the caller mapped to root when rootless). */
  uid?: number;
  gid?: number;
  /**
   * bubblewrap only: false keeps the caller's own ids and privileges (root stays root, to chown
   * for others); default true, a user namespace mapping the caller to `uid`/`gid`.
   */
  userNamespace?: boolean;
  mounts?: readonly BindMount[];
  hostname?: string;
  /** "host" (default): the host's network; "none": a network namespace with only loopback. */
  network?: "host" | "none";
  /** "inherit" (default) passes stdio through; a callback gets stdout and stderr instead. */
  output?: "inherit" | ((chunk: Buffer, stream: "stdout" | "stderr") => void);
  /**
   * An interactive command on the caller's terminal: stdin passed through, and (bubblewrap) the
   * session kept, so job control works. Only for the caller's own commands.
   */
  terminal?: boolean;
}

/** A sandboxed process started by a supervisor, which stops it itself. */
export interface SandboxHandle {
  /** Signals the sandboxed processes; SIGKILL ends the whole sandbox. */
  kill(signal: NodeJS.Signals): void;
  /** Resolves with the exit code (128 + signal when killed). */
  readonly exited: Promise<number>;
}

export interface ContainerRuntime {
  readonly name: "runc" | "bubblewrap";
  /** Runs the process to its end; resolves with its exit code (128 + signal when killed). */
  run(process: SandboxProcess): Promise<number>;
  /**
   * Starts the process in a process group of its own, so neither the caller's terminal nor its
   * signals reach it: the caller stops it through the handle.
   */
  start(process: Omit<SandboxProcess, "terminal">): Promise<SandboxHandle>;
}

/** Standard streams for a sandboxed process: the terminal, or pipes for an output callback. */
export function stdioOf(process: SandboxProcess) {
  const stdin = process.terminal ? "inherit" : "ignore";
  return process.output === undefined || process.output === "inherit"
    ? ([stdin, "inherit", "inherit"] as const)
    : ([stdin, "pipe", "pipe"] as const);
}

/**
 * Makes each mount point exist inside `root` as a plain directory path. A destination reached
 * through a symlink is refused: a hostile root could point it anywhere on the host.
 */
export function prepareMountPoints(root: string, destinations: readonly string[]): void {
  for (const destination of destinations) {
    const parts = posix
      .normalize(destination)
      .split("/")
      .filter((part) => part !== "" && part !== ".");
    let host = root;
    for (const part of parts) {
      if (part === "..")
        throw new ContainerConfigError(`The mount destination ${destination} climbs out with "..".`);
      host = join(host, part);
      const info = lstatSync(host, { throwIfNoEntry: false });
      if (info === undefined) mkdirSync(host, { mode: 0o755 });
      else if (!info.isDirectory())
        throw new ContainerConfigError(
          `Cannot mount onto ${destination}: /${parts.slice(0, parts.indexOf(part) + 1).join("/")} in the root is ` +
            `${info.isSymbolicLink() ? "a symlink" : "not a directory"}.`,
          { hint: "A root filesystem whose mount points are links or files is not usable as a sandbox." },
        );
    }
    if (resolveInRoot(root, destination) !== host)
      throw new ContainerConfigError(`The mount destination ${destination} does not stay inside the root.`);
  }
}
