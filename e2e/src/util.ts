import { type ChildProcess, execFile } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import { access, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Debian package that provides each external binary the harness shells out to. */
const DEBIAN_PACKAGES: Record<string, string> = {
  "docker-registry": "docker-registry",
  openssl: "openssl",
  htpasswd: "apache2-utils",
  setpriv: "util-linux",
  runc: "runc",
  busybox: "busybox-static",
  newuidmap: "uidmap",
  script: "bsdutils",
  mmdebstrap: "mmdebstrap",
  inotifywait: "inotify-tools",
  time: "time",
};

const resolvedBinaries = new Map<string, string>();

/**
 * Resolves a binary on PATH, failing with an actionable message: a bare ENOENT from spawn
 * would not tell whoever runs the suite which package they are missing.
 */
export async function requireBinary(name: string): Promise<string> {
  const cached = resolvedBinaries.get(name);
  if (cached !== undefined) return cached;
  const dirs = (process.env.PATH ?? "").split(delimiter).filter((d) => d.length > 0);
  for (const dir of [...dirs, "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/go/bin"]) {
    const candidate = join(dir, name);
    try {
      await access(candidate, fsConstants.X_OK);
      resolvedBinaries.set(name, candidate);
      return candidate;
    } catch {
      // not in this directory; keep looking
    }
  }
  const pkg = DEBIAN_PACKAGES[name] ?? name;
  const how =
    name === "go"
      ? "Install Go 1.21 or newer from https://go.dev/dl/ into /usr/local/go (Debian's golang-go is too old)."
      : `Install it with: apt-get install ${pkg}`;
  throw new Error(`e2e harness needs the \`${name}\` binary, which was not found on PATH. ${how}`);
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a required binary to completion; the error carries stderr because openssl's exit codes say nothing. */
export async function runBinary(name: string, args: readonly string[], cwd?: string): Promise<RunResult> {
  const file = await requireBinary(name);
  return new Promise((resolve, reject) => {
    execFile(file, args, { cwd, encoding: "utf8", timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) {
        reject(new Error(`${name} ${args[0] ?? ""} failed: ${error.message}\n${stderr}`, { cause: error }));
        return;
      }
      resolve({ stdout, stderr });
    });
  });
}

export function makeTempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `locald-e2e-${prefix}-`));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/**
 * Asks the kernel for a currently free loopback port. Another process can grab it before the
 * caller binds, so callers that hand the port to a child process must retry on EADDRINUSE.
 */
export function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server: Server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === "string") {
        server.close();
        reject(new Error("could not determine the port of a probe socket"));
        return;
      }
      const { port } = address;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** Keeps only the last `limit` characters, so a chatty child cannot grow our memory without bound. */
export class TailBuffer {
  #text = "";
  constructor(private readonly limit = 64 * 1024) {}
  append(chunk: string): void {
    this.#text += chunk;
    if (this.#text.length > this.limit) this.#text = this.#text.slice(this.#text.length - this.limit);
  }
  toString(): string {
    return this.#text;
  }
}

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Registers a child to be SIGKILLed if the test process exits without calling stop(), e.g. after
 * an uncaught failure; otherwise an orphaned registry would keep its port and temp dir forever.
 */
export function trackChild(child: ChildProcess): void {
  liveChildren.add(child);
  child.once("exit", () => liveChildren.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const c of liveChildren) c.kill("SIGKILL");
    });
  }
}

/** Resolves once the child has exited; immediately if it already has. */
export function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/** SIGTERM, then SIGKILL if the child ignores it for `graceMs`; always waits for the actual exit. */
export async function terminateChild(child: ChildProcess, graceMs = 5_000): Promise<void> {
  const exited = waitForExit(child);
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), graceMs);
  });
  const outcome = await Promise.race([exited.then(() => "exited" as const), timedOut]);
  clearTimeout(timer);
  if (outcome === "timeout") {
    child.kill("SIGKILL");
    await exited;
  }
}

/** The unprivileged user the e2e suite runs key paths as (created by the tests when missing). */
export const TEST_USER = "locald-e2e";

/**
 * The uid/gid of the unprivileged test user, created when missing; when the suite itself is
 * not root, the caller's own ids.
 */
export async function unprivilegedUser(): Promise<{ uid: number; gid: number }> {
  if (process.getuid?.() !== 0) return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const id = async (flag: string) => Number((await run("id", [flag, TEST_USER])).stdout.trim());
  try {
    await run("id", ["-u", TEST_USER]);
  } catch {
    await run("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER]);
  }
  // Subordinate ids, so that images with non-root users run rootless (through newuidmap).
  const subuid = await readFile("/etc/subuid", "utf8").catch(() => "");
  if (!subuid.split("\n").some((line) => line.startsWith(`${TEST_USER}:`)))
    await run("usermod", ["--add-subuids", "300000-365535", "--add-subgids", "300000-365535", TEST_USER]);
  return { uid: await id("-u"), gid: await id("-g") };
}

/** Who runs a test's commands: root, or the unprivileged test user. */
export type TestCaller = "root" | "an unprivileged user";

/**
 * The callers each caller-matrix test runs as: both, unless `LOCALD_E2E_CALLERS=root` narrows
 * it. The test command narrows it on the second Node.js line only, to keep CI in its budget:
 * what differs between callers is the kernel's (user namespaces, ids, mounts), which the first
 * line covers whole; what differs between Node.js lines is exercised by the root half.
 */
export const TEST_CALLERS: readonly TestCaller[] = callersFrom(process.env.LOCALD_E2E_CALLERS);

function callersFrom(value: string | undefined): readonly TestCaller[] {
  if (value === undefined || value === "" || value === "all") return ["root", "an unprivileged user"];
  if (value === "root") return ["root"];
  throw new Error(`LOCALD_E2E_CALLERS must be "all" or "root", not "${value}".`);
}

/**
 * The CLI options for running commands as `who` with `home` as HOME and LOCALD_HOME below it;
 * for the unprivileged user, `home` (made if missing) and what is in it are given to that user.
 */
export async function callerIn(
  who: TestCaller,
  home: string,
): Promise<{ as?: { uid: number; gid: number }; env: NodeJS.ProcessEnv }> {
  await mkdir(home, { recursive: true });
  const env = { HOME: home, LOCALD_HOME: join(home, "locald"), XDG_RUNTIME_DIR: home };
  if (who === "root") return { env };
  const as = await unprivilegedUser();
  await run("chown", ["-R", `${as.uid}:${as.gid}`, home]);
  return { as, env };
}
