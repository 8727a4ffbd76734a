import { schemaChecker } from "@locald/oci";
import { type Static, Type } from "@sinclair/typebox";
import { parse as parseToml } from "smol-toml";
import { CreateConfigError } from "../errors.js";

/** pack's package.toml: the buildpack to package and, for a meta-buildpack, its dependencies. */
export const PackageTomlSchema = Type.Object({
  buildpack: Type.Object({ uri: Type.String({ minLength: 1 }) }),
  dependencies: Type.Optional(
    Type.Array(Type.Object({ uri: Type.Optional(Type.String()), image: Type.Optional(Type.String()) })),
  ),
  platform: Type.Optional(Type.Object({ os: Type.Optional(Type.String()) })),
});

export interface PackageConfig {
  readonly buildpack: string;
  readonly dependencies: readonly string[];
  readonly os: string;
}

const checkPackageToml = schemaChecker(PackageTomlSchema);

export function parsePackageConfig(text: string, file: string): PackageConfig {
  let value: unknown;
  try {
    value = parseToml(text);
  } catch (error) {
    throw new CreateConfigError(`${file} is not valid TOML: ${(error as Error).message.split("\n")[0]}`);
  }
  const problems = checkPackageToml(value);
  if (problems.length > 0)
    throw new CreateConfigError(`${file} is not a valid package configuration (${problems.join("; ")}).`, {
      hint: 'A package.toml needs [buildpack] uri = "…" (the buildpack\'s directory), and [[dependencies]] uri = "…" for a meta-buildpack\'s.',
    });
  const toml = value as Static<typeof PackageTomlSchema>;
  const os = toml.platform?.os ?? "linux";
  if (os !== "linux")
    throw new CreateConfigError(`${file} asks for a ${os} package; locald packages Linux buildpacks only.`);
  return {
    buildpack: toml.buildpack.uri,
    dependencies: (toml.dependencies ?? []).map((entry, index) => {
      const uri = entry.uri ?? (entry.image ? `docker://${entry.image}` : undefined);
      if (uri === undefined)
        throw new CreateConfigError(`[[dependencies]] #${index + 1} in ${file} has no uri or image.`);
      return uri;
    }),
    os,
  };
}
