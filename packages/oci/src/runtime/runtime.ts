import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, openSync, readFileSync, watch } from "node:fs";
import { access, chmod, constants, mkdir, readFile, writeFile } from "node:fs/promises";
import { constants as osConstants, release, userInfo } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ContainerConfigError, RuntimeError } from "../errors.js";
import { programOnPath } from "../programs.js";
import { formatReference, parseReference } from "../reference.js";
import type { ClientOptions } from "../registry/index.js";
import { defaultDataDir, defaultStoreDir, Store } from "../store/index.js";
import { cachedRootfs, defaultRootfsCacheDir, type UnpackOptions, unpackImage } from "../unpack/index.js";
import { type ContainerRecord, Containers, checkContainerName, processStart } from "./containers.js";
import { checkExecutable } from "./executable.js";
import { type ContainerOptions, type IdRange, type RuntimeMount, runtimeSpec } from "./runtime-spec.js";

/**
 * Runs images with runc (the Debian package). The root filesystem is an overlay whose lower
 * layer is the image's root in the unpack cache, so a second run extracts nothing; runc mounts
 * it inside the container's own mount namespace, so no host mount outlives the container.
 */

export interface RunOptions extends ContainerOptions, Pick<UnpackOptions, "platform" | "onEvent"> {
  /** How the image is pulled when it is not in the store (credentials, trust, retries). */
  client?: ClientOptions;
  /** "missing" (default): use the store's copy when there is one, as docker run does. */
  pull?: "always" | "missing";
  /** Container name (default: a random one). */
  name?: string;
  /** Remove the container when it exits (`--rm`); else it stays, exited, until `rm`. */
  remove?: boolean;
  /** Start it in the background (`-d`), output to its log; resolves once it runs. */
  detach?: boolean;
  /** Keep stdin attached (`-i`). */
  interactive?: boolean;
  store?: Store;
  /** `$LOCALD_HOME` (default from the environment). */
  home?: string;
  /** The runc binary (default: `runc` on PATH). */
  runc?: string;
  /** "auto" (default): an overlay over the cached root where the kernel allows, else a copy. */
  rootfs?: "auto" | "overlay" | "copy";
  /**
   * The container's output to this callback instead of the terminal (not with `detach`). It then
   * runs in a process group of its own and the caller's signals are not forwarded: a supervisor
   * stops it itself (`Containers.kill`).
   */
  output?: (chunk: Buffer, stream: "stdout" | "stderr") => void;
}

export interface RunResult {
  readonly name: string;
  /** The process's exit code, 128 + signal number when a signal ended it (not for `detach`). */
  readonly exitCode: number | undefined;
  /** How the root filesystem was made. */
  readonly rootfs: "overlay" | "copy";
  /** The image root came from the unpack cache: nothing was extracted. */
  readonly cached: boolean;
}

/** `preferred` if it is executable, else `name` on PATH; a missing one names the package to install. */
export async function findProgram(
  name: string,
  options: { preferred?: string | undefined; pkg: string; what: string },
): Promise<string> {
  const found = options.preferred
    ? await access(options.preferred, constants.X_OK).then(
        () => options.preferred,
        () => undefined,
      )
    : await programOnPath(name);
  if (found !== undefined) return found;
  const { pkg } = options;
  throw new RuntimeError(
    `${options.what}: the ${name} program was not found${options.preferred ? ` at ${options.preferred}` : ""}.`,
    { hint: `Install it (Debian/Ubuntu: apt-get install ${pkg}; Fedora: dnf install ${pkg}) and try again.` },
  );
}

export function findRunc(preferred: string | undefined = process.env.LOCALD_RUNC): Promise<string> {
  return findProgram("runc", { preferred, pkg: "runc", what: "Cannot run containers" });
}

/** A process's exit status as a shell reports it: its code, or 128 + the number of the signal that ended it. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  return code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0);
}

/** Hands a child's stdout and stderr to `output`, each chunk with its stream's name. */
export function pipeOutput(
  child: ChildProcess,
  output: ((chunk: Buffer, stream: "stdout" | "stderr") => void) | "inherit" | undefined,
): void {
  if (typeof output !== "function") return;
  child.stdout?.on("data", (chunk: Buffer) => output(chunk, "stdout"));
  child.stderr?.on("data", (chunk: Buffer) => output(chunk, "stderr"));
}

