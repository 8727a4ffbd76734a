import { readFile } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { errnoReason } from "@locald/oci";
import ignore from "ignore";
import { parse as parseToml } from "smol-toml";
import { BuildConfigError } from "./errors.js";

/**
 * project.toml, the project descriptor pack reads from the app's directory (schema 0.2, and the
 * 0.1 keys): the builder, build-time environment, which files reach the build (`include` or
 * `exclude`, gitignore patterns), the buildpack group, and groups run before and after every
 * group of the order. Flags and locald.toml win over it; it wins over the builder's defaults.
 */

export interface ProjectDescriptor {
  readonly builder?: string;
  /** `NAME=value` pairs, in file order. */
  readonly env: readonly string[];
  readonly include?: readonly string[];
  readonly exclude?: readonly string[];
  /** `id@version` or a uri (directory, file, image), as `-b` takes them. */
  readonly group: readonly string[];
  readonly pre: readonly string[];
  readonly post: readonly string[];
}

export const PROJECT_DESCRIPTOR = "project.toml";

type Table = Record<string, unknown>;

const table = (value: unknown): Table | undefined =>
  typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Table) : undefined;

/** The app's project.toml, or undefined when it has none. */
export async function readProjectDescriptor(appDir: string): Promise<ProjectDescriptor | undefined> {
  const file = join(appDir, PROJECT_DESCRIPTOR);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    // Its exclude list may keep secrets out of the image: a build without it would leak them.
    throw new BuildConfigError(`Cannot read ${file}: ${errnoReason(code) ?? (error as Error).message}.`, {
      hint: "Make it readable (or move it away to build without it).",
    });
  }
  let toml: Table;
  try {
    toml = parseToml(text) as Table;
  } catch (error) {
    throw new BuildConfigError(`${file} is not valid TOML: ${(error as Error).message.split("\n")[0]}`, {
      hint: "Fix the file, or move it away to build without it.",
    });
  }
  const wrong = (key: string, expected: string) =>
    new BuildConfigError(`${file}: ${key} must be ${expected}.`, {
      hint: "See the project descriptor spec (buildpacks/spec, extensions/project-descriptor.md).",
    });
  const io = table(table(toml.io)?.buildpacks);
  // Schema 0.2 keeps everything under [io.buildpacks]; 0.1 under [build].
  const build = io ?? table(toml.build) ?? {};
  const strings = (value: unknown, key: string): string[] | undefined => {
    if (value === undefined) return undefined;
    if (!Array.isArray(value) || value.some((item) => typeof item !== "string"))
      throw wrong(key, "a list of strings");
    return value as string[];
  };
  const env = (table(build.build)?.env ?? build.env ?? []) as unknown;
  if (!Array.isArray(env)) throw wrong("env", "a list of { name, value } tables");
  const pairs = env.map((entry, index) => {
    const item = table(entry);
    if (typeof item?.name !== "string" || typeof item.value !== "string")
      throw wrong(`env #${index + 1}`, "a table with a string name and value");
    return `${item.name}=${item.value}`;
  });
  const groupOf = (value: unknown, key: string): string[] => {
    if (value === undefined) return [];
    if (!Array.isArray(value)) throw wrong(key, "a list of buildpack tables");
    return value.map((entry, index) => {
      const item = table(entry);
      if (typeof item?.uri === "string" && item.uri !== "") return item.uri;
      if (typeof item?.id === "string" && item.id !== "")
        return typeof item.version === "string" ? `${item.id}@${item.version}` : item.id;
      throw wrong(`${key} #${index + 1}`, "a table with an id or a uri");
    });
  };
  const include = strings(build.include, "include");
  const exclude = strings(build.exclude, "exclude");
  if (include !== undefined && exclude !== undefined)
    throw new BuildConfigError(`${file} has both include and exclude.`, {
      hint: "Keep one: include lists what reaches the build, exclude what does not.",
    });
  const builder = build.builder;
  if (builder !== undefined && typeof builder !== "string") throw wrong("builder", "a string");
  return {
    ...(typeof builder === "string" && builder !== "" ? { builder } : {}),
    env: pairs,
    ...(include ? { include } : {}),
    ...(exclude ? { exclude } : {}),
    group: groupOf(io ? io.group : build.buildpacks, io ? "io.buildpacks.group" : "build.buildpacks"),
    pre: groupOf(table(io?.pre)?.group, "io.buildpacks.pre.group"),
    post: groupOf(table(io?.post)?.group, "io.buildpacks.post.group"),
  };
}

/**
 * Whether a path of the app (absolute, under `app`) reaches the build: never `.git`; with
 * `include`, only files that match it (directories are walked); with `exclude`, all but matches.
 */
export function projectFilter(
  app: string,
  descriptor: ProjectDescriptor | undefined,
): (path: string, isDirectory: boolean) => boolean {
  const patterns = descriptor?.include ?? descriptor?.exclude;
  const matcher = patterns === undefined ? undefined : ignore().add([...patterns]);
  return (path, isDirectory) => {
    const rel = relative(app, path).split(sep).join("/");
    if (rel === "") return true;
    if (rel === ".git" || rel.startsWith(".git/")) return false;
    if (matcher === undefined) return true;
    const matched = matcher.ignores(isDirectory ? `${rel}/` : rel);
    if (descriptor?.include !== undefined) return isDirectory || matched;
    return !matched;
  };
}
