/**
 * Unpack benchmark: `locald image unpack` against `skopeo copy` + `umoci unpack --rootless`, and
 * locald's extraction from the store against `tar -xzf` of the same blobs, from the same local
 * registry, in the same run, interleaved. See bench/README.md.
 *
 *   npm run build && node bench/dist/unpack.js [--runs 3] [--size-mb 300] [--files 35000] [--layers 8]
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
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
  type RssProbe,
  ratioText,
  round,
  rssProbe,
  runMain,
  runTimed,
  SKOPEO,
  secs,
  series,
  settle,
  type Timed,
  table,
  tail,
  trapSignals,
  verifyLayout,
  versionOf,
} from "./common.js";

const UMOCI = "/usr/bin/umoci";
const TAR = "tar";
const FIND = "find";
/** locald cold unpack ≤ this × (skopeo copy + umoci unpack). */
const UMOCI_RATIO_TARGET = 0.5;
/** locald extraction from a warm store (--no-cache) ≤ this × tar -xzf of the same blobs. */
const TAR_RATIO_TARGET = 1.1;
/** Peak RSS of every locald command, KiB: the issue's 200 MB read as 10^6 bytes, the stricter reading. */
const RSS_TARGET_KB = Math.floor((200 * 1000 * 1000) / 1024);
const TAG = "bench";
/** Regular files whose content is hashed and compared in every checked tree. */
const SAMPLED_FILES = 24;

// ---------------------------------------------------------------------------------------------
// arguments

interface BenchOptions {
  runs: number;
  sizeMb: number;
  files: number;
  layers: number;
  settleMs: number;
  warmup: number;
  /** The Node.js binary that runs locald. */
  node: string;
  /** Only build and push the image, print its reference and serve it until interrupted. */
  serve: boolean;
}

function usage(): string {
  return [
    "usage: node bench/dist/unpack.js [--runs N] [--size-mb MB] [--files N] [--layers N] [--warmup N] [--settle-ms MS]",
    "  --runs N      measured rounds, tools interleaved (default 3)",
    "  --size-mb MB  compressed size of the pseudo-random file content in MiB (default 300)",
    "  --files N     number of pseudo-random files, spread over the bulk layers (default 35000)",
    "  --layers N    layers in all (default 8, at least 3): a small base layer, N-2 bulk layers and",
    "                a small top layer with a whiteout and an overwrite",
    "  --warmup N    untimed rounds of every command first (default 1; still verified)",
    "  --settle-ms MS  pause after sync before each timed command (default 1000)",
    "  --node PATH   the Node.js binary that runs locald (default: the one running this benchmark)",
    "  --serve       only build and push the image, print its reference, serve it until ^C",
    "                (to measure one command by hand against the same image)",
  ].join("\n");
}

function parseOptions(argv: string[]): BenchOptions {
  const values = benchArgs(
    argv,
    {
      runs: "3",
      "size-mb": "300",
      files: "35000",
      layers: "8",
      "settle-ms": "1000",
      warmup: "1",
      node: process.execPath,
    },
    usage,
    ["serve"],
  );
  const positive = numberOption(usage);
  const options = {
    runs: positive("runs", values.runs, true),
    sizeMb: positive("size-mb", values["size-mb"], false),
    files: positive("files", values.files, true),
    layers: positive("layers", values.layers, true),
    settleMs: positive("settle-ms", values["settle-ms"], true, true),
    warmup: positive("warmup", values.warmup, true, true),
    node: values.node,
    serve: values.serve,
  };
  if (options.layers < 3) throw new Error(`--layers must be at least 3 (got ${options.layers})\n${usage()}`);
  if (options.files < 3) throw new Error(`--files must be at least 3 (got ${options.files})\n${usage()}`);
  return options;
}

// ---------------------------------------------------------------------------------------------
// the image

interface BenchImage {
  reference: string;
  digest: string;
  /** Config and layers: every blob a complete copy must hold. */
  blobs: Descriptor[];
  /** Layers in manifest order. */
  layers: Descriptor[];
  compressedBytes: number;
  /** Pseudo-random file content in the bulk layers, uncompressed. */
  contentBytes: number;
  layerCount: number;
  /** Path of the directory the top layer whites out (`dir/.wh.name`). */
  whiteout: { marker: string; target: string };
  /** Hardlink pairs [link, target] the tree must keep as one inode. */
  hardlinks: Array<[string, string]>;
}

/** mulberry32: a small deterministic generator for file sizes and modes. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Where bulk file number `g` goes: directories 4, 5 and 6 levels deep, shared by all bulk layers
 * (each layer adds files to the same directories, as package layers do).
 */
