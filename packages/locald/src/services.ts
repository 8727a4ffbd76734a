import { spawn } from "node:child_process";
import { join } from "node:path";
import { type DevEnvironment, prepareEnvironment } from "@locald/cnb";
import {
  type ClientOptions,
  ContainerStateError,
  Containers,
  defaultDataDir,
  exitStatus,
  findRunc,
  formatReference,
  parseReference,
  pull,
  runContainer,
  Store,
  store,
} from "@locald/oci";
import {
  CONFIG_FILE,
  ConfigError,
  chooseIsolation,
  envLines,
  type LoadedConfig,
  type ServiceConfig,
  serviceType,
} from "./config.js";
import { freePort, type ServiceRun, type SupervisedService } from "./supervisor.js";
import { UsageError } from "./usage.js";

/**
 * The services of a locald.toml made runnable: build services built with CNB and run through the
 * lifecycle launcher on the host, container services run by runc, plain commands on the host —
 * each with PORT and its dependencies' ports in its environment.
 */

export interface ServicesOptions {
  client: ClientOptions;
  /** `--isolation`, which overrides every service's and the project's. */
  isolation: string | undefined;
  logLevel: "info" | "debug";
  /** Output of what is done before anything runs (builds, pulls), per service. */
  onPrepareOutput(service: string, chunk: Buffer | string): void;
}

/** The named services and everything they depend on, or all of them. */
export function selectServices(loaded: LoadedConfig, names: readonly string[]): string[] {
  const services = loaded.config.services ?? {};
  if (Object.keys(services).length === 0)
    throw new UsageError(`${loaded.file} has no [services.<name>] table: there is nothing to bring up.`);
  if (names.length === 0) return Object.keys(services);
  const selected = new Set<string>();
  const add = (name: string) => {
    if (selected.has(name)) return;
    if (services[name] === undefined)
      throw new UsageError(
        `There is no service "${name}" in ${loaded.file} (services: ${Object.keys(services).join(", ")}).`,
      );
    selected.add(name);
    for (const dependency of services[name]?.depends_on ?? []) add(dependency);
  };
  for (const name of names) add(name);
  return [...selected];
}

/** `PORT` for one service, `<NAME>_PORT` for each: fixed ones from the config, the others free. */
export async function assignPorts(
  loaded: LoadedConfig,
  names: readonly string[],
): Promise<Map<string, number>> {
  const services = loaded.config.services ?? {};
  const ports = new Map<string, number>();
  const taken = new Set<number>();
  for (const name of names) {
    const port = services[name]?.port;
    if (port !== undefined) {
      ports.set(name, port);
      taken.add(port);
    }
  }
  for (const name of names) {
    if (ports.has(name)) continue;
    // A free port is one nothing listens on now: it may still be a fixed port or one given out already.
    let port = await freePort();
    while (taken.has(port)) port = await freePort();
    ports.set(name, port);
    taken.add(port);
  }
  return new Map(names.map((name) => [name, ports.get(name) as number]));
}

const portVariable = (name: string) => `${name.toUpperCase().replace(/[^A-Z0-9]/g, "_")}_PORT`;

function runtimeEnv(name: string, service: ServiceConfig, ports: Map<string, number>): string[] {
  return [
    ...[...ports].map(([other, port]) => `${portVariable(other)}=${port}`),
    `PORT=${ports.get(name)}`,
    ...envLines(service.env),
  ];
}

