/**
 * Container start benchmark: start-to-exit of `true` in a ~100 MiB image with
 * `locald container run --rm`, cold (pull + extract into the unpack cache) and warm (the image in
 * the store, its root in the cache: an overlay, nothing extracted), against bare `runc run` of a
 * bundle that `umoci unpack` prepared beforehand — the floor any runc-based tool stands on.
 * See bench/README.md.
 */
import { mkdir, mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import {
  type LayerEntry,
  LOCALD_BIN,
  pseudoRandomBytes,
  requireBinary,
  startRegistry,
  type TestRegistry,
  writeImage,
} from "@locald/e2e";
import { OciLayout, push, removeTree } from "@locald/oci";
import {
  benchArgs,
  MiB,
  median,
  numberOption,
  type RssProbe,
  ratioTable,
  runMain,
  runTimed,
  SKOPEO,
  secs,
  tail,
  trapSignals,
  versionOf,
} from "./common.js";

/** Warm start-to-exit target (issue "Containers"). */
const WARM_TARGET_MS = 500;

interface Options {
  runs: number;
  sizeMb: number;
  files: number;
}

function usage(): string {
  return [
    "usage: node bench/dist/container.js [--runs N] [--size-mb MB] [--files N]",
    "  --runs N      warm starts measured, each tool interleaved (default 9)",
    "  --size-mb MB  size of the image's pseudo-random files in MiB (default 100)",
    "  --files N     number of those files (default 3000)",
  ].join("\n");
}

function parseOptions(argv: string[]): Options {
  const values = benchArgs(argv, { runs: "9", "size-mb": "100", files: "3000" }, usage);
  const positive = numberOption(usage);
  return {
    runs: positive("runs", values.runs, true),
    sizeMb: positive("size-mb", values["size-mb"], false),
    files: positive("files", values.files, true),
  };
}

async function buildImage(registry: TestRegistry, work: string, options: Options): Promise<string> {
  const busybox = await readFile(await requireBinary("busybox"));
  const perFile = Math.floor((options.sizeMb * MiB) / options.files);
  const bulk: LayerEntry[][] = [[], []];
  for (let i = 0; i < options.files; i++) {
    const layer = bulk[i % 2] as LayerEntry[];
    if (i < 2 * 30) layer.push({ path: `usr/share/bench/d${Math.floor(i / 2)}/`, type: "directory" });
    layer.push({ path: `usr/share/bench/d${i % 30}/f${i}.dat`, content: pseudoRandomBytes(perFile, i + 1) });
  }
  const layout = await OciLayout.open(join(work, "layout"), { create: true });
  const image = await writeImage(layout, {
    layers: [
      [
        { path: "bin/", type: "directory" },
        { path: "bin/busybox", content: busybox, mode: 0o755 },
        { path: "bin/true", type: "symlink", linkname: "busybox" },
        { path: "bin/sh", type: "symlink", linkname: "busybox" },
        { path: "usr/", type: "directory" },
        { path: "usr/share/", type: "directory" },
        { path: "usr/share/bench/", type: "directory" },
      ],
      ...bulk,
    ],
    config: { Cmd: ["/bin/true"] },
  });
  await layout.addManifest(image.descriptor, "bench");
  const reference = `${registry.host}/bench/container:1`;
  await push({ kind: "layout", dir: layout.root, name: "bench" }, reference);
  return reference;
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const untrap = trapSignals();
  const runc = await requireBinary("runc");
  const umoci = await requireBinary("umoci");
  const work = await mkdtemp(join(tmpdir(), "locald-bench-container-"));
  const probe: RssProbe = { kind: "none" };
  const rssFile = join(work, "rss");
  let registry: TestRegistry | undefined;
  try {
    registry = await startRegistry({ flavour: "anonymous" });
    process.stderr.write(`building a ~${options.sizeMb} MiB, ${options.files}-file image…\n`);
    const reference = await buildImage(registry, work, options);
    const home = join(work, "home");
    const locald = (args: string[]) =>
      runTimed(process.execPath, [LOCALD_BIN, ...args], {
        env: { LOCALD_HOME: home },
        probe,
        rssFile,
        isNode: true,
      });
    const check = (what: string, t: { code: number; stderr: string }) => {
      if (t.code !== 0) throw new Error(`${what} exited with ${t.code}: ${tail(t.stderr)}`);
    };

    // The reference: a bundle prepared once by skopeo + umoci, then only `runc run`.
    const bundle = join(work, "bundle");
    check(
      "skopeo copy",
      await runTimed(
        SKOPEO,
        [
          "copy",
          "--quiet",
          "--src-tls-verify=false",
          `docker://${reference}`,
          `oci:${join(work, "oci")}:bench`,
        ],
        { probe, rssFile },
      ),
    );
    check(
      "umoci unpack",
      await runTimed(umoci, ["unpack", "--image", `${join(work, "oci")}:bench`, bundle], { probe, rssFile }),
    );
    const config = JSON.parse(await readFile(join(bundle, "config.json"), "utf8")) as {
      process: { terminal: boolean; args: string[] };
    };
    config.process.terminal = false;
    config.process.args = ["/bin/true"];
    await writeFile(join(bundle, "config.json"), JSON.stringify(config));
    const runcRoot = join(work, "runc-root");
    await mkdir(runcRoot, { recursive: true });
    let id = 0;
    const bare = () =>
      runTimed(runc, ["--root", runcRoot, "run", "--bundle", bundle, `bench-${id++}`], { probe, rssFile });

    const cold = await locald(["container", "run", "--rm", reference, "true"]);
    check("locald cold run", cold);
    process.stderr.write(`cold (pull + extract + run): ${secs(cold.ms)} s\n`);
    // One untimed round of each: page cache and the runtime's first-use costs.
    check("locald warm-up", await locald(["container", "run", "--rm", reference, "true"]));
    check("runc warm-up", await bare());

    const warm: number[] = [];
    const floor: number[] = [];
    for (let run = 1; run <= options.runs; run++) {
      const a = await locald(["container", "run", "--rm", reference, "true"]);
      check("locald warm run", a);
      const b = await bare();
      check("runc run", b);
      warm.push(a.ms);
      floor.push(b.ms);
      process.stderr.write(`run ${run}/${options.runs}: locald ${secs(a.ms)} s, runc run ${secs(b.ms)} s\n`);
    }
    const leftovers = await readdir(join(home, "containers")).catch(() => [] as string[]);
    const warmMedian = median(warm) as number;
    const floorMedian = median(floor) as number;
    const pass = warmMedian <= WARM_TARGET_MS;
    const lines = [
      "",
      `container start benchmark — ${reference}: ${options.sizeMb} MiB in ${options.files} files, 3 layers`,
      `node ${process.version}, ${await versionOf(runc, ["--version"]).then((v) => v.split("\n")[0])}, ${cpus().length} CPUs`,
      "",
      ratioTable(["run", "locald run --rm (s)", "runc run (s)", "ratio"], warm, floor),
      "",
      `cold start (empty store: pull, extract into the unpack cache, run): ${secs(cold.ms)} s`,
      `warm start-to-exit of true (median of ${options.runs}): ${secs(warmMedian)} s — target ≤ ${secs(WARM_TARGET_MS)} s: ${pass ? "PASS" : "FAIL"}`,
      `containers left behind by --rm: ${leftovers.length === 0 ? "none" : leftovers.join(", ")}`,
      JSON.stringify({
        bench: "container",
        date: new Date().toISOString(),
        reference,
        sizeMb: options.sizeMb,
        files: options.files,
        coldMs: Math.round(cold.ms),
        warmMs: warm.map(Math.round),
        runcMs: floor.map(Math.round),
        warmMedianMs: Math.round(warmMedian),
        runcMedianMs: Math.round(floorMedian),
        target: { warmMs: WARM_TARGET_MS, pass },
      }),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
    return pass && leftovers.length === 0 ? 0 : 1;
  } finally {
    untrap();
    await registry?.stop().catch(() => undefined);
    await removeTree(work);
  }
}

runMain("container benchmark", main);
