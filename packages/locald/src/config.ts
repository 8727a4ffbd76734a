import { readFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { ISOLATIONS, type Isolation } from "@locald/cnb";
import { OciError } from "@locald/oci";
import { type Static, Type } from "@sinclair/typebox";
import { Errors } from "@sinclair/typebox/errors";
import { parse as parseToml, TomlError } from "smol-toml";
import { type AST, parseTOML } from "toml-eslint-parser";
import { UsageError } from "./usage.js";

/** `locald.toml`: the project's services, how each is built and how each runs. */

export class ConfigError extends OciError {
  readonly code = "CONFIG";
}

const SERVICE_NAME = "^[a-z0-9][a-z0-9_.-]*$";

const EnvSchema = Type.Record(Type.String({ pattern: "^[A-Za-z_][A-Za-z0-9_]*$" }), Type.String(), {
  additionalProperties: false,
});

/** Where builds run: the builder image's OS (default) or the host's. */
const IsolationSchema = Type.Union([Type.Literal("builder"), Type.Literal("host")]);

const BuildSchema = Type.Object(
  {
    /** The app directory, relative to locald.toml (default "."). */
    path: Type.Optional(Type.String({ minLength: 1 })),
    builder: Type.Optional(Type.String({ minLength: 1 })),
    /** This service's isolation, over the project's (an app that needs the host's tools). */
    isolation: Type.Optional(IsolationSchema),
    /** Buildpacks of the builder to use, in order (`id` or `id@version`), instead of its detection order. */
    buildpacks: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
    /** Build-time environment for the buildpacks. */
    env: Type.Optional(EnvSchema),
    /** The image name (default: the service's name). */
    image: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
);

const ServiceSchema = Type.Object(
  {
    /** Inferred when absent: "build" with a build table, "container" with an image, else "command". */
    type: Type.Optional(
      Type.Union([Type.Literal("build"), Type.Literal("container"), Type.Literal("command")]),
    ),
    build: Type.Optional(BuildSchema),
    /** The image a container service runs. */
    image: Type.Optional(Type.String({ minLength: 1 })),
    /** A shell command line (a string) or an argument vector; a build service's default is its default process. */
    command: Type.Optional(
      Type.Union([Type.String({ minLength: 1 }), Type.Array(Type.String(), { minItems: 1 })]),
    ),
    /** Where a command service runs, relative to locald.toml (default "."). */
    path: Type.Optional(Type.String({ minLength: 1 })),
    /** Runtime environment. */
    env: Type.Optional(EnvSchema),
    /** The service's PORT (default: a free port). */
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    depends_on: Type.Optional(Type.Array(Type.String({ pattern: SERVICE_NAME }), { uniqueItems: true })),
  },
  { additionalProperties: false },
);

const ConfigSchema = Type.Object(
  {
    project: Type.Optional(
      Type.Object(
        {
          /** Names the project's containers (default: the directory's name). */
          name: Type.Optional(Type.String({ pattern: "^[a-z0-9][a-z0-9_.-]*$" })),
          builder: Type.Optional(Type.String({ minLength: 1 })),
          isolation: Type.Optional(IsolationSchema),
        },
        { additionalProperties: false },
      ),
    ),
    /** The Linux VM builds run in on macOS (Lima): its size, what of the Mac it mounts, which limactl. */
    host: Type.Optional(
      Type.Object(
        {
          cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 })),
          /** A size as Lima reads it: "8GiB". */
          memory: Type.Optional(Type.String({ pattern: "^[0-9]+(\\.[0-9]+)?\\s*(B|KiB|MiB|GiB|TiB)$" })),
          disk: Type.Optional(Type.String({ pattern: "^[0-9]+(\\.[0-9]+)?\\s*(B|KiB|MiB|GiB|TiB)$" })),
          /** More directories to mount in the VM, writable at the same path (relative to locald.toml). */
          mounts: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { uniqueItems: true })),
          /** Mount $HOME too (default false). */
          mount_home: Type.Optional(Type.Boolean()),
          /**
           * A limactl the user installed, used instead of the one locald downloads (relative to
           * locald.toml); LOCALD_LIMACTL overrides it.
           */
          limactl: Type.Optional(Type.String({ minLength: 1 })),
        },
        { additionalProperties: false },
      ),
    ),
    services: Type.Optional(
      Type.Record(Type.String({ pattern: SERVICE_NAME }), ServiceSchema, {
        additionalProperties: false,
      }),
    ),
  },
  { additionalProperties: false },
);

export type LocaldConfig = Static<typeof ConfigSchema>;
export type ServiceBuild = Static<typeof BuildSchema>;
export type ServiceConfig = Static<typeof ServiceSchema>;

export const CONFIG_FILE = "locald.toml";