function bulkFileDir(g: number): string {
  const a = g % 16;
  const b = Math.floor(g / 16) % 12;
  const c = Math.floor(g / 192) % 6;
  switch (g % 3) {
    case 0:
      return `usr/share/bench/p${a}`;
    case 1:
      return `usr/lib/bench/p${a}/q${b}`;
    default:
      return `usr/lib/bench/p${a}/q${b}/r${c}`;
  }
}

/** A layer's entries: each directory (with its ancestors, parents first, once) followed by its files. */
function withParents(files: Map<string, LayerEntry[]>): LayerEntry[] {
  const entries: LayerEntry[] = [];
  const seen = new Set<string>();
  for (const dir of [...files.keys()].sort()) {
    const parts = dir.split("/");
    for (let i = 1; i <= parts.length; i++) {
      const path = parts.slice(0, i).join("/");
      if (seen.has(path)) continue;
      seen.add(path);
      entries.push({ path: `${path}/`, type: "directory" });
    }
    entries.push(...(files.get(dir) ?? []));
  }
  return entries;
}

function bulkLayerEntries(first: number, count: number, bytes: number, seed: number): LayerEntry[] {
  // Log-uniform sizes over three decades, scaled to the layer's share: many small files, a few
  // large ones, like a real /usr.
  const random = generator(seed);
  const weights = Array.from({ length: count }, () => Math.exp(random() * Math.log(1000)));
  const scale = bytes / weights.reduce((sum, w) => sum + w, 0);
  const byDir = new Map<string, LayerEntry[]>();
  for (let i = 0; i < count; i++) {
    const g = first + i;
    const dir = bulkFileDir(g);
    let list = byDir.get(dir);
    if (list === undefined) {
      list = [];
      byDir.set(dir, list);
    }
    list.push({
      path: `${dir}/f${g}.dat`,
      content: pseudoRandomBytes(Math.floor((weights[i] as number) * scale), g + 1),
      mode: random() < 0.1 ? 0o755 : 0o644,
    });
  }
  return withParents(byDir);
}

