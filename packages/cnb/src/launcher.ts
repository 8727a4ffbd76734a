import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { type BindMount, type ClientOptions, removeTree, type SandboxHandle, type Store } from "@locald/oci";
import { parse as parseToml } from "smol-toml";
import { appStateDir, orderToml, startingPoint } from "./build.js";
import type { Builder, PullPolicy } from "./builder.js";
import { BuildConfigError } from "./errors.js";
import { platformEnv } from "./platform.js";
import {
  DEFAULT_PATH,
  type Isolation,
  LifecycleSandbox,
  type OutputSink,
  phaseEnvironment,
  processOutput,
} from "./sandbox/index.js";

/**
 * Dev environments (`locald shell` / `exec`): detect + build into a layers dir kept per app, with
 * the user's real directory at /workspace (edits are live), and commands run through the
 * lifecycle's launcher with the buildpacks' environment — launch env plus each layer's build env,
 * so build tools work. No image is exported.
 */

/** Files whose change means the buildpacks must run again; anything else is just edited source. */
const INPUT_FILES = [
  "package.json",
  "package-lock.json",
  "npm-shrinkwrap.json",
  "yarn.lock",
  "pnpm-lock.yaml",
  "Cargo.toml",
  "Cargo.lock",
  "Procfile",
  "go.mod",
  "go.sum",
  "requirements.txt",
  "Pipfile.lock",
  "Gemfile.lock",
  "project.toml",
];

const run = promisify(execFile);

export interface EnvironmentOptions {
  builder: string;
  env?: readonly string[];
  buildpacks?: readonly string[];
  home?: string;
  store?: Store;
  client?: ClientOptions;
  /** Run detect + build even when no input changed. */
  rebuild?: boolean;
  logLevel?: "info" | "debug";
  onOutput?: OutputSink;
  /** Where buildpacks and commands run: the builder's own OS (default) or the host's. */
  isolation?: Isolation;
  /** When the builder is asked of its registry (default if-not-present: dev loops stay offline). */
  pullPolicy?: PullPolicy;
  /** false: the lifecycle prints no ANSI colour (CNB_NO_COLOR), for output that is not a terminal. */
  colour?: boolean;
}

export interface DevEnvironment {
  readonly app: string;
  readonly builder: Builder;
  readonly platformApi: string;
  readonly isolation: Isolation;
  /** Host path of the layers dir the buildpacks built. */
  readonly layersDir: string;
  /** Detect and build ran this time (inputs changed, or first use). */
  readonly rebuilt: boolean;
  /** Runs `argv` through the launcher in the environment; resolves with its exit code. */
  run(argv: readonly string[], options?: { terminal?: boolean; env?: readonly string[] }): Promise<number>;
  /**
   * Starts a command (`argv`), or a process type the buildpacks declared (`process`, as an image
   * would run it), for a supervisor that stops it through the handle.
   */
  start(
    what: { argv: readonly string[] } | { process: string },
    options: StartOptions,
  ): Promise<SandboxHandle>;
  /** The process types the buildpacks declared, the default one first (if there is one). */
  processTypes(): Promise<string[]>;
}

export interface StartOptions {
  env?: readonly string[];
  output: (chunk: Buffer, stream: "stdout" | "stderr") => void;
}

async function inputsDigest(app: string, builder: Builder, options: EnvironmentOptions): Promise<string> {
  const hash = createHash("sha256").update(
    JSON.stringify({ builder: builder.digest, env: options.env ?? [], buildpacks: options.buildpacks ?? [] }),
  );
  for (const name of INPUT_FILES) {
    const content = await readFile(join(app, name)).catch(() => undefined);
    if (content !== undefined) hash.update(`\n${name}\n`).update(content);
  }
  return hash.digest("hex");
}

