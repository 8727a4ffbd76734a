import { readFile, stat } from "node:fs/promises";
import { isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { archiveEntries, directoryEntries, errnoReason, type LayerEntry } from "@locald/oci";
import { CreateConfigError } from "../errors.js";

/**
 * A buildpack or lifecycle given as a local directory or a tar(.gz) file, by path (relative to
 * the config file that names it) or `file://` URI: its entries, relative to its root.
 */
export async function localTreeEntries(uri: string, baseDir: string, what: string): Promise<LayerEntry[]> {
  const path = localPath(uri, baseDir);
  const info = await stat(path).catch(() => undefined);
  if (info === undefined)
    throw new CreateConfigError(`The ${what} at ${path} does not exist.`, {
      hint: "Relative paths are read from the directory of the configuration file; check the uri.",
    });
  if (info.isDirectory()) return directoryEntries(path, "");
  return archiveEntries(path);
}

/** The host path a local uri names, or undefined for a remote one (an image reference, http). */
export function localPath(uri: string, baseDir: string): string {
  if (uri.startsWith("file://")) {
    try {
      return fileURLToPath(uri);
    } catch {
      // file://./bp and the like: a relative path written as a URL, as pack accepts it.
      return resolve(baseDir, uri.slice("file://".length));
    }
  }
  return isAbsolute(uri) ? uri : resolve(baseDir, uri);
}

/** The file of `entries` at `path`, as text; undefined when there is none. */
export function entryText(entries: readonly LayerEntry[], path: string): string | undefined {
  const found = entries.find((entry) => entry.type === "file" && entry.path === path);
  return found?.content === undefined ? undefined : Buffer.from(found.content).toString("utf8");
}

/** A builder.toml or package.toml (`what`), read; a missing or unreadable one said in words. */
export async function readConfigFile(file: string, what: "builder.toml" | "package.toml"): Promise<string> {
  return readFile(file, "utf8").catch((error: NodeJS.ErrnoException) => {
    const why = error.code === "ENOENT" ? "it does not exist" : (errnoReason(error.code) ?? error.message);
    throw new CreateConfigError(
      `Cannot read the ${what === "builder.toml" ? "builder" : "package"} configuration ${file}: ${why}.`,
      { hint: `Pass --config with the path of a ${what}.` },
    );
  });
}
