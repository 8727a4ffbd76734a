import { spawn } from "node:child_process";
import { type Dirent, lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync } from "node:fs";
import { join, posix } from "node:path";
import { RuntimeError } from "../errors.js";
import {
  type ContainerRuntime,
  prepareMountPoints,
  type SandboxHandle,
  type SandboxProcess,
  stdioOf,
} from "./runners.js";
import { findProgram, pipeOutput, waitForRuntime } from "./runtime.js";
import type { BindMount } from "./runtime-spec.js";

/**
 * What "host" mode shows of the host, read-only: its OS — programs, libraries and configuration —
 * and nothing of anyone's data. No home directory (wherever it is), no `/root`, `/var`, `/opt`,
 * `/srv`, `/mnt`, `/media`, `/run` or other mounts: what a sandboxed process needs of those is
 * bound in explicitly. A name that is a symlink on the host (merged /usr) stays that symlink.
 */
const HOST_SHOWN = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"];

/** An entry to show: a directory entry as `readdir` types it, or a name to look up. */
type Shown = string | Dirent;

/** bubblewrap arguments that show `entries` of directory `base` read-only at `at`, links as links. */
function shownEntries(base: string, at: string, entries: Iterable<Shown>): string[] {
  const args: string[] = [];
  for (const entry of entries) {
    const name = typeof entry === "string" ? entry : entry.name;
    const source = join(base, name);
    const destination = posix.join(at, name);
    // readdir's types spare an lstat per entry: a shared root's /etc alone has dozens.
    const info = typeof entry === "string" ? lstatSync(source, { throwIfNoEntry: false }) : entry;
    if (info?.isSymbolicLink()) args.push("--symlink", readlinkSync(source), destination);
    else if (info?.isDirectory() || info?.isFile()) args.push("--ro-bind", source, destination);
  }
  return args;
}

/** The bubblewrap arguments that show the host's OS as described at `HOST_SHOWN`. */
function hostOsArgs(): string[] {
  const args = ["--tmpfs", "/", ...shownEntries("/", "/", HOST_SHOWN)];
  // Name resolution often goes through a link out of /etc (systemd-resolved: /run/systemd/...).
  for (const file of ["/etc/resolv.conf", "/etc/hosts"]) {
    if (!lstatSync(file, { throwIfNoEntry: false })?.isSymbolicLink()) continue;
    const target = realpathOrUndefined(file);
    if (target !== undefined && !HOST_SHOWN.some((name) => target.startsWith(`/${name}/`)))
      args.push("--ro-bind", target, target);
  }
  return args;
}

/** What the sandbox makes itself: a shared root's own are not shown (its /sys least of all). */
const SANDBOX_MADE = new Set(["proc", "dev", "tmp", "sys"]);
/** The host's name resolution, so a build reaches the network it is allowed to. */
const HOST_NETWORK_FILES = ["resolv.conf", "hosts"];

/**
 * The bubblewrap arguments that show a shared root read-only: a tmpfs `/` (where mount points can
 * be made) with each top-level entry bound, except those the sandbox makes or mounts over; `/etc`
 * entry by entry, so the host's resolv.conf and hosts can be added to it.
 */
function sharedRootArgs(root: string, mounts: readonly BindMount[]): string[] {
  const mounted = new Set(mounts.map((mount) => posix.normalize(mount.destination)));
  const top = readdirSync(root, { withFileTypes: true }).filter(
    ({ name }) => !SANDBOX_MADE.has(name) && !mounted.has(`/${name}`),
  );
  const etc = join(root, "etc");
  // An /etc that is a link or a file is shown as it is, and gets nothing of the host's.
  const etcIsDirectory = top.some((entry) => entry.name === "etc" && entry.isDirectory());
  const args = [
    "--tmpfs",
    "/",
    ...shownEntries(root, "/", etcIsDirectory ? top.filter(({ name }) => name !== "etc") : top),
  ];
  if (!etcIsDirectory) return args;
  const own = readdirSync(etc, { withFileTypes: true }).filter(
    ({ name }) => !HOST_NETWORK_FILES.includes(name),
  );
  args.push("--dir", "/etc", ...shownEntries(etc, "/etc", own));
  for (const name of HOST_NETWORK_FILES) {
    const host = realpathOrUndefined(`/etc/${name}`);
    if (host !== undefined) args.push("--ro-bind", host, `/etc/${name}`);
  }
  return args;
}

function realpathOrUndefined(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
}

/** Any root, and the only runner for the host's OS and shared roots, which it shows read-only. */
export class BubblewrapRuntime implements ContainerRuntime {
  readonly name = "bubblewrap";

  constructor(private readonly bwrap: string) {}

  static async find(): Promise<BubblewrapRuntime> {
    return new BubblewrapRuntime(
      await findProgram("bwrap", { pkg: "bubblewrap", what: "Cannot run the sandbox" }),
    );
  }