/** Detect + build for `appDir` unless nothing that matters changed since the last time. */
export async function prepareEnvironment(
  appDir: string,
  options: EnvironmentOptions,
): Promise<DevEnvironment> {
  const { app, home, runtime, builder, platformApi, isolation, mode, root, privileged, buildpacks } =
    await startingPoint(appDir, options, "if-not-present");
  // The builder's user, as in a build (see there).
  const { uid, gid } = builder;
  const state = appStateDir(home, app, "dev-environment", isolation);
  const layers = join(state, "layers");
  const platform = join(state, "platform");
  const mounts: BindMount[] = [
    { source: app, destination: "/workspace", readonly: false },
    { source: layers, destination: "/layers", readonly: false },
    { source: platform, destination: "/platform", readonly: true },
    ...mode.mounts(builder),
  ];
  const environment = phaseEnvironment(builder, isolation, platformApi, options.colour);
  const digest = await inputsDigest(app, builder, options);
  const recorded = await readFile(join(state, "inputs"), "utf8").catch(() => "");
  const built = await stat(join(layers, "config", "metadata.toml")).catch(() => undefined);
  const rebuilt = options.rebuild === true || recorded !== digest || built === undefined;
  if (rebuilt) {
    await mkdir(state, { recursive: true, mode: 0o700 });
    // The buildpacks find their previous layers (and reuse them, as after a restore); only the
    // lifecycle's own bookkeeping starts over.
    await removeTree(join(layers, "config"));
    await removeTree(platform);
    await mkdir(join(platform, "env"), { recursive: true, mode: 0o755 });
    await mkdir(layers, { recursive: true, mode: 0o755 });
    for (const [name, value] of platformEnv(options.env ?? []))
      await writeFile(join(platform, "env", name), value);
    if (buildpacks.length > 0) await writeFile(join(layers, "order.toml"), orderToml(builder, buildpacks));
    if (privileged) await run("chown", ["-R", `${uid}:${gid}`, "--", layers]);
    const sandbox = new LifecycleSandbox({
      runtime,
      root,
      privileged,
      uid,
      gid,
      mounts,
      env: environment,
      layersDir: layers,
      logLevel: options.logLevel ?? "info",
      onOutput: options.onOutput ?? processOutput,
    });
    await sandbox.phase("detector", ["-app", "/workspace", "-layers", "/layers", "-platform", "/platform"]);
    await sandbox.phase("builder", ["-app", "/workspace", "-layers", "/layers", "-platform", "/platform"]);
    await writeFile(join(state, "inputs"), digest);
  }
  const callerIsRoot = process.geteuid?.() === 0;
  // The user's own commands: root stays root; anyone else is themselves over the host, and the
  // build user (whom the builder's /etc/passwd knows) in the builder's OS. Files they make in the
  // app dir belong to the caller on the host either way.
  const commandIds = callerIsRoot
    ? { userNamespace: false as const }
    : root === "host"
      ? { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 }
      : { uid, gid };
  const launched = async (argv: readonly string[], extraEnv: readonly string[] = []) => ({
    root,
    // Not "--": the launcher then goes through bash and sources each layer's profile.d.
    args: ["/cnb/lifecycle/launcher", ...argv],
    env: [
      ...environment,
      "CNB_LAYERS_DIR=/layers",
      "CNB_APP_DIR=/workspace",
      `TERM=${process.env.TERM ?? "xterm"}`,
      ...(await buildEnvironment(layers, pathOf(environment))),
      ...extraEnv,
    ],
    cwd: "/workspace",
    mounts,
    ...commandIds,
  });
  return {
    app,
    builder,
    platformApi,
    isolation,
    layersDir: layers,
    rebuilt,
    run: async (argv, runOptions = {}) =>
      runtime.run({
        // Tells a shell or script that it runs inside `locald shell` / `exec`.
        ...(await launched(argv, ["LOCALD_SHELL=1", ...(runOptions.env ?? [])])),
        ...(runOptions.terminal ? { terminal: true } : {}),
      }),
    start: async (what, startOptions) => {
      if ("argv" in what)
        return runtime.start({
          ...(await launched(what.argv, startOptions.env)),
          output: startOptions.output,
        });
      if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(what.process))
        throw new BuildConfigError(`"${what.process}" is not a process type name.`, {
          hint: "Process types are letters, digits, '_', '-' and '.'.",
        });
      // The launcher runs a process type when it is called by that name, as /cnb/process/<type>.
      const processDir = join(state, "process");
      await mkdir(processDir, { recursive: true, mode: 0o755 });
      const link = join(processDir, what.process);
      await symlink("/cnb/lifecycle/launcher", link).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== "EEXIST") throw error;
      });
      const sandboxed = await launched([], startOptions.env);
      return runtime.start({
        ...sandboxed,
        args: [`/locald/process/${what.process}`],
        mounts: [...mounts, { source: processDir, destination: "/locald/process", readonly: true }],
        output: startOptions.output,
      });
    },
    processTypes: async () => {
      const metadata = await readFile(join(layers, "config", "metadata.toml"), "utf8")
        .then((text) => parseToml(text) as LaunchMetadata)
        .catch(() => ({}) as LaunchMetadata);
      const types = (metadata.processes ?? []).map((p) => p.type);
      const first = metadata["buildpack-default-process-type"];
      return first && types.includes(first) ? [first, ...types.filter((t) => t !== first)] : types;
    },
  };
}

