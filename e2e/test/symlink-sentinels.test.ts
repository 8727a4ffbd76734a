/**
 * Images whose symlinks point out of their root at host paths that exist (`/run`, `/etc`,
 * `/proc/self`, `..` chains up to `/`, a sentinel directory of the test's) and at each other in
 * loops — pulled, unpacked, unpacked again from the cache (a copy out of it), run in a container
 * and pruned, as root and as an unprivileged user. Nothing outside the root may be read, listed,
 * linked or copied: inotify watches the sentinel directory for any open or access, its files'
 * names and content must never appear under LOCALD_HOME or a target, their link counts stay 1,
 * and a directory only root may read never makes an unprivileged run fail. Walks that followed
 * links (Node 22.12+ `readdirSync` with `recursive` and `withFileTypes`) listed the host's `/`
 * here until the heap ran out; the loop image must unpack in bounded time and memory.
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, chown, lstat, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { OciLayout, push, removeTree } from "@locald/oci";
import {
  busyboxLayer,
  type CliOptions,
  type CliResult,
  findLeaks,
  type LayerEntry,
  makeTempDir,
  requireBinary,
  runLocald,
  snapshotTree,
  startRegistry,
  type TestRegistry,
  type TreeSnapshot,
  unprivilegedUser,
  writeImage,
} from "../src/index.js";

const tag = randomBytes(6).toString("hex");
/** Names and content that only the sentinel directory holds. */
const SENTINEL_FILE = `locald-sentinel-${tag}`;
const SENTINEL_CLOSED = `locald-sentinel-closed-${tag}`;
const TOKEN = `locald-sentinel-token-${tag}`;
/** A host file that an image file of the same name, written through a link, must never touch. */
const VICTIM = `victim-${tag}`;
/** A CLI run that took the old path would walk the host's `/`: kill it long before the test's own limit. */
const CLI_TIMEOUT_MS = 120_000;

const shared: {
  registry?: TestRegistry;
  work?: string;
  sentinel?: string;
  before?: TreeSnapshot;
  watcher?: Watcher;
  escapeRef?: string;
  loopRef?: string;
} = {};

/** `inotifywait -m -r` on a directory: every open, access or change below it, from the kernel. */
interface Watcher {
  readonly child: ChildProcessWithoutNullStreams;
  readonly events: string[];
}

async function watch(dir: string): Promise<Watcher> {
  const child = spawn(
    await requireBinary("inotifywait"),
    ["-m", "-r", "-e", "open,access,modify,attrib,create,delete,move", "--format", "%w%f %e", dir],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  const events: string[] = [];
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => events.push(...chunk.split("\n").filter((l) => l !== "")));
  // The watches exist once inotifywait says so; events before that would be lost.
  await new Promise<void>((resolve, reject) => {
    let said = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      said += chunk;
      if (said.includes("Watches established")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`inotifywait exited (${code}) before watching: ${said}`)));
  });
  return { child, events };
}

async function stopWatching(watcher: Watcher): Promise<string[]> {
  const exited = new Promise((resolve) => watcher.child.once("close", resolve));
  watcher.child.kill("SIGTERM");
  await exited;
  return watcher.events;
}

async function pushImage(name: string, layers: LayerEntry[][]): Promise<string> {
  const { registry, work } = shared as Required<typeof shared>;
  const layout = await OciLayout.open(join(work, `layout-${name}`), { create: true });
  const image = await writeImage(layout, {
    config: { Entrypoint: ["/bin/sh", "-c"], Cmd: ["true"], Env: ["PATH=/bin"] },
    layers,
  });
  await layout.addManifest(image.descriptor, name);
  const ref = `${registry.host}/e2e/${name}:1`;
  await push({ kind: "layout", dir: layout.root, name }, ref);
  return ref;
}

/** Enough `..` to climb from any directory of the test's to `/`. */
const UP = Array.from({ length: 40 }, () => "..").join("/");

/** Links out of the root at host paths that exist, at the sentinel, and up to `/`. */
function escapeLinks(sentinel: string): LayerEntry[] {
  return [
    { path: "var/", type: "directory" },
    { path: "var/run", type: "symlink", linkname: "/run" },
    { path: "host-etc", type: "symlink", linkname: "/etc" },
    { path: "proc-self", type: "symlink", linkname: "/proc/self" },
    { path: "deep", type: "symlink", linkname: "../../../../.." },
    { path: "a/b/c/", type: "directory" },
    { path: "a/b/c/top", type: "symlink", linkname: UP },
    { path: "sentinel", type: "symlink", linkname: sentinel },
    { path: "sentinel-up", type: "symlink", linkname: `${UP}${sentinel}` },
    { path: "sentinel-file", type: "symlink", linkname: join(sentinel, SENTINEL_FILE) },
    { path: "closed", type: "symlink", linkname: join(sentinel, SENTINEL_CLOSED) },
    // Written through the link, inside the root (as if it were `/`); mode 0200 (no read for its owner; tar-stream writes 0 as 0644) makes a rootless
    // unpack loosen it and put its mode back later, by a path that must not leave the root.
    { path: "nested", type: "symlink", linkname: join(sentinel, "open", "nested") },
    { path: `nested/${VICTIM}`, content: "from the image\n", mode: 0o200 },
  ];
}