/** Overlayfs as the root: always as root; unprivileged from Linux 5.11 (mounted in a user namespace). */
export function overlaySupported(rootless: boolean): boolean {
  try {
    if (!/\boverlay\n/.test(readFileSync("/proc/filesystems", "utf8"))) return false;
  } catch {
    return false;
  }
  if (!rootless) return true;
  const [major = 0, minor = 0] = release()
    .split(".")
    .map((part) => Number.parseInt(part, 10));
  return major > 5 || (major === 5 && minor >= 11);
}

/** The caller's line in /etc/subuid or /etc/subgid (by name or uid), when there is one. */
export function subordinateIds(file: string, name: string, id: number): IdRange | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    const [owner, start, count] = line.trim().split(":");
    if (owner !== name && owner !== String(id)) continue;
    const range = { start: Number(start), count: Number(count) };
    if (Number.isSafeInteger(range.start) && Number.isSafeInteger(range.count) && range.count > 0)
      return range;
  }
  return undefined;
}

/** Subordinate ids are only usable through the setuid newuidmap/newgidmap helpers runc calls. */
export async function rootlessIds(uid: number): Promise<NonNullable<ContainerOptions["rootless"]>> {
  const gid = process.getegid?.() ?? uid;
  const ids = { uid, gid };
  const helpers = await Promise.all(["newuidmap", "newgidmap"].map((name) => programOnPath(name)));
  if (helpers.includes(undefined)) return ids;
  let name: string;
  try {
    name = userInfo().username;
  } catch {
    return ids;
  }
  const subuids = subordinateIds("/etc/subuid", name, uid);
  const subgids = subordinateIds("/etc/subgid", name, uid);
  return { ...ids, ...(subuids && subgids ? { subuids, subgids } : {}) };
}

/** Commas and colons separate overlay options and layers; such paths get the copy instead. */
const OVERLAY_SAFE = /^[^,:\\]+$/;

function overlayMount(lower: string, bundle: string): RuntimeMount {
  return {
    destination: "/",
    type: "overlay",
    source: "overlay",
    options: [`lowerdir=${lower}`, `upperdir=${join(bundle, "upper")}`, `workdir=${join(bundle, "work")}`],
  };
}

/**
 * Pulls `reference` if needed, prepares its root filesystem and runtime spec, and runs it with
 * runc: in the foreground (stdio passed through, exit code returned, SIGINT/SIGTERM forwarded)
 * or detached (`detach`, output to the container's log). Rootless when not running as root.
 */
