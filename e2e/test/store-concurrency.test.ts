import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { OciLayout, push, removeTree, Store } from "@locald/oci";
import {
  assertBlobsVerify,
  LOCALD_BIN,
  runLocald,
  sampleImage,
  startFaultProxy,
  startRegistry,
  type TestRegistry,
  tempDir,
} from "../src/index.js";

describe("one store, many processes", () => {
  let registry: TestRegistry;
  const refs: string[] = [];
  let work: string | undefined;
  before(async () => {
    registry = await startRegistry({ flavour: "anonymous" });
    work = await mkdtemp("/tmp/locald-conc-");
    const layout = await OciLayout.open(join(work, "src"), { create: true });
    // Four images, each pulled by two processes at once, so writers race on the same blobs.
    for (let i = 0; i < 4; i++) {
      const image = await sampleImage(layout, { seed: 500 + i, layerBytes: 512 * 1024 });
      await layout.addManifest(image.descriptor, `img${i}`);
      const ref = `${registry.host}/conc/img${i}:1`;
      await push({ kind: "layout", dir: layout.root, name: `img${i}` }, ref);
      refs.push(ref);
    }
  });
  after(async () => {
    await registry.stop();
    if (work) await removeTree(work);
  });

  test("8 processes pulling overlapping images all succeed and leave a consistent store", async (t) => {
    const home = await tempDir(t);
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        runLocald(["image", "pull", "-q", refs[i % refs.length] as string], { env: { LOCALD_HOME: home } }),
      ),
    );
    for (const result of results) assert.equal(result.code, 0, result.stderr);
    const store = await Store.open(join(home, "store"));
    const names = (await store.list()).map((i) => i.name).sort();
    assert.deepEqual(names, [...refs].sort());
    const blobs = await assertBlobsVerify(join(home, "store"));
    assert.equal(blobs, 4 * 4, "manifest, config and two layers per image, each stored once");
    const prune = await store.prune();
    assert.equal(prune.removed, 0, "every blob is referenced");
  });

  test("a pull killed with SIGKILL mid-download is followed by a successful pull", async (t) => {
    const home = await tempDir(t);
    const proxy = await startFaultProxy({ target: registry.url });
    t.after(() => proxy.stop());
    proxy.addFault({
      method: "GET",
      path: /\/blobs\//,
      kind: "trickle",
      bytesPerSecond: 64 * 1024,
      times: Number.POSITIVE_INFINITY,
    });
    const ref = refs[0]?.replace(registry.host, proxy.host) as string;
    const child = spawn(process.execPath, [LOCALD_BIN, "image", "pull", ref], {
      env: { ...process.env, LOCALD_HOME: home },
      stdio: ["ignore", "ignore", "pipe"],
    });
    // Kill as soon as the big layer is being downloaded (its start line is printed first).
    await new Promise<void>((resolve, reject) => {
      let seen = "";
      child.stderr.on("data", (chunk: Buffer) => {
        seen += chunk.toString();
        if (/Waiting \(5\d\d\.\dkB\)/.test(seen)) resolve();
      });
      child.on("exit", () => reject(new Error(`the pull ended before it could be killed: ${seen}`)));
    });
    const exited = new Promise((resolve) => child.on("exit", resolve));
    child.kill("SIGKILL");
    await exited;
    proxy.clearFaults();
    const again = await runLocald(["image", "pull", "-q", ref], { env: { LOCALD_HOME: home } });
    assert.equal(again.code, 0, again.stderr);
    await assertBlobsVerify(join(home, "store"));
    const store = await Store.open(join(home, "store"));
    assert.deepEqual(
      (await store.list()).map((i) => i.name),
      [ref],
    );
  });
});
