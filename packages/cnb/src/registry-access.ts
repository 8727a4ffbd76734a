import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type ClientOptions, dockerConfigCredentials, dockerConfigKey, parseReference } from "@locald/oci";
import { parse as parseToml } from "smol-toml";
import { BuildError } from "./errors.js";

/**
 * What the lifecycle needs to talk to registries itself (`--publish` builds, rebases of registry
 * images): the caller's credentials as a private docker config, the insecure-registry flags, and
 * the digest it reports.
 */

/** `[image] digest` of the exporter's report.toml (registry mode). */
export async function reportedDigest(path: string): Promise<string> {
  const report = parseToml(await readFile(path, "utf8")) as { image?: { digest?: string } };
  const digest = report.image?.digest;
  if (digest === undefined) throw new BuildError(`The exporter's report (${path}) names no image digest.`);
  return digest;
}

/** A docker config with the caller's credentials for these images' registries. */
export async function writeRegistryConfig(
  dir: string,
  images: readonly string[],
  client: ClientOptions | undefined,
): Promise<void> {
  const credentials = client?.credentials ?? dockerConfigCredentials();
  const auths: Record<string, Record<string, string>> = {};
  for (const registry of new Set(images.map((name) => parseReference(name).registry))) {
    const found = await credentials(registry);
    if (found?.username !== undefined && found.password !== undefined)
      auths[dockerConfigKey(registry)] = {
        auth: Buffer.from(`${found.username}:${found.password}`).toString("base64"),
      };
    else if (found?.identityToken !== undefined)
      auths[dockerConfigKey(registry)] = { identitytoken: found.identityToken };
    else if (found?.registryToken !== undefined)
      auths[dockerConfigKey(registry)] = { registrytoken: found.registryToken };
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(join(dir, "config.json"), JSON.stringify({ auths }), { mode: 0o600 });
}

/** `-insecure-registry` for the registries the caller marked insecure (loopback is plain HTTP anyway). */
export function insecureFlags(client: ClientOptions | undefined, images: readonly string[]): string[] {
  const insecure = new Set(client?.insecureRegistries ?? []);
  return [...new Set(images.map((name) => parseReference(name).registry))]
    .filter((registry) => insecure.has(registry))
    .flatMap((registry) => ["-insecure-registry", registry]);
}
