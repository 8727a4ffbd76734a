/**
 * Build benchmark: `locald build` of a sample app with the test builder (the real lifecycle),
 * cold (a new app: no cache, no previous image) against the same five phases run by hand
 * (bench/lifecycle-by-hand.sh: no sandbox, no store), and a no-change rebuild against cold.
 * See bench/README.md.
 */
import { chmod, cp, mkdir, mkdtemp, readdir } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  BUILDER_GID,
  BUILDER_UID,
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

const COLD_TARGET = 1.1;
const REBUILD_TARGET = 0.4;
const EXAMPLES = fileURLToPath(new URL("../../examples/", import.meta.url));
const BY_HAND = fileURLToPath(new URL("../lifecycle-by-hand.sh", import.meta.url));

interface Options {
  runs: number;
  app: string;
}

function usage(): string {
  return [
    "usage: node bench/dist/build.js [--runs N] [--app NAME]",
    "  --runs N    measured rounds, cold locald / by hand / rebuild interleaved (default 3)",
    "  --app NAME  sample app under examples/ (default hello-node; also procfile-static, hello-rust)",
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
    process.stderr.write("assembling the test builder and the Debian run image…\n");
    const { builder, runImage } = await pushSampleBuilder(registry, work, ["nodejs", "rust", "procfile"]);
    const app = join(EXAMPLES, options.app);
    const home = join(work, "home");
    const check = (what: string, t: { code: number; stderr: string }) => {
      if (t.code !== 0) throw new Error(`${what} exited with ${t.code}: ${tail(t.stderr)}`);
    };
    const locald = (tag: string) =>
      runTimed(process.execPath, [LOCALD_BIN, "build", app, "--builder", builder, "-t", tag], {
        env: { LOCALD_HOME: home },
        probe,
        rssFile,
      });
    // Untimed: fetch the builder and extract its /cnb once, as both sides start with it.
    check("locald warm-up build", await locald("warm-up"));
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
    const hand: number[] = [];
    const rebuild: number[] = [];
    for (round = 1; round <= options.runs; round++) {
      const tag = `bench-${round}`;
      const a = await locald(tag);
      check("locald cold build", a);
      const b = await byHand();
      check("by-hand build", b);
      const c = await locald(tag);
      check("locald rebuild", c);
      if (!/Reusing layer/.test(c.stderr)) throw new Error("the rebuild reused no layer");
      cold.push(a.ms);
      hand.push(b.ms);
      rebuild.push(c.ms);
      process.stderr.write(
        `run ${round}/${options.runs}: locald cold ${secs(a.ms)} s, by hand ${secs(b.ms)} s, locald rebuild ${secs(c.ms)} s\n`,
      );
    }
    const coldMedian = median(cold) as number;
    const handMedian = median(hand) as number;
    const rebuildMedian = median(rebuild) as number;
    const coldRatio = coldMedian / handMedian;
    const rebuildRatio = rebuildMedian / coldMedian;
    const lines = [
      "",
      `build benchmark — examples/${options.app} with the test builder (lifecycle 0.20.19, sample buildpacks, Debian run image)`,
      `node ${process.version}, ${cpus().length} CPUs, uid 0 (build user ${BUILDER_UID})`,
      "",
      table(
        ["run", "locald cold (s)", "by hand (s)", "ratio", "locald rebuild (s)", "rebuild / cold"],
        [
          ...cold.map((ms, i) => [
            String(i + 1),
            secs(ms),
            secs(hand[i]),
            ratioText(ms / (hand[i] as number)),
            secs(rebuild[i]),
            ratioText((rebuild[i] as number) / ms),
          ]),
          [
            "median",
            secs(coldMedian),
            secs(handMedian),
            ratioText(coldRatio),
            secs(rebuildMedian),
            ratioText(rebuildRatio),
          ],
        ],
      ),
      "",
      `cold locald build / the phases by hand (medians): ${ratioText(coldRatio)} — target ≤ ${COLD_TARGET}×: ${coldRatio <= COLD_TARGET ? "PASS" : "FAIL"}`,
      `no-change rebuild / cold (medians): ${ratioText(rebuildRatio)} — target ≤ ${REBUILD_TARGET}×: ${rebuildRatio <= REBUILD_TARGET ? "PASS" : "FAIL"}`,
      JSON.stringify({
        bench: "build",
        date: new Date().toISOString(),
        app: options.app,
        coldMs: cold.map(Math.round),
        byHandMs: hand.map(Math.round),
        rebuildMs: rebuild.map(Math.round),
        coldRatio: Number(coldRatio.toFixed(3)),
        rebuildRatio: Number(rebuildRatio.toFixed(3)),
      }),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
    return coldRatio <= COLD_TARGET && rebuildRatio <= REBUILD_TARGET ? 0 : 1;
  } finally {
    untrap();
    await registry?.stop().catch(() => undefined);
    await removeTree(work);
  }
}

runMain("build benchmark", main);