export async function runContainer(reference: string, options: RunOptions = {}): Promise<RunResult> {
  const runc = await findRunc(options.runc);
  const home = options.home ?? defaultDataDir();
  const name = options.name ?? `locald-${randomBytes(6).toString("hex")}`;
  checkContainerName(name);
  const ref = parseReference(reference);
  // runc would say it in a log line of its own, after the image was pulled and unpacked.
  for (const volume of options.volumes ?? [])
    if (!existsSync(volume.source))
      throw new ContainerConfigError(`The volume source ${volume.source} does not exist on this machine.`, {
        hint: `Create it first (mkdir -p ${volume.source}) or correct the -v path.`,
      });
  const containers = new Containers(home, runc);
  const uid = process.geteuid?.() ?? 0;
  const rootless = uid !== 0;
  const record: ContainerRecord = {
    name,
    image: formatReference(ref),
    digest: "",
    command: [...(options.command ?? [])],
    created: new Date().toISOString(),
    status: "created",
    // This process, until runc runs: a setup that dies leaves a record the next read settles.
    waiter: { pid: process.pid, start: processStart(process.pid) },
    remove: options.remove === true,
    detached: options.detach === true,
  };
  const bundle = await containers.create(record);
  let started = false;
  try {
    // With an explicit home everything lives under it; else store and cache are the defaults
    // that `image pull` and `image unpack` use too.
    const store =
      options.store ?? (await Store.open(options.home ? join(options.home, "store") : defaultStoreDir()));
    const cacheDir = options.home ? join(options.home, "cache", "rootfs") : defaultRootfsCacheDir();
    const unpackOptions: UnpackOptions & { cacheDir: string } = {
      ...options.client,
      store,
      cacheDir,
      pull: options.pull ?? "missing",
      ...(options.platform ? { platform: options.platform } : {}),
      ...(options.onEvent ? { onEvent: options.onEvent } : {}),
    };
    const mode = options.rootfs ?? "auto";
    const wantOverlay =
      mode === "overlay" || (mode === "auto" && overlaySupported(rootless) && OVERLAY_SAFE.test(bundle));
    const rootfs = join(bundle, "rootfs");
    let lower: string | undefined;
    let image: { descriptor: { digest: string; mediaType: string; size: number }; cached: boolean };
    let cacheKey: string | undefined;
    if (wantOverlay) {
      const cached = await cachedRootfs(ref, unpackOptions);
      if (!OVERLAY_SAFE.test(cached.dir))
        throw new ContainerConfigError(`The unpack cache path ${cached.dir} cannot be an overlay layer.`, {
          hint: "Set LOCALD_HOME to a path without ',' or ':'.",
        });
      lower = cached.dir;
      cacheKey = cached.cacheKey;
      image = cached;
      await mkdir(rootfs, { mode: 0o755 });
      // The overlay's "/" takes the upper dir's owner and mode: enterable by any container user.
      await mkdir(join(bundle, "upper"), { mode: 0o755 });
      await mkdir(join(bundle, "work"), { mode: 0o700 });
    } else {
      image = await unpackImage(ref, rootfs, unpackOptions);
      await chmod(rootfs, 0o755);
    }
    const { config } = await store.readImage(image.descriptor, reference);
    // Users are looked up in the image's root: the cached one under an overlay.
    const spec = runtimeSpec(config.config ?? {}, lower ?? rootfs, {
      ...options,
      ...(rootless && options.rootless === undefined ? { rootless: await rootlessIds(uid) } : {}),
    });
    checkExecutable(
      lower ?? rootfs,
      spec.process,
      spec.mounts.filter((m) => m.type === "bind").map((m) => m.destination),
    );
    if (lower !== undefined) spec.mounts.unshift(overlayMount(lower, bundle));
    // runc names a root container's cgroup after the container by default, and names are only
    // unique per LOCALD_HOME: the bundle's path tells two homes' containers apart.
    if (!rootless)
      spec.linux.cgroupsPath = `/locald/${name}-${createHash("sha256").update(bundle).digest("hex").slice(0, 12)}`;
    await writeFile(join(bundle, "config.json"), JSON.stringify(spec, null, 2));
    await mkdir(containers.runcRoot, { recursive: true, mode: 0o700 });
    Object.assign(record, { digest: image.descriptor.digest, ...(cacheKey ? { cacheKey } : {}) });
    await containers.save(record);
    const how = {
      rootfs: lower !== undefined ? ("overlay" as const) : ("copy" as const),
      cached: image.cached,
    };
    if (options.detach) {
      await startDetached(containers, name, runc);
      started = true;
      return { name, exitCode: undefined, ...how };
    }
    started = true;
    const exitCode = await runForeground(containers, record, runc, options);
    return { name, exitCode, ...how };
  } catch (error) {
    // A container that never started leaves nothing behind.
    if (!started) await containers.remove(name, { force: true }).catch(() => undefined);
    throw error;
  }
}

async function runForeground(
  containers: Containers,
  record: ContainerRecord,
  runc: string,
  options: RunOptions,
): Promise<number> {
  const supervised = options.output;
  const child = spawn(
    runc,
    ["--root", containers.runcRoot, "run", "--bundle", containers.bundle(record.name), record.name],
    supervised
      ? { stdio: ["ignore", "pipe", "pipe"], detached: true }
      : { stdio: [options.interactive || options.tty ? "inherit" : "ignore", "inherit", "inherit"] },
  );
  pipeOutput(child, supervised);
  record.status = "running";
  record.waiter = { pid: process.pid, start: processStart(process.pid) };
  await containers.save(record);
  const exitCode = await waitForRuntime(child, "runc", supervised === undefined);
  await containers.exited(record.name, exitCode);
  return exitCode;
}

