import { isAbsolute, posix } from "node:path";
import type { ContainerConfig } from "../config.js";
import { ContainerConfigError } from "../errors.js";
import { readFileInRoot } from "../unpack/index.js";

/**
 * The OCI runtime spec (`config.json`) for one container, from an image config and `docker run`
 * style options. Pure apart from reading `/etc/passwd` and `/etc/group` inside the rootfs, which
 * goes through `readFileInRoot` so that a symlinked `/etc/passwd` never reads a host file.
 */

/** The part of the OCI runtime spec (v1.0.2) that locald writes. */
export interface RuntimeSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: Record<"bounding" | "effective" | "permitted", string[]>;
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: RuntimeMount[];
  linux: {
    namespaces: Array<{ type: string }>;
    uidMappings?: IdMapping[];
    gidMappings?: IdMapping[];
    maskedPaths: string[];
    readonlyPaths: string[];
    cgroupsPath?: string;
  };
}

export interface RuntimeMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/** A range of subordinate ids: `start` on the host, `count` of them. */
export interface IdRange {
  start: number;
  count: number;
}

export interface IdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

/** `-v host:container[:ro|rw]`. */
export interface BindMount {
  source: string;
  destination: string;
  readonly: boolean;
}

export interface ContainerOptions {
  /** `--entrypoint`: replaces the image's (and drops its Cmd); "" clears it. */
  entrypoint?: string;
  /** The trailing command: replaces the image's Cmd. */
  command?: readonly string[];
  /** `-e K=V` (or `-e K`: taken from `hostEnv`), after `envFileLines`. */
  env?: readonly string[];
  /** Lines of `--env-file` files, in order. */
  envFileLines?: readonly string[];
  /** `-w` */
  workdir?: string;
  /** `-u uid[:gid]` or `name[:group]` */
  user?: string;
  hostname?: string;
  /** `-t` */
  tty?: boolean;
  volumes?: readonly BindMount[];
  /**
   * Run in a user namespace (no cgroups, no devices): the caller is root inside, and the
   * caller's subordinate ids (`/etc/subuid`, `/etc/subgid`, mapped by newuidmap) are 1… .
   */
  rootless?: { uid: number; gid: number; subuids?: IdRange; subgids?: IdRange };
  /** The host's environment, for `-e NAME` without a value. */
  hostEnv?: NodeJS.ProcessEnv;
  /** Host files bind-mounted read-only (default the host's own). */
  resolvConf?: string;
  hosts?: string;
}

/** Docker's default PATH, used when the image sets none. */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Docker's default capability set. */
export const DEFAULT_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

const MASKED_PATHS = [
  "/proc/asound",
  "/proc/acpi",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
  "/sys/devices/virtual/powercap",
];

const READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/** Docker's rules: `--entrypoint` replaces the entrypoint and drops the image's Cmd. */
export function processArgs(
  config: ContainerConfig,
  options: Pick<ContainerOptions, "entrypoint" | "command">,
): string[] {
  const command =
    options.command !== undefined && options.command.length > 0 ? [...options.command] : undefined;
  let entrypoint: string[];
  let cmd: string[];
  if (options.entrypoint !== undefined) {
    entrypoint = options.entrypoint === "" ? [] : [options.entrypoint];
    cmd = command ?? [];
  } else {
    entrypoint = config.Entrypoint ?? [];
    cmd = command ?? config.Cmd ?? [];
  }
  const args = [...entrypoint, ...cmd];
  if (args.length === 0)
    throw new ContainerConfigError("The image has no Entrypoint or Cmd, and no command was given.", {
      hint: "Add the command to run after the image name, e.g. `locald container run IMAGE sh`.",
    });
  return args;
}

/** `-v host:container[:ro|rw]`; the host path must be absolute, the container path too. */
export function parseVolume(spec: string): BindMount {
  const parts = spec.split(":");
  const mode = parts.length === 3 ? parts[2] : undefined;
  const [source, destination] = parts;
  if (
    parts.length < 2 ||
    parts.length > 3 ||
    !source ||
    !destination ||
    (mode !== undefined && mode !== "ro" && mode !== "rw")
  )
    throw new ContainerConfigError(`Invalid volume "${spec}": expected HOST:CONTAINER[:ro|rw].`);
  if (!isAbsolute(source) || !destination.startsWith("/"))
    throw new ContainerConfigError(`Invalid volume "${spec}": both paths must be absolute.`, {
      hint: "Named volumes are not supported; give a host directory such as $PWD/data.",
    });
  return { source, destination: posix.normalize(destination), readonly: mode === "ro" };
}

