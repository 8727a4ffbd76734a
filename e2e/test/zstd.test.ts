/**
 * zstd layers both ways the unpacker decompresses them: with the `zstd` program on PATH (the
 * faster way, see bench/zstd.ts), and without it — Node's own zstd on Node ≥ 22.15, and on older
 * lines a clear message that says what to install.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import zlib from "node:zlib";
import { OciLayout, push } from "@locald/oci";
import {
  buildLayer,
  makeTempDir,
  pseudoRandomBytes,
  removeDir,
  requireBinary,
  runLocald,
  startRegistry,
  type TestRegistry,
  writeImage,
} from "../src/index.js";

const nodeHasZstd = typeof (zlib as { createZstdDecompress?: unknown }).createZstdDecompress === "function";
const CONTENT = pseudoRandomBytes(3 * 1024 * 1024, 11);

describe("zstd layers", () => {
  let registry: TestRegistry;
  let work: string;
  let ref: string;
  before(async () => {
    await requireBinary("zstd");
    registry = await startRegistry({ flavour: "anonymous" });
    work = await makeTempDir("zstd");
    const layout = await OciLayout.open(join(work, "layout"), { create: true });
    const image = await writeImage(layout, {
      layers: [
        await buildLayer(
          [
            { path: "data/", type: "directory" },
            { path: "data/random.bin", content: CONTENT },
            { path: "data/text", content: "zstd\n".repeat(10_000) },
          ],
          "zstd",
        ),
      ],
    });
    await layout.addManifest(image.descriptor, "zstd");
    ref = `${registry.host}/e2e/zstd:1`;
    await push({ kind: "layout", dir: layout.root, name: "zstd" }, ref);
  });
  after(async () => {
    await registry?.stop();
    if (work) await removeDir(work);
  });

  const unpack = (out: string, path: string) =>
    runLocald(["image", "unpack", "--no-cache", ref, out], {
      env: { LOCALD_HOME: join(work, "home"), PATH: path },
    });

  test("with the zstd program on PATH", async () => {
    const out = join(work, "with-program");
    const result = await unpack(out, dirname(await requireBinary("zstd")));
    assert.equal(result.code, 0, result.stderr);
    assert.ok((await readFile(join(out, "data", "random.bin"))).equals(CONTENT));
  });

  test(`without it: ${nodeHasZstd ? "Node's own zstd" : "a message that says what to install"} (Node ${process.version})`, async () => {
    const out = join(work, "without-program");
    const result = await unpack(out, "/nonexistent");
    if (nodeHasZstd) {
      assert.equal(result.code, 0, result.stderr);
      assert.ok((await readFile(join(out, "data", "random.bin"))).equals(CONTENT));
      assert.equal(await readFile(join(out, "data", "text"), "utf8"), "zstd\n".repeat(10_000));
    } else {
      assert.equal(result.code, 1);
      assert.match(result.stderr, /zstd/);
      assert.match(result.stderr, /Install the zstd program \(Debian package zstd\), or use Node ≥ 22\.15/);
      assert.doesNotMatch(result.stderr, /unexpected|ENOENT|\n\s+at /);
    }
  });
});