  args(process: SandboxProcess): string[] {
    const mounts = process.mounts ?? [];
    const ids =
      process.userNamespace === false
        ? []
        : ["--unshare-user", "--uid", String(process.uid ?? 0), "--gid", String(process.gid ?? 0)];
    const args = [
      ...ids,
      "--unshare-pid",
      "--unshare-ipc",
      "--unshare-uts",
      ...(process.network === "none" ? ["--unshare-net"] : []),
      "--die-with-parent",
      // A new session keeps a sandboxed process from pushing input into the caller's terminal.
      ...(process.terminal ? [] : ["--new-session"]),
      "--hostname",
      process.hostname ?? "locald",
    ];
    if (process.root === "host") {
      // The host's OS, read-only, over a tmpfs where the mount points can be made.
      args.push(...hostOsArgs());
    } else if (typeof process.root === "object") {
      args.push(...sharedRootArgs(process.root.shared, mounts));
    } else {
      prepareMountPoints(process.root, ["/proc", "/dev", "/tmp", ...mounts.map((m) => m.destination)]);
      args.push("--bind", process.root, "/");
    }
    // /tmp for every user of the sandbox, as on any host (bwrap makes it 0755 otherwise).
    args.push("--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp");
    for (const mount of mounts)
      args.push(mount.readonly ? "--ro-bind" : "--bind", mount.source, mount.destination);
    // The tmpfs under the host's OS or a shared root held only mount points: as read-only as the rest.
    if (typeof process.root !== "string" || process.root === "host") args.push("--remount-ro", "/");
    args.push("--chdir", process.cwd, "--clearenv");
    for (const pair of process.env) {
      const eq = pair.indexOf("=");
      if (eq > 0) args.push("--setenv", pair.slice(0, eq), pair.slice(eq + 1));
    }
    args.push("--", ...process.args);
    return args;
  }

  async run(process: SandboxProcess): Promise<number> {
    // bwrap reports on fd 3 once the sandboxed process runs: an exit without that report is
    // bwrap's own failure (no user namespaces, a bad mount), not the process's exit code.
    const child = spawn(this.bwrap, ["--json-status-fd", "3", ...this.args(process)], {
      stdio: [...stdioOf(process), "pipe"],
    });
    let status = "";
    child.stdio[3]?.on("data", (chunk: Buffer) => {
      status += chunk.toString("utf8");
    });
    let said = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      if (said.length < 64 * 1024) said += chunk.toString("utf8");
    });
    pipeOutput(child, process.output);
    const code = await waitForRuntime(child, "bubblewrap");
    if (!status.includes('"child-pid"')) throw sandboxSetupError(said);
    return code;
  }

  async start(process: Omit<SandboxProcess, "terminal">): Promise<SandboxHandle> {
    const child = spawn(this.bwrap, this.args(process), { stdio: [...stdioOf(process)], detached: true });
    pipeOutput(child, process.output);
    const exited = waitForRuntime(child, "bubblewrap", false);
    return {
      exited,
      kill: (signal) => {
        if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
        // bwrap passes no signal on; SIGKILL of bwrap ends the rest (--die-with-parent).
        if (signal === "SIGKILL") child.kill("SIGKILL");
        else for (const pid of sandboxedProcesses(child.pid)) trySignal(pid, signal);
      },
    };
  }
}

/** What to change where the kernel forbids unprivileged user namespaces (also `locald doctor`'s fix). */
export const USER_NAMESPACE_HINT =
  "Builds and sandboxes run in user namespaces, which this machine forbids unprivileged users. Enable them " +
  "(Debian: sysctl -w kernel.unprivileged_userns_clone=1; any: user.max_user_namespaces > 0; Ubuntu 24.04+: " +
  "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap), or run locald as root.";

/** bubblewrap failed before running anything: what it said, and what to do about the usual cause. */
function sandboxSetupError(stderr: string): RuntimeError {
  const said = stderr
    .split("\n")
    .filter((line) => line.startsWith("bwrap: "))
    .map((line) => line.slice("bwrap: ".length))
    .join("; ");
  const why = said || "its message is above";
  if (/namespace|uid map|gid map|setgroups/i.test(said))
    return new RuntimeError(
      `The sandbox could not be set up: bubblewrap cannot create a user namespace here (${why}).`,
      { hint: USER_NAMESPACE_HINT },
    );
  return new RuntimeError(`The sandbox could not be set up: bubblewrap failed (${why}).`, {
    hint: "Run again with --verbose; if the message names a path, check that it exists and is readable.",
  });
}

function trySignal(pid: number, signal: NodeJS.Signals): void {
  try {
    globalThis.process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** The processes under a bwrap process (/proc parent links), without bwrap's own two. */
function sandboxedProcesses(bwrapPid: number): number[] {
  const children = new Map<number, number[]>();
  const names = new Map<number, string>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue;
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses.
    const close = stat.lastIndexOf(")");
    const ppid = Number(stat.slice(close + 2).split(" ")[1]);
    const pid = Number(entry);
    names.set(pid, stat.slice(stat.indexOf("(") + 1, close));
    children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  }
  const found: number[] = [];
  const walk = (pid: number, depth: number) => {
    for (const child of children.get(pid) ?? []) {
      // The outer bwrap forks the namespace's init (bwrap too); everything below is the sandbox's.
      if (!(depth === 0 && names.get(child) === "bwrap")) found.push(child);
      walk(child, depth + 1);
    }
  };
  walk(bwrapPid, 0);
  return found;
}
