import { readFile, stat } from "node:fs/promises";
import { posix } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { gunzip } from "node:zlib";
import { extract } from "tar-stream";
import { InvalidLayerError } from "../errors.js";
import type { LayerEntry } from "./layer-entry.js";

/** Tar archives larger than this are refused: they are read whole into memory to be re-layered. */
const MAX_ARCHIVE_BYTES = 2 * 1024 * 1024 * 1024;
const gunzipAsync = promisify(gunzip);

/**
 * The files, directories and symlinks of a `.tar`, `.tgz` or `.tar.gz` file as layer entries,
 * paths cleaned (`./a` → `a`) and relative. An entry that climbs out (`..`), is absolute after
 * cleaning or is of another kind (a hard link, a device) is refused, never written anywhere.
 */
export async function archiveEntries(file: string): Promise<LayerEntry[]> {
  let bytes: Buffer;
  try {
    if ((await stat(file)).size > MAX_ARCHIVE_BYTES) throw new RangeError("it is larger than 2 GiB");
    bytes = await readFile(file);
  } catch (error) {
    throw new InvalidLayerError(`The archive ${file} cannot be read: ${(error as Error).message}.`, {
      hint: "Check that it is a tar or gzip-compressed tar file, complete, and under 2 GiB.",
    });
  }
  return tarEntries(bytes, `The archive ${file}`);
}

/**
 * The entries of a tar held in memory (gzip-compressed or not), refused as `archiveEntries` says;
 * `what` names it in errors ("The archive x.tgz", "Layer sha256:…").
 */
export async function tarEntries(input: Buffer, what: string): Promise<LayerEntry[]> {
  let bytes = input;
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = await gunzipAsync(bytes, { maxOutputLength: MAX_ARCHIVE_BYTES });
    } catch (error) {
      throw new InvalidLayerError(`${what} cannot be decompressed: ${(error as Error).message}.`);
    }
  }
  const refuse = (name: string, why: string) =>
    new InvalidLayerError(`${what} cannot be used: its entry ${JSON.stringify(name)} ${why}.`, {
      hint: "Make the archive from the directory itself (tar -czf x.tgz -C DIR .), with plain files, directories and symlinks.",
    });
  const tar = extract();
  const entries: LayerEntry[] = [];
  Readable.from([bytes]).pipe(tar);
  try {
    for await (const entry of tar) {
      const header = entry.header;
      const path = cleanPath(header.name);
      if (path === undefined) throw refuse(header.name, "leaves the archive's root");
      const mode = (header.mode ?? 0) & 0o7777;
      const owner = { uid: header.uid ?? 0, gid: header.gid ?? 0 };
      if (header.type === "file" || header.type === "contiguous-file") {
        const chunks: Buffer[] = [];
        for await (const chunk of entry as AsyncIterable<Buffer>) chunks.push(chunk);
        entries.push({ path, type: "file", content: Buffer.concat(chunks), mode, ...owner });
        continue;
      }
      entry.resume();
      if (header.type === "directory") {
        if (path !== "") entries.push({ path: `${path}/`, type: "directory", mode, ...owner });
      } else if (header.type === "symlink") {
        entries.push({ path, type: "symlink", linkname: header.linkname ?? "", ...owner });
      } else throw refuse(header.name, `is a ${header.type ?? "special entry"}`);
    }
  } catch (error) {
    tar.destroy();
    if (error instanceof InvalidLayerError) throw error;
    throw new InvalidLayerError(`${what} is not a valid tar file: ${(error as Error).message}.`, {
      hint: "Check that it is a tar or gzip-compressed tar file and that it is complete.",
    });
  }
  return entries;
}

/** `a/./b/` → `a/b`; undefined for a path that leaves the root. */
function cleanPath(name: string): string | undefined {
  if (name.split("/").includes("..")) return undefined;
  return posix.normalize(`/${name}`).replace(/^\/+|\/+$/g, "");
}
