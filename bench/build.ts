/**
 * Build benchmark: `locald build` of a sample app with the test builder (the real lifecycle, a
 * Debian build image), cold (a new app: no cache, no previous image) in builder isolation against
 * host isolation, host isolation against the same five phases run by hand
 * (bench/lifecycle-by-hand.sh: no sandbox, no store), a no-change rebuild against cold, and the
 * first build with a new builder digest (a fresh home: pull and unpack the builder).
 * See bench/README.md.
 */
import { chmod, cp, mkdir, mkdtemp, readdir } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  BUILDER_GID,
  BUILDER_UID,
  LIFECYCLE,
  LOCALD_BIN,
  pushSampleBuilder,
  startRegistry,
  type TestRegistry,
} from "@locald/e2e";
import { removeTree } from "@locald/oci";
import {
  benchArgs,
  median,
  numberOption,
  type RssProbe,
  ratioText,
  runMain,
  runTimed,
  secs,
  table,
  tail,
  trapSignals,
} from "./common.js";

/** Host isolation against the phases by hand. */
const COLD_TARGET = 1.1;
/** Builder isolation against host isolation, both cold. */
const ISOLATION_TARGET = 1.15;
const REBUILD_TARGET = 0.3;
const EXAMPLES = fileURLToPath(new URL("../../examples/", import.meta.url));
const BY_HAND = fileURLToPath(new URL("../lifecycle-by-hand.sh", import.meta.url));

interface Options {
  runs: number;
  app: string;
}

function usage(): string {
  return [
    "usage: node bench/dist/build.js [--runs N] [--app NAME]",
    "  --runs N    measured rounds, every kind of build interleaved (default 3)",
    "  --app NAME  sample app under examples/ (default hello-node; also procfile-static)",
  ].join("\n");
}

