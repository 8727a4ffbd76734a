/**
 * Pull benchmark: `locald image pull` against `skopeo copy` from the same local registry, in the
 * same run, interleaved. See bench/README.md.
 *
 *   npx tsc -b bench && node bench/dist/pull.js [--runs 3] [--size-mb 300] [--layers 8]
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
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
import {
  benchArgs,
  compressibleText,
  executable,
  killActiveChild,
  MiB,
  mib,
  numberOption,
  ratioText,
  round,
  rssProbe,
  runMain,
  runTimed,
  SKOPEO,
  secs,
  series,
  settle,
  table,
  tail,
  trapSignals,
  verifyLayout,
  versionOf,
} from "./common.js";

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
  /** The Node.js binary that runs locald. */
  node: string;
}

function usage(): string {
  return [
    "usage: node bench/dist/pull.js [--runs N] [--size-mb MB] [--layers N] [--warmup N] [--settle-ms MS]",
    "  --runs N      measured rounds, interleaved locald/skopeo (default 3)",
    "  --size-mb MB  compressed size of the random layers in MiB (default 300)",
    "  --layers N    number of random layers (default 8); two small compressible layers are added",
    "  --warmup N    untimed rounds of both pulls first (default 1; still verified)",
    "  --settle-ms MS  pause after sync before each timed command (default 1000)",
    "  --node PATH   the Node.js binary that runs locald (default: the one running this benchmark)",
  ].join("\n");
}

function parseOptions(argv: string[]): BenchOptions {
  const values = benchArgs(
    argv,
    { runs: "3", "size-mb": "300", layers: "8", "settle-ms": "1000", warmup: "1", node: process.execPath },
    usage,
  );
  const positive = numberOption(usage);
  return {
    runs: positive("runs", values.runs, true),
    sizeMb: positive("size-mb", values["size-mb"], false),
    layers: positive("layers", values.layers, true),
    settleMs: positive("settle-ms", values["settle-ms"], true, true),
    warmup: positive("warmup", values.warmup, true, true),
    node: values.node,
  };
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
  for (const bin of [SKOPEO, options.node])
    if (!(await executable(bin))) throw new Error(`${bin} is needed for this benchmark`);

  const workDir = await mkdtemp(join(tmpdir(), "locald-bench-"));
  let registry: TestRegistry | undefined;
  const untrap = trapSignals();
  try {
    const probe = await rssProbe(workDir);
    const rssFile = join(workDir, "rss.txt");
    const [skopeoVersion, nodeVersion] = [
      await versionOf(SKOPEO, ["--version"]),
      await versionOf(options.node, ["--version"]),
    ];

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
      runTimed(options.node, [LOCALD_BIN, ...args], {
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
    untrap();
    killActiveChild();
    await registry?.stop().catch((e: Error) => process.stderr.write(`stopping the registry: ${e.message}\n`));
    await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
  }
}

runMain("pull benchmark", main);