/**
 * The runtime forwards signals to the container; the waiter only passes on the ones it receives
 * (unless `forward` is false: a supervisor that stops its children itself).
 */
export function waitForRuntime(child: ChildProcess, what = "runc", forward = true): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const pass = (signal: NodeJS.Signals) => child.kill(signal);
    if (forward) {
      process.on("SIGINT", pass);
      process.on("SIGTERM", pass);
    }
    child.on("error", (error) => reject(new RuntimeError(`Cannot start ${what}: ${error.message}.`)));
    child.on("close", (code, signal) => {
      process.off("SIGINT", pass);
      process.off("SIGTERM", pass);
      resolve(exitStatus(code, signal));
    });
  });
}

export type MonitorMessage = { type: "started" } | { type: "failed"; exitCode: number };

/**
 * Starts the container under a detached monitor process (its waiter: it records the exit and
 * honours `--rm`) and resolves once runc has created it, or fails with runc's own words.
 */
async function startDetached(containers: Containers, name: string, runc: string): Promise<void> {
  const monitor = spawn(
    process.execPath,
    // fileURLToPath, not .pathname: an install prefix may hold a space, which a URL keeps as %20.
    [fileURLToPath(new URL("./container-monitor.js", import.meta.url)), containers.home, runc, name],
    { detached: true, stdio: ["ignore", "ignore", "ignore", "ipc"] },
  );
  const outcome = await new Promise<MonitorMessage>((resolve, reject) => {
    monitor.on("message", (message: MonitorMessage) => resolve(message));
    monitor.on("error", (error) =>
      reject(new RuntimeError(`Cannot start the container monitor: ${error.message}.`)),
    );
    monitor.on("exit", (code) => resolve({ type: "failed", exitCode: code ?? 1 }));
  });
  monitor.removeAllListeners();
  if (monitor.connected) monitor.disconnect();
  monitor.unref();
  if (outcome.type === "failed") {
    const log = await readFile(containers.logPath(name), "utf8").catch(() => "");
    const tail = log.trim().split("\n").slice(-5).join("\n");
    throw new RuntimeError(
      `Container "${name}" did not start (runc exited with ${outcome.exitCode})${tail ? `:\n${tail}` : "."}`,
    );
  }
}

/**
 * The body of the monitor process (`container-monitor.js`): runs runc in the foreground with
 * the container's log as stdout and stderr, tells the parent when the container exists, and
 * records the exit.
 */
export async function monitorContainer(home: string, runc: string, name: string): Promise<void> {
  const containers = new Containers(home, runc);
  const record = await containers.get(name);
  const bundle = containers.bundle(name);
  const pidFile = join(bundle, "container.pid");
  const log = openSync(containers.logPath(name), "a", 0o600);
  const child = spawn(
    runc,
    ["--root", containers.runcRoot, "run", "--bundle", bundle, "--pid-file", pidFile, name],
    {
      stdio: ["ignore", log, log],
    },
  );
  record.status = "running";
  record.waiter = { pid: process.pid, start: processStart(process.pid) };
  await containers.save(record);
  let told = false;
  const tell = (message: MonitorMessage) => {
    if (told || !process.connected) return;
    told = true;
    process.send?.(message, () => process.disconnect());
  };
  // runc writes the pid file once the container process exists.
  const watcher = watch(bundle, (_event, file) => {
    if (file === "container.pid" && existsSync(pidFile)) tell({ type: "started" });
  });
  if (existsSync(pidFile)) tell({ type: "started" });
  const exitCode = await waitForRuntime(child);
  watcher.close();
  // A container can exit before the watcher hears of its pid file: the file still says it ran.
  tell(existsSync(pidFile) ? { type: "started" } : { type: "failed", exitCode });
  await containers.exited(name, exitCode);
}
