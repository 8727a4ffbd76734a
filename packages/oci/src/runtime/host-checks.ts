import { execFile } from "node:child_process";
import { constants, readdirSync, readFileSync, type Stats } from "node:fs";
import { access, stat } from "node:fs/promises";
import { userInfo } from "node:os";
import { dirname, join } from "node:path";
import { freeBytes } from "../disk-space.js";
import { AuthenticationError, NetworkError, OciError } from "../errors.js";
import { programOnPath } from "../programs.js";
import { formatReference, parseReference } from "../reference.js";
import { type ClientOptions, clientFor, dockerConfigCredentials } from "../registry/index.js";
import { defaultDataDir } from "../store/index.js";
import { defaultRootfsCacheDir, zstdDecoders } from "../unpack/index.js";
import { BubblewrapRuntime, USER_NAMESPACE_HINT } from "./bubblewrap-runtime.js";
import { findProgram, findRunc, subordinateIds } from "./runtime.js";
import type { IdRange } from "./runtime-spec.js";

/**
 * `locald doctor`: what this machine offers locald, judged. Gathering (`hostFacts`) is all the
 * I/O; judging (`judgeHost`) is pure, so every verdict and its wording is tested with made-up
 * machines. Gathering never throws: what cannot be read is a fact too.
 */

/** ok: works; warn: works, with less (said what); fail: something locald does will not work. */
export type CheckStatus = "ok" | "warn" | "fail";

export interface HostCheck {
  readonly check: string;
  readonly status: CheckStatus;
  readonly detail: string;
  /** What to do, in words; only for warn and fail. */
  readonly fix?: string;
}

/** A program found (with what `--version` said), or the library's refusal when it is not. */
export type ProgramFact =
  | { readonly path: string; readonly version: string | undefined }
  | { readonly missing: string; readonly hint: string | undefined };

export interface CgroupFacts {
  /** unified: cgroup v2 alone; hybrid: v1 controllers beside an empty v2 tree; legacy: v1 alone. */
  readonly mode: "unified" | "hybrid" | "legacy" | "none";
  /** The caller's cgroup in the v2 tree (`0::` of /proc/self/cgroup). */
  readonly own: string | undefined;
  /** The nearest cgroup at or above the caller's that the caller owns: delegated to it. */
  readonly delegated: { readonly path: string; readonly controllers: readonly string[] } | undefined;
  /** The tree can be written (as root, runc makes each container's cgroup in it). */
  readonly writable: boolean;
}

export interface DiskFact {
  /** What lives there: "store" (LOCALD_HOME) or "unpack cache". */
  readonly role: string;
  readonly path: string;
  /** The nearest directory that exists: `path` itself, or where it will be made. */
  readonly existing: string;
  readonly free: number | undefined;
  readonly writable: boolean;
}

export interface HostFacts {
  readonly caller: { readonly uid: number; readonly name: string | undefined; readonly root: boolean };
  /** /proc/sys values as read; undefined where this kernel has no such setting. */
  readonly sysctls: {
    readonly unprivilegedUsernsClone?: string | undefined;
    readonly maxUserNamespaces?: string | undefined;
    readonly apparmorRestrictUnprivilegedUserns?: string | undefined;
  };
  /** bubblewrap making a user namespace the way builds do; undefined when there is no bubblewrap. */
  readonly userNamespaceProbe:
    | { readonly ok: true }
    | { readonly ok: false; readonly message: string; readonly hint: string | undefined }
    | undefined;
  readonly subordinate: {
    readonly subuids: IdRange | undefined;
    readonly subgids: IdRange | undefined;
    /** Every range of /etc/subuid and /etc/subgid, anyone's: a suggested range must miss them. */
    readonly taken: readonly IdRange[];
    readonly newuidmap: string | undefined;
    readonly newgidmap: string | undefined;
  };
  readonly runc: ProgramFact;
  /** `LOCALD_RUNC`, when set: where runc is looked for instead of PATH. */
  readonly runcPreferred: string | undefined;
  readonly bwrap: ProgramFact;
  readonly cgroup: CgroupFacts;
  readonly disks: readonly DiskFact[];
  readonly zstd: { readonly program: string | undefined; readonly native: boolean; readonly node: string };
}

