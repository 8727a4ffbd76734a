import { readFileSync } from "node:fs";

/**
 * Whether this process is root with the machine's powers: uid 0 in the initial user namespace.
 * Root of a user namespace of its own (a rootless container, `unshare --map-root-user`) looks the
 * same to geteuid() but cannot make device nodes or give files to ids outside its map, so it
 * unpacks and builds as an unprivileged user does.
 */
export function isHostRoot(): boolean {
  if (process.geteuid?.() !== 0) return false;
  hostRoot ??= initialUserNamespace();
  return hostRoot;
}

let hostRoot: boolean | undefined;

function initialUserNamespace(): boolean {
  try {
    // The initial namespace maps every id onto itself: "0 0 4294967295".
    const [first = "", ...rest] = readFileSync("/proc/self/uid_map", "utf8").trim().split("\n");
    return rest.length === 0 && first.trim().split(/\s+/).join(" ") === "0 0 4294967295";
  } catch {
    // No /proc to ask: trust the uid, as before user namespaces.
    return true;
  }
}