function pathOf(env: readonly string[]): string {
  return env.find((pair) => pair.startsWith("PATH="))?.slice(5) ?? DEFAULT_PATH;
}

interface LaunchMetadata {
  processes?: { type: string }[];
  "buildpack-default-process-type"?: string;
}

/**
 * What the launcher leaves out and a dev shell needs: build-only layers' `bin` and `lib`, and every
 * layer's `env.build/` (override, default, append, prepend), as sandbox paths.
 */
export async function buildEnvironment(layersDir: string, path = DEFAULT_PATH): Promise<string[]> {
  const vars = new Map<string, string>([["PATH", path]]);
  const prepend = (name: string, value: string, delim = ":") => {
    const current = vars.get(name);
    vars.set(name, current ? `${value}${delim}${current}` : value);
  };
  for (const buildpack of (await readdir(layersDir, { withFileTypes: true }).catch(() => [])).filter((d) =>
    d.isDirectory(),
  )) {
    if (buildpack.name === "config" || buildpack.name === "sbom") continue;
    const bpDir = join(layersDir, buildpack.name);
    for (const layer of (await readdir(bpDir, { withFileTypes: true })).filter((d) => d.isDirectory())) {
      const inside = `/layers/${buildpack.name}/${layer.name}`;
      const types = await readFile(join(bpDir, `${layer.name}.toml`), "utf8")
        .then((text) => (parseToml(text) as { types?: { build?: boolean; launch?: boolean } }).types ?? {})
        .catch(() => ({}) as { build?: boolean; launch?: boolean });
      if (types.build && !types.launch) {
        if (await stat(join(bpDir, layer.name, "bin")).catch(() => undefined))
          prepend("PATH", `${inside}/bin`);
        if (await stat(join(bpDir, layer.name, "lib")).catch(() => undefined))
          prepend("LD_LIBRARY_PATH", `${inside}/lib`);
      }
      const envDir = join(bpDir, layer.name, "env.build");
      for (const file of await readdir(envDir).catch(() => [] as string[])) {
        if (file.endsWith(".delim")) continue;
        const value = await readFile(join(envDir, file), "utf8");
        const [name = "", action = "override"] = file.split(".");
        const delim = await readFile(join(envDir, `${name}.delim`), "utf8").catch(() => ":");
        if (action === "append") vars.set(name, vars.has(name) ? `${vars.get(name)}${delim}${value}` : value);
        else if (action === "prepend") prepend(name, value, delim);
        else if (action === "default") {
          if (!vars.has(name)) vars.set(name, value);
        } else vars.set(name, value);
      }
    }
  }
  return [...vars].map(([name, value]) => `${name}=${value}`);
}