const GiB = 1024 ** 3;
/** Below these, free space under LOCALD_HOME is a warning, then a failure. */
export const DISK_WARN_BYTES = 5 * GiB;
export const DISK_FAIL_BYTES = 1 * GiB;

/** Gathers the facts and judges them: one check per line. */
export async function checkHost(env: NodeJS.ProcessEnv = process.env): Promise<HostCheck[]> {
  return judgeHost(await hostFacts(env));
}

/** Judges gathered facts; pure. */
export function judgeHost(facts: HostFacts): HostCheck[] {
  return [
    userNamespaceCheck(facts),
    subordinateIdCheck(facts),
    runcCheck(facts),
    bubblewrapCheck(facts),
    cgroupCheck(facts),
    ...facts.disks.map(diskCheck),
    zstdCheck(facts),
    {
      check: "go",
      status: "ok",
      detail:
        "not needed: builders bring their own lifecycle; only scripts/demo.sh and the tests build one from source",
    },
  ];
}

const who = (facts: HostFacts) => facts.caller.name ?? `uid ${facts.caller.uid}`;

/** Settings that forbid this caller user namespaces outright (AppArmor's restriction depends on profiles). */
function forbiddingSysctls(facts: HostFacts): string[] {
  const { sysctls, caller } = facts;
  const found: string[] = [];
  if (sysctls.maxUserNamespaces === "0") found.push("user.max_user_namespaces = 0");
  // Debian's switch binds only callers without CAP_SYS_ADMIN.
  if (!caller.root && sysctls.unprivilegedUsernsClone === "0")
    found.push("kernel.unprivileged_userns_clone = 0");
  return found;
}

function sysctlsSaid(facts: HostFacts): string[] {
  const { sysctls } = facts;
  return [
    sysctls.unprivilegedUsernsClone === undefined
      ? undefined
      : `kernel.unprivileged_userns_clone = ${sysctls.unprivilegedUsernsClone}`,
    sysctls.maxUserNamespaces === undefined
      ? undefined
      : `user.max_user_namespaces = ${sysctls.maxUserNamespaces}`,
    sysctls.apparmorRestrictUnprivilegedUserns === undefined
      ? undefined
      : `kernel.apparmor_restrict_unprivileged_userns = ${sysctls.apparmorRestrictUnprivilegedUserns}`,
  ].filter((s) => s !== undefined);
}

export function userNamespaceCheck(facts: HostFacts): HostCheck {
  const check = "user namespaces";
  const probe = facts.userNamespaceProbe;
  const said = sysctlsSaid(facts);
  const summary = said.length === 0 ? "" : ` (${said.join(", ")})`;
  if (probe?.ok === true)
    return { check, status: "ok", detail: `bubblewrap made one as ${who(facts)}, as builds do${summary}` };
  if (probe !== undefined)
    return {
      check,
      status: "fail",
      detail: `${probe.message}${said.length > 0 ? ` The kernel's settings: ${said.join(", ")}.` : ""}`,
      fix: probe.hint ?? USER_NAMESPACE_HINT,
    };
  const forbidding = forbiddingSysctls(facts);
  if (forbidding.length > 0)
    return {
      check,
      status: "fail",
      detail: `forbidden to ${who(facts)}: ${forbidding.join(", ")}; builds and sandboxes cannot run`,
      fix: USER_NAMESPACE_HINT,
    };
  return {
    check,
    status: "warn",
    detail: `not tried, as bubblewrap is missing; no kernel setting forbids them outright${summary}`,
    fix: "Install bubblewrap (see its line) and run locald doctor again.",
  };
}

/** A range of `size` ids from 100000 (useradd's SUB_UID_MIN) up that overlaps none taken. */
export function freeSubordinateRange(taken: readonly IdRange[], size = 65536): IdRange {
  let start = 100000;
  // In order of start, a range that overlaps the candidate moves it past its end; none before it can.
  for (const range of [...taken].sort((a, b) => a.start - b.start))
    if (range.start < start + size && range.start + range.count > start) start = range.start + range.count;
  return { start, count: size };
}

const span = (range: IdRange) => `${range.start}–${range.start + range.count - 1}`;

