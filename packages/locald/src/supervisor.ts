import { connect, createServer } from "node:net";

/**
 * `locald up`'s process supervision: services started in dependency order (a dependency's port
 * answers before its dependents start), a crashed service restarted with backoff, and everything
 * stopped in reverse order — SIGTERM, then SIGKILL after a timeout.
 */

/** One run of a service, however it runs (host process, launcher sandbox, container). */
export interface ServiceRun {
  kill(signal: NodeJS.Signals): void;
  /** Resolves with the exit code (128 + signal when killed). */
  readonly exited: Promise<number>;
}

export interface SupervisedService {
  readonly name: string;
  readonly dependsOn: readonly string[];
  readonly port: number;
  /** Starts one run; `output` gets what the service prints. */
  start(output: (chunk: Buffer) => void): Promise<ServiceRun>;
}

export interface SupervisorOptions {
  /** The service's output, split into lines. */
  log(service: string, line: string): void;
  /** What the supervisor itself has to say. */
  note(service: string, message: string): void;
  stopTimeoutMs?: number;
  /** First restart delay, doubled per crash up to `maxBackoffMs`; reset after a run this long. */
  backoffMs?: number;
  maxBackoffMs?: number;
  steadyMs?: number;
  /** How long a dependency's port may take to answer before its dependents start anyway. */
  readyTimeoutMs?: number;
}

/** A free TCP port on the loopback interface. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  return address.port;
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Services in an order where each comes after what it depends on (the config has no cycles). */
export function startOrder<T extends { name: string; dependsOn: readonly string[] }>(
  services: readonly T[],
): T[] {
  const byName = new Map(services.map((service) => [service.name, service]));
  const ordered: T[] = [];
  const placed = new Set<string>();
  const place = (service: T) => {
    if (placed.has(service.name)) return;
    placed.add(service.name);
    for (const dependency of service.dependsOn) {
      const found = byName.get(dependency);
      if (found) place(found);
    }
    ordered.push(service);
  };
  for (const service of services) place(service);
  return ordered;
}

const delay = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });

/** Output chunks cut into whole lines; `flush` gives what is left of the last one. */
export function lineSplitter(onLine: (line: string) => void): {
  write(chunk: Buffer | string): void;
  flush(): void;
} {
  let partial = "";
  return {
    write: (chunk) => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) onLine(line);
    },
    flush: () => {
      if (partial !== "") onLine(partial);
      partial = "";
    },
  };
}

class Supervised {
  current: ServiceRun | undefined;
  /** Resolves when the service has stopped for good (after `stop`). */
  finished: Promise<void> = Promise.resolve();
  restarts = 0;
  private readonly lines: ReturnType<typeof lineSplitter>;

  constructor(
    readonly service: SupervisedService,
    private readonly options: Required<SupervisorOptions>,
    private readonly stopping: AbortSignal,
  ) {
    this.lines = lineSplitter((line) => options.log(service.name, line));
  }

  private output = (chunk: Buffer) => this.lines.write(chunk);

  /** Starts the first run (its failure is the caller's), then keeps the service running. */
  async begin(): Promise<void> {
    this.current = await this.service.start(this.output);
    this.finished = this.keepRunning(this.current);
  }

  private async keepRunning(first: ServiceRun): Promise<void> {
    let run: ServiceRun | undefined = first;
    let backoff = this.options.backoffMs;
    while (run) {
      const started = Date.now();
      const code = await run.exited;
      this.lines.flush();
      this.current = undefined;
      if (this.stopping.aborted) return;
      if (Date.now() - started >= this.options.steadyMs) backoff = this.options.backoffMs;
      this.options.note(
        this.service.name,
        `exited with code ${code}; restarting in ${(backoff / 1000).toFixed(1)} s`,
      );
      await delay(backoff, this.stopping);
      backoff = Math.min(backoff * 2, this.options.maxBackoffMs);
      if (this.stopping.aborted) return;
      run = await this.service.start(this.output).catch((error: unknown) => {
        this.options.note(this.service.name, `cannot restart: ${(error as Error).message}`);
        return undefined;
      });
      if (run) this.restarts++;
      this.current = run;
      // Stopped while this run was starting: stop() saw no run, so this one is ours to end.
      if (run && this.stopping.aborted) await this.terminate(run);
    }
  }

  /** SIGTERM, then SIGKILL after the timeout. */
  private async terminate(run: ServiceRun): Promise<void> {
    run.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.options.note(this.service.name, "did not stop in time; killing it");
        run.kill("SIGKILL");
        resolve();
      }, this.options.stopTimeoutMs);
    });
    await Promise.race([run.exited, timedOut]);
    await run.exited;
    clearTimeout(timer);
  }

  /** Resolves once the service is down for good. */
  async stop(): Promise<void> {
    if (this.current) await this.terminate(this.current);
    await this.finished;
  }
}

export class Supervisor {
  private readonly options: Required<SupervisorOptions>;
  private readonly stopping = new AbortController();
  private readonly started: Supervised[] = [];
  private stopped: Promise<void> | undefined;
  private starting: Promise<void> = Promise.resolve();

  constructor(
    private readonly services: readonly SupervisedService[],
    options: SupervisorOptions,
  ) {
    this.options = {
      stopTimeoutMs: 10_000,
      backoffMs: 1_000,
      maxBackoffMs: 30_000,
      steadyMs: 10_000,
      readyTimeoutMs: 60_000,
      ...options,
    };
  }

  /** Starts every service in dependency order; if one cannot start, the caller calls `down`. */
  up(): Promise<void> {
    this.starting = this.startAll();
    return this.starting;
  }

  private async startAll(): Promise<void> {
    const dependedOn = new Set(this.services.flatMap((service) => service.dependsOn));
    for (const service of startOrder(this.services)) {
      if (this.stopping.signal.aborted) return;
      const supervised = new Supervised(service, this.options, this.stopping.signal);
      await supervised.begin();
      this.started.push(supervised);
      this.options.note(service.name, `started on port ${service.port}`);
      if (dependedOn.has(service.name)) await this.ready(service);
    }
  }

  /** Waits until the service's port answers (or the wait times out: its dependents start anyway). */
  private async ready(service: SupervisedService): Promise<void> {
    const deadline = Date.now() + this.options.readyTimeoutMs;
    let wait = 20;
    while (!this.stopping.signal.aborted) {
      if (await portAnswers(service.port)) return;
      if (Date.now() >= deadline) {
        this.options.note(service.name, `port ${service.port} still does not answer; starting the rest`);
        return;
      }
      // Nothing announces that a port opened: poll it, more slowly as time passes.
      await delay(wait, this.stopping.signal);
      wait = Math.min(wait * 2, 500);
    }
  }

  /** How many times the named service has been restarted. */
  restarts(name: string): number {
    return this.started.find((s) => s.service.name === name)?.restarts ?? 0;
  }

  /** Stops everything, dependents before what they depend on; idempotent. */
  down(): Promise<void> {
    this.stopped ??= (async () => {
      this.stopping.abort();
      // A service being started now is stopped with the rest.
      await this.starting.catch(() => undefined);
      for (const supervised of [...this.started].reverse()) {
        this.options.note(supervised.service.name, "stopping");
        await supervised.stop();
      }
    })();
    return this.stopped;
  }

  /** Kills whatever still runs, at once (a second Ctrl-C). */
  kill(): void {
    for (const supervised of this.started) supervised.current?.kill("SIGKILL");
  }
}
