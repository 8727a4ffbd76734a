import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, type TestContext, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { type Digest, digestOf } from "../src/digest.js";
import { DigestMismatchError, NetworkError } from "../src/errors.js";
import { type ResumableSource, writeResumable } from "../src/files.js";
import { parseReference } from "../src/reference.js";
import { RegistryClient, Transport } from "../src/registry/index.js";
import { OciLayout, partialName, Store } from "../src/store/index.js";

const BLOB = randomBytes(3 * 1024 * 1024 + 17);
const DIGEST = digestOf(BLOB);

async function scratch(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "locald-resume-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A source over BLOB that records the offsets it is asked for, optionally ignoring them. */
function recordingSource(options: { ignoreOffset?: boolean; delayMs?: number } = {}) {
  const offsets: number[] = [];
  const source: ResumableSource = async (offset) => {
    offsets.push(offset);
    if (options.delayMs) await delay(options.delayMs);
    const start = options.ignoreOffset ? 0 : offset;
    return { start, chunks: Readable.from(chunksOf(BLOB.subarray(start))) };
  };
  return { source, offsets };
}

function* chunksOf(bytes: Buffer, size = 64 * 1024): Generator<Buffer> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

/** A pid that no process has any more. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]);
  return Number(child.stdout.toString());
}

for (const [label, whole] of [
  ["a small blob", BLOB],
  ["a blob of several write batches", randomBytes(9 * 1024 * 1024 + 5)],
] as const) {
  describe(`writeResumable, ${label}`, () => {
    const expected = { digest: digestOf(whole), size: whole.length };
    const recordingSource = (options: { ignoreOffset?: boolean } = {}) => {
      const offsets: number[] = [];
      const source: ResumableSource = async (offset) => {
        offsets.push(offset);
        const start = options.ignoreOffset ? 0 : offset;
        return { start, chunks: Readable.from(chunksOf(whole.subarray(start))) };
      };
      return { source, offsets };
    };

    test("continues after the kept prefix and asks only for the rest", async (t) => {
      const dir = await scratch(t);
      const partial = join(dir, "blob.partial");
      await writeFile(partial, whole.subarray(0, 1_000_000));
      await writeFile(join(dir, "unrelated"), "x");
      const { source, offsets } = recordingSource();
      const progress: number[] = [];
      await writeResumable(join(dir, "blob"), partial, source, expected, "Blob", (n) => progress.push(n));
      assert.deepEqual(offsets, [1_000_000]);
      assert.ok(whole.equals(await readFile(join(dir, "blob"))));
      assert.deepEqual((await readdir(dir)).sort(), ["blob", "unrelated"]);
      assert.equal(progress[0], 1_000_000, "the kept prefix counts as progress first");
      assert.equal(progress.at(-1), whole.length);
    });

    test("starts over cleanly when the source sends the whole blob", async (t) => {
      const dir = await scratch(t);
      const partial = join(dir, "blob.partial");
      await writeFile(partial, whole.subarray(0, 777));
      const { source, offsets } = recordingSource({ ignoreOffset: true });
      await writeResumable(join(dir, "blob"), partial, source, expected, "Blob");
      assert.deepEqual(offsets, [777]);
      assert.ok(whole.equals(await readFile(join(dir, "blob"))));
    });

    test("a corrupted prefix fails the digest check, stores nothing and drops the partial", async (t) => {
      const dir = await scratch(t);
      const partial = join(dir, "blob.partial");
      const damaged = Buffer.from(whole.subarray(0, 500_000));
      damaged[1234] = (damaged[1234] ?? 0) ^ 0xff;
      await writeFile(partial, damaged);
      const { source } = recordingSource();
      await assert.rejects(
        writeResumable(join(dir, "blob"), partial, source, expected, "Blob"),
        DigestMismatchError,
      );
      assert.deepEqual(await readdir(dir), []);
      // The next attempt starts from nothing and succeeds.
      const again = recordingSource();
      await writeResumable(join(dir, "blob"), partial, again.source, expected, "Blob");
      assert.deepEqual(again.offsets, [0]);
      assert.ok(whole.equals(await readFile(join(dir, "blob"))));
    });

    test("a symlink in place of the partial file is replaced, never followed", async (t) => {
      const dir = await scratch(t);
      const partial = join(dir, "blob.partial");
      await writeFile(join(dir, "elsewhere"), "not to be touched");
      await symlink(join(dir, "elsewhere"), partial);
      const { source, offsets } = recordingSource();
      await writeResumable(join(dir, "blob"), partial, source, expected, "Blob");
      assert.deepEqual(offsets, [0]);
      assert.equal(await readFile(join(dir, "elsewhere"), "utf8"), "not to be touched");
      assert.ok(whole.equals(await readFile(join(dir, "blob"))));
    });

    test("a broken connection keeps what arrived for the next attempt", async (t) => {
      const dir = await scratch(t);
      const partial = join(dir, "blob.partial");
      const broken: ResumableSource = async () => ({
        start: 0,
        chunks: (async function* () {
          yield whole.subarray(0, 200_000);
          throw new NetworkError("the connection broke");
        })(),
      });
      await assert.rejects(
        writeResumable(join(dir, "blob"), partial, broken, expected, "Blob"),
        NetworkError,
      );
      assert.equal((await stat(partial)).size, 200_000);
      const { source, offsets } = recordingSource();
      await writeResumable(join(dir, "blob"), partial, source, expected, "Blob");
      assert.deepEqual(offsets, [200_000]);
    });
  });
}

describe("one download per blob", () => {
  const descriptor = { mediaType: "application/octet-stream", digest: DIGEST, size: BLOB.length };

  test("concurrent downloads in one process share one", async (t) => {
    const layout = await OciLayout.open(await scratch(t), { create: true });
    const { source, offsets } = recordingSource({ delayMs: 50 });
    const waits: number[] = [];
    await Promise.all([
      layout.downloadBlob(descriptor, source),
      layout.downloadBlob(descriptor, source, { onWait: (owner) => waits.push(owner) }),
      layout.downloadBlob(descriptor, source),
    ]);
    assert.deepEqual(offsets, [0]);
    assert.deepEqual(waits, [process.pid]);
    assert.ok(BLOB.equals(await readFile(layout.blobPath(DIGEST))));
    assert.deepEqual(await readdir(join(layout.root, ".tmp")), [], "no partial or lock left");
  });

  test("a live owner's lock is waited for; a dead owner's is taken over with its partial", async (t) => {
    const layout = await OciLayout.open(await scratch(t), { create: true });
    const temp = join(layout.root, ".tmp");
    await mkdir(temp, { recursive: true });
    const lock = join(temp, `sha256-${DIGEST.slice(7)}.lock`);
    const dead = deadPid();
    await writeFile(join(temp, partialName(DIGEST as Digest, dead)), BLOB.subarray(0, 123_456));

    // A live owner (pid 1 stands in for another process) holds the lock: we wait, fetching nothing.
    await writeFile(lock, JSON.stringify({ pid: 1 }));
    const { source, offsets } = recordingSource();
    const waits: number[] = [];
    const download = layout.downloadBlob(descriptor, source, { onWait: (owner) => waits.push(owner) });
    await delay(300);
    assert.deepEqual(offsets, []);
    assert.deepEqual(waits, [1]);

    // It dies: the lock now names a dead process, and its partial is ours to continue.
    await writeFile(lock, JSON.stringify({ pid: dead }));
    await download;
    assert.deepEqual(offsets, [123_456]);
    assert.ok(BLOB.equals(await readFile(layout.blobPath(DIGEST))));
    assert.deepEqual(await readdir(temp), []);
  });

  test("prune removes dead pulls' partials, locks and leases and says how much", async (t) => {
    const store = await Store.open(await scratch(t));
    const temp = join(store.root, ".tmp");
    await mkdir(temp, { recursive: true });
    const dead = deadPid();
    await writeFile(join(temp, partialName(DIGEST as Digest, dead)), BLOB.subarray(0, 1000));
    await writeFile(join(temp, `sha256-${DIGEST.slice(7)}.lock`), JSON.stringify({ pid: dead }));
    await writeFile(join(temp, partialName(digestOf("other") as Digest, process.pid)), "alive");
    await mkdir(join(store.root, "leases"), { recursive: true });
    await writeFile(join(store.root, "leases", `${dead}-x.json`), JSON.stringify({ pid: dead, started: 1 }));
    const pruned = await store.prune();
    assert.equal(pruned.temp.removed, 2);
    assert.equal(pruned.temp.bytes, 1000 + JSON.stringify({ pid: dead }).length);
    assert.equal(pruned.leases.removed, 1);
    assert.deepEqual(await readdir(temp), [partialName(digestOf("other") as Digest, process.pid)]);
  });
});

describe("RegistryClient.readBlob", () => {
  type Mode = "range" | "ignore" | "416" | "wrong-range" | "redirect";

  async function serve(t: TestContext, mode: Mode) {
    const ranges: (string | undefined)[] = [];
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      if (req.url === "/v2/") {
        res.end("{}");
        return;
      }
      if (mode === "redirect" && !req.url?.startsWith("/storage/")) {
        res.writeHead(307, { location: `/storage${req.url}` });
        res.end();
        return;
      }
      ranges.push(req.headers.range);
      const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? "")?.[1] ?? Number.NaN);
      if (Number.isNaN(from) || mode === "ignore") {
        res.writeHead(200, { "content-length": BLOB.length });
        res.end(BLOB);
      } else if (mode === "416") {
        res.writeHead(416, { "content-range": `bytes */${BLOB.length}` });
        res.end();
      } else {
        const shown = mode === "wrong-range" ? from + 1 : from;
        res.writeHead(206, {
          "content-range": `bytes ${shown}-${BLOB.length - 1}/${BLOB.length}`,
          "content-length": BLOB.length - from,
        });
        res.end(BLOB.subarray(from));
      }
    };
    const server = createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    t.after(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    const transport = new Transport();
    t.after(() => transport.close());
    const client = new RegistryClient(transport);
    const ref = parseReference(`127.0.0.1:${(server.address() as AddressInfo).port}/r/blob:1`);
    return { client, ref, ranges };
  }

  const descriptor = { mediaType: "application/octet-stream", digest: DIGEST, size: BLOB.length };

  async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const chunk of chunks) parts.push(chunk);
    return Buffer.concat(parts);
  }

  test("a 206 that continues where asked is used", async (t) => {
    const { client, ref, ranges } = await serve(t, "range");
    const read = await client.readBlob(ref, descriptor, 1000);
    assert.equal(read.start, 1000);
    assert.ok(BLOB.subarray(1000).equals(await collect(read.chunks)));
    assert.deepEqual(ranges, ["bytes=1000-"]);
  });

  for (const mode of ["ignore", "416", "wrong-range"] as const) {
    test(`a registry answering ${mode} gives the whole blob from 0`, async (t) => {
      const { client, ref, ranges } = await serve(t, mode);
      const read = await client.readBlob(ref, descriptor, 1000);
      assert.equal(read.start, 0);
      assert.ok(BLOB.equals(await collect(read.chunks)));
      assert.deepEqual(ranges, mode === "ignore" ? ["bytes=1000-"] : ["bytes=1000-", undefined]);
    });
  }

  test("the Range header follows a redirect to storage", async (t) => {
    const { client, ref, ranges } = await serve(t, "redirect");
    const read = await client.readBlob(ref, descriptor, 4096);
    assert.equal(read.start, 4096);
    assert.ok(BLOB.subarray(4096).equals(await collect(read.chunks)));
    assert.deepEqual(ranges, ["bytes=4096-"]);
  });
});