export function subordinateIdCheck(facts: HostFacts): HostCheck {
  const check = "subordinate ids";
  if (facts.caller.root)
    return {
      check,
      status: "ok",
      detail: "not needed as root: runc keeps the image's own ids, and builds map the build user alone",
    };
  const { subuids, subgids, newuidmap, newgidmap } = facts.subordinate;
  const lacking = [
    ...(subuids === undefined ? ["no range in /etc/subuid"] : []),
    ...(subgids === undefined ? ["no range in /etc/subgid"] : []),
    ...(newuidmap === undefined ? ["no newuidmap"] : []),
    ...(newgidmap === undefined ? ["no newgidmap"] : []),
  ];
  if (lacking.length === 0 && subuids !== undefined && subgids !== undefined)
    return {
      check,
      status: "ok",
      detail: `uids ${span(subuids)} and gids ${span(subgids)} for ${who(facts)}; newuidmap and newgidmap present`,
    };
  const free = freeSubordinateRange(facts.subordinate.taken);
  const ids = `${free.start}-${free.start + free.count - 1}`;
  const fixes = [
    ...(subuids === undefined || subgids === undefined
      ? [
          `As root: usermod --add-subuids ${ids} --add-subgids ${ids} ${facts.caller.name ?? "<your user name>"}.`,
        ]
      : []),
    ...(newuidmap === undefined || newgidmap === undefined
      ? [
          "Install newuidmap and newgidmap (Debian/Ubuntu: apt-get install uidmap; Fedora: dnf install shadow-utils).",
        ]
      : []),
  ];
  return {
    check,
    status: "warn",
    detail:
      `${lacking.join(", ")} for ${who(facts)}. Without them containers run rootless with only your own id ` +
      "mapped (root inside): images whose process runs as another user are refused. Builds are unaffected.",
    fix: fixes.join(" "),
  };
}

const versionOf = (version: string | undefined) => version ?? "version unknown";

export function runcCheck(facts: HostFacts): HostCheck {
  const check = "runc";
  const what = "runs images: container run, container services of up, devcontainer";
  const runc = facts.runc;
  if ("path" in runc)
    return { check, status: "ok", detail: `${runc.path}, ${versionOf(runc.version)}; ${what}` };
  return {
    check,
    status: "fail",
    detail: `${runc.missing} It ${what}.`,
    fix:
      facts.runcPreferred !== undefined
        ? `LOCALD_RUNC names ${facts.runcPreferred}: point it at the runc program, or unset it. ${runc.hint ?? "Install runc."}`
        : (runc.hint ?? "Install runc."),
  };
}

export function bubblewrapCheck(facts: HostFacts): HostCheck {
  const check = "bubblewrap";
  const what = "runs builds and their phases: build, exec, shell, up, devcontainer";
  const bwrap = facts.bwrap;
  if ("path" in bwrap)
    return { check, status: "ok", detail: `${bwrap.path}, ${versionOf(bwrap.version)}; ${what}` };
  return {
    check,
    status: "fail",
    detail: `${bwrap.missing} It ${what}.`,
    fix: bwrap.hint ?? "Install bubblewrap.",
  };
}

const V1_RETIRING =
  "cgroup v1 is being retired (systemd 256 refuses to boot on it by default); boot with " +
  "systemd.unified_cgroup_hierarchy=1 on the kernel command line for cgroup v2.";

