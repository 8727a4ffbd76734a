/**
 * locald installed as an npm CLI: the three packages packed with `npm pack`, installed from those
 * tarballs alone with `npm install -g --prefix` into an empty prefix by an unprivileged user with
 * a clean HOME, and that install pulls, builds the sample Procfile app with the test builder and
 * runs it — on the Node line running this file, which is first on the install's PATH.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, chown, cp, mkdir, readdir, readFile, realpath } from "node:fs/promises";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { removeTree } from "@locald/oci";
import {
  type CliOptions,
  type CliResult,
  callerIn,
  makeTempDir,
  pushSampleBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  type TestRegistry,
} from "../src/index.js";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const SAMPLE_APP = join(REPO, "examples", "procfile-static");
const WORKSPACES = ["packages/oci", "packages/cnb", "packages/locald"];

/** What `npm pack --json` says of each package it packed. */
interface Packed {
  name: string;
  version: string;
  filename: string;
  files: { path: string }[];
}

/** Runs a program to completion, as `as` (through setpriv) when given; never throws on exit codes. */
function exec(
  file: string,
  args: readonly string[],
  options: { as?: CliOptions["as"]; env: NodeJS.ProcessEnv; cwd?: string },
): Promise<CliResult> {
  const { as } = options;
  const [command, ...argv] =
    as === undefined
      ? [file, ...args]
      : ["setpriv", `--reuid=${as.uid}`, `--regid=${as.gid}`, "--clear-groups", "--", file, ...args];
  return new Promise((resolve) => {
    execFile(
      command as string,
      argv,
      { env: options.env, cwd: options.cwd, encoding: "utf8", maxBuffer: 16 * 1024 * 1024, timeout: 180_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 127;
        resolve({
          code,
          stdout,
          stderr: error !== null && code === 127 ? `${error.message}\n${stderr}` : stderr,
        });
      },
    );
  });
}

/**
 * The caller's environment without what would make HOME unclean: npm's own settings (set when the
 * suite runs under `npm run`, e.g. npm_config_prefix, which would override --prefix) and the XDG
 * directories, which would point the CLI's caches into the caller's home. Unset, not emptied.
 */
function cleanEnvironment(): NodeJS.ProcessEnv {
  const unset = Object.keys(process.env).filter((key) => /^(npm_|xdg_)/i.test(key));
  return { ...process.env, ...Object.fromEntries(unset.map((key) => [key, undefined])) };
}

const shared: { registry?: TestRegistry; work?: string; builder?: string; runImage?: string } = {};

before(async () => {
  for (const tool of ["bwrap", "runc", "setpriv", "go", "npm"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("npm-install");
  await chmod(shared.work, 0o755);
  ({ builder: shared.builder, runImage: shared.runImage } = await pushSampleBuilder(
    shared.registry,
    shared.work,
    ["procfile"],
  ));
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

describe(`npm install -g of the packed packages, as an unprivileged user, on Node ${process.version}`, () => {
  let home: string;
  // A space in it, as in many a home directory: the CLI finds its workers and monitor by URL.
  let prefix: string;
  let as: CliOptions["as"];
  let env: NodeJS.ProcessEnv;
  before(async () => {
    const work = shared.work as string;
    home = join(work, "home");
    await mkdir(home, { recursive: true });
    await cp(SAMPLE_APP, join(home, "app"), { recursive: true });
    prefix = join(work, "npm prefix");
    await mkdir(prefix);
    let callerEnv: NodeJS.ProcessEnv;
    ({ as, env: callerEnv } = await callerIn("an unprivileged user", home));
    if (as !== undefined) await chown(prefix, as.uid, as.gid);
    env = {
      ...cleanEnvironment(),
      ...callerEnv,
      NO_COLOR: "1",
      PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`,
    };
  });
  const locald = (args: string[]): Promise<CliResult> =>
    runLocald(args, { env, executable: join(prefix, "bin", "locald"), ...(as ? { as } : {}) });

  test("pack the packages and install them from the tarballs alone", async () => {
    const tarballs = join(shared.work as string, "tarballs");
    await mkdir(tarballs);
    const npm = await requireBinary("npm");
    const packed = await exec(
      npm,
      ["pack", "--json", "--pack-destination", tarballs, ...WORKSPACES.flatMap((w) => ["--workspace", w])],
      // A HOME of its own: npm's logs there would be this caller's files in the user's clean one.
      { env: { ...cleanEnvironment(), HOME: tarballs }, cwd: REPO },
    );
    assert.equal(packed.code, 0, packed.stderr);
    const packages = JSON.parse(packed.stdout) as Packed[];
    assert.deepEqual(packages.map((p) => p.name).sort(), ["@locald/cnb", "@locald/oci", "locald"]);
    for (const { name, files } of packages) {
      const paths = files.map((f) => f.path);
      assert.ok(
        !paths.some((p) => /(^|\/)test\/|tsbuildinfo|tsconfig/.test(p)),
        `${name} ships ${paths.join(" ")}`,
      );
    }
    // The CLI is its bundle and the files that the bundle starts by URL beside itself.
    const cli = packages.find((p) => p.name === "locald") as Packed;
    for (const file of [
      "bin/locald.js",
      "dist/locald.mjs",
      "dist/unpack-worker.js",
      "dist/file-writer-worker.js",
      "dist/container-monitor.js",
    ])
      assert.ok(
        cli.files.some((f) => f.path === file),
        `locald's tarball lacks ${file}`,
      );

    // One command, so that npm resolves @locald/cnb's @locald/oci to the tarball beside it; the
    // registry has no @locald packages, and only their public dependencies come from there.
    const installed = await exec(
      npm,
      [
        "install",
        "--global",
        "--prefix",
        prefix,
        "--no-audit",
        "--no-fund",
        "--no-update-notifier",
        ...packages.map((p) => join(tarballs, p.filename)),
      ],
      { env, ...(as ? { as } : {}) },
    );
    assert.equal(installed.code, 0, installed.stderr);
    const bin = await realpath(join(prefix, "bin", "locald"));
    assert.equal(bin, join(prefix, "lib", "node_modules", "locald", "bin", "locald.js"));
    // The bundle holds every module the CLI runs: its install brings nothing else along.
    assert.deepEqual((await readdir(dirname(dirname(bin)))).sort(), [
      "README.md",
      "bin",
      "dist",
      "package.json",
    ]);
  });

  test("locald --version says the packed version", async () => {
    const { version } = JSON.parse(await readFile(join(REPO, "packages/locald/package.json"), "utf8")) as {
      version: string;
    };
    const result = await locald(["--version"]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, `${version}\n`);
  });

  test("pull the run image", async () => {
    const pulled = await locald(["image", "pull", "-q", shared.runImage as string]);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.match(pulled.stdout, /^sha256:[0-9a-f]{64}\n$/);
  });

  test("build the sample app and run it", async () => {
    const built = await locald([
      "build",
      join(home, "app"),
      "--builder",
      shared.builder as string,
      "-t",
      "installed",
    ]);
    assert.equal(built.code, 0, built.stderr);
    const ran = await locald(["container", "run", "--rm", "installed"]);
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stdout, "Hello from a Procfile app built by locald with the CNB lifecycle.\n");
  });
});