/** Lines of an env file: `K=V`, or `K` to take the host's value; `#` comments and blanks skipped. */
export function envFileLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

/** Image env, then defaults it lacks, then env files, then `-e`; a later name wins in place. */
export function mergeEnv(
  imageEnv: readonly string[],
  overrides: readonly string[],
  hostEnv: NodeJS.ProcessEnv,
  defaults: Record<string, string>,
): string[] {
  const merged = new Map<string, string>();
  const set = (entry: string) => {
    const eq = entry.indexOf("=");
    if (eq === 0) throw new ContainerConfigError(`Invalid environment entry "${entry}": the name is empty.`);
    if (eq > 0) {
      merged.set(entry.slice(0, eq), entry.slice(eq + 1));
      return;
    }
    const value = hostEnv[entry];
    if (value !== undefined) merged.set(entry, value);
  };
  for (const entry of imageEnv) set(entry);
  for (const [name, value] of Object.entries(defaults)) if (!merged.has(name)) merged.set(name, value);
  for (const entry of overrides) set(entry);
  return [...merged].map(([name, value]) => `${name}=${value}`);
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

function parseColonFile<T>(text: string | undefined, parse: (fields: string[]) => T | undefined): T[] {
  if (text === undefined) return [];
  const entries: T[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "" || line.startsWith("#")) continue;
    const entry = parse(line.split(":"));
    if (entry !== undefined) entries.push(entry);
  }
  return entries;
}

const numeric = (value: string | undefined) =>
  value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;

function readPasswd(rootfs: string): PasswdEntry[] {
  return parseColonFile(readFileInRoot(rootfs, "/etc/passwd")?.toString("utf8"), (f) => {
    const uid = numeric(f[2]);
    const gid = numeric(f[3]);
    if (!f[0] || uid === undefined || gid === undefined) return undefined;
    return { name: f[0], uid, gid, home: f[5] || "/" };
  });
}

