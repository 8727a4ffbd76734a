/**
 * Pull benchmark: `locald image pull` against `skopeo copy` from the same local registry, in the
 * same run, interleaved. See bench/README.md.
 *
 *   npx tsc -b bench && node bench/dist/pull.js [--runs 3] [--size-mb 300] [--layers 8]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import { access, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  type BuiltLayer,
  compressLayer,
  type LayerEntry,
  LOCALD_BIN,
  pseudoRandomBytes,
  startRegistry,
  type TestRegistry,
  tarEntries,
  writeImage,
} from "@locald/e2e";
import { type Descriptor, OciLayout, push } from "@locald/oci";

const SKOPEO = "/usr/bin/skopeo";
const GNU_TIME = "/usr/bin/time";
const MiB = 1024 * 1024;
const WARM_TARGET_MS = 300;
const RATIO_TARGET = 1.5;

// ---------------------------------------------------------------------------------------------
// arguments

interface BenchOptions {
  runs: number;
  sizeMb: number;
  layers: number;
  settleMs: number;
  warmup: number;
}

function usage(): string {
  return [
    "usage: node bench/dist/pull.js [--runs N] [--size-mb MB] [--layers N] [--warmup N] [--settle-ms MS]",
    "  --runs N      measured rounds, interleaved locald/skopeo (default 3)",
    "  --size-mb MB  compressed size of the random layers in MiB (default 300)",
    "  --layers N    number of random layers (default 8); two small compressible layers are added",
    "  --warmup N    untimed rounds of both pulls first (default 1; still verified)",
    "  --settle-ms MS  pause after sync before each timed command (default 1000)",
  ].join("\n");
}

function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: "string", default: "3" },
      "size-mb": { type: "string", default: "300" },
      layers: { type: "string", default: "8" },
      "settle-ms": { type: "string", default: "1000" },
      warmup: { type: "string", default: "1" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${usage()}\n`);
    process.exit(0);
  }
  const positive = (name: string, text: string, integer: boolean, allowZero = false): number => {
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0 || (n === 0 && !allowZero) || (integer && !Number.isInteger(n)))
      throw new Error(
        `--${name} must be a positive ${integer ? "integer" : "number"} (got ${text})\n${usage()}`,
      );
    return n;
  };
  return {
    runs: positive("runs", values.runs, true),
    sizeMb: positive("size-mb", values["size-mb"], false),
    layers: positive("layers", values.layers, true),
    settleMs: positive("settle-ms", values["settle-ms"], true, true),
    warmup: positive("warmup", values.warmup, true, true),
  };
}

// ---------------------------------------------------------------------------------------------
// child processes, timed

let activeChild: ChildProcess | undefined;
let interrupted = false;

interface Timed {
  ms: number;
  code: number;
  stdout: string;
  stderr: string;
  /** Peak RSS of the measured process in KiB, if it could be measured. */
  maxRssKb: number | undefined;
}

interface RssProbe {
  kind: "gnu-time" | "node-preload" | "none";
  /** Only for node-preload: a module that records process.resourceUsage().maxRSS at exit. */
  preload?: string;
}

async function executable(path: string): Promise<boolean> {
  return access(path, fsConstants.X_OK).then(
    () => true,
    () => false,
  );
}

async function rssProbe(workDir: string): Promise<RssProbe> {
  if (process.env.BENCH_FORCE_PRELOAD_RSS !== "1" && (await executable(GNU_TIME)))
    return { kind: "gnu-time" };
  // No GNU time: a preload module in the locald child reports its own peak RSS at exit.
  const preload = join(workDir, "rss-preload.mjs");
  await writeFile(
    preload,
    [
      'import { writeFileSync } from "node:fs";',
      "const file = process.env.BENCH_RSS_FILE;",
      'if (file) process.on("exit", () => writeFileSync(file, String(process.resourceUsage().maxRSS)));',
      "",
    ].join("\n"),
  );
  return { kind: "node-preload", preload };
}

/**
 * Runs a command to completion and measures its wall time from spawn to exit. The peak RSS comes
 * from GNU time (`-f %M`, KiB) wrapping the command, or from the node preload for node children.
 */
