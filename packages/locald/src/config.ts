import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { OciError } from "@locald/oci";
import { type Static, Type } from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { parse as parseToml, TomlError } from "smol-toml";

/** `locald.toml`: the project's services and how each is built. */

export class ConfigError extends OciError {
  readonly code = "CONFIG";
}

const BuildSchema = Type.Object(
  {
    /** The app directory, relative to locald.toml (default "."). */
    path: Type.Optional(Type.String({ minLength: 1 })),
    builder: Type.Optional(Type.String({ minLength: 1 })),
    /** Buildpacks of the builder to use, in order (`id` or `id@version`), instead of its detection order. */
    buildpacks: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
    env: Type.Optional(
      Type.Record(Type.String({ pattern: "^[A-Za-z_][A-Za-z0-9_]*$" }), Type.String(), {
        additionalProperties: false,
      }),
    ),
    /** The image name (default: the service's name). */
    image: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
);

const ServiceSchema = Type.Object({ build: Type.Optional(BuildSchema) }, { additionalProperties: false });

const ConfigSchema = Type.Object(
  {
    project: Type.Optional(
      Type.Object({ builder: Type.Optional(Type.String({ minLength: 1 })) }, { additionalProperties: false }),
    ),
    services: Type.Optional(
      Type.Record(Type.String({ pattern: "^[a-z0-9][a-z0-9_.-]*$" }), ServiceSchema, {
        additionalProperties: false,
      }),
    ),
  },
  { additionalProperties: false },
);

export type LocaldConfig = Static<typeof ConfigSchema>;
export type ServiceBuild = Static<typeof BuildSchema>;

export const CONFIG_FILE = "locald.toml";

let checker: ReturnType<typeof TypeCompiler.Compile<typeof ConfigSchema>> | undefined;

/** Parses and checks the text of a locald.toml; `file` names it in errors. */
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
  checker ??= TypeCompiler.Compile(ConfigSchema);
  const first = checker.Errors(value).First();
  if (first !== undefined) {
    const key = first.path.replace(/^\//, "").replaceAll("/", ".") || "(top level)";
    throw new ConfigError(`${file}: ${key}: ${first.message}.`, {
      hint: "Keys: [project] builder; [services.<name>.build] path, builder, buildpacks, env, image.",
    });
  }
  return value as LocaldConfig;
}

export interface LoadedConfig {
  file: string;
  dir: string;
  config: LocaldConfig;
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
  return { file, dir: dirname(file), config: parseConfig(text, file) };
}