function parseOptions(argv: string[]): Options {
  const values = benchArgs(argv, { runs: "3", app: "hello-node" }, usage);
  return { runs: numberOption(usage)("runs", values.runs, true), app: values.app };
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  if (process.getuid?.() !== 0)
    throw new Error("the by-hand reference chowns for the build user: run as root");
  const untrap = trapSignals();
  const work = await mkdtemp(join(tmpdir(), "locald-bench-build-"));
  // The by-hand phases reach their dirs by host path as the build user.
  await chmod(work, 0o755);
  const probe: RssProbe = { kind: "none" };
  const rssFile = join(work, "rss");
  let registry: TestRegistry | undefined;
  try {
    registry = await startRegistry({ flavour: "anonymous" });
    process.stderr.write("assembling the test builder and the Debian build and run images…\n");
    const { builder, runImage } = await pushSampleBuilder(registry, work, ["nodejs", "procfile"]);
    const app = join(EXAMPLES, options.app);
    const home = join(work, "home");
    const check = (what: string, t: { code: number; stderr: string }) => {
      if (t.code !== 0) throw new Error(`${what} exited with ${t.code}: ${tail(t.stderr)}`);
    };
    const locald = (tag: string, isolation: "builder" | "host", localdHome = home) =>
      runTimed(
        process.execPath,
        [LOCALD_BIN, "build", app, "--builder", builder, "-t", tag, "--isolation", isolation],
        { env: { LOCALD_HOME: localdHome }, probe, rssFile },
      );
    // Untimed: fetch the builder, extract its /cnb and unpack its root once, as every side starts with them.
    check("locald warm-up build (host)", await locald("warm-up", "host"));
    check("locald warm-up build (builder)", await locald("warm-up", "builder"));
    const builders = join(home, "cache", "builders");
    // The by-hand phases need it where the build user can reach it by path (locald's is under a 0700 home).
    const cnb = join(work, "cnb");
    const extracted = (await readdir(builders)).find((name) => !name.includes(".tmp")) as string;
    await cp(join(builders, extracted, "cnb"), cnb, { recursive: true, verbatimSymlinks: true });
    let round = 0;
    const byHand = async () => {
      // Lowercase: the lifecycle parses "<layout path>@sha256:…" back as a reference, and
      // mkdtemp's random letters can be upper case.
      const dir = join(tmpdir(), `locald-bench-by-hand-${process.pid}-${round}`);
      await mkdir(dir, { mode: 0o755 });
      const t = await runTimed(
        "bash",
        [BY_HAND, cnb, app, dir, runImage, String(BUILDER_UID), String(BUILDER_GID)],
        { probe, rssFile },
      );
      await removeTree(dir);
      return t;
    };
    check("by-hand warm-up", await byHand());

    const cold: number[] = [];
    const host: number[] = [];
    const hand: number[] = [];
    const rebuild: number[] = [];
    const first: number[] = [];
    for (round = 1; round <= options.runs; round++) {
      const tag = `bench-${round}`;
      const a = await locald(tag, "builder");
      check("locald cold build (builder)", a);
      const h = await locald(`${tag}-host`, "host");
      check("locald cold build (host)", h);
      const b = await byHand();
      check("by-hand build", b);
      const c = await locald(tag, "builder");
      check("locald rebuild", c);
      if (!/Reusing layer/.test(c.stderr)) throw new Error("the rebuild reused no layer");
      // A home of its own: the builder is pulled and its root unpacked before the build.
      const f = await locald(tag, "builder", join(work, `first-${round}`));
      check("first build with the builder", f);
      await removeTree(join(work, `first-${round}`));
      cold.push(a.ms);
      host.push(h.ms);
      hand.push(b.ms);
      rebuild.push(c.ms);
      first.push(f.ms);
      process.stderr.write(
        `run ${round}/${options.runs}: builder cold ${secs(a.ms)} s, host cold ${secs(h.ms)} s, by hand ${secs(b.ms)} s, ` +
          `rebuild ${secs(c.ms)} s, first use of the builder ${secs(f.ms)} s\n`,
      );
    }
    const coldMedian = median(cold) as number;
    const hostMedian = median(host) as number;
    const handMedian = median(hand) as number;
    const rebuildMedian = median(rebuild) as number;
    const firstMedian = median(first) as number;
    const isolationRatio = coldMedian / hostMedian;
    const hostRatio = hostMedian / handMedian;
    const rebuildRatio = rebuildMedian / coldMedian;
    const verdict = (ratio: number, target: number) => (ratio <= target ? "PASS" : "FAIL");
    const lines = [
      "",
      `build benchmark — examples/${options.app} with the test builder (lifecycle ${LIFECYCLE.version}, sample buildpacks, Debian build and run images)`,
      `node ${process.version}, ${cpus().length} CPUs, uid 0 (build user ${BUILDER_UID})`,
      "",
      table(
        [
          "run",
          "builder cold (s)",
          "host cold (s)",
          "builder / host",
          "by hand (s)",
          "host / by hand",
          "rebuild (s)",
          "rebuild / cold",
          "first use (s)",
        ],
        [
          ...cold.map((ms, i) => [
            String(i + 1),
            secs(ms),
            secs(host[i]),
            ratioText(ms / (host[i] as number)),
            secs(hand[i]),
            ratioText((host[i] as number) / (hand[i] as number)),
            secs(rebuild[i]),
            ratioText((rebuild[i] as number) / ms),
            secs(first[i]),
          ]),
          [
            "median",
            secs(coldMedian),
            secs(hostMedian),
            ratioText(isolationRatio),
            secs(handMedian),
            ratioText(hostRatio),
            secs(rebuildMedian),
            ratioText(rebuildRatio),
            secs(firstMedian),
          ],
        ],
      ),
      "",
      `cold build, builder isolation / host isolation (medians): ${ratioText(isolationRatio)} — target ≤ ${ISOLATION_TARGET}×: ${verdict(isolationRatio, ISOLATION_TARGET)}`,
      `cold build, host isolation / the phases by hand (medians): ${ratioText(hostRatio)} — target ≤ ${COLD_TARGET}×: ${verdict(hostRatio, COLD_TARGET)}`,
      `no-change rebuild / cold, builder isolation (medians): ${ratioText(rebuildRatio)} — target ≤ ${REBUILD_TARGET}×: ${verdict(rebuildRatio, REBUILD_TARGET)}`,
      `first build with a new builder digest (pull + unpack + build, median): ${secs(firstMedian)} s`,
      JSON.stringify({
        bench: "build",
        date: new Date().toISOString(),
        app: options.app,
        builderColdMs: cold.map(Math.round),
        hostColdMs: host.map(Math.round),
        byHandMs: hand.map(Math.round),
        rebuildMs: rebuild.map(Math.round),
        firstUseMs: first.map(Math.round),
        isolationRatio: Number(isolationRatio.toFixed(3)),
        hostRatio: Number(hostRatio.toFixed(3)),
        rebuildRatio: Number(rebuildRatio.toFixed(3)),
      }),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
    return isolationRatio <= ISOLATION_TARGET && hostRatio <= COLD_TARGET && rebuildRatio <= REBUILD_TARGET
      ? 0
      : 1;
  } finally {
    untrap();
    await registry?.stop().catch(() => undefined);
    await removeTree(work);
  }
}

runMain("build benchmark", main);
