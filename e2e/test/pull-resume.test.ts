import assert from "node:assert/strict";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, type TestContext, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { type Descriptor, OciLayout, push, removeTree } from "@locald/oci";
import {
  assertBlobsVerify,
  compressLayer,
  type FaultProxy,
  makeTempDir,
  pseudoRandomBytes,
  type RecordedRequest,
  runLocald,
  startFaultProxy,
  startLocald,
  startOriginRecorder,
  startRegistry,
  type TestRegistry,
  tarEntries,
  tempDir,
  writeImage,
} from "../src/index.js";

/** Incompressible, so every byte of it crosses the proxy. */
const LAYER_BYTES = 64 * 1024 * 1024;
/** Slow enough to interrupt half-way, fast enough for a test: about 4 s for the layer. */
const THROTTLE = 16 * 1024 * 1024;

describe("interrupted pulls resume", () => {
  let registry: TestRegistry;
  let work: string;
  let image: { config: Descriptor; layers: Descriptor[] };
  let layer: Descriptor;

  before(async () => {
    registry = await startRegistry({ flavour: "anonymous" });
    work = await makeTempDir("locald-resume-");
    const layout = await OciLayout.open(join(work, "src"), { create: true });
    const big = await compressLayer(
      await tarEntries([{ path: "big.bin", content: pseudoRandomBytes(LAYER_BYTES, 19) }]),
      "none",
      "oci",
    );
    const small = await compressLayer(
      await tarEntries([{ path: "etc/hello", content: "hi\n" }]),
      "gzip",
      "oci",
    );
    const written = await writeImage(layout, { layers: [small, big] });
    await layout.addManifest(written.descriptor, "big");
    await push({ kind: "layout", dir: layout.root, name: "big" }, `${registry.host}/resume/big:1`);
    const manifest = JSON.parse(written.manifest.toString()) as { config: Descriptor; layers: Descriptor[] };
    image = manifest;
    layer = big.descriptor;
  });
  after(async () => {
    await registry.stop();
    await removeTree(work);
  });

  async function proxyFor(t: TestContext): Promise<{ proxy: FaultProxy; ref: string }> {
    const proxy = await startFaultProxy({ target: registry.url });
    t.after(() => proxy.stop());
    return { proxy, ref: `${proxy.host}/resume/big:1` };
  }

  const blobGets = (requests: readonly RecordedRequest[], digest: string) =>
    requests.filter((r) => r.method === "GET" && r.path.includes(`/blobs/${digest}`));
  const bytesOf = (requests: readonly RecordedRequest[]) => requests.reduce((sum, r) => sum + r.bytes, 0);
  const tempEntries = (home: string) => readdir(join(home, "store", ".tmp")).catch(() => [] as string[]);

  /**
   * Pulls through a throttled proxy and sends SIGINT once the proxy has sent `fraction` of the
   * big layer, as a user pressing Ctrl-C would. Returns the partial file's name and size.
   */
  async function interruptedPull(
    t: TestContext,
    proxy: FaultProxy,
    ref: string,
    home: string,
    fraction = 0.5,
  ): Promise<{ partial: string; kept: number; sent: number }> {
    proxy.addFault({
      method: "GET",
      path: new RegExp(`/blobs/${layer.digest}`),
      kind: "trickle",
      bytesPerSecond: THROTTLE,
    });
    const child = startLocald(["image", "pull", ref], { env: { LOCALD_HOME: home } });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.stdout.resume();
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    let sent = 0;
    for (;;) {
      const [get] = blobGets(proxy.requests, layer.digest);
      sent = get?.bytes ?? 0;
      if (sent >= layer.size * fraction) break;
      const done = await Promise.race([exited.then(() => true), delay(10).then(() => false)]);
      if (done) assert.fail(`the pull ended before it could be interrupted: ${stderr}`);
    }
    child.kill("SIGINT");
    const code = await exited;
    assert.notEqual(code, 0, "the interrupted pull did not succeed");
    proxy.clearFaults();
    const partials = (await tempEntries(home)).filter((name) => name.endsWith(".partial"));
    assert.equal(partials.length, 1, `one partial file: ${partials.join(", ")}`);
    const partial = partials[0] as string;
    const kept = (await readFile(join(home, "store", ".tmp", partial))).length;
    t.diagnostic(`interrupted at ${sent} bytes sent by the proxy; the partial file kept ${kept} bytes`);
    assert.ok(kept > 0 && kept <= sent, `kept ${kept} of ${sent} sent`);
    return { partial, kept, sent };
  }

  test("Ctrl-C half-way: the next pull fetches only the rest", async (t) => {
    const home = await tempDir(t);
    const { proxy, ref } = await proxyFor(t);
    const { kept } = await interruptedPull(t, proxy, ref, home);
    const before = proxy.requests.length;
    const again = await runLocald(["image", "pull", "-q", ref], { env: { LOCALD_HOME: home } });
    assert.equal(again.code, 0, again.stderr);
    const gets = blobGets(proxy.requests.slice(before), layer.digest);
    const fetched = bytesOf(gets);
    t.diagnostic(
      `second pull: ${gets.length} request(s), ${fetched} of ${layer.size} bytes (${((100 * fetched) / layer.size).toFixed(1)} %)`,
    );
    assert.equal(gets[0]?.range, `bytes=${kept}-`);
    assert.equal(gets[0]?.status, 206);
    assert.ok(fetched < 0.6 * layer.size, `${fetched} bytes fetched again`);
    assert.equal(fetched, layer.size - kept);
    await assertBlobsVerify(join(home, "store"));
    assert.deepEqual(await tempEntries(home), [], "nothing left in the store's temp");
  });

  test("two pulls of one image at once transfer each blob once", async (t) => {
    const home = await tempDir(t);
    const { proxy, ref } = await proxyFor(t);
    proxy.addFault({
      method: "GET",
      path: /\/blobs\//,
      kind: "trickle",
      bytesPerSecond: 4 * THROTTLE,
      times: Number.POSITIVE_INFINITY,
    });
    const [first, second] = await Promise.all([
      runLocald(["image", "pull", ref], { env: { LOCALD_HOME: home } }),
      runLocald(["image", "pull", ref], { env: { LOCALD_HOME: home } }),
    ]);
    assert.equal(first?.code, 0, first?.stderr);
    assert.equal(second?.code, 0, second?.stderr);
    for (const blob of [image.config, ...image.layers]) {
      const gets = blobGets(proxy.requests, blob.digest);
      assert.equal(gets.length, 1, `blob ${blob.digest} fetched ${gets.length} times`);
      assert.equal(bytesOf(gets), blob.size);
    }
    assert.match(`${first?.stderr}${second?.stderr}`, /Waiting for another pull \(process \d+\)/);
    await assertBlobsVerify(join(home, "store"));
    assert.deepEqual(await tempEntries(home), []);
  });

  test("a registry that ignores Range, or answers 416, still ends with the right blob", async (t) => {
    for (const fault of [{ kind: "ignore-range" }, { kind: "status", status: 416 }] as const) {
      const home = await tempDir(t);
      const { proxy, ref } = await proxyFor(t);
      await interruptedPull(t, proxy, ref, home);
      const before = proxy.requests.length;
      proxy.addFault({ method: "GET", path: new RegExp(`/blobs/${layer.digest}`), ...fault });
      const again = await runLocald(["image", "pull", "-q", ref], { env: { LOCALD_HOME: home } });
      assert.equal(again.code, 0, again.stderr);
      const gets = blobGets(proxy.requests.slice(before), layer.digest);
      assert.match(gets[0]?.range ?? "", /^bytes=\d+-$/);
      if (fault.kind === "ignore-range") {
        assert.deepEqual(
          gets.map((r) => r.status),
          [200],
        );
      } else {
        assert.deepEqual(
          gets.map((r) => [r.status, r.range]),
          [
            [416, gets[0]?.range],
            [200, undefined],
          ],
        );
      }
      assert.equal(gets.at(-1)?.bytes, layer.size, "the whole blob, once more");
      await assertBlobsVerify(join(home, "store"));
      assert.deepEqual(await tempEntries(home), []);
    }
  });

  test("a corrupted kept prefix is caught by the digest check; the pull starts over", async (t) => {
    const home = await tempDir(t);
    const { proxy, ref } = await proxyFor(t);
    const { partial } = await interruptedPull(t, proxy, ref, home);
    const path = join(home, "store", ".tmp", partial);
    const bytes = await readFile(path);
    bytes[1000] = (bytes[1000] ?? 0) ^ 0xff;
    await writeFile(path, bytes);
    const before = proxy.requests.length;
    const again = await runLocald(["image", "pull", "-q", ref], { env: { LOCALD_HOME: home } });
    assert.equal(again.code, 0, again.stderr);
    const gets = blobGets(proxy.requests.slice(before), layer.digest);
    assert.deepEqual(
      gets.map((r) => r.range),
      [`bytes=${bytes.length}-`, undefined],
      "the rest first, then, after the check failed, the whole blob",
    );
    assert.equal(gets[1]?.bytes, layer.size);
    await assertBlobsVerify(join(home, "store"));
    assert.deepEqual(await tempEntries(home), []);
  });

  test("the Range request follows a redirect to storage", async (t) => {
    const home = await tempDir(t);
    const { proxy, ref } = await proxyFor(t);
    const storage = await startOriginRecorder({ target: registry.url, hostname: "localhost" });
    t.after(() => storage.stop());
    const { kept } = await interruptedPull(t, proxy, ref, home);
    proxy.addFault({
      method: "GET",
      path: new RegExp(`/blobs/${layer.digest}`),
      kind: "redirect",
      to: storage.url,
    });
    const again = await runLocald(["image", "pull", "-q", ref], { env: { LOCALD_HOME: home } });
    assert.equal(again.code, 0, again.stderr);
    const redirected = blobGets(storage.requests, layer.digest);
    assert.deepEqual(
      redirected.map((r) => [r.range, r.status]),
      [[`bytes=${kept}-`, 206]],
    );
    await assertBlobsVerify(join(home, "store"));
  });

  test("image prune removes a dead pull's partial download and says how much", async (t) => {
    const home = await tempDir(t);
    const { proxy, ref } = await proxyFor(t);
    const { kept } = await interruptedPull(t, proxy, ref, home, 0.25);
    const pruned = await runLocald(["image", "prune"], { env: { LOCALD_HOME: home } });
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.match(
      pruned.stdout,
      /Deleted \d+ partial download\(s\) and lock\(s\) of pulls that died, [\d.]+MB/,
    );
    assert.match(pruned.stdout, /Deleted 1 lease\(s\) of pulls that died/);
    t.diagnostic(`${pruned.stdout.trim()} (the partial held ${kept} bytes)`);
    assert.deepEqual(await tempEntries(home), []);
  });
});