export function cgroupCheck(facts: HostFacts): HostCheck {
  const check = "cgroups";
  const { cgroup, caller } = facts;
  const version =
    cgroup.mode === "unified"
      ? "cgroup v2"
      : cgroup.mode === "hybrid"
        ? "cgroup v1 (hybrid: the v2 tree holds no controllers)"
        : "cgroup v1";
  if (caller.root) {
    if (cgroup.mode === "none" || !cgroup.writable)
      return {
        check,
        status: "fail",
        detail:
          cgroup.mode === "none"
            ? "no cgroup filesystem at /sys/fs/cgroup: runc cannot run containers as root"
            : `${version}, but /sys/fs/cgroup cannot be written: runc cannot make a container's cgroup as root`,
        fix:
          "Mount cgroup2 at /sys/fs/cgroup read-write (in a container: give it a cgroup namespace of its own, " +
          "e.g. docker run --cgroupns=private), or run locald as an unprivileged user, whose containers need no cgroup.",
      };
    if (cgroup.mode === "unified")
      return {
        check,
        status: "ok",
        detail: `${version}; as root runc gives each container a cgroup of its own`,
      };
    return {
      check,
      status: "warn",
      detail: `${version}; runc still gives each container a cgroup of its own as root`,
      fix: V1_RETIRING,
    };
  }
  const lost =
    "rootless containers cannot have a cgroup of their own: no memory or CPU limits and no accounting apart " +
    `from your other processes (locald sets no limits today, so containers run the same)`;
  if (cgroup.mode !== "unified")
    return {
      check,
      status: "warn",
      detail: `${cgroup.mode === "none" ? "no cgroup filesystem" : version}, which cannot be delegated to ${who(facts)}: ${lost}`,
      fix: cgroup.mode === "none" ? "Mount cgroup2 at /sys/fs/cgroup." : V1_RETIRING,
    };
  if (cgroup.delegated !== undefined) {
    const controllers = cgroup.delegated.controllers;
    return {
      check,
      status: "ok",
      detail: `${version}, delegated to ${who(facts)} at ${cgroup.delegated.path} (controllers: ${controllers.length > 0 ? controllers.join(" ") : "none"})`,
    };
  }
  return {
    check,
    status: "warn",
    detail: `${version}, not delegated to ${who(facts)} (its cgroup ${cgroup.own ?? "is unknown"}${cgroup.own === undefined ? "" : " is not its own"}): ${lost}`,
    fix:
      "Run locald in a systemd user session, whose user@UID.service is delegated (log in through systemd, or " +
      "loginctl enable-linger <user>), or start it with: systemd-run --user --scope -p Delegate=yes locald …",
  };
}

const gib = (bytes: number) => `${(bytes / GiB).toFixed(1)} GiB`;

export function diskCheck(disk: DiskFact): HostCheck {
  const check = `disk space (${disk.role})`;
  const where = disk.existing === disk.path ? disk.path : `${disk.path} (to be made under ${disk.existing})`;
  const free =
    "Free some space (locald image prune removes unused images), or set LOCALD_HOME to a larger disk.";
  if (!disk.writable)
    return {
      check,
      status: "fail",
      detail: `${where} cannot be written by this user`,
      fix: "Set LOCALD_HOME to a directory you own, or fix the owner and mode of that path.",
    };
  if (disk.free === undefined)
    return {
      check,
      status: "warn",
      detail: `${where}: the free space could not be read`,
      fix: "Check the disk with df.",
    };
  if (disk.free < DISK_FAIL_BYTES)
    return {
      check,
      status: "fail",
      detail: `${gib(disk.free)} free at ${where}, under ${gib(DISK_FAIL_BYTES)}: pulls and builds will run out`,
      fix: free,
    };
  if (disk.free < DISK_WARN_BYTES)
    return {
      check,
      status: "warn",
      detail: `${gib(disk.free)} free at ${where}, under ${gib(DISK_WARN_BYTES)}: a builder and a few images may not fit`,
      fix: free,
    };
  return { check, status: "ok", detail: `${gib(disk.free)} free at ${where}` };
}

export function zstdCheck(facts: HostFacts): HostCheck {
  const check = "zstd";
  const { program, native, node } = facts.zstd;
  if (program !== undefined)
    return {
      check,
      status: "ok",
      detail: `${program}${native ? ` (Node ${node} has zstd of its own too)` : ""}; zstd layers are decompressed by it`,
    };
  if (native) return { check, status: "ok", detail: `in-process: Node ${node} has zstd of its own` };
  return {
    check,
    status: "warn",
    detail: `no zstd program on PATH, and Node ${node} has none of its own: images with zstd layers cannot be unpacked (gzip layers, most images, can)`,
    fix: "Install the zstd program (Debian/Ubuntu: apt-get install zstd), or use Node ≥ 22.15.",
  };
}

// ---- gathering: the machine's side

