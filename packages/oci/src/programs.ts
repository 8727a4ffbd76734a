import { constants } from "node:fs";
import { access } from "node:fs/promises";
import { join } from "node:path";

/**
 * An executable `name` on PATH (then the usual system directories, unless `pathOnly`: for a
 * program that is only an optimisation, the caller's PATH decides), or undefined.
 */
export async function programOnPath(name: string, pathOnly = false): Promise<string | undefined> {
  const dirs = (process.env.PATH ?? "").split(":").filter((dir) => dir !== "");
  for (const dir of pathOnly ? dirs : [...dirs, "/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    try {
      await access(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // try the next one
    }
  }
  return undefined;
}
