#!/usr/bin/env -S node --
// "--": Node reads --env-file anywhere in its argv (nodejs/node#54232), ours included; after "--" it is the CLI's.
// The bundle built by scripts/bundle.mjs; see there for why.
import module from "node:module";
import { homedir } from "node:os";
import { join } from "node:path";

// Node ≥ 22.1 keeps the bundle's compiled code between runs (measured in bench/RESULTS.md). In the
// user's own cache directory, not Node's default under the shared /tmp, where another user could
// put a cache first. NODE_COMPILE_CACHE, when set, wins; on Node 20 there is no such API.
if (process.env.NODE_COMPILE_CACHE === undefined && typeof module.enableCompileCache === "function") {
  try {
    const cache = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
    module.enableCompileCache(join(cache, "locald", "node-compile-cache"));
  } catch {
    // A cache that cannot be made (a read-only home) only costs start-up time.
  }
}

const { main, tuneProcess } = await import("../dist/locald.mjs");
tuneProcess();
process.exitCode = await main(process.argv.slice(2));