async function buildAndPushImage(
  registry: TestRegistry,
  workDir: string,
  options: BenchOptions,
): Promise<BenchImage> {
  const layoutDir = join(workDir, "source-layout");
  const layout = await OciLayout.open(layoutDir, { create: true });
  const bulkLayers = options.layers - 2;
  const contentBytes = Math.round(options.sizeMb * MiB);
  const layers: Array<readonly LayerEntry[] | BuiltLayer> = [];

  // A small base layer: config files, and the links a real root holds (relative and absolute
  // symlinks, hardlinks).
  layers.push([
    { path: "bin/", type: "directory" },
    { path: "bin/busybox", content: pseudoRandomBytes(256 * 1024, 7), mode: 0o755 },
    { path: "bin/ls", type: "link", linkname: "bin/busybox" },
    { path: "bin/sh", type: "symlink", linkname: "busybox" },
    { path: "etc/", type: "directory" },
    { path: "etc/bench.conf", content: compressibleText(4000, 0) },
    { path: "etc/motd", content: "locald unpack benchmark\n" },
    { path: "usr/", type: "directory" },
    { path: "usr/bin/", type: "directory" },
    { path: "usr/bin/bench", type: "symlink", linkname: "/bin/busybox" },
    { path: "usr/lib/", type: "directory" },
    { path: "usr/lib/libbench.so.1", content: pseudoRandomBytes(64 * 1024, 11), mode: 0o755 },
    { path: "usr/lib/libbench.so", type: "symlink", linkname: "libbench.so.1" },
    { path: "usr/lib/libbench-compat.so.1", type: "link", linkname: "usr/lib/libbench.so.1" },
  ]);

  // The bulk: files of pseudo-random content (gzip level 1, so compressed ≈ raw size).
  for (let l = 0; l < bulkLayers; l++) {
    const first = Math.floor((options.files * l) / bulkLayers);
    const next = Math.floor((options.files * (l + 1)) / bulkLayers);
    const bytes = Math.floor(contentBytes / bulkLayers);
    const entries = bulkLayerEntries(first, next - first, bytes, 1000 + l);
    layers.push(await compressLayer(await tarEntries(entries), "gzip", "oci"));
    process.stderr.write(`  built layer ${l + 2}/${options.layers} (${next - first} files)\r`);
  }
  process.stderr.write("\n");

  // A small top layer: an overwrite, a whiteout of a directory the bulk layers filled, and many
  // little text files. File 2 is the first in a 6-level directory, so that directory exists.
  const target = bulkFileDir(2);
  const slash = target.lastIndexOf("/");
  const whiteout = { marker: `${target.slice(0, slash)}/.wh.${target.slice(slash + 1)}`, target };
  layers.push([
    { path: "etc/", type: "directory" },
    { path: "etc/bench.conf", content: compressibleText(3000, 1) },
    { path: whiteout.marker, content: "" },
    { path: "srv/", type: "directory" },
    { path: "srv/app/", type: "directory" },
    ...Array.from({ length: 200 }, (_, i) => ({
      path: `srv/app/module-${i}.js`,
      content: `export const id = ${i};\n${compressibleText(20, i)}`,
    })),
  ]);

  const image = await writeImage(layout, {
    layers,
    config: { Entrypoint: ["/bin/sh"], Env: ["BENCH=1"], WorkingDir: "/srv/app" },
  });
  await layout.addManifest(image.descriptor, TAG);
  const reference = `${registry.host}/bench/unpack:1`;
  const pushed = await push({ kind: "layout", dir: layoutDir, name: TAG }, reference);
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
    layers: manifest.layers,
    compressedBytes: manifest.layers.reduce((sum, l) => sum + l.size, 0),
    contentBytes,
    layerCount: manifest.layers.length,
    whiteout,
    hardlinks: [
      ["bin/ls", "bin/busybox"],
      ["usr/lib/libbench-compat.so.1", "usr/lib/libbench.so.1"],
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// trees: what an unpacked root holds, and whether it is the right one

interface TreeNode {
  /** find's %y: f, d, l, … */
  type: string;
  size: number;
  /** Permission bits, setuid/setgid/sticky included. */
  mode: number;
  inode: string;
  linkTarget: string;
}

type Tree = Map<string, TreeNode>;

/** Every entry below `root` (not the root itself), by relative path; one `find`, no hashing. */
async function listTree(root: string): Promise<Tree> {
  const out = await new Promise<Buffer>((resolve, reject) => {
    const child = spawn(FIND, [root, "-mindepth", "1", "-printf", "%y\\t%s\\t%m\\t%i\\t%l\\t%P\\0"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const chunks: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => chunks.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.once("error", reject);
    child.once("close", (code) =>
      code === 0
        ? resolve(Buffer.concat(chunks))
        : reject(new Error(`find ${root} exited ${code}: ${tail(Buffer.concat(err).toString("utf8"))}`)),
    );
  });
  const tree: Tree = new Map();
  for (const record of out.toString("utf8").split("\0")) {
    if (record === "") continue;
    const [type, size, mode, inode, linkTarget, ...path] = record.split("\t");
    tree.set(path.join("\t"), {
      type: type ?? "?",
      size: Number(size),
      mode: Number.parseInt(mode ?? "0", 8),
      inode: inode ?? "",
      linkTarget: linkTarget ?? "",
    });
  }
  return tree;
}

async function sha256(path: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(path))
    .digest("hex");
}

/** The reference: what the layers hold, from `tar -xzf` of every blob, before and after whiteouts. */
interface Expected {
  /** The tar tree as extracted: whiteout markers and the entries they delete still in it. */
  raw: Tree;
  /** The root filesystem the image describes: raw minus the markers and what they white out. */
  tree: Tree;
  /** Entries the whiteouts remove, markers included. */
  whitedOut: number;
  /** Sampled regular files → sha256. */
  hashes: Map<string, string>;
}

async function expectedTree(referenceDir: string, image: BenchImage): Promise<Expected> {
  const raw = await listTree(referenceDir);
  const tree: Tree = new Map(raw);
  const markers = [...raw.keys()].filter((p) => (p.split("/").pop() ?? "").startsWith(".wh."));
  if (markers.length !== 1 || markers[0] !== image.whiteout.marker)
    throw new Error(
      `the reference tree holds whiteouts ${markers.join(", ")}, expected ${image.whiteout.marker}`,
    );
  for (const marker of markers) {
    const slash = marker.lastIndexOf("/");
    const target = `${marker.slice(0, slash + 1)}${marker.slice(slash + 1 + ".wh.".length)}`;
    if (!raw.has(target)) throw new Error(`the whiteout ${marker} deletes nothing`);
    tree.delete(marker);
    for (const path of raw.keys()) if (path === target || path.startsWith(`${target}/`)) tree.delete(path);
  }
  // A spread of regular files, plus the ones that test something: the overwritten config, the
  // hardlinked binaries, the last layer's files.
  const files = [...tree.keys()].filter((p) => tree.get(p)?.type === "f").sort();
  const sample = new Set(["etc/bench.conf", "bin/busybox", "usr/lib/libbench.so.1", "srv/app/module-199.js"]);
  const step = Math.max(1, Math.floor(files.length / SAMPLED_FILES));
  for (let i = 0; i < files.length; i += step) sample.add(files[i] as string);
  const hashes = new Map<string, string>();
  for (const path of sample) hashes.set(path, await sha256(join(referenceDir, path)));
  return { raw, tree, whitedOut: raw.size - tree.size, hashes };
}

/**
 * Compares a tree on disk with the expected one: the same paths, types, modes, file sizes and
 * symlink targets, hardlinks kept as one inode, and the sampled files' content. Returns the
 * problem, or undefined when the tree is right.
 */
async function checkTree(
  root: string,
  expected: Tree,
  hashes: Map<string, string>,
  image: BenchImage,
): Promise<string | undefined> {
  let actual: Tree;
  try {
    actual = await listTree(root);
  } catch (error) {
    return (error as Error).message;
  }
  const problems: string[] = [];
  const missing = [...expected.keys()].filter((p) => !actual.has(p));
  const extra = [...actual.keys()].filter((p) => !expected.has(p));
  if (actual.size !== expected.size || missing.length > 0 || extra.length > 0)
    problems.push(
      `${actual.size} entries, expected ${expected.size}` +
        (missing.length ? `; missing ${missing.length}: ${missing.slice(0, 3).join(", ")}` : "") +
        (extra.length ? `; unexpected ${extra.length}: ${extra.slice(0, 3).join(", ")}` : ""),
    );
  let differing = 0;
  for (const [path, want] of expected) {
    const got = actual.get(path);
    if (got === undefined) continue;
    const wrong: string[] = [];
    if (got.type !== want.type) wrong.push(`type ${got.type}, expected ${want.type}`);
    else if (want.type === "f" && got.size !== want.size)
      wrong.push(`${got.size} bytes, expected ${want.size}`);
    else if (want.type === "l" && got.linkTarget !== want.linkTarget)
      wrong.push(`link to ${got.linkTarget}, expected ${want.linkTarget}`);
    if (want.type !== "l" && got.mode !== want.mode)
      wrong.push(`mode ${got.mode.toString(8)}, expected ${want.mode.toString(8)}`);
    if (wrong.length > 0 && differing++ < 3) problems.push(`${path}: ${wrong.join(", ")}`);
  }
  if (differing > 3) problems.push(`… ${differing} entries differ in all`);
  for (const [link, target] of image.hardlinks) {
    const a = actual.get(link);
    const b = actual.get(target);
    if (a && b && a.inode !== b.inode) problems.push(`${link} is not a hardlink of ${target}`);
  }
  for (const [path, hash] of hashes) {
    if (actual.get(path)?.type !== "f") continue; // already reported
    const got = await sha256(join(root, path)).catch((e: Error) => e.message);
    if (got !== hash) problems.push(`${path}: content differs (sha256 ${got.slice(0, 16)}…)`);
  }
  return problems.length > 0 ? problems.join("; ") : undefined;
}

// ---------------------------------------------------------------------------------------------
// main

interface RunResult {
  /** locald image unpack, empty store and cache. */
  coldMs?: number;
  coldRssKb?: number;
  skopeoMs?: number;
  skopeoRssKb?: number;
  umociMs?: number;
  umociRssKb?: number;
  tarMs?: number;
  tarRssKb?: number;
  /** locald image unpack --no-cache, image in the store. */
  warmMs?: number;
  warmRssKb?: number;
  /** locald image unpack, root in the unpack cache. */
  cachedMs?: number;
  cachedRssKb?: number;
}

interface UnpackJson {
  digest?: string;
  dir?: string;
  cached?: boolean;
  entries?: number;
  skipped?: unknown[];
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  for (const bin of [SKOPEO, UMOCI, options.node])
    if (!(await executable(bin))) throw new Error(`${bin} is needed for this benchmark`);

  const workDir = await mkdtemp(join(tmpdir(), "locald-bench-"));
  let registry: TestRegistry | undefined;
  const untrap = trapSignals();
  try {
    const probe = await rssProbe(workDir);
    const otherProbe: RssProbe = probe.kind === "gnu-time" ? probe : { kind: "none" };
    const rssFile = join(workDir, "rss.txt");
    const nodeVersion = await versionOf(options.node, ["--version"]);
    const skopeoVersion = await versionOf(SKOPEO, ["--version"]);
    const umociVersion = await versionOf(UMOCI, ["--version"]);
    const tarVersion = (await versionOf(TAR, ["--version"])).split("\n")[0] ?? "unknown";

    process.stderr.write("starting an anonymous registry…\n");
    registry = await startRegistry({ flavour: "anonymous" });
    process.stderr.write(
      `building and pushing a ~${options.sizeMb} MiB, ${options.files}-file image to ${registry.host}…\n`,
    );
    const buildStart = performance.now();
    // Other work on the machine skews wall times; the load average says how much there was.
    const loadBefore = loadavg().map((l) => round(l, 2));
    const image = await buildAndPushImage(registry, workDir, options);
    process.stderr.write(
      `pushed ${image.reference} ${image.digest}: ${image.layerCount} layers, ` +
        `${(image.compressedBytes / MiB).toFixed(1)} MiB compressed (${((performance.now() - buildStart) / 1000).toFixed(1)} s)\n`,
    );
    if (options.serve) {
      process.stdout.write(`${image.reference}\n`);
      await new Promise((resolve) => {
        process.once("SIGINT", resolve);
        process.once("SIGTERM", resolve);
      });
      return 0;
    }

    let seq = 0;
    const fresh = async (label: string) => {
      const dir = join(workDir, `${label}-${seq++}`);
      await mkdir(dir);
      return dir;
    };
    const remove = (dir: string) => rm(dir, { recursive: true, force: true, maxRetries: 3 });

    // The blobs tar extracts: copied once by skopeo, checked, and read in manifest order.
    const blobLayout = join(await fresh("blobs"), "layout");
    {
      const t = await runTimed(
        SKOPEO,
        [
          "copy",
          "--quiet",
          "--src-tls-verify=false",
          `docker://${image.reference}`,
          `oci:${blobLayout}:${TAG}`,
        ],
        { probe: { kind: "none" }, rssFile },
      );
      const problem =
        t.code !== 0 ? `exit ${t.code}: ${tail(t.stderr)}` : await verifyLayout(blobLayout, image);
      if (problem) throw new Error(`copying the blobs for tar: ${problem}`);
    }
    const layerFiles = image.layers.map((l) => join(blobLayout, "blobs", ...l.digest.split(":")));
    const tarScript = 'set -e; dir=$1; shift; for blob in "$@"; do tar -xzf "$blob" -C "$dir"; done';
    const tarArgs = (dir: string) => ["-c", tarScript, "sh", dir, ...layerFiles];

    // The reference tree: tar's, with the whiteouts applied afterwards.
    process.stderr.write("extracting the reference tree with tar…\n");
    const referenceDir = await fresh("reference");
    {
      const t = await runTimed("sh", tarArgs(referenceDir), { probe: { kind: "none" }, rssFile });
      if (t.code !== 0) throw new Error(`tar failed on the reference extraction: ${tail(t.stderr)}`);
    }
    const expected = await expectedTree(referenceDir, image);
    await remove(referenceDir);
    const expectedFiles = [...expected.tree.values()].filter((n) => n.type === "f").length;
    process.stderr.write(
      `reference: ${expected.raw.size} entries from tar, ${expected.whitedOut} of them whited out ` +
        `(${image.whiteout.target} and its marker) → ${expected.tree.size} entries, ${expectedFiles} regular files\n`,
    );

    const failures: string[] = [];
    const results: RunResult[] = [];
    const locald = (args: string[], home: string) =>
      runTimed(options.node, [LOCALD_BIN, ...args], {
        env: { LOCALD_HOME: home },
        probe,
        rssFile,
        isNode: true,
      });

    /** Checks `locald image unpack --json` output and the tree it wrote. */
    const checkLocald = async (t: Timed, dir: string, cached: boolean): Promise<string | undefined> => {
      if (t.code !== 0) return `exit ${t.code}: ${tail(t.stderr || t.stdout)}`;
      let json: UnpackJson;
      try {
        json = JSON.parse(t.stdout) as UnpackJson;
      } catch {
        return `unparseable output ${JSON.stringify(tail(t.stdout, 3))}`;
      }
      if (json.digest !== image.digest) return `digest ${json.digest}, expected ${image.digest}`;
      if (json.dir !== dir) return `unpacked into ${json.dir}, expected ${dir}`;
      if (json.cached !== cached) return `cached: ${json.cached}, expected ${cached}`;
      if (json.skipped && json.skipped.length > 0)
        return `skipped ${json.skipped.length} entries: ${JSON.stringify(json.skipped.slice(0, 3))}`;
      return checkTree(dir, expected.tree, expected.hashes, image);
    };

    /** The LOCALD_HOME of this round's cold unpack, reused by the warm and cached ones. */
    let home: string | undefined;

    const runCold = async (label: string, result: RunResult) => {
      home = await fresh("home");
      const out = join(await fresh("locald-cold"), "rootfs");
      await settle(options.settleMs);
      const t = await locald(["image", "unpack", "--json", image.reference, out], home);
      const treeProblem = await checkLocald(t, out, false);
      const storeProblem = t.code === 0 ? await verifyLayout(join(home, "store"), image) : undefined;
      const problem = treeProblem ?? storeProblem;
      if (problem) failures.push(`${label}: locald cold: ${problem}`);
      else {
        result.coldMs = t.ms;
        result.coldRssKb = t.maxRssKb;
      }
      if (t.code !== 0 || storeProblem) {
        // Without the image in the store, the warm and cached figures would mean something else.
        await remove(home);
        home = undefined;
      }
      await remove(join(out, ".."));
    };

    const runSkopeoUmoci = async (label: string, result: RunResult) => {
      const base = await fresh("skopeo-umoci");
      const layout = join(base, "layout");
      const bundle = join(base, "bundle");
      await settle(options.settleMs);
      // Back to back, as one would run them: no sync in between (locald's single command gets none).
      const copy = await runTimed(
        SKOPEO,
        ["copy", "--quiet", "--src-tls-verify=false", `docker://${image.reference}`, `oci:${layout}:${TAG}`],
        { probe: otherProbe, rssFile },
      );
      let problem = copy.code !== 0 ? `skopeo exit ${copy.code}: ${tail(copy.stderr)}` : undefined;
      let unpack: Timed | undefined;
      if (!problem) {
        unpack = await runTimed(UMOCI, ["unpack", "--rootless", "--image", `${layout}:${TAG}`, bundle], {
          probe: otherProbe,
          rssFile,
        });
        problem =
          unpack.code !== 0
            ? `umoci exit ${unpack.code}: ${tail(unpack.stderr)}`
            : ((await verifyLayout(layout, image)) ??
              (await checkTree(join(bundle, "rootfs"), expected.tree, expected.hashes, image)));
      }
      if (problem || !unpack) failures.push(`${label}: skopeo + umoci: ${problem}`);
      else {
        result.skopeoMs = copy.ms;
        result.skopeoRssKb = copy.maxRssKb;
        result.umociMs = unpack.ms;
        result.umociRssKb = unpack.maxRssKb;
      }
      await remove(base);
    };

    const runTar = async (label: string, result: RunResult) => {
      const out = await fresh("tar");
      await settle(options.settleMs);
      const t = await runTimed("sh", tarArgs(out), { probe: otherProbe, rssFile });
      // tar leaves the whiteouts alone: its tree is the raw one.
      const problem =
        t.code !== 0
          ? `exit ${t.code}: ${tail(t.stderr)}`
          : await checkTree(out, expected.raw, expected.hashes, image);
      if (problem) failures.push(`${label}: tar: ${problem}`);
      else {
        result.tarMs = t.ms;
        result.tarRssKb = t.maxRssKb;
      }
      await remove(out);
    };

    const runWarm = async (label: string, result: RunResult) => {
      if (home === undefined)
        return void failures.push(
          `${label}: locald --no-cache: not run (the cold unpack left no usable store)`,
        );
      const out = join(await fresh("locald-warm"), "rootfs");
      await settle(options.settleMs);
      const t = await locald(["image", "unpack", "--json", "--no-cache", image.reference, out], home);
      const problem = await checkLocald(t, out, false);
      if (problem) failures.push(`${label}: locald --no-cache: ${problem}`);
      else {
        result.warmMs = t.ms;
        result.warmRssKb = t.maxRssKb;
      }
      await remove(join(out, ".."));
    };

    const runCached = async (label: string, result: RunResult) => {
      if (home === undefined)
        return void failures.push(`${label}: locald cached: not run (the cold unpack left no usable store)`);
      const out = join(await fresh("locald-cached"), "rootfs");
      await settle(options.settleMs);
      const t = await locald(["image", "unpack", "--json", image.reference, out], home);
      const problem = await checkLocald(t, out, true);
      if (problem) failures.push(`${label}: locald cached: ${problem}`);
      else {
        result.cachedMs = t.ms;
        result.cachedRssKb = t.maxRssKb;
      }
      await remove(join(out, ".."));
    };

    const runRound = async (label: string, run: number, result: RunResult) => {
      // Alternate who goes first, so neither always runs right after the other's disk writes.
      const steps =
        run % 2 === 1
          ? [runCold, runSkopeoUmoci, runTar, runWarm, runCached]
          : [runSkopeoUmoci, runCold, runWarm, runTar, runCached];
      try {
        for (const step of steps) await step(label, result);
      } finally {
        if (home !== undefined) await remove(home);
        home = undefined;
      }
    };

    for (let w = 1; w <= options.warmup; w++) {
      // Same commands and checks, figures discarded: the first round after the push pays for
      // leftovers of the setup (writeback, discards of the deleted source layout).
      const scratch: RunResult = {};
      const before = failures.length;
      await runRound(`warm-up ${w}`, w, scratch);
      process.stderr.write(
        `warm-up ${w}/${options.warmup}: locald cold ${secs(scratch.coldMs)} s, skopeo+umoci ${secs(sum(scratch.skopeoMs, scratch.umociMs))} s, ` +
          `tar ${secs(scratch.tarMs)} s, locald --no-cache ${secs(scratch.warmMs)} s, cached ${secs(scratch.cachedMs)} s (not counted` +
          `${failures.length > before ? `; ${failures.length - before} failed` : ""})\n`,
      );
    }

    for (let run = 1; run <= options.runs; run++) {
      const result: RunResult = {};
      await runRound(`run ${run}`, run, result);
      results.push(result);
      const pair = sum(result.skopeoMs, result.umociMs);
      process.stderr.write(
        `run ${run}/${options.runs}: locald cold ${secs(result.coldMs)} s, skopeo+umoci ${secs(pair)} s ` +
          `(${ratioText(quotient(result.coldMs, pair))}), tar ${secs(result.tarMs)} s, ` +
          `locald --no-cache ${secs(result.warmMs)} s (${ratioText(quotient(result.warmMs, result.tarMs))}), ` +
          `cached ${secs(result.cachedMs)} s\n`,
      );
    }

    // ---- report
    const pick = (f: (r: RunResult) => number | undefined) => results.map(f);
    const pairMs = (r: RunResult) => sum(r.skopeoMs, r.umociMs);
    const pairRss = (r: RunResult) =>
      r.skopeoRssKb === undefined || r.umociRssKb === undefined
        ? undefined
        : Math.max(r.skopeoRssKb, r.umociRssKb);
    const localdRss = (r: RunResult) => {
      const peaks = [r.coldRssKb, r.warmRssKb, r.cachedRssKb].filter((v): v is number => v !== undefined);
      return peaks.length ? Math.max(...peaks) : undefined;
    };
    const s = {
      localdColdMs: series(pick((r) => r.coldMs)),
      skopeoUmociMs: series(pick(pairMs)),
      skopeoMs: series(pick((r) => r.skopeoMs)),
      umociMs: series(pick((r) => r.umociMs)),
      umociRatioPerRun: series(pick((r) => quotient(r.coldMs, pairMs(r)))),
      tarMs: series(pick((r) => r.tarMs)),
      localdNoCacheMs: series(pick((r) => r.warmMs)),
      tarRatioPerRun: series(pick((r) => quotient(r.warmMs, r.tarMs))),
      localdCachedMs: series(pick((r) => r.cachedMs)),
      localdColdRssKb: series(pick((r) => r.coldRssKb)),
      localdNoCacheRssKb: series(pick((r) => r.warmRssKb)),
      localdCachedRssKb: series(pick((r) => r.cachedRssKb)),
      skopeoRssKb: series(pick((r) => r.skopeoRssKb)),
      umociRssKb: series(pick((r) => r.umociRssKb)),
      tarRssKb: series(pick((r) => r.tarRssKb)),
    };
    // Unrounded for the PASS/FAIL and the display, so they agree with the per-run ratios.
    const medianRatio = (a: number | null, b: number | null) =>
      a !== null && b !== null && b > 0 ? a / b : null;
    const umociRatio = medianRatio(s.localdColdMs.median, s.skopeoUmociMs.median);
    const tarRatio = medianRatio(s.localdNoCacheMs.median, s.tarMs.median);
    const localdPeaks = results.map(localdRss).filter((v): v is number => v !== undefined);
    const localdPeakKb = localdPeaks.length ? Math.max(...localdPeaks) : null;

    const rows = results.map((r) => [
      secs(r.coldMs),
      secs(pairMs(r)),
      ratioText(quotient(r.coldMs, pairMs(r))),
      secs(r.tarMs),
      secs(r.warmMs),
      ratioText(quotient(r.warmMs, r.tarMs)),
      secs(r.cachedMs),
      mib(r.coldRssKb),
      mib(r.warmRssKb),
      mib(r.cachedRssKb),
      mib(pairRss(r)),
      mib(r.tarRssKb),
    ]);
    const tableRows = [
      ...rows.map((row, i) => [String(i + 1), ...row]),
      [
        "median",
        secs(s.localdColdMs.median),
        secs(s.skopeoUmociMs.median),
        ratioText(umociRatio),
        secs(s.tarMs.median),
        secs(s.localdNoCacheMs.median),
        ratioText(tarRatio),
        secs(s.localdCachedMs.median),
        mib(s.localdColdRssKb.median),
        mib(s.localdNoCacheRssKb.median),
        mib(s.localdCachedRssKb.median),
        mib(series(pick(pairRss)).median),
        mib(s.tarRssKb.median),
      ],
    ];
    const header = [
      "run",
      "locald cold (s)",
      "skopeo+umoci (s)",
      "ratio",
      "tar -xzf (s)",
      "locald --no-cache (s)",
      "ratio",
      "locald cached (s)",
      "RSS cold (MiB)",
      "RSS --no-cache (MiB)",
      "RSS cached (MiB)",
      "RSS skopeo/umoci (MiB)",
      "RSS tar (MiB)",
    ];
    const umociPass = umociRatio !== null && umociRatio <= UMOCI_RATIO_TARGET;
    const tarPass = tarRatio !== null && tarRatio <= TAR_RATIO_TARGET;
    const rssPass =
      localdPeakKb !== null && localdPeakKb < RSS_TARGET_KB && localdPeaks.length === results.length;
    const rssNote =
      probe.kind === "gnu-time"
        ? "peak RSS: GNU time %M (largest process of the command's tree)"
        : "peak RSS: process.resourceUsage().maxRSS of the locald child (others n/a)";
    const loadAfter = loadavg().map((l) => round(l, 2));
    const mbps = (ms: number | null) =>
      ms === null ? "—" : (image.compressedBytes / MiB / (ms / 1000)).toFixed(0);
    const lines = [
      "",
      `unpack benchmark — ${image.reference} — ${image.layerCount} layers, ${(image.compressedBytes / MiB).toFixed(1)} MiB compressed, ` +
        `${expected.tree.size} entries (${expectedFiles} files) after whiteouts`,
      `node ${nodeVersion}, ${skopeoVersion}, ${umociVersion}, ${tarVersion}, ${cpus().length} CPUs, ` +
        `${(totalmem() / 1024 ** 3).toFixed(0)} GiB RAM, uid ${process.getuid?.() ?? "?"}, ${rssNote}`,
      `load average 1/5/15 min: ${loadBefore.join(" ")} before the image was built, ${loadAfter.join(" ")} after the last run`,
      "",
      table(header, tableRows),
      "",
      "locald cold = pull into an empty store + extract into the target (overlapped) + record it in the unpack cache as hardlinks; skopeo+umoci = skopeo copy, then umoci unpack --rootless, times summed, RSS the larger;",
      `tar = tar -xzf of the ${image.layerCount} layer blobs in order into one dir, no whiteout processing (it keeps ${expected.whitedOut} entries the image deletes);`,
      "locald --no-cache = image already in the store, extracted straight into the target; locald cached = second unpack, copied from the unpack cache.",
      "",
      `throughput (median, compressed MiB/s): locald cold ${mbps(s.localdColdMs.median)}, skopeo+umoci ${mbps(s.skopeoUmociMs.median)}, ` +
        `tar ${mbps(s.tarMs.median)}, locald --no-cache ${mbps(s.localdNoCacheMs.median)}`,
      `skopeo+umoci (medians): skopeo ${secs(s.skopeoMs.median)} s + umoci ${secs(s.umociMs.median)} s`,
      `ratio locald cold / (skopeo+umoci) (medians): ${ratioText(umociRatio)} — target ≤ ${UMOCI_RATIO_TARGET}×: ${umociPass ? "PASS" : "FAIL"}`,
      `ratio locald --no-cache / tar (medians): ${ratioText(tarRatio)} — target ≤ ${TAR_RATIO_TARGET}×: ${tarPass ? "PASS" : "FAIL"}`,
      `locald peak RSS (largest of every locald command): ${mib(localdPeakKb)} MiB — target < 200 MB (${(RSS_TARGET_KB / 1024).toFixed(1)} MiB): ${rssPass ? "PASS" : "FAIL"}`,
      ...(failures.length
        ? ["", `${failures.length} failed step(s), excluded from the figures:`, ...failures]
        : []),
      "",
    ];
    process.stdout.write(lines.join("\n"));
    const json = {
      bench: "unpack",
      date: new Date().toISOString(),
      node: nodeVersion,
      skopeo: skopeoVersion,
      umoci: umociVersion,
      tar: tarVersion,
      cpus: cpus().length,
      uid: process.getuid?.() ?? null,
      loadAverage: { before: loadBefore, after: loadAfter },
      reference: image.reference,
      digest: image.digest,
      layers: image.layerCount,
      compressedBytes: image.compressedBytes,
      contentBytes: image.contentBytes,
      entries: {
        tar: expected.raw.size,
        whitedOut: expected.whitedOut,
        image: expected.tree.size,
        files: expectedFiles,
      },
      runs: options.runs,
      rssSource: probe.kind,
      ...s,
      skopeoUmociRssKb: series(pick(pairRss)),
      umociRatioOfMedians: umociRatio === null ? null : round(umociRatio),
      tarRatioOfMedians: tarRatio === null ? null : round(tarRatio),
      localdPeakRssKb: localdPeakKb,
      targets: {
        umociRatio: { limit: UMOCI_RATIO_TARGET, pass: umociPass },
        tarRatio: { limit: TAR_RATIO_TARGET, pass: tarPass },
        localdPeakRssKb: { limit: RSS_TARGET_KB, pass: rssPass },
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

function sum(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined ? undefined : a + b;
}

function quotient(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

runMain("unpack benchmark", main);