/**
 * Links into each other: two `.` links in one directory make 2^40 paths for a walk that follows
 * them (ELOOP only stops one path at 40 hops), a ring of links, and links to their own parents.
 */
function loopLinks(): LayerEntry[] {
  const ring = Array.from(
    { length: 50 },
    (_, i): LayerEntry => ({
      path: `loop/ring/r${i}`,
      type: "symlink",
      linkname: `r${(i + 1) % 50}`,
    }),
  );
  return [
    { path: "loop/ring/", type: "directory" },
    { path: "loop/self", type: "symlink", linkname: "." },
    { path: "loop/again", type: "symlink", linkname: "." },
    { path: "loop/parent", type: "symlink", linkname: ".." },
    { path: "loop/a", type: "symlink", linkname: "b" },
    { path: "loop/b", type: "symlink", linkname: "a" },
    { path: "loop/ring/up", type: "symlink", linkname: "../../loop" },
    ...ring,
  ];
}

/** Sentinel names or content anywhere under `dir`. */
const leaks = (dir: string) => findLeaks(dir, { names: [SENTINEL_FILE, SENTINEL_CLOSED], content: TOKEN });

before(async () => {
  for (const tool of ["runc", "setpriv", "busybox", "time"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("sentinels");
  await chmod(shared.work, 0o755);
  // Outside every root and every LOCALD_HOME: readable by all, and one directory only root may read.
  const sentinel = await makeTempDir("sentinel");
  shared.sentinel = sentinel;
  await chmod(sentinel, 0o755);
  await writeFile(join(sentinel, SENTINEL_FILE), `${TOKEN}\n`, { mode: 0o644 });
  await mkdir(join(sentinel, "open", "nested"), { recursive: true, mode: 0o755 });
  await writeFile(join(sentinel, "open", "nested", SENTINEL_FILE), `${TOKEN}\n`, { mode: 0o644 });
  await writeFile(join(sentinel, "open", "nested", VICTIM), `${TOKEN}\n`, { mode: 0o644 });
  await mkdir(join(sentinel, SENTINEL_CLOSED), { mode: 0o700 });
  await writeFile(join(sentinel, SENTINEL_CLOSED, SENTINEL_FILE), `${TOKEN}\n`, { mode: 0o600 });
  if (process.getuid?.() === 0) await chown(join(sentinel, SENTINEL_CLOSED), 0, 0);
  shared.before = await snapshotTree(sentinel);

  const busybox = await busyboxLayer();
  shared.escapeRef = await pushImage("escapes", [[...busybox, ...escapeLinks(sentinel)]]);
  shared.loopRef = await pushImage("loops", [[...busybox, ...loopLinks()]]);
  shared.watcher = await watch(sentinel);
});

after(async () => {
  if (shared.watcher) await stopWatching(shared.watcher);
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
  if (shared.sentinel) await removeTree(shared.sentinel);
});

for (const who of ["root", "an unprivileged user"] as const) {
  describe(`symlinks out of the root and in loops, as ${who}`, () => {
    let home: string;
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    before(async () => {
      home = join(shared.work as string, `home-${who === "root" ? "root" : "user"}`);
      await mkdir(home, { recursive: true, mode: 0o755 });
      if (who !== "root") {
        as = await unprivilegedUser();
        await chown(home, as.uid, as.gid);
      }
      env = { HOME: home, LOCALD_HOME: join(home, "locald"), XDG_RUNTIME_DIR: home };
    });

    const locald = (args: string[], options: Partial<CliOptions> = {}): Promise<CliResult> =>
      runLocald(args, { env, timeoutMs: CLI_TIMEOUT_MS, ...(as ? { as } : {}), ...options });

    const unpackJson = async (ref: string, dir: string, options: Partial<CliOptions> = {}) => {
      const result = await locald(["image", "unpack", ref, dir, "--json"], options);
      assert.equal(result.code, 0, result.stderr);
      return { result, report: JSON.parse(result.stdout.split("\n")[0] as string) as { cached: boolean } };
    };

    test("unpacked, then unpacked again from the cache: links kept verbatim, nothing outside read", async () => {
      const ref = shared.escapeRef as string;
      const first = join(home, "escapes-1");
      const second = join(home, "escapes-2");
      assert.equal((await unpackJson(ref, first)).report.cached, false);
      assert.equal(
        (await unpackJson(ref, second)).report.cached,
        true,
        "the second unpack comes from the cache",
      );
      const tree = await snapshotTree(second);
      assert.deepEqual(tree, await snapshotTree(first), "the copy out of the cache is the same tree");
      const sentinel = shared.sentinel as string;
      for (const link of escapeLinks(sentinel).filter((entry) => entry.type === "symlink"))
        assert.equal(tree.get(link.path)?.linkTarget, link.linkname, `${link.path} is the link it was`);
      const victim = join(sentinel, "open", "nested", VICTIM).slice(1);
      for (const dir of [first, second]) {
        assert.equal(
          (await snapshotTree(dir)).get(victim)?.mode,
          0o200,
          `${dir}: the image's file keeps its mode 0200`,
        );
        await chmod(join(dir, victim), 0o600);
        assert.equal(await readFile(join(dir, victim), "utf8"), "from the image\n");
      }
      assert.deepEqual(await leaks(join(home, "locald")), []);
      assert.deepEqual(await leaks(first), []);
      assert.deepEqual(await leaks(second), []);
    });

    test("a loop of symlinks unpacks in bounded time and memory, and again from the cache", async (t) => {
      const ref = shared.loopRef as string;
      assert.equal((await locald(["image", "pull", "-q", ref])).code, 0);
      const measured = await unpackJson(ref, join(home, "loops-1"), {
        wrapper: [await requireBinary("time"), "-f", "locald-measure %e s %M KiB"],
      });
      const [, seconds, kib] = /locald-measure ([\d.]+) s (\d+) KiB/.exec(measured.result.stderr) ?? [];
      assert.ok(seconds !== undefined && kib !== undefined, measured.result.stderr);
      t.diagnostic(
        `unpack of the loop image (already pulled): ${seconds} s, peak RSS ${Number(kib) >> 10} MiB`,
      );
      // A walk that followed these links grew to the 4 GB heap limit and was killed by it.
      assert.ok(Number(kib) < 512 * 1024, `peak RSS ${kib} KiB`);
      assert.equal(measured.report.cached, false);
      const again = await unpackJson(ref, join(home, "loops-2"));
      assert.equal(again.report.cached, true, "the second unpack comes from the cache");
      const tree = await snapshotTree(join(home, "loops-2"));
      assert.equal(tree.get("loop/self")?.linkTarget, ".");
      assert.equal(tree.get("loop/ring/r49")?.linkTarget, "r0");
      assert.equal([...tree.keys()].filter((path) => path.startsWith("loop/")).length, 57);
    });

    test("container run over the cached root: the links are the image's, and the run succeeds", async () => {
      const result = await locald([
        "container",
        "run",
        "--rm",
        shared.escapeRef as string,
        "for l in /var/run /deep /sentinel; do busybox readlink $l; done; ls /closed/ 2>/dev/null; echo done",
      ]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, `/run\n../../../../..\n${shared.sentinel}\ndone\n`);
      const loops = await locald([
        "container",
        "run",
        "--rm",
        shared.loopRef as string,
        "ls /loop/ring | busybox wc -l",
      ]);
      assert.equal(loops.code, 0, loops.stderr);
      assert.equal(loops.stdout.trim(), "51");
      assert.deepEqual(await leaks(join(home, "locald")), []);
    });

    test("image rm and prune remove the cached roots, not what their links point at", async () => {
      for (const ref of [shared.escapeRef as string, shared.loopRef as string])
        assert.equal((await locald(["image", "rm", ref])).code, 0);
      const pruned = await locald(["image", "prune"]);
      assert.equal(pruned.code, 0, pruned.stderr);
      const cache = await snapshotTree(join(home, "locald")).then((tree) =>
        [...tree.keys()].filter((path) => /cache\/rootfs\/[^/]+$/.test(path)),
      );
      assert.deepEqual(cache, [], "no cached root is left");
    });
  });
}

describe("after both users", () => {
  test("the sentinel directory was never opened, listed, read or changed, and no file was linked", async () => {
    const sentinel = shared.sentinel as string;
    const events = await stopWatching(shared.watcher as Watcher);
    shared.watcher = undefined;
    assert.deepEqual(events, [], "inotify saw no access below the sentinel directory");
    assert.deepEqual(await snapshotTree(sentinel), shared.before);
    for (const path of [SENTINEL_FILE, join("open", "nested", SENTINEL_FILE), join("open", "nested", VICTIM)])
      assert.equal((await lstat(join(sentinel, path))).nlink, 1, `${path} has no other name`);
  });
});