async function runTimed(
  command: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; probe: RssProbe; rssFile: string; isNode?: boolean },
): Promise<Timed> {
  if (interrupted) throw new Error("interrupted");
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1", ...options.env };
  let file = command;
  let argv = [...args];
  const { probe } = options;
  if (probe.kind === "gnu-time") {
    file = GNU_TIME;
    argv = ["-f", "%M", "-o", options.rssFile, command, ...args];
  } else if (probe.kind === "node-preload" && options.isNode && probe.preload) {
    argv = ["--import", pathToFileURL(probe.preload).href, ...args];
    env.BENCH_RSS_FILE = options.rssFile;
  }
  await rm(options.rssFile, { force: true });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const started = performance.now();
  const { code, ms } = await new Promise<{ code: number; ms: number }>((resolve, reject) => {
    const child = spawn(file, argv, { env, stdio: ["ignore", "pipe", "pipe"] });
    activeChild = child;
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.once("error", reject);
    child.once("close", (exitCode, signal) => {
      const elapsed = performance.now() - started;
      activeChild = undefined;
      resolve({ code: exitCode ?? (signal ? 128 : 1), ms: elapsed });
    });
  });
  let maxRssKb: number | undefined;
  if (probe.kind !== "none") {
    const text = await readFile(options.rssFile, "utf8").catch(() => "");
    // GNU time prefixes "Command exited with non-zero status N" lines; the figure is the last line.
    const last = text.trim().split("\n").pop() ?? "";
    maxRssKb = /^\d+$/.test(last) ? Number(last) : undefined;
    // node's maxRSS is already KiB, like GNU time's %M.
  }
  return {
    ms,
    code,
    stdout: Buffer.concat(out).toString("utf8"),
    stderr: Buffer.concat(err).toString("utf8"),
    maxRssKb,
  };
}

/**
 * Flushes dirty pages left by the previous run, then waits a moment: on ext4 mounted with
 * `discard`, deleting the previous run's 300 MB triggers discards after the journal commit, and
 * without the pause their cost lands in whichever command runs next.
 */
async function settle(ms: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const child = spawn("sync", [], { stdio: "ignore" });
    child.once("error", () => resolve());
    child.once("close", () => resolve());
  });
  if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
}

async function versionOf(command: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "ignore"] });
    const out: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.once("error", () => resolve("unknown"));
    child.once("close", () => resolve(Buffer.concat(out).toString("utf8").trim() || "unknown"));
  });
}

// ---------------------------------------------------------------------------------------------
// the image

interface BenchImage {
  reference: string;
  digest: string;
  /** Config and layers: every blob a complete copy must hold. */
  blobs: Descriptor[];
  compressedBytes: number;
  layerCount: number;
}

function compressibleText(lines: number, seed: number): string {
  const out: string[] = [];
  for (let i = 0; i < lines; i++)
    out.push(`setting.${seed}.${i % 97} = "value for line ${i} of the benchmark image configuration"`);
  return `${out.join("\n")}\n`;
}

