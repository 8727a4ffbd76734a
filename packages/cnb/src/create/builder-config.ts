import { schemaChecker } from "@locald/oci";
import { type Static, Type } from "@sinclair/typebox";
import { parse as parseToml } from "smol-toml";
import { CreateConfigError } from "../errors.js";

/**
 * pack's builder.toml (the `builder create --config` file): buildpacks to include, the detection
 * order, the lifecycle, the build image and run images (or the legacy `[stack]`), and the build
 * environment. Keys pack ignores are ignored here too; image extensions are refused in words.
 */

const BuildpackEntry = Type.Object({
  id: Type.Optional(Type.String()),
  version: Type.Optional(Type.String()),
  uri: Type.Optional(Type.String()),
  /** pack's older spelling of a `docker://` uri. */
  image: Type.Optional(Type.String()),
});

const GroupEntry = Type.Object({
  id: Type.String({ minLength: 1 }),
  version: Type.Optional(Type.String()),
  optional: Type.Optional(Type.Boolean()),
});

const BuildEnv = Type.Object({
  name: Type.String({ minLength: 1 }),
  value: Type.String(),
  suffix: Type.Optional(
    Type.Union([
      Type.Literal("default"),
      Type.Literal("override"),
      Type.Literal("append"),
      Type.Literal("prepend"),
    ]),
  ),
  delim: Type.Optional(Type.String()),
});

const RunImage = Type.Object({
  image: Type.String({ minLength: 1 }),
  mirrors: Type.Optional(Type.Array(Type.String())),
});

export const BuilderTomlSchema = Type.Object({
  description: Type.Optional(Type.String()),
  buildpacks: Type.Optional(Type.Array(BuildpackEntry)),
  order: Type.Optional(Type.Array(Type.Object({ group: Type.Array(GroupEntry) }))),
  extensions: Type.Optional(Type.Array(Type.Unknown())),
  "order-extensions": Type.Optional(Type.Array(Type.Unknown())),
  stack: Type.Optional(
    Type.Object({
      id: Type.Optional(Type.String()),
      "build-image": Type.Optional(Type.String()),
      "run-image": Type.Optional(Type.String()),
      "run-image-mirrors": Type.Optional(Type.Array(Type.String())),
    }),
  ),
  lifecycle: Type.Optional(
    Type.Object({ uri: Type.Optional(Type.String()), version: Type.Optional(Type.String()) }),
  ),
  run: Type.Optional(Type.Object({ images: Type.Optional(Type.Array(RunImage)) })),
  build: Type.Optional(
    Type.Object({ image: Type.Optional(Type.String()), env: Type.Optional(Type.Array(BuildEnv)) }),
  ),
});

type BuilderToml = Static<typeof BuilderTomlSchema>;
export type BuildEnvEntry = Static<typeof BuildEnv>;

/** What builder.toml asks for, checked and with the legacy `[stack]` folded in. */
export interface BuilderConfig {
  readonly description: string;
  /** Buildpack locations (directory, file, `docker://` or plain image reference), as written. */
  readonly buildpacks: ReadonlyArray<{ uri: string; id?: string; version?: string }>;
  readonly order: ReadonlyArray<{
    group: ReadonlyArray<{ id: string; version?: string; optional?: boolean }>;
  }>;
  readonly lifecycle: { uri: string } | { version: string };
  readonly buildImage: string;
  readonly runImages: ReadonlyArray<{ image: string; mirrors: readonly string[] }>;
  /** `[stack] id`, for the legacy `stack.toml` and the `io.buildpacks.stack.id` label. */
  readonly stackId?: string;
  readonly buildEnv: readonly BuildEnvEntry[];
}

const checkBuilderToml = schemaChecker(BuilderTomlSchema);

