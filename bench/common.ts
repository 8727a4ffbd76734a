/**
 * Helpers shared by the benchmarks (pull.ts, unpack.ts): timed child processes with peak RSS,
 * the settle pause, layout checks, statistics and the report table. See bench/README.md.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import { access, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { type ParseArgsConfig, parseArgs } from "node:util";
import type { Descriptor } from "@locald/oci";

export const SKOPEO = "/usr/bin/skopeo";
export const GNU_TIME = "/usr/bin/time";
export const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// arguments

/**
 * Parses a benchmark's `--name value` options (defaults given as text), its `--name` switches
 * (false unless given) and `-h/--help`, which prints the usage and exits.
 */
export function benchArgs<K extends string, F extends string = never>(
  argv: string[],
  defaults: Record<K, string>,
  usage: () => string,
  switches: readonly F[] = [],
): Record<K, string> & Record<F, boolean> {
  const options: NonNullable<ParseArgsConfig["options"]> = Object.fromEntries([
    ...Object.entries(defaults).map(([name, value]) => [
      name,
      { type: "string" as const, default: value as string },
    ]),
    ...switches.map((name) => [name, { type: "boolean" as const, default: false }]),
  ]);
  const { values } = parseArgs({
    args: argv,
    options: { ...options, help: { type: "boolean", short: "h", default: false } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${usage()}\n`);
    process.exit(0);
  }
  return values as unknown as Record<K, string> & Record<F, boolean>;
}

/**
 * A parser for numeric options: `(name, text, integer, allowZero)` → the number, or an error that
 * names the option and ends with the usage text.
 */
export function numberOption(usage: () => string) {
  return (name: string, text: string, integer: boolean, allowZero = false): number => {
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0 || (n === 0 && !allowZero) || (integer && !Number.isInteger(n)))
      throw new Error(
        `--${name} must be a positive ${integer ? "integer" : "number"} (got ${text})\n${usage()}`,
      );
    return n;
  };
}

// ---------------------------------------------------------------------------------------------
// child processes, timed

let activeChild: ChildProcess | undefined;
let interrupted = false;

/** On SIGINT/SIGTERM: stop the running child and refuse to start another. Returns the undo. */
export function trapSignals(): () => void {
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted = true;
    process.stderr.write(`\n${signal}: stopping, cleaning up…\n`);
    activeChild?.kill("SIGTERM");
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}

/** Kills the child still running, if any (for `finally` blocks). */
export function killActiveChild(): void {
  activeChild?.kill("SIGKILL");
}

export interface Timed {
  ms: number;
  code: number;
  stdout: string;
  stderr: string;
  /** Peak RSS of the measured process in KiB, if it could be measured. */
  maxRssKb: number | undefined;
}

export interface RssProbe {
  kind: "gnu-time" | "node-preload" | "none";
  /** Only for node-preload: a module that records process.resourceUsage().maxRSS at exit. */
  preload?: string;
}

export async function executable(path: string): Promise<boolean> {
  return access(path, fsConstants.X_OK).then(
    () => true,
    () => false,
  );
}

export async function rssProbe(workDir: string): Promise<RssProbe> {
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
export async function runTimed(
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
export async function settle(ms: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const child = spawn("sync", [], { stdio: "ignore" });
    child.once("error", () => resolve());
    child.once("close", () => resolve());
  });
  if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
}

export async function versionOf(command: string, args: string[]): Promise<string> {
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

export function compressibleText(lines: number, seed: number): string {
  const out: string[] = [];
  for (let i = 0; i < lines; i++)
    out.push(`setting.${seed}.${i % 97} = "value for line ${i} of the benchmark image configuration"`);
  return `${out.join("\n")}\n`;
}

// ---------------------------------------------------------------------------------------------
// verification: a run only counts when its output is complete

/** What a complete copy of the image must hold: the manifest digest, config and layers. */
export interface ExpectedBlobs {
  digest: string;
  /** Config and layers: every blob a complete copy must hold. */
  blobs: readonly Descriptor[];
}

export async function verifyLayout(dir: string, image: ExpectedBlobs): Promise<string | undefined> {
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

export function tail(text: string, lines = 15): string {
  return text.trim().split("\n").slice(-lines).join("\n");
}

// ---------------------------------------------------------------------------------------------
// statistics and output

export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export interface Series {
  runs: Array<number | null>;
  median: number | null;
  min: number | null;
  max: number | null;
}

export function series(values: ReadonlyArray<number | undefined>): Series {
  const ok = values.filter((v): v is number => v !== undefined);
  return {
    runs: values.map((v) => (v === undefined ? null : round(v))),
    median: ok.length ? round(median(ok) as number) : null,
    min: ok.length ? round(Math.min(...ok)) : null,
    max: ok.length ? round(Math.max(...ok)) : null,
  };
}

export function round(n: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

export const secs = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? "fail" : (ms / 1000).toFixed(2);
export const mib = (kb: number | null | undefined) =>
  kb === null || kb === undefined ? "n/a" : (kb / 1024).toFixed(0);
export const ratioText = (r: number | null | undefined) =>
  r === null || r === undefined ? "—" : `${r.toFixed(2)}×`;

/** Rounds of a timed command against a reference, with the per-round ratio and a median row. */
export function ratioTable(
  header: [string, string, string, string],
  ours: number[],
  reference: number[],
): string {
  const rows = ours.map((ms, i) => [
    String(i + 1),
    secs(ms),
    secs(reference[i]),
    ratioText(ms / (reference[i] as number)),
  ]);
  const a = median(ours) as number;
  const b = median(reference) as number;
  return table(header, [...rows, ["median", secs(a), secs(b), ratioText(a / b)]]);
}

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padStart(widths[i] as number)).join(" | ")} |`;
  const rule = `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

// ---------------------------------------------------------------------------------------------
// entry point

/** Runs a benchmark's main and sets the exit code; `name` prefixes a crash report. */
export function runMain(name: string, main: () => Promise<number>): void {
  // A closed pipe (`| head`) must not kill us before the finally block has cleaned up.
  process.stdout.on("error", () => {});

  main().then(
    (code) => {
      process.exitCode = code;
    },
    (error: Error) => {
      process.stderr.write(`${name} failed: ${error.stack ?? error.message}\n`);
      process.exitCode = 1;
    },
  );
}