async function buildAndPushImage(
  registry: TestRegistry,
  workDir: string,
  options: BenchOptions,
): Promise<BenchImage> {
  const layoutDir = join(workDir, "source-layout");
  const layout = await OciLayout.open(layoutDir, { create: true });
  const totalBytes = Math.round(options.sizeMb * MiB);
  const perLayer = Math.floor(totalBytes / options.layers);
  const filesPerLayer = 4;
  const layers: Array<readonly LayerEntry[] | BuiltLayer> = [];

  // A small, compressible base layer…
  layers.push([
    { path: "etc/", type: "directory" },
    { path: "etc/bench.conf", content: compressibleText(4000, 0) },
    { path: "etc/motd", content: "locald pull benchmark\n" },
  ]);
  // …the bulk: mostly incompressible pseudo-random files, gzip level 1 like compressLayer does…
  for (let l = 0; l < options.layers; l++) {
    const entries: LayerEntry[] = [{ path: `opt/bench/layer${l}/`, type: "directory" }];
    for (let f = 0; f < filesPerLayer; f++) {
      const size = Math.floor(perLayer / filesPerLayer);
      entries.push({
        path: `opt/bench/layer${l}/blob-${f}.bin`,
        content: pseudoRandomBytes(size, 1 + l * filesPerLayer + f),
      });
    }
    layers.push(await compressLayer(await tarEntries(entries), "gzip", "oci"));
    process.stderr.write(`  built layer ${l + 1}/${options.layers}\r`);
  }
  process.stderr.write("\n");
  // …and a small top layer of many little text files.
  layers.push(
    Array.from({ length: 200 }, (_, i) => ({
      path: `srv/app/module-${i}.js`,
      content: `export const id = ${i};\n${compressibleText(20, i)}`,
    })),
  );

  const image = await writeImage(layout, {
    layers,
    config: { Entrypoint: ["/bin/sh"], Env: ["BENCH=1"], WorkingDir: "/srv/app" },
  });
  await layout.addManifest(image.descriptor, "bench");
  const reference = `${registry.host}/bench/big:1`;
  const pushed = await push({ kind: "layout", dir: layoutDir, name: "bench" }, reference);
  if (pushed.digest !== image.descriptor.digest)
    throw new Error(`push reported ${pushed.digest}, the layout holds ${image.descriptor.digest}`);
  const manifest = JSON.parse(image.manifest.toString("utf8")) as {
    config: Descriptor;
    layers: Descriptor[];
  };
  await rm(layoutDir, { recursive: true, force: true });
  return {
    reference,
    digest: image.descriptor.digest,
    blobs: [manifest.config, ...manifest.layers],
    compressedBytes: manifest.layers.reduce((sum, l) => sum + l.size, 0),
    layerCount: manifest.layers.length,
  };
}

// ---------------------------------------------------------------------------------------------
// verification: a run only counts when its output is complete

async function verifyLayout(dir: string, image: BenchImage): Promise<string | undefined> {
  let index: { manifests?: Array<{ digest?: string }> };
  try {
    index = JSON.parse(await readFile(join(dir, "index.json"), "utf8"));
  } catch (error) {
    return `no readable index.json in ${dir}: ${(error as Error).message}`;
  }
  const digests = (index.manifests ?? []).map((m) => m.digest);
  if (!digests.includes(image.digest))
    return `index.json of ${dir} lacks ${image.digest} (has ${digests.join(", ") || "nothing"})`;
  const blobPath = (digest: string) => join(dir, "blobs", ...digest.split(":"));
  for (const blob of [{ digest: image.digest, size: -1 }, ...image.blobs]) {
    const info = await stat(blobPath(blob.digest)).catch(() => undefined);
    if (info === undefined) return `blob ${blob.digest} missing from ${dir}`;
    if (blob.size >= 0 && info.size !== blob.size)
      return `blob ${blob.digest} in ${dir} has ${info.size} bytes, expected ${blob.size}`;
  }
  return undefined;
}

function tail(text: string, lines = 15): string {
  return text.trim().split("\n").slice(-lines).join("\n");
}

// ---------------------------------------------------------------------------------------------
// statistics and output

function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

interface Series {
  runs: Array<number | null>;
  median: number | null;
  min: number | null;
  max: number | null;
}

function series(values: ReadonlyArray<number | undefined>): Series {
  const ok = values.filter((v): v is number => v !== undefined);
  return {
    runs: values.map((v) => (v === undefined ? null : round(v))),
    median: ok.length ? round(median(ok) as number) : null,
    min: ok.length ? round(Math.min(...ok)) : null,
    max: ok.length ? round(Math.max(...ok)) : null,
  };
}

function round(n: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

const secs = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? "fail" : (ms / 1000).toFixed(2);
const mib = (kb: number | null | undefined) =>
  kb === null || kb === undefined ? "n/a" : (kb / 1024).toFixed(0);
const ratioText = (r: number | null | undefined) =>
  r === null || r === undefined ? "—" : `${r.toFixed(2)}×`;

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padStart(widths[i] as number)).join(" | ")} |`;
  const rule = `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

// ---------------------------------------------------------------------------------------------
// main