/** Reads builder.toml text (`file` names it in errors). */
export function parseBuilderConfig(text: string, file: string): BuilderConfig {
  let value: unknown;
  try {
    value = parseToml(text);
  } catch (error) {
    throw new CreateConfigError(`${file} is not valid TOML: ${(error as Error).message.split("\n")[0]}`, {
      hint: "Fix the file; pack's builder.toml format is described at buildpacks.io/docs/reference/config/builder-config/.",
    });
  }
  const problems = checkBuilderToml(value);
  if (problems.length > 0)
    throw new CreateConfigError(`${file} is not a valid builder configuration (${problems.join("; ")}).`, {
      hint: "Each [[buildpacks]] needs a uri, each [[order]] a group of { id, version }, [build] an image.",
    });
  const toml = value as BuilderToml;
  if ((toml.extensions?.length ?? 0) > 0 || (toml["order-extensions"]?.length ?? 0) > 0)
    throw new CreateConfigError(`${file} lists image extensions, which locald does not build with yet.`, {
      hint: "Remove [[extensions]] and [[order-extensions]]; a builder without them works with every locald build.",
    });
  const buildpacks = (toml.buildpacks ?? []).map((entry, index) => {
    const uri = entry.uri ?? (entry.image === undefined ? undefined : `docker://${entry.image}`);
    if (uri === undefined || uri === "")
      throw new CreateConfigError(`[[buildpacks]] #${index + 1} in ${file} has no uri.`, {
        hint: 'Give where the buildpack is: uri = "./my-buildpack" (a directory), a .tgz or .cnb file, or an image reference.',
      });
    return {
      uri,
      ...(entry.id === undefined ? {} : { id: entry.id }),
      ...(entry.version === undefined ? {} : { version: entry.version }),
    };
  });
  const order = toml.order ?? [];
  if (order.length === 0 || order.some((entry) => entry.group.length === 0))
    throw new CreateConfigError(`${file} has no detection order (or an empty group).`, {
      hint: 'Add at least one [[order]] with [[order.group]] id = "…" naming a buildpack of [[buildpacks]].',
    });
  const buildImage = toml.build?.image ?? toml.stack?.["build-image"];
  if (buildImage === undefined || buildImage === "")
    throw new CreateConfigError(`${file} names no build image.`, {
      hint: 'Add [build] image = "…": the image whose OS the buildpacks build in (with CNB_USER_ID and CNB_GROUP_ID set).',
    });
  const runImages = [
    ...(toml.run?.images ?? []).map((entry) => ({ image: entry.image, mirrors: entry.mirrors ?? [] })),
    ...(toml.stack?.["run-image"]
      ? [{ image: toml.stack["run-image"], mirrors: toml.stack["run-image-mirrors"] ?? [] }]
      : []),
  ];
  if (runImages.length === 0)
    throw new CreateConfigError(`${file} names no run image.`, {
      hint: 'Add [[run.images]] image = "…": the base the built app images are made on.',
    });
  const lifecycle = toml.lifecycle ?? {};
  if (lifecycle.uri !== undefined && lifecycle.version !== undefined)
    throw new CreateConfigError(`${file} gives the lifecycle both a uri and a version.`, {
      hint: "Keep one: uri (a directory or .tgz in the lifecycle's release layout) or version.",
    });
  const stackId = toml.stack?.id;
  return {
    description: toml.description ?? "",
    buildpacks,
    order: order.map((entry) => ({ group: entry.group })),
    lifecycle: lifecycle.uri !== undefined ? { uri: lifecycle.uri } : { version: lifecycle.version ?? "" },
    buildImage,
    runImages: dedupeRunImages(runImages),
    ...(stackId ? { stackId } : {}),
    buildEnv: toml.build?.env ?? [],
  };
}

function dedupeRunImages(
  images: ReadonlyArray<{ image: string; mirrors: readonly string[] }>,
): Array<{ image: string; mirrors: readonly string[] }> {
  const seen = new Set<string>();
  return images.filter((entry) => {
    if (seen.has(entry.image)) return false;
    seen.add(entry.image);
    return true;
  });
}

/** The files `[[build.env]]` puts under `/cnb/build-config/env/` (names per the platform spec). */
export function buildEnvFiles(entry: BuildEnvEntry): Array<{ name: string; content: string }> {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(entry.name))
    throw new CreateConfigError(
      `The build environment variable name ${JSON.stringify(entry.name)} is not valid.`,
      {
        hint: "Use letters, digits and underscores, not starting with a digit.",
      },
    );
  const name = entry.suffix === undefined ? entry.name : `${entry.name}.${entry.suffix}`;
  return [
    { name, content: entry.value },
    ...(entry.delim === undefined ? [] : [{ name: `${entry.name}.delim`, content: entry.delim }]),
  ];
}
