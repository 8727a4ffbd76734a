import { stat } from "node:fs/promises";
import { type ClientOptions, type PullOptions, parseReference, type Store } from "@locald/oci";
import { CreateConfigError } from "../errors.js";
import { type BuildpackSource, buildpackFromEntries } from "./buildpack-source.js";
import { buildpacksFromImage, buildpacksFromLayoutArchive, isLayoutArchive } from "./buildpackage.js";
import { localPath, localTreeEntries } from "./tree-source.js";

/** What a buildpack uri needs to be read when it names an image. */
export interface LocatorContext {
  readonly store: Store;
  readonly client?: ClientOptions;
  readonly onPull?: PullOptions["onEvent"];
}

/**
 * The buildpacks a uri of builder.toml, package.toml or `-b` names, as pack reads them: a
 * directory or `.tgz` of one buildpack; a `.cnb` file or a buildpack image (`docker://REF` or a
 * plain reference) with every buildpack of the package. A local path wins over a reference.
 */
export async function locateBuildpacks(
  uri: string,
  baseDir: string,
  context: LocatorContext,
): Promise<BuildpackSource[]> {
  if (uri.startsWith("docker://")) return buildpacksFromImage(uri.slice("docker://".length), context);
  if (uri.startsWith("urn:cnb:"))
    throw new CreateConfigError(`${uri} names the buildpack registry, which locald does not read.`, {
      hint: "Use the buildpack's image reference (docker://…) or a local directory, .tgz or .cnb file instead.",
    });
  const path = localPath(uri, baseDir);
  const local = await stat(path).catch(() => undefined);
  if (
    local === undefined &&
    !uri.startsWith("file://") &&
    !uri.startsWith(".") &&
    !uri.startsWith("/") &&
    isReference(uri)
  )
    return buildpacksFromImage(uri, context);
  const entries = await localTreeEntries(uri, baseDir, "buildpack");
  if (local?.isFile() && isLayoutArchive(entries)) return buildpacksFromLayoutArchive(entries, path);
  return [buildpackFromEntries(entries, uri)];
}

/** Whether `value` parses as an image reference. */
export function isReference(value: string): boolean {
  try {
    parseReference(value);
    return true;
  } catch {
    return false;
  }
}