const KEYS =
  "Keys: [project] name, builder, isolation; [host] cpus, memory, disk, mounts, mount_home, limactl; [services.<name>] type, build, image, command, path, env, port, depends_on; [services.<name>.build] path, builder, isolation, buildpacks, env, image.";

/** Parses and checks the text of a locald.toml; `file` names it in errors, with line and column. */
export function parseConfig(text: string, file: string): LocaldConfig {
  let value: unknown;
  try {
    value = parseToml(text);
  } catch (error) {
    if (error instanceof TomlError)
      throw new ConfigError(`${file}:${error.line}:${error.column}: ${error.message.split("\n")[0]}`, {
        hint: "Fix the TOML syntax at that line and column.",
      });
    throw error;
  }
  const fail = (path: string[], message: string, hint = KEYS): never => {
    const where = position(text, path);
    const key = path.join(".") || "(top level)";
    throw new ConfigError(`${file}:${where.line}:${where.column}: ${key}: ${message}`, { hint });
  };
  const first = Errors(ConfigSchema, value).First();
  // The path is a JSON pointer: a key with "/" or "~" in it comes escaped as ~1 or ~0.
  if (first !== undefined)
    fail(
      first.path
        .split("/")
        .filter((part) => part !== "")
        .map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~")),
      `${first.message}.`,
    );
  const config = value as LocaldConfig;
  const services = config.services ?? {};
  for (const [name, service] of Object.entries(services)) {
    const at = (key: string) => ["services", name, key];
    const type = serviceType(service);
    if (type === "container" && service.image === undefined)
      fail(at("type"), 'a "container" service needs an image.', 'Add image = "<reference>".');
    if (type !== "container" && service.image !== undefined)
      fail(at("image"), `only a "container" service runs an image (this one is "${type}").`);
    if (type !== "build" && service.build !== undefined)
      fail(at("build"), `only a "build" service has a build table (this one is "${type}").`);
    if (type === "build" && service.build === undefined)
      fail(at("type"), 'a "build" service needs a build table.', `Add [services.${name}.build].`);
    if (type === "command" && service.command === undefined)
      fail(
        ["services", name],
        "nothing to run: give it a command, a build table or an image.",
        `For example: command = "npm start", or [services.${name}.build], or image = "redis".`,
      );
    if (type !== "command" && service.path !== undefined)
      fail(at("path"), `path is where a command service runs; a ${type} service has none.`);
    for (const dependency of service.depends_on ?? []) {
      if (dependency === name) fail(at("depends_on"), "a service cannot depend on itself.");
      if (services[dependency] === undefined)
        fail(
          at("depends_on"),
          `there is no service "${dependency}".`,
          `Services: ${Object.keys(services).join(", ")}.`,
        );
    }
  }
  const cycle = dependencyCycle(services);
  if (cycle) fail(["services", cycle[0] ?? "", "depends_on"], `a dependency cycle: ${cycle.join(" → ")}.`);
  const ports = new Map<number, string>();
  for (const [name, service] of Object.entries(services)) {
    if (service.port === undefined) continue;
    const other = ports.get(service.port);
    if (other) fail(["services", name, "port"], `port ${service.port} is service "${other}"'s port too.`);
    ports.set(service.port, name);
  }
  return config;
}

export const ISOLATION_HELP =
  'where buildpacks run: "builder", the builder image\'s own OS, read-only, nothing of the host (default), ' +
  "or \"host\", this machine's OS read-only, no one's data ([project] isolation, LOCALD_ISOLATION)";

/**
 * Where builds and dev environments run: `--isolation`, else the service's `isolation`, else
 * `[project] isolation`, else LOCALD_ISOLATION, else the builder's own OS.
 */
export function chooseIsolation(
  loaded: LoadedConfig | undefined,
  given: string | undefined,
  service?: ServiceBuild,
): Isolation {
  const check = (value: string, from: string): Isolation => {
    if ((ISOLATIONS as readonly string[]).includes(value)) return value as Isolation;
    throw new UsageError(
      `${from} is "${value}"; it must be "builder" (build in the builder image's OS, the default) or "host" (over this machine's OS).`,
    );
  };
  if (given !== undefined) return check(given, "--isolation");
  const configured = service?.isolation ?? loaded?.config.project?.isolation;
  if (configured !== undefined) return configured;
  const fromEnv = process.env.LOCALD_ISOLATION;
  return fromEnv ? check(fromEnv, "LOCALD_ISOLATION") : "builder";
}

/** The builder to use: the first one given, else `[project] builder`, else LOCALD_BUILDER. */
/**
 * The builder: the first given (flag, service), else locald.toml's [project] builder, else the
 * app's project.toml builder (`fromProject`), else LOCALD_BUILDER.
 */
