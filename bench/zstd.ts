/**
 * zstd layer decompression as the unpacker does it, both ways, in one run: Node's own zlib
 * (`createZstdDecompress`, Node ≥ 22.15) against the `zstd` program piped into Node (Node 20's only
 * way). The layer is a Debian minbase root filesystem (mmdebstrap, as in the e2e suite) compressed
 * with `zstd -3`, repeated to `--size-mb`. Run it on Node ≥ 22.15: `node bench/dist/zstd.js`.
 */
import { spawn } from "node:child_process";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import { debianMinbaseTar } from "@locald/e2e";
import { benchArgs, numberOption } from "./common.js";

const usage = () =>
  "usage: node bench/dist/zstd.js [--runs N] [--size-mb MB]\n" +
  "  --runs N      measured rounds, the two ways interleaved (default 5)\n" +
  "  --size-mb MB  uncompressed size of the layer, MiB (default 400)";

/** Reads a stream to its end and counts its bytes: the unpacker's tar parser, minus the parsing. */
async function drain(stream: NodeJS.ReadableStream): Promise<number> {
  let bytes = 0;
  for await (const chunk of stream) bytes += (chunk as Buffer).length;
  return bytes;
}

async function viaZlib(path: string): Promise<number> {
  const native = (zlib as { createZstdDecompress?: (options: zlib.ZlibOptions) => Transform })
    .createZstdDecompress;
  if (native === undefined)
    throw new Error(`Node ${process.version} has no zlib zstd: run this on Node ≥ 22.15.`);
  const file = createReadStream(path, { highWaterMark: 1024 * 1024 });
  // With the unpacker's output chunks (packages/oci/src/unpack/archive.ts); the default 16 KiB is slower.
  return drain(file.pipe(native({ chunkSize: Number(process.env.ZSTD_CHUNK ?? 256 * 1024) })));
}

async function viaProgram(path: string): Promise<number> {
  const child = spawn("zstd", ["-d", "-c", "-q", "--", path], { stdio: ["ignore", "pipe", "inherit"] });
  const [bytes] = await Promise.all([
    drain(child.stdout),
    new Promise<void>((resolve, reject) =>
      child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`zstd exited ${code}`)))),
    ),
  ]);
  return bytes;
}

const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

const values = benchArgs(process.argv.slice(2), { runs: "5", "size-mb": "400" }, usage);
const number = numberOption(usage);
const runs = number("runs", values.runs, true);
const sizeMb = number("size-mb", values["size-mb"], false);
const work = await mkdtemp(join(tmpdir(), "locald-bench-zstd-"));
try {
  const tar = await readFile(await debianMinbaseTar());
  const raw = join(work, "layer.tar");
  const out = createWriteStream(raw);
  for (let written = 0; written < sizeMb * 1024 * 1024; written += tar.length)
    if (!out.write(tar)) await new Promise<void>((resolve) => out.once("drain", () => resolve()));
  await new Promise<void>((resolve, reject) =>
    out.end((error?: Error | null) => (error ? reject(error) : resolve())),
  );
  const zst = `${raw}.zst`;
  await pipeline(
    spawn("zstd", ["-3", "-q", "-c", "--", raw], { stdio: ["ignore", "pipe", "inherit"] }).stdout,
    createWriteStream(zst),
  );
  const rawBytes = (await stat(raw)).size;
  const zstBytes = (await stat(zst)).size;
  process.stdout.write(
    `layer: ${(rawBytes / 2 ** 20).toFixed(0)} MiB tar, ${(zstBytes / 2 ** 20).toFixed(0)} MiB zstd -3; Node ${process.version}\n`,
  );
  const times: Record<"zlib" | "program", number[]> = { zlib: [], program: [] };
  for (let run = 0; run <= runs; run++) {
    const order = run % 2 === 0 ? (["zlib", "program"] as const) : (["program", "zlib"] as const);
    for (const way of order) {
      const start = performance.now();
      const bytes = await (way === "zlib" ? viaZlib(zst) : viaProgram(zst));
      const ms = performance.now() - start;
      if (bytes !== rawBytes) throw new Error(`${way}: ${bytes} bytes out, expected ${rawBytes}`);
      // Round 0 warms the page cache and is not counted.
      if (run > 0) times[way].push(ms);
    }
  }
  const zlibMs = median(times.zlib);
  const programMs = median(times.program);
  const mibps = (ms: number) => (rawBytes / 2 ** 20 / (ms / 1000)).toFixed(0);
  process.stdout.write(
    `zlib (in-process): median ${zlibMs.toFixed(0)} ms (${mibps(zlibMs)} MiB/s), runs ${times.zlib.map((t) => t.toFixed(0)).join(" ")}\n` +
      `zstd program:      median ${programMs.toFixed(0)} ms (${mibps(programMs)} MiB/s), runs ${times.program.map((t) => t.toFixed(0)).join(" ")}\n` +
      `ratio zlib/program: ${(zlibMs / programMs).toFixed(2)}×\n`,
  );
  process.stdout.write(
    `${JSON.stringify({ bench: "zstd", node: process.version, rawBytes, zstBytes, zlibMs: times.zlib, programMs: times.program })}\n`,
  );
} finally {
  await rm(work, { recursive: true, force: true });
}