interface RunResult {
  localdMs?: number;
  localdRssKb?: number;
  skopeoMs?: number;
  skopeoRssKb?: number;
  storeColdMs?: number;
  storeColdRssKb?: number;
  warmMs?: number;
  warmRssKb?: number;
  startupMs?: number;
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  for (const bin of [SKOPEO, process.execPath])
    if (!(await executable(bin))) throw new Error(`${bin} is needed for this benchmark`);

  const workDir = await mkdtemp(join(tmpdir(), "locald-bench-"));
  let registry: TestRegistry | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted = true;
    process.stderr.write(`\n${signal}: stopping, cleaning up…\n`);
    activeChild?.kill("SIGTERM");
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const probe = await rssProbe(workDir);
    const rssFile = join(workDir, "rss.txt");
    const [skopeoVersion, nodeVersion] = [await versionOf(SKOPEO, ["--version"]), process.version];

    process.stderr.write("starting an anonymous registry…\n");
    registry = await startRegistry({ flavour: "anonymous" });
    process.stderr.write(`building and pushing a ~${options.sizeMb} MiB image to ${registry.host}…\n`);
    const buildStart = performance.now();
    // Other work on the machine skews wall times; the load average says how much there was.
    const loadBefore = loadavg().map((l) => round(l, 2));
    const image = await buildAndPushImage(registry, workDir, options);
    process.stderr.write(
      `pushed ${image.reference} ${image.digest}: ${image.layerCount} layers, ` +
        `${(image.compressedBytes / MiB).toFixed(1)} MiB compressed (${((performance.now() - buildStart) / 1000).toFixed(1)} s)\n`,
    );

    const failures: string[] = [];
    const results: RunResult[] = [];
    let seq = 0;
    const fresh = async (label: string) => {
      const dir = join(workDir, `${label}-${seq++}`);
      await mkdir(dir);
      return dir;
    };
    const locald = (args: string[], home: string) =>
      runTimed(process.execPath, [LOCALD_BIN, ...args], {
        env: { LOCALD_HOME: home },
        probe,
        rssFile,
        isNode: true,
      });

    const runLocaldLayout = async (label: string, result: RunResult) => {
      const home = await fresh("home");
      const out = join(await fresh("locald-layout"), "layout");
      await settle(options.settleMs);
      const t = await locald(["image", "pull", "--quiet", "--layout", out, image.reference], home);
      const problem =
        t.code !== 0
          ? `exit ${t.code}: ${tail(t.stderr)}`
          : t.stdout.trim() !== image.digest
            ? `printed ${JSON.stringify(t.stdout.trim())}, expected ${image.digest}`
            : await verifyLayout(out, image);
      if (problem) failures.push(`${label}: locald --layout: ${problem}`);
      else {
        result.localdMs = t.ms;
        result.localdRssKb = t.maxRssKb;
      }
      await rm(home, { recursive: true, force: true });
      await rm(join(out, ".."), { recursive: true, force: true });
    };

    const runSkopeo = async (label: string, result: RunResult) => {
      const out = join(await fresh("skopeo"), "layout");
      await settle(options.settleMs);
      const t = await runTimed(
        SKOPEO,
        ["copy", "--quiet", "--src-tls-verify=false", `docker://${image.reference}`, `oci:${out}:bench`],
        { probe: probe.kind === "gnu-time" ? probe : { kind: "none" }, rssFile },
      );
      const problem = t.code !== 0 ? `exit ${t.code}: ${tail(t.stderr)}` : await verifyLayout(out, image);
      if (problem) failures.push(`${label}: skopeo: ${problem}`);
      else {
        result.skopeoMs = t.ms;
        result.skopeoRssKb = t.maxRssKb;
      }
      await rm(join(out, ".."), { recursive: true, force: true });
    };

