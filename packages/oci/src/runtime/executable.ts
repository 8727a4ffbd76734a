import { closeSync, constants, openSync, readSync, statSync } from "node:fs";
import { posix } from "node:path";
import { ExecutableError } from "../errors.js";
import { resolveInRoot } from "../unpack/index.js";

/** What a container's first word names, looked up as runc's `exec` would, inside the image. */
export type ExecutableLookup =
  | { readonly kind: "found"; readonly path: string }
  /** Under a bind mount: not the image's to answer for, so left to the runtime. */
  | { readonly kind: "mounted"; readonly path: string };

/** The container paths that bind mounts cover: what is under them is not in the image. */
type MountPoints = readonly string[];

const under = (path: string, mounts: MountPoints) =>
  mounts.some((m) => m !== "/" && (path === m || path.startsWith(`${m.replace(/\/$/, "")}/`)));

/** A shebang's interpreter: the first word after `#!`, when the file is a script. */
function interpreterOf(host: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(host, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const head = Buffer.alloc(256);
    const read = readSync(fd, head, 0, head.length, 0);
    const text = head.subarray(0, read).toString("latin1");
    if (!text.startsWith("#!")) return undefined;
    return text.slice(2).split("\n")[0]?.trim().split(/\s+/)[0] || undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * Checks, before runc runs, that the container's command exists in the image and can be
 * executed, and says so in words with docker's exit statuses (127 missing, 126 not
 * executable) — runc would print its own log line and exit 1 once the container was set up.
 * `root` is the image's root on the host (the overlay's lower layer when there is one).
 */
export function checkExecutable(
  root: string,
  process: {
    readonly args: readonly string[];
    readonly env: readonly string[];
    readonly cwd: string;
  },
  mounts: MountPoints = [],
): ExecutableLookup {
  const command = process.args[0] ?? "";
  const hint =
    "Check the image's entrypoint and command (`locald image inspect IMAGE`), or give another with --entrypoint or after the image name.";
  const candidates: string[] = [];
  if (command.includes("/")) candidates.push(posix.resolve(process.cwd, command));
  else {
    const path = process.env.find((e) => e.startsWith("PATH="))?.slice(5) ?? "";
    for (const dir of path.split(":")) if (dir.startsWith("/")) candidates.push(posix.join(dir, command));
  }
  let denied: { path: string; directory: boolean } | undefined;
  for (const candidate of candidates) {
    if (under(candidate, mounts)) return { kind: "mounted", path: candidate };
    const host = resolveInRoot(root, candidate);
    if (host === undefined) continue;
    const info = statSync(host, { throwIfNoEntry: false });
    if (info === undefined) continue;
    if (!info.isFile() || (info.mode & 0o111) === 0) {
      denied ??= { path: candidate, directory: info.isDirectory() };
      continue;
    }
    const interpreter = interpreterOf(host);
    if (interpreter?.startsWith("/") && !under(interpreter, mounts)) {
      const found = resolveInRoot(root, interpreter);
      if (found === undefined || statSync(found, { throwIfNoEntry: false }) === undefined)
        throw new ExecutableError(
          `Cannot run ${candidate} in the container: it is a script for ${interpreter}, which the image does not have.`,
          127,
          { hint },
        );
    }
    return { kind: "found", path: candidate };
  }
  if (denied !== undefined)
    throw new ExecutableError(
      `Cannot run ${denied.path} in the container: it is ${denied.directory ? "a directory" : "not executable (no x permission)"}.`,
      126,
      { hint },
    );
  throw new ExecutableError(
    command.includes("/")
      ? `Cannot run ${command} in the container: the image has no such file.`
      : `Cannot run "${command}" in the container: no such program on the image's PATH (${
          process.env.find((e) => e.startsWith("PATH="))?.slice(5) || "empty"
        }).`,
    127,
    { hint },
  );
}
