import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { chmod, mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { creationFailure } from "../disk-space.js";
import { ContainerConfigError, ContainerStateError } from "../errors.js";
import { writeFileAtomic } from "../files.js";
import { isAlive } from "../store/index.js";

/**
 * Container records under `$LOCALD_HOME/containers/<name>`: the bundle (config.json, rootfs,
 * overlay upper/work dirs), the log of a detached container, and `state.json`. The process that
 * waits for runc (the foreground CLI, or the monitor of a detached container) writes the exit;
 * a record whose waiter died without writing it is stale and is settled on the next read.
 */

const run = promisify(execFile);

export type ContainerStatus = "created" | "running" | "exited";

export interface ContainerRecord {
  readonly name: string;
  /** The reference it was started from, and the manifest digest that ran. */
  readonly image: string;
  readonly digest: string;
  readonly command: readonly string[];
  readonly created: string;
  status: ContainerStatus;
  /** The process that waits for runc and records the exit, with its start time (pid reuse). */
  waiter?: { pid: number; start: number | undefined };
  /** `undefined` while running, or when the waiter died before it could record the exit. */
  exitCode?: number;
  finished?: string;
  /** Remove the container once it exits (`--rm`). */
  readonly remove: boolean;
  readonly detached: boolean;
  /** The unpack cache entry the overlay's lower layer is (kept while the container exists). */
  readonly cacheKey?: string;
}

export const CONTAINER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function checkContainerName(name: string): void {
  if (!CONTAINER_NAME.test(name))
    throw new ContainerConfigError(`Invalid container name "${name}".`, {
      hint: "Use letters, digits, '.', '_' and '-', starting with a letter or digit (at most 128).",
    });
}

/** Fields of /proc/<pid>/stat after the command name (state is field 3, start time field 22). */
function procStat(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** When the process started: tells a live process from a later one that got its pid. */
export function processStart(pid: number): number | undefined {
  const fields = procStat(pid);
  return fields === undefined ? undefined : Number(fields[19]);
}

/**
 * A detached waiter is reparented to init, which may reap it late: a zombie has exited, even
 * though signal 0 still reaches it.
 */
function waiterAlive(waiter: ContainerRecord["waiter"]): boolean {
  if (waiter === undefined || !isAlive(waiter.pid)) return false;
  const fields = procStat(waiter.pid);
  if (fields === undefined) return true;
  if (fields[0] === "Z" || fields[0] === "X") return false;
  return waiter.start === undefined || Number(fields[19]) === waiter.start;
}

/** Deletes a tree that may hold directories without write or search permission (overlay's work dir). */
export async function removeTree(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EACCES") throw error;
    await run("chmod", ["-R", "u+rwx", "--", dir]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

export class Containers {
  readonly dir: string;
  /** runc's own state (`runc --root`). */
  readonly runcRoot: string;

  constructor(
    readonly home: string,
    private readonly runc: string = "runc",
  ) {
    this.dir = join(home, "containers");
    this.runcRoot = join(home, "runc");
  }

  bundle(name: string): string {
    return join(this.dir, name);
  }

  logPath(name: string): string {
    return join(this.bundle(name), "container.log");
  }

  /** Claims the name: fails if a container of that name exists. */
  async create(record: ContainerRecord): Promise<string> {
    checkContainerName(record.name);
    await mkdir(this.dir, { recursive: true, mode: 0o700 }).catch((error: unknown) => {
      throw new ContainerStateError(
        `Cannot keep containers in ${this.dir}: ${creationFailure(this.dir, error)}.`,
        { hint: "Set LOCALD_HOME to a directory you can write." },
      );
    });
    const bundle = this.bundle(record.name);
    try {
      await mkdir(bundle, { mode: 0o700 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST")
        throw new ContainerStateError(`A container named "${record.name}" already exists.`, {
          hint: `Pick another --name, or remove the old one: locald container rm ${record.name}`,
        });
      throw error;
    }
    await this.save(record);
    return bundle;
  }

  async save(record: ContainerRecord): Promise<void> {
    await writeFileAtomic(
      join(this.bundle(record.name), "state.json"),
      JSON.stringify(record, null, 2),
      0o600,
    );
  }

  private async read(name: string): Promise<ContainerRecord | undefined> {
    try {
      return JSON.parse(await readFile(join(this.bundle(name), "state.json"), "utf8")) as ContainerRecord;
    } catch {
      return undefined;
    }
  }

  /** The record, with a dead waiter's container settled (exited, runc state gone). */
  async get(name: string): Promise<ContainerRecord> {
    checkContainerName(name);
    const record = await this.read(name);
    if (record === undefined)
      throw new ContainerStateError(`No container named "${name}".`, {
        hint: "See the containers there are with: locald container ls -a",
      });
    return this.settle(record);
  }

  async list(): Promise<ContainerRecord[]> {
    // No directory yet is no container yet; anything else (a file in the way, no permission) is said.
    const names = await readdir(this.dir).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return [] as string[];
      throw error;
    });
    const records: ContainerRecord[] = [];
    for (const name of names.sort()) {
      if (!CONTAINER_NAME.test(name)) continue;
      const record = await this.read(name);
      // A directory without a record is a container whose set-up died half-way.
      if (record === undefined) {
        await this.discard(name);
        continue;
      }
      const settled = await this.settle(record).catch(() => undefined);
      if (settled !== undefined && (await this.read(name)) !== undefined) records.push(settled);
    }
    return records;
  }

  /** Cache entries that containers still stand on. */
  async cacheKeysInUse(): Promise<Set<string>> {
    const keys = new Set<string>();
    for (const record of await this.list()) if (record.cacheKey !== undefined) keys.add(record.cacheKey);
    return keys;
  }

  private async settle(record: ContainerRecord): Promise<ContainerRecord> {
    if (record.status === "exited" || waiterAlive(record.waiter)) return record;
    // Nobody is waiting for this container any more: make sure it is gone, then say so.
    await this.kill(record.name, "KILL");
    await this.runcDelete(record.name);
    const settled: ContainerRecord = { ...record, status: "exited", finished: new Date().toISOString() };
    if (record.remove) {
      await this.discard(record.name);
      return settled;
    }
    await this.save(settled);
    return settled;
  }

  /** Records the exit, and removes the container if it was started with `--rm`. */
  async exited(name: string, exitCode: number | undefined): Promise<void> {
    const record = await this.read(name);
    if (record === undefined) return;
    await this.runcDelete(name);
    if (record.remove) return this.discard(name);
    const { waiter: _waiter, ...rest } = record;
    await this.save({
      ...rest,
      status: "exited",
      ...(exitCode === undefined ? {} : { exitCode }),
      finished: new Date().toISOString(),
    });
  }

  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves once the exit is recorded. */
  async stop(name: string, options: { timeoutMs?: number } = {}): Promise<ContainerRecord> {
    let record = await this.get(name);
    if (record.status !== "running") return record;
    await this.kill(name, "TERM");
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    let killed = false;
    while (waiterAlive(record.waiter)) {
      if (!killed && Date.now() >= deadline) {
        await this.kill(name, "KILL");
        killed = true;
      }
      // No exit notification crosses processes here; the waiter's exit is polled.
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    record = (await this.read(name)) ?? { ...record, status: "exited" };
    return this.settle(record);
  }

  async remove(name: string, options: { force?: boolean } = {}): Promise<void> {
    const record = await this.get(name);
    if (record.status === "running") {
      if (!options.force)
        throw new ContainerStateError(`Container "${name}" is running.`, {
          hint: `Stop it first (locald container stop ${name}), or remove it with --force.`,
        });
      await this.stop(name, { timeoutMs: 0 });
    }
    await this.discard(name);
  }

  private async discard(name: string): Promise<void> {
    await this.runcDelete(name);
    const bundle = this.bundle(name);
    // The record goes first: a half-removed bundle without it is cleaned up by list().
    await rm(join(bundle, "state.json"), { force: true });
    await chmod(bundle, 0o700).catch(() => undefined);
    await removeTree(bundle);
  }

  /** Sends `signal` ("TERM", "KILL", …) to a running container's init; a gone one is no error. */
  async kill(name: string, signal: string): Promise<void> {
    await run(this.runc, ["--root", this.runcRoot, "kill", name, signal]).catch(() => undefined);
  }

  private async runcDelete(name: string): Promise<void> {
    await run(this.runc, ["--root", this.runcRoot, "delete", "--force", name]).catch(() => undefined);
  }
}