export function chooseBuilder(
  loaded: LoadedConfig | undefined,
  given: ReadonlyArray<string | undefined>,
  fromProject?: string,
): string {
  const builder =
    given.find((b) => b !== undefined) ??
    loaded?.config.project?.builder ??
    fromProject ??
    process.env.LOCALD_BUILDER;
  if (builder === undefined)
    throw new UsageError(
      `No builder: pass --builder <image>, set [project] builder in ${CONFIG_FILE} (or builder in the app's project.toml), or set LOCALD_BUILDER.`,
    );
  return builder;
}

/** An `env` table of locald.toml as `NAME=value` lines. */
export function envLines(env: Record<string, string> | undefined): string[] {
  return Object.entries(env ?? {}).map(([name, value]) => `${name}=${value}`);
}

export function serviceType(service: ServiceConfig): "build" | "container" | "command" {
  return service.type ?? (service.build ? "build" : service.image ? "container" : "command");
}

function dependencyCycle(services: Record<string, ServiceConfig>): string[] | undefined {
  // Depth-first with a stack of our own: a chain of thousands of services is valid and must not
  // end in a RangeError from the call stack.
  const state = new Map<string, "visiting" | "done">();
  for (const start of Object.keys(services)) {
    if (state.has(start)) continue;
    state.set(start, "visiting");
    const trail = [start];
    const next = [0];
    while (trail.length > 0) {
      const name = trail[trail.length - 1] as string;
      const dependencies = services[name]?.depends_on ?? [];
      const index = next[next.length - 1] as number;
      if (index === dependencies.length) {
        state.set(name, "done");
        trail.pop();
        next.pop();
        continue;
      }
      next[next.length - 1] = index + 1;
      const dependency = dependencies[index] as string;
      const seen = state.get(dependency);
      if (seen === "visiting") return [...trail.slice(trail.indexOf(dependency)), dependency];
      if (seen === undefined) {
        state.set(dependency, "visiting");
        trail.push(dependency);
        next.push(0);
      }
    }
  }
  return undefined;
}

/** Line and column (1-based) of the deepest key of `path` written in the TOML text. */
function position(text: string, path: readonly string[]): { line: number; column: number } {
  type Start = AST.TOMLKeyValue["loc"]["start"];
  const found = new Map<string, Start>();
  const record = (key: readonly (string | number)[], node: AST.TOMLNode) => {
    const id = key.join("/");
    if (!found.has(id)) found.set(id, node.loc.start);
  };
  const walkValue = (key: (string | number)[], value: AST.TOMLContentNode) => {
    if (value.type === "TOMLInlineTable") for (const pair of value.body) walkPair(key, pair);
    if (value.type === "TOMLArray")
      value.elements.forEach((element, index) => {
        record([...key, index], element);
        walkValue([...key, index], element);
      });
  };
  const walkPair = (prefix: (string | number)[], pair: AST.TOMLKeyValue) => {
    const keys = pair.key.keys.map((part) => (part.type === "TOMLBare" ? part.name : part.value));
    // Each dotted prefix ("a.b" of "a.b.c = 1") is located at the pair too.
    for (let i = 1; i <= keys.length; i++) record([...prefix, ...keys.slice(0, i)], pair);
    walkValue([...prefix, ...keys], pair.value);
  };
  try {
    for (const node of parseTOML(text).body[0].body) {
      if (node.type === "TOMLKeyValue") walkPair([], node);
      else {
        for (let i = 1; i <= node.resolvedKey.length; i++) record(node.resolvedKey.slice(0, i), node);
        for (const pair of node.body) walkPair(node.resolvedKey, pair);
      }
    }
  } catch {
    // The text parsed as TOML once already; a locator failure only loses the position.
  }
  for (let length = path.length; length > 0; length--) {
    const start = found.get(path.slice(0, length).join("/"));
    if (start) return { line: start.line, column: start.column + 1 };
  }
  return { line: 1, column: 1 };
}

export interface LoadedConfig {
  file: string;
  dir: string;
  config: LocaldConfig;
  /** `[project] name`, else the directory's name. */
  project: string;
}

/** `locald.toml` in `dir`, if there is one. */
export async function loadConfig(dir: string): Promise<LoadedConfig | undefined> {
  const file = join(resolve(dir), CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new ConfigError(`Cannot read ${file}: ${(error as Error).message}.`);
  }
  const config = parseConfig(text, file);
  return { file, dir: dirname(file), config, project: config.project?.name ?? nameOf(dirname(file)) };
}

/** A directory's name as an image or project name: lower case, only the characters allowed. */
export function nameOf(dir: string): string {
  const name = basename(resolve(dir))
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[^a-z0-9]+/, "");
  return name === "" ? "app" : name;
}
