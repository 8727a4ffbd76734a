// Bundles the CLI into one ES module. Start-up is most of a warm re-pull, and resolving and reading
// a couple of hundred module files costs Node about as much as running them.
import { readFileSync } from "node:fs";
import { build } from "esbuild";

// `locald --version` says the version of the package it ships in, whatever it is.
const { version } = JSON.parse(readFileSync(new URL("../packages/locald/package.json", import.meta.url)));

const common = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  sourcemap: "linked",
  logLevel: "warning",
  define: { __LOCALD_VERSION__: JSON.stringify(version) },
  // Smaller to parse: start-up is most of a warm exec. Names are kept (no identifier minifying).
  minifyWhitespace: true,
  minifySyntax: true,
  // Bundled CommonJS dependencies (commander, proper-lockfile) call require() for Node built-ins.
  banner: {
    js: "import { createRequire as __localdRequire } from 'node:module'; const require = __localdRequire(import.meta.url);",
  },
};

await build({
  ...common,
  entryPoints: ["packages/locald/dist/src/main.js"],
  outfile: "packages/locald/dist/locald.mjs",
});
// The unpack worker is loaded by URL, relative to the module that starts it: beside the bundle.
await build({
  ...common,
  entryPoints: ["packages/oci/dist/src/unpack/unpack-worker.js"],
  outfile: "packages/locald/dist/unpack-worker.js",
});
// The unpack worker starts its file writers the same way.
await build({
  ...common,
  entryPoints: ["packages/oci/dist/src/unpack/file-writer-worker.js"],
  outfile: "packages/locald/dist/file-writer-worker.js",
});
// So is the monitor of detached containers, started as its own process.
await build({
  ...common,
  entryPoints: ["packages/oci/dist/src/runtime/container-monitor.js"],
  outfile: "packages/locald/dist/container-monitor.js",
});