/** A host process in a process group of its own, so the terminal's Ctrl-C reaches only locald. */
export function hostProcess(argv: readonly string[], cwd: string, env: readonly string[]) {
  return (output: (chunk: Buffer) => void): Promise<ServiceRun> => {
    const environment = { ...process.env };
    for (const pair of env) {
      const eq = pair.indexOf("=");
      environment[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    const child = spawn(argv[0] ?? "true", argv.slice(1), {
      cwd,
      env: environment,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.on("data", output);
    child.stderr.on("data", output);
    const exited = new Promise<number>((resolve) => {
      child.on("error", (error) => {
        output(Buffer.from(`cannot start ${argv[0]}: ${error.message}\n`));
        resolve(127);
      });
      child.on("close", (code, signal) => resolve(exitStatus(code, signal)));
    });
    return Promise.resolve({
      exited,
      kill: (signal) => {
        if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
        try {
          process.kill(-child.pid, signal);
        } catch {
          // the group is gone already
        }
      },
    });
  };
}

const shellCommand = (command: string | readonly string[]) =>
  typeof command === "string" ? ["/bin/sh", "-c", command] : [...command];

/**
 * Builds, pulls and checks what the services need, in dependency order, before any runs: a
 * failure here leaves nothing running.
 */
export async function prepareServices(
  loaded: LoadedConfig,
  order: readonly string[],
  ports: Map<string, number>,
  options: ServicesOptions,
): Promise<SupervisedService[]> {
  const services = loaded.config.services ?? {};
  const prepared: SupervisedService[] = [];
  let containers: Containers | undefined;
  let imageStore: Store | undefined;
  for (const name of order) {
    const service = services[name] as ServiceConfig;
    const env = runtimeEnv(name, service, ports);
    const base = { name, dependsOn: service.depends_on ?? [], port: ports.get(name) ?? 0 };
    const type = serviceType(service);
    if (type === "command") {
      const cwd = join(loaded.dir, service.path ?? ".");
      prepared.push({ ...base, start: hostProcess(shellCommand(service.command ?? "true"), cwd, env) });
    } else if (type === "build") {
      const environment = await buildService(loaded, name, service, options);
      const what = service.command
        ? { argv: typeof service.command === "string" ? [service.command] : service.command }
        : { process: await defaultProcess(loaded, name, environment) };
      prepared.push({
        ...base,
        start: (output) => environment.start(what, { env, output: (chunk) => output(chunk) }),
      });
    } else {
      containers ??= new Containers(defaultDataDir(), await findRunc());
      const image = service.image as string;
      // As docker compose: the stored image is used if there is one.
      imageStore ??= await Store.open();
      if ((await imageStore.find(formatReference(parseReference(image)))) === undefined) {
        options.onPrepareOutput(name, `pulling ${image}\n`);
        await pull(image, { ...options.client, to: store(imageStore) });
      }
      const containerName = `${loaded.project}-${name}`;
      await clearContainer(containers, containerName);
      prepared.push({
        ...base,
        start: containerService(containers, containerName, image, service, env, options),
      });
    }
  }
  return prepared;
}

async function buildService(
  loaded: LoadedConfig,
  name: string,
  service: ServiceConfig,
  options: ServicesOptions,
): Promise<DevEnvironment> {
  const build = service.build ?? {};
  const builder = build.builder ?? loaded.config.project?.builder ?? process.env.LOCALD_BUILDER;
  if (builder === undefined)
    throw new ConfigError(`Service "${name}" has no builder.`, {
      hint: `Set builder in [services.${name}.build] or [project] of ${CONFIG_FILE}, or set LOCALD_BUILDER.`,
    });
  const app = join(loaded.dir, build.path ?? ".");
  options.onPrepareOutput(name, `building ${app} with ${builder}\n`);
  return prepareEnvironment(app, {
    builder,
    env: envLines(build.env),
    ...(build.buildpacks ? { buildpacks: build.buildpacks } : {}),
    // The buildpacks decide what is still good (cached layers, incremental compiles): a changed
    // source file must reach the running service, not only a changed manifest.
    rebuild: true,
    isolation: chooseIsolation(loaded, options.isolation, build),
    client: options.client,
    logLevel: options.logLevel,
    onOutput: (chunk) => options.onPrepareOutput(name, chunk),
  });
}

async function defaultProcess(
  loaded: LoadedConfig,
  name: string,
  environment: DevEnvironment,
): Promise<string> {
  const types = await environment.processTypes();
  const chosen = types.find((t) => t === "web") ?? types[0];
  if (chosen === undefined)
    throw new ConfigError(`The buildpacks declared no process for service "${name}".`, {
      hint: `Give it a command in [services.${name}] of ${loaded.file}.`,
    });
  return chosen;
}

/** A record left by an earlier run (exited, or whose locald died) goes; a live one is an error. */
async function clearContainer(containers: Containers, name: string): Promise<void> {
  const record = (await containers.list()).find((r) => r.name === name);
  if (record === undefined) return;
  if (record.status === "running")
    throw new ContainerStateError(`Container "${name}" is already running.`, {
      hint: `Another locald up runs this project, or stop it: locald container stop ${name}.`,
    });
  await containers.remove(name, { force: true });
}

function containerService(
  containers: Containers,
  name: string,
  image: string,
  service: ServiceConfig,
  env: readonly string[],
  options: ServicesOptions,
) {
  return (output: (chunk: Buffer) => void): Promise<ServiceRun> => {
    const result = runContainer(image, {
      name,
      remove: true,
      env,
      ...(service.command ? { command: shellCommand(service.command) } : {}),
      client: options.client,
      output: (chunk) => output(chunk),
    });
    const exited = result.then(
      (r) => r.exitCode ?? 0,
      (error: unknown) => {
        output(Buffer.from(`${(error as Error).message}\n`));
        return 125;
      },
    );
    return Promise.resolve({
      exited,
      kill: (signal) => {
        void containers.kill(name, signal.replace(/^SIG/, ""));
      },
    });
  };
}