    const runStore = async (label: string, result: RunResult) => {
      const home = await fresh("home");
      await settle(options.settleMs);
      const cold = await locald(["image", "pull", "--quiet", image.reference], home);
      if (cold.code !== 0 || cold.stdout.trim() !== image.digest) {
        failures.push(`${label}: locald store pull: exit ${cold.code}: ${tail(cold.stderr || cold.stdout)}`);
      } else {
        const storeProblem = await verifyLayout(join(home, "store"), image);
        if (storeProblem) failures.push(`${label}: locald store pull: ${storeProblem}`);
        else {
          result.storeColdMs = cold.ms;
          result.storeColdRssKb = cold.maxRssKb;
        }
        await settle(options.settleMs);
        const warm = await locald(["image", "pull", "--json", image.reference], home);
        let problem: string | undefined;
        if (warm.code !== 0) problem = `exit ${warm.code}: ${tail(warm.stderr)}`;
        else {
          try {
            const json = JSON.parse(warm.stdout) as { digest?: string; upToDate?: boolean };
            if (json.digest !== image.digest) problem = `digest ${json.digest}, expected ${image.digest}`;
            else if (json.upToDate !== true) problem = "not reported up to date (it downloaded again)";
          } catch {
            problem = `unparseable output ${JSON.stringify(warm.stdout)}`;
          }
        }
        if (problem) failures.push(`${label}: locald warm re-pull: ${problem}`);
        else {
          result.warmMs = warm.ms;
          result.warmRssKb = warm.maxRssKb;
        }
      }
      await rm(home, { recursive: true, force: true });
    };

    const runStartup = async (_label: string, result: RunResult) => {
      const home = await fresh("home");
      const t = await locald(["--version"], home);
      if (t.code === 0) result.startupMs = t.ms;
      await rm(home, { recursive: true, force: true });
    };

    for (let round = 1; round <= options.warmup; round++) {
      // Same commands and checks, figures discarded: the first pull after the push pays for
      // leftovers of the setup (writeback, discards of the deleted source layout).
      const scratch: RunResult = {};
      await runLocaldLayout(`warm-up ${round}`, scratch);
      await runSkopeo(`warm-up ${round}`, scratch);
      process.stderr.write(
        `warm-up ${round}/${options.warmup}: locald ${secs(scratch.localdMs)} s, skopeo ${secs(scratch.skopeoMs)} s (not counted)\n`,
      );
    }

    for (let run = 1; run <= options.runs; run++) {
      const result: RunResult = {};
      // Alternate who goes first, so neither always pulls right after the other's disk writes.
      const pair = run % 2 === 1 ? [runLocaldLayout, runSkopeo] : [runSkopeo, runLocaldLayout];
      for (const step of [...pair, runStore, runStartup]) await step(`run ${run}`, result);
      results.push(result);
      const ratio =
        result.localdMs !== undefined && result.skopeoMs !== undefined
          ? result.localdMs / result.skopeoMs
          : undefined;
      process.stderr.write(
        `run ${run}/${options.runs}: locald ${secs(result.localdMs)} s, skopeo ${secs(result.skopeoMs)} s ` +
          `(${ratioText(ratio)}), store cold ${secs(result.storeColdMs)} s, warm ${secs(result.warmMs)} s\n`,
      );
    }

    // ---- report
    const pick = (f: (r: RunResult) => number | undefined) => results.map(f);
    const ratios = results.map((r) =>
      r.localdMs !== undefined && r.skopeoMs !== undefined ? r.localdMs / r.skopeoMs : undefined,
    );
    const s = {
      localdLayoutMs: series(pick((r) => r.localdMs)),
      skopeoMs: series(pick((r) => r.skopeoMs)),
      ratioPerRun: series(ratios),
      localdStoreColdMs: series(pick((r) => r.storeColdMs)),
      localdWarmRepullMs: series(pick((r) => r.warmMs)),
      localdStartupMs: series(pick((r) => r.startupMs)),
      localdLayoutRssKb: series(pick((r) => r.localdRssKb)),
      localdStoreColdRssKb: series(pick((r) => r.storeColdRssKb)),
      skopeoRssKb: series(pick((r) => r.skopeoRssKb)),
    };
    const ratioOfMedians =
      s.localdLayoutMs.median !== null && s.skopeoMs.median !== null
        ? round(s.localdLayoutMs.median / s.skopeoMs.median)
        : null;
    const mbps = (ms: number | null) =>
      ms === null ? "—" : (image.compressedBytes / MiB / (ms / 1000)).toFixed(0);

