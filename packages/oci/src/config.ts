import { type Static, Type } from "@sinclair/typebox";
import { InvalidManifestError } from "./errors.js";
import { schemaChecker } from "./manifest.js";

const StringMap = Type.Record(Type.String(), Type.String());
const EmptyObjectMap = Type.Record(Type.String(), Type.Object({}));
const NullableStrings = Type.Union([Type.Array(Type.String()), Type.Null()]);

/** The runtime part of an image config (`config` key), as docker and OCI write it. */
export const ContainerConfigSchema = Type.Object({
  User: Type.Optional(Type.String()),
  ExposedPorts: Type.Optional(Type.Union([EmptyObjectMap, Type.Null()])),
  Env: Type.Optional(NullableStrings),
  Entrypoint: Type.Optional(NullableStrings),
  Cmd: Type.Optional(NullableStrings),
  Volumes: Type.Optional(Type.Union([EmptyObjectMap, Type.Null()])),
  WorkingDir: Type.Optional(Type.String()),
  Labels: Type.Optional(Type.Union([StringMap, Type.Null()])),
  StopSignal: Type.Optional(Type.String()),
});

export const ImageConfigSchema = Type.Object({
  created: Type.Optional(Type.String()),
  author: Type.Optional(Type.String()),
  architecture: Type.String(),
  os: Type.String(),
  variant: Type.Optional(Type.String()),
  "os.version": Type.Optional(Type.String()),
  config: Type.Optional(ContainerConfigSchema),
  rootfs: Type.Object({ type: Type.Literal("layers"), diff_ids: Type.Array(Type.String()) }),
  history: Type.Optional(
    Type.Array(
      Type.Object({
        created: Type.Optional(Type.String()),
        created_by: Type.Optional(Type.String()),
        author: Type.Optional(Type.String()),
        comment: Type.Optional(Type.String()),
        empty_layer: Type.Optional(Type.Boolean()),
      }),
    ),
  ),
});

export type ContainerConfig = Static<typeof ContainerConfigSchema>;
export type ImageConfig = Static<typeof ImageConfigSchema>;

const checkConfig = schemaChecker(ImageConfigSchema);

export function parseImageConfig(bytes: Uint8Array, what: string): ImageConfig {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch {
    throw new InvalidManifestError(`${what} is not valid JSON.`);
  }
  const problems = checkConfig(value);
  if (problems.length > 0)
    throw new InvalidManifestError(`${what} is not a valid image config (${problems.join("; ")}).`);
  return value as ImageConfig;
}
