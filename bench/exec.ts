/**
 * Dev environment benchmark: a warm `locald exec -- node -v` in examples/hello-node (no input
 * changed, so no detect/build: the launcher in the sandbox only) against `node -v` run directly,
 * in builder isolation (default) or host isolation. See bench/README.md.
 */
import { chmod, cp, mkdtemp } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  buildNodeVersion,
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
  ratioTable,
  runMain,
  runTimed,
  secs,
  tail,
  trapSignals,
} from "./common.js";

const WARM_TARGET_MS = 250;
const EXAMPLES = fileURLToPath(new URL("../../examples/", import.meta.url));

function usage(): string {
  return [
    "usage: node bench/dist/exec.js [--runs N] [--isolation builder|host]",
    "  --runs N       warm execs measured, interleaved with node -v run directly (default 9)",
    "  --isolation I  where the environment runs: the builder's OS (default) or the host's",
  ].join("\n");
}

async function main(): Promise<number> {
  const values = benchArgs(process.argv.slice(2), { runs: "9", isolation: "builder" }, usage);
  const runs = numberOption(usage)("runs", values.runs, true);
  const isolation = values.isolation;
  if (isolation !== "builder" && isolation !== "host") throw new Error(usage());
  const untrap = trapSignals();
  const work = await mkdtemp(join(tmpdir(), "locald-bench-exec-"));
  await chmod(work, 0o755);
  const probe: RssProbe = { kind: "none" };
  const rssFile = join(work, "rss");
  let registry: TestRegistry | undefined;
  try {
    registry = await startRegistry({ flavour: "anonymous" });
    const { builder } = await pushSampleBuilder(registry, work, ["nodejs"]);
    const app = join(work, "hello-node");
    await cp(join(EXAMPLES, "hello-node"), app, { recursive: true });
    const exec = () =>
      runTimed(process.execPath, [LOCALD_BIN, "exec", app, "--", "node", "-v"], {
        env: { LOCALD_HOME: join(work, "home"), LOCALD_BUILDER: builder, LOCALD_ISOLATION: isolation },
        probe,
        rssFile,
      });
    const direct = () => runTimed(process.execPath, ["-v"], { probe, rssFile });
    const version = await buildNodeVersion(isolation);
    const first = await exec();
    if (first.code !== 0) throw new Error(`the first exec failed: ${tail(first.stderr)}`);
    process.stderr.write(`first exec (detect + build): ${secs(first.ms)} s\n`);
    const warm: number[] = [];
    const bare: number[] = [];
    for (let round = 1; round <= runs; round++) {
      const a = await exec();
      if (a.code !== 0 || a.stdout !== `${version}\n`) throw new Error(`exec failed: ${tail(a.stderr)}`);
      if (/===> BUILDING/.test(a.stderr)) throw new Error("a warm exec ran the build again");
      const b = await direct();
      warm.push(a.ms);
      bare.push(b.ms);
    }
    const warmMedian = median(warm) as number;
    const pass = warmMedian <= WARM_TARGET_MS;
    const lines = [
      "",
      `exec benchmark — locald exec -- node -v in examples/hello-node, ${isolation} isolation (node ${process.version}, ${cpus().length} CPUs)`,
      "",
      ratioTable(["run", "locald exec (s)", "node -v (s)", "ratio"], warm, bare),
      "",
      `first exec (detect + build): ${secs(first.ms)} s`,
      `warm exec (median of ${runs}): ${secs(warmMedian)} s — target ≤ ${secs(WARM_TARGET_MS)} s: ${pass ? "PASS" : "FAIL"}`,
      JSON.stringify({
        bench: "exec",
        date: new Date().toISOString(),
        isolation,
        firstMs: Math.round(first.ms),
        warmMs: warm.map(Math.round),
        directMs: bare.map(Math.round),
        warmMedianMs: Math.round(warmMedian),
        pass,
      }),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
    return pass ? 0 : 1;
  } finally {
    untrap();
    await registry?.stop().catch(() => undefined);
    await removeTree(work);
  }
}

runMain("exec benchmark", main);