    const rows = results.map((r, i) => [
      String(i + 1),
      secs(r.localdMs),
      secs(r.skopeoMs),
      ratioText(ratios[i]),
      secs(r.storeColdMs),
      secs(r.warmMs),
      secs(r.startupMs),
      mib(r.localdRssKb),
      mib(r.skopeoRssKb),
    ]);
    rows.push([
      "median",
      secs(s.localdLayoutMs.median),
      secs(s.skopeoMs.median),
      ratioText(ratioOfMedians),
      secs(s.localdStoreColdMs.median),
      secs(s.localdWarmRepullMs.median),
      secs(s.localdStartupMs.median),
      mib(s.localdLayoutRssKb.median),
      mib(s.skopeoRssKb.median),
    ]);
    const header = [
      "run",
      "locald --layout (s)",
      "skopeo (s)",
      "ratio",
      "locald store cold (s)",
      "warm re-pull (s)",
      "locald --version (s)",
      "locald RSS (MiB)",
      "skopeo RSS (MiB)",
    ];
    const ratioPass = ratioOfMedians !== null && ratioOfMedians <= RATIO_TARGET;
    const warmPass = s.localdWarmRepullMs.median !== null && s.localdWarmRepullMs.median <= WARM_TARGET_MS;
    const rssNote =
      probe.kind === "gnu-time"
        ? "peak RSS: GNU time %M"
        : "peak RSS: process.resourceUsage().maxRSS of the locald child (skopeo n/a)";
    const loadAfter = loadavg().map((l) => round(l, 2));
    const lines = [
      "",
      `pull benchmark — ${image.reference} — ${image.layerCount} layers, ${(image.compressedBytes / MiB).toFixed(1)} MiB compressed`,
      `node ${nodeVersion}, ${skopeoVersion}, ${cpus().length} CPUs, ${(totalmem() / 1024 ** 3).toFixed(0)} GiB RAM, ${rssNote}`,
      `load average 1/5/15 min: ${loadBefore.join(" ")} before the image was built, ${loadAfter.join(" ")} after the last run`,
      "",
      table(header, rows),
      "",
      `throughput (median): locald --layout ${mbps(s.localdLayoutMs.median)} MiB/s, skopeo ${mbps(s.skopeoMs.median)} MiB/s, locald store ${mbps(s.localdStoreColdMs.median)} MiB/s`,
      `ratio locald/skopeo (medians): ${ratioText(ratioOfMedians)} — target ≤ ${RATIO_TARGET}×: ${ratioPass ? "PASS" : "FAIL"}`,
      `warm re-pull (median): ${secs(s.localdWarmRepullMs.median)} s — target ≤ ${WARM_TARGET_MS / 1000} s: ${warmPass ? "PASS" : "FAIL"}`,
      ...(failures.length
        ? ["", `${failures.length} failed run(s), excluded from the figures:`, ...failures]
        : []),
      "",
    ];
    process.stdout.write(lines.join("\n"));
    const json = {
      bench: "pull",
      date: new Date().toISOString(),
      node: nodeVersion,
      skopeo: skopeoVersion,
      cpus: cpus().length,
      loadAverage: { before: loadBefore, after: loadAfter },
      reference: image.reference,
      digest: image.digest,
      layers: image.layerCount,
      compressedBytes: image.compressedBytes,
      runs: options.runs,
      rssSource: probe.kind,
      ...s,
      ratioOfMedians,
      targets: {
        ratio: { limit: RATIO_TARGET, pass: ratioPass },
        warmRepullMs: { limit: WARM_TARGET_MS, pass: warmPass },
      },
      failures,
    };
    process.stdout.write(`${JSON.stringify(json)}\n`);
    return failures.length > 0 ? 1 : 0;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    activeChild?.kill("SIGKILL");
    await registry?.stop().catch((e: Error) => process.stderr.write(`stopping the registry: ${e.message}\n`));
    await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
  }
}

// A closed pipe (`| head`) must not kill us before the finally block has cleaned up.
process.stdout.on("error", () => {});

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: Error) => {
    process.stderr.write(`pull benchmark failed: ${error.stack ?? error.message}\n`);
    process.exitCode = 1;
  },
);