function readGroups(rootfs: string): GroupEntry[] {
  return parseColonFile(readFileInRoot(rootfs, "/etc/group")?.toString("utf8"), (f) => {
    const gid = numeric(f[2]);
    if (!f[0] || gid === undefined) return undefined;
    return { name: f[0], gid, members: (f[3] ?? "").split(",").filter(Boolean) };
  });
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

/**
 * `uid`, `uid:gid`, `name` or `name:group` (empty means root), with names looked up in the
 * image's own `/etc/passwd` and `/etc/group`, read inside the rootfs.
 */
export function resolveUser(rootfs: string, spec: string | undefined): ResolvedUser {
  const [userPart = "", groupPart] = (spec ?? "").split(":");
  const passwd = readPasswd(rootfs);
  let uid: number;
  let entry: PasswdEntry | undefined;
  if (userPart === "") {
    uid = 0;
    entry = passwd.find((e) => e.uid === 0);
  } else if (numeric(userPart) !== undefined) {
    uid = numeric(userPart) as number;
    entry = passwd.find((e) => e.uid === uid);
  } else {
    entry = passwd.find((e) => e.name === userPart);
    if (entry === undefined)
      throw new ContainerConfigError(`No user "${userPart}" in the image's /etc/passwd.`, {
        hint: "Give a numeric uid with -u, or a user the image defines.",
      });
    uid = entry.uid;
  }
  const groups = readGroups(rootfs);
  let gid: number;
  if (groupPart === undefined || groupPart === "") gid = entry?.gid ?? 0;
  else if (numeric(groupPart) !== undefined) gid = numeric(groupPart) as number;
  else {
    const group = groups.find((g) => g.name === groupPart);
    if (group === undefined)
      throw new ContainerConfigError(`No group "${groupPart}" in the image's /etc/group.`, {
        hint: "Give a numeric gid, or a group the image defines.",
      });
    gid = group.gid;
  }
  const additionalGids =
    entry === undefined
      ? []
      : [...new Set(groups.filter((g) => g.members.includes(entry.name) && g.gid !== gid).map((g) => g.gid))];
  return { uid, gid, additionalGids, home: entry?.home ?? "/" };
}

function idMappings(caller: number, range: IdRange | undefined): IdMapping[] {
  return [
    { containerID: 0, hostID: caller, size: 1 },
    ...(range === undefined ? [] : [{ containerID: 1, hostID: range.start, size: range.count }]),
  ];
}

/** Without subordinate ids only root exists inside: another user is an error, not a silent root. */
function unmappable(
  user: ResolvedUser,
  rootless: NonNullable<ContainerOptions["rootless"]>,
  spec: string | undefined,
): void {
  const uidLimit = rootless.subuids?.count ?? 0;
  const gidLimit = rootless.subgids?.count ?? 0;
  if (user.uid <= uidLimit && [user.gid, ...user.additionalGids].every((gid) => gid <= gidLimit)) return;
  throw new ContainerConfigError(
    `Cannot run as user "${spec}" without root: uid ${user.uid}, gid ${user.gid} are outside this user's ` +
      `subordinate ids (${uidLimit === 0 ? "none" : `${uidLimit} uids`}, ${gidLimit === 0 ? "none" : `${gidLimit} gids`}).`,
    {
      hint:
        "Give your user subordinate ids (as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 <you>) " +
        "and install newuidmap (Debian: apt-get install uidmap), or run as root inside the container (-u 0).",
    },
  );
}

/** The runtime spec for `rootfs` (the bundle's `rootfs` directory) and these options. */
export function runtimeSpec(
  config: ContainerConfig,
  rootfs: string,
  options: ContainerOptions = {},
): RuntimeSpec {
  const args = processArgs(config, options);
  const user = resolveUser(rootfs, options.user ?? config.User);
  const hostname = options.hostname ?? "locald";
  const env = mergeEnv(
    config.Env ?? [],
    [...(options.envFileLines ?? []), ...(options.env ?? [])],
    options.hostEnv ?? process.env,
    {
      PATH: DEFAULT_PATH,
      HOSTNAME: hostname,
      HOME: user.home,
      ...(options.tty ? { TERM: "xterm" } : {}),
    },
  );
  const cwd = options.workdir ?? (config.WorkingDir || "/");
  if (!cwd.startsWith("/"))
    throw new ContainerConfigError(`The working directory "${cwd}" is not an absolute path.`);
  const rootless = options.rootless !== undefined;
  if (options.rootless !== undefined) unmappable(user, options.rootless, options.user ?? config.User);
  const capabilities = user.uid === 0 ? DEFAULT_CAPABILITIES : [];
  const mounts: RuntimeMount[] = [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    {
      destination: "/dev",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
      destination: "/dev/pts",
      type: "devpts",
      source: "devpts",
      // A user namespace cannot map gid 5 (tty) unless it owns it.
      options: [
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
        ...(rootless ? [] : ["gid=5"]),
      ],
    },
    {
      destination: "/dev/shm",
      type: "tmpfs",
      source: "shm",
      options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    // sysfs cannot be mounted from a user namespace that does not own the network namespace.
    rootless
      ? {
          destination: "/sys",
          type: "none",
          source: "/sys",
          options: ["rbind", "nosuid", "noexec", "nodev", "ro"],
        }
      : { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777"] },
    {
      destination: "/etc/resolv.conf",
      type: "bind",
      source: options.resolvConf ?? "/etc/resolv.conf",
      options: ["rbind", "ro", "nosuid", "nodev"],
    },
    {
      destination: "/etc/hosts",
      type: "bind",
      source: options.hosts ?? "/etc/hosts",
      options: ["rbind", "ro", "nosuid", "nodev"],
    },
    ...(options.volumes ?? []).map((volume) => ({
      destination: volume.destination,
      type: "bind",
      source: volume.source,
      options: ["rbind", volume.readonly ? "ro" : "rw"],
    })),
  ];
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: options.tty === true,
      user: {
        uid: user.uid,
        gid: user.gid,
        ...(user.additionalGids.length > 0 ? { additionalGids: user.additionalGids } : {}),
      },
      args,
      env,
      cwd,
      capabilities: { bounding: DEFAULT_CAPABILITIES, effective: capabilities, permitted: capabilities },
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: false },
    hostname,
    mounts,
    linux: {
      // The host's network: locald runs no bridge; the host's resolv.conf and hosts come along.
      namespaces: [
        { type: "pid" },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
        ...(rootless ? [{ type: "user" }] : []),
      ],
      ...(options.rootless
        ? {
            uidMappings: idMappings(options.rootless.uid, options.rootless.subuids),
            gidMappings: idMappings(options.rootless.gid, options.rootless.subgids),
          }
        : {}),
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
    },
  };
}