function readTrimmed(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

async function found(path: string, first: RegExp): Promise<ProgramFact> {
  const version = await new Promise<string | undefined>((resolve) => {
    execFile(path, ["--version"], { timeout: 5000, encoding: "utf8" }, (error, stdout) =>
      resolve(error ? undefined : stdout.match(first)?.[1]),
    );
  });
  return { path, version };
}

async function program(find: () => Promise<string>, version: RegExp): Promise<ProgramFact> {
  try {
    return await found(await find(), version);
  } catch (error) {
    if (!(error instanceof OciError)) throw error;
    return { missing: error.message, hint: error.hint };
  }
}

async function probeUserNamespace(bwrap: ProgramFact): Promise<HostFacts["userNamespaceProbe"]> {
  if (!("path" in bwrap)) return undefined;
  try {
    const code = await new BubblewrapRuntime(bwrap.path).run({
      root: "host",
      args: ["true"],
      env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
      cwd: "/",
      output: () => {},
    });
    return code === 0
      ? { ok: true }
      : { ok: false, message: `A sandboxed true exited with ${code}.`, hint: undefined };
  } catch (error) {
    if (!(error instanceof OciError)) throw error;
    return { ok: false, message: error.message, hint: error.hint };
  }
}

function allSubordinateRanges(): IdRange[] {
  const ranges: IdRange[] = [];
  for (const file of ["/etc/subuid", "/etc/subgid"])
    for (const line of (readTrimmed(file) ?? "").split("\n")) {
      const [, start, count] = line.trim().split(":");
      const range = { start: Number(start), count: Number(count) };
      if (Number.isSafeInteger(range.start) && Number.isSafeInteger(range.count) && range.count > 0)
        ranges.push(range);
    }
  return ranges;
}

async function writable(path: string): Promise<boolean> {
  return access(path, constants.W_OK).then(
    () => true,
    () => false,
  );
}

const CGROUP_ROOT = "/sys/fs/cgroup";

async function cgroupFacts(uid: number): Promise<CgroupFacts> {
  const own = readTrimmed("/proc/self/cgroup")
    ?.split("\n")
    .find((line) => line.startsWith("0::"))
    ?.slice(3);
  let mode: CgroupFacts["mode"];
  let v1Hierarchies: string[] = [];
  if (readTrimmed(join(CGROUP_ROOT, "cgroup.controllers")) !== undefined) mode = "unified";
  else {
    try {
      v1Hierarchies = readdirSync(CGROUP_ROOT, { withFileTypes: true })
        .filter((entry) => entry.isDirectory() && entry.name !== "unified")
        .map((entry) => join(CGROUP_ROOT, entry.name));
    } catch {
      // nothing mounted there
    }
    mode =
      v1Hierarchies.length === 0
        ? "none"
        : readTrimmed(join(CGROUP_ROOT, "unified", "cgroup.controllers")) !== undefined
          ? "hybrid"
          : "legacy";
  }
  const canWrite =
    mode === "unified"
      ? await writable(CGROUP_ROOT)
      : mode === "none"
        ? false
        : (await Promise.all(v1Hierarchies.map(writable))).every(Boolean);
  let delegated: CgroupFacts["delegated"];
  if (mode === "unified" && own !== undefined && uid !== 0) {
    // systemd delegates user@UID.service (and what is below it) by giving it to the user.
    for (let path = own; path !== "/" && path !== "." && path !== ""; path = dirname(path)) {
      const dir = join(CGROUP_ROOT, path);
      const info = await stat(dir).catch(() => undefined);
      if (info?.uid === uid && (await writable(join(dir, "cgroup.procs")))) {
        const controllers = (readTrimmed(join(dir, "cgroup.controllers")) ?? "").split(/\s+/).filter(Boolean);
        delegated = { path, controllers };
        break;
      }
    }
  }
  return { mode, own, delegated, writable: canWrite };
}

async function diskFact(role: string, path: string): Promise<DiskFact & { device: number | undefined }> {
  let existing = path;
  let info: Stats | undefined;
  for (;;) {
    try {
      info = await stat(existing);
      break;
    } catch (error) {
      // Only a path that is not there yet is made under its parent; one this user cannot reach stays said.
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" || dirname(existing) === existing) break;
      existing = dirname(existing);
    }
  }
  return {
    role,
    path,
    existing,
    free: freeBytes(existing),
    writable: await writable(existing),
    device: info?.dev,
  };
}

/** The machine as locald sees it: the same lookups the runtime, the store and the unpacker make. */
export async function hostFacts(env: NodeJS.ProcessEnv = process.env): Promise<HostFacts> {
  const uid = process.geteuid?.() ?? 0;
  let name: string | undefined;
  try {
    name = userInfo().username;
  } catch {
    // a uid without a passwd entry
  }
  const runcPreferred = env.LOCALD_RUNC || undefined;
  const [runc, bwrap, newuidmap, newgidmap, zstd, cgroup] = await Promise.all([
    program(() => findRunc(runcPreferred), /runc version (\S+)/),
    program(() => findProgram("bwrap", { pkg: "bubblewrap", what: "Cannot run builds" }), /bubblewrap (\S+)/),
    programOnPath("newuidmap"),
    programOnPath("newgidmap"),
    zstdDecoders(),
    cgroupFacts(uid),
  ]);
  const store = await diskFact("store", defaultDataDir(env));
  const cache = await diskFact("unpack cache", defaultRootfsCacheDir(env));
  const disks = [store, ...(cache.device !== store.device ? [cache] : [])].map(
    ({ device: _, ...disk }) => disk,
  );
  return {
    // As the runtime decides: uid 0 runs runc as root, anyone else rootless.
    caller: { uid, name, root: uid === 0 },
    sysctls: {
      unprivilegedUsernsClone: readTrimmed("/proc/sys/kernel/unprivileged_userns_clone"),
      maxUserNamespaces: readTrimmed("/proc/sys/user/max_user_namespaces"),
      apparmorRestrictUnprivilegedUserns: readTrimmed(
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
      ),
    },
    userNamespaceProbe: await probeUserNamespace(bwrap),
    subordinate: {
      subuids: name === undefined ? undefined : subordinateIds("/etc/subuid", name, uid),
      subgids: name === undefined ? undefined : subordinateIds("/etc/subgid", name, uid),
      taken: allSubordinateRanges(),
      newuidmap,
      newgidmap,
    },
    runc,
    runcPreferred,
    bwrap,
    cgroup,
    disks,
    zstd: { ...zstd, node: process.version },
  };
}

/**
 * Whether `reference`'s registry answers and serves it: the API root without credentials (is
 * anything there?), then the manifest HEAD with the saved login, as a pull would.
 */
export async function checkRegistry(reference: string, options: ClientOptions = {}): Promise<HostCheck> {
  const ref = parseReference(reference);
  const name = formatReference(ref);
  const check = `registry ${ref.registry}`;
  // A doctor says "unreachable" after a second, not after a pull's patient backoff.
  const { client, owned } = clientFor({
    retries: 1,
    retryBaseDelayMs: 200,
    bodyTimeoutMs: 10_000,
    ...options,
  });
  let origin: string;
  try {
    origin = await client.transport.origin(ref.registry);
  } catch (error) {
    if (owned) await client.transport.close();
    if (!(error instanceof OciError)) throw error;
    return {
      check,
      status: "fail",
      detail: `unreachable: ${error.message}`,
      fix: error.hint ?? "Check the registry address and your network.",
    };
  }
  try {
    const descriptor = await client.headManifest(ref);
    if (descriptor === undefined)
      return {
        check,
        status: "warn",
        detail: `answers at ${origin}, but has no ${name}`,
        fix: "Check the repository and tag; pushing there (--publish, image push) creates it.",
      };
    return { check, status: "ok", detail: `answers at ${origin}; ${name} is ${descriptor.digest}` };
  } catch (error) {
    if (!(error instanceof OciError)) throw error;
    if (error instanceof AuthenticationError) {
      const saved = await (options.credentials ?? dockerConfigCredentials())(ref.registry).catch(
        () => undefined,
      );
      return saved === undefined
        ? {
            check,
            status: "warn",
            detail: `answers at ${origin}, but needs a login to read ${name}`,
            fix: `Run: locald login ${ref.registry} -u <user> --password-stdin`,
          }
        : {
            check,
            status: "fail",
            detail: `answers at ${origin}, but refuses the saved login: ${error.message}`,
            fix: error.hint ?? `Run: locald login ${ref.registry} -u <user> --password-stdin`,
          };
    }
    return {
      check,
      status: "fail",
      detail: `${error instanceof NetworkError ? "unreachable: " : ""}${error.message}`,
      fix: error.hint ?? "Check the registry address, and try again later.",
    };
  } finally {
    if (owned) await client.transport.close();
  }
}
