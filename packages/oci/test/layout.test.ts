import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, type TestContext, test } from "node:test";
import { digestOf, parseDigest } from "../src/digest.js";
import {
  DigestMismatchError,
  InvalidDigestError,
  LayoutError,
  NotFoundError,
  SizeLimitError,
} from "../src/errors.js";
import type { Descriptor } from "../src/manifest.js";
import { MediaType } from "../src/media-types.js";
import { OciLayout, REF_NAME_ANNOTATION } from "../src/store/layout.js";

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "oci-layout-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function newLayout(t: TestContext): Promise<OciLayout> {
  return OciLayout.open(join(await tempDir(t), "layout"), { create: true });
}

/** Files under a directory, recursively, as relative paths; [] when it does not exist. */
async function filesUnder(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
      .sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
}

function descriptorFor(bytes: Buffer, mediaType: string = MediaType.OciLayerGzip): Descriptor {
  return { mediaType, digest: digestOf(bytes), size: bytes.length };
}

function manifestDescriptor(n: number): Descriptor {
  return {
    mediaType: MediaType.OciManifest,
    digest: `sha256:${String(n).repeat(64).slice(0, 64)}`,
    size: 100 + n,
  };
}

describe("OciLayout.open", () => {
  test("create makes oci-layout, an empty index.json and blobs/sha256", async (t) => {
    const root = join(await tempDir(t), "new");
    const layout = await OciLayout.open(root, { create: true });
    assert.equal(layout.root, root);
    assert.deepEqual(JSON.parse(await readFile(join(root, "oci-layout"), "utf8")), {
      imageLayoutVersion: "1.0.0",
    });
    assert.deepEqual(JSON.parse(await readFile(join(root, "index.json"), "utf8")), {
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [],
    });
    assert.deepEqual(await readdir(join(root, "blobs", "sha256")), []);
    assert.deepEqual(await layout.readIndex(), {
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [],
    });
    assert.deepEqual(await layout.listBlobs(), []);
    assert.ok(!(await readdir(root)).includes("index.json.lock"), "the lock is released");
  });

  test("opening again without create reads the existing layout and keeps its index", async (t) => {
    const first = await newLayout(t);
    await first.addManifest(manifestDescriptor(1), "v1");
    const again = await OciLayout.open(first.root);
    assert.equal((await again.readIndex()).manifests.length, 1);
    const recreated = await OciLayout.open(first.root, { create: true });
    assert.equal((await recreated.readIndex()).manifests.length, 1, "create does not clobber");
  });

  test("a directory without oci-layout is refused unless create is set", async (t) => {
    const dir = await tempDir(t);
    await assert.rejects(OciLayout.open(dir), (error: unknown) => {
      return (
        error instanceof LayoutError && error.code === "LAYOUT" && /no oci-layout file/.test(error.message)
      );
    });
    await assert.rejects(OciLayout.open(join(dir, "missing")), LayoutError);
  });

  test("an invalid oci-layout marker is refused", async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, "oci-layout"), '{"version": 1}');
    await assert.rejects(OciLayout.open(dir), (error: unknown) => {
      return error instanceof LayoutError && /not a valid OCI layout marker/.test(error.message);
    });
    await writeFile(join(dir, "oci-layout"), "garbage");
    await assert.rejects(OciLayout.open(dir, { create: true }), LayoutError);
  });
});

describe("blobs", () => {
  test("writeBytes then readBlob round trip, stored byte-exact under blobs/sha256/<hex>", async (t) => {
    const layout = await newLayout(t);
    const bytes = Buffer.from('{"schemaVersion":2,  "odd":"spacing"}');
    const descriptor = await layout.writeBytes(bytes, MediaType.OciConfig);
    assert.deepEqual(descriptor, {
      mediaType: MediaType.OciConfig,
      digest: digestOf(bytes),
      size: bytes.length,
    });
    const path = join(layout.root, "blobs", "sha256", digestOf(bytes).slice(7));
    assert.equal(layout.blobPath(parseDigest(descriptor.digest)), path);
    assert.deepEqual(await readFile(path), bytes);
    assert.deepEqual(await layout.readBlob(descriptor, 1024), bytes);
    assert.equal(await layout.hasBlob(descriptor), true);
    assert.equal(await layout.hasBlob({ ...descriptor, size: descriptor.size + 1 }), false);
    assert.deepEqual(await layout.listBlobs(), [descriptor.digest]);
    // Writing the same bytes again is a no-op that returns the same descriptor.
    assert.deepEqual(await layout.writeBytes(bytes, MediaType.OciConfig), descriptor);
    assert.equal((await layout.listBlobs()).length, 1);
  });

  test("writeBlob streams verified chunks and reports progress", async (t) => {
    const layout = await newLayout(t);
    const chunks = [Buffer.from("abc"), Buffer.from("defg"), Buffer.from("h")];
    const whole = Buffer.concat(chunks);
    const progress: number[] = [];
    await layout.writeBlob(descriptorFor(whole), chunks, (n) => progress.push(n));
    assert.deepEqual(progress, [3, 7, 8]);
    assert.deepEqual(await layout.readBlob(descriptorFor(whole), 100), whole);
    const streamed: Buffer[] = [];
    for await (const chunk of layout.openBlob(descriptorFor(whole))) streamed.push(chunk as Buffer);
    assert.deepEqual(Buffer.concat(streamed), whole);
  });

  test("writeBlob with wrong bytes is a DigestMismatchError and leaves nothing behind", async (t) => {
    const layout = await newLayout(t);
    const expected = Buffer.from("the real layer");
    const wrong = Buffer.from("a fake layer!!");
    assert.equal(wrong.length, expected.length);
    await assert.rejects(layout.writeBlob(descriptorFor(expected), [wrong]), DigestMismatchError);
    assert.deepEqual(await filesUnder(join(layout.root, "blobs")), []);
    assert.deepEqual(await filesUnder(join(layout.root, ".tmp")), []);
    assert.equal(await layout.hasBlob(descriptorFor(expected)), false);
  });

  test("writeBlob with too few bytes is a DigestMismatchError and leaves nothing behind", async (t) => {
    const layout = await newLayout(t);
    const expected = Buffer.from("0123456789");
    await assert.rejects(
      layout.writeBlob(descriptorFor(expected), [expected.subarray(0, 4)]),
      DigestMismatchError,
    );
    assert.deepEqual(await filesUnder(join(layout.root, "blobs")), []);
    assert.deepEqual(await filesUnder(join(layout.root, ".tmp")), []);
  });

  test("writeBlob with too many bytes is a SizeLimitError and leaves nothing behind", async (t) => {
    const layout = await newLayout(t);
    const expected = Buffer.from("0123456789");
    const chunks = [expected, Buffer.from("extra"), Buffer.from("more")];
    await assert.rejects(layout.writeBlob(descriptorFor(expected), chunks), SizeLimitError);
    // Give a late file-system open a chance to land before checking for leftovers.
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(await filesUnder(join(layout.root, "blobs")), []);
    assert.deepEqual(await filesUnder(join(layout.root, ".tmp")), []);
  });

  test("writeBlob refuses an invalid digest before touching the disk", async (t) => {
    const layout = await newLayout(t);
    await assert.rejects(
      layout.writeBlob({ mediaType: MediaType.OciLayer, digest: "sha256:../../../evil", size: 1 }, [
        Buffer.from("x"),
      ]),
      InvalidDigestError,
    );
    assert.deepEqual(await filesUnder(join(layout.root, "blobs")), []);
  });

  test("readBlob: missing, over the limit, corrupted", async (t) => {
    const layout = await newLayout(t);
    const bytes = Buffer.from("config bytes");
    const descriptor = await layout.writeBytes(bytes, MediaType.OciConfig);
    await assert.rejects(layout.readBlob(descriptorFor(Buffer.from("absent")), 100), NotFoundError);
    await assert.rejects(layout.readBlob(descriptor, bytes.length - 1), (error: unknown) => {
      return error instanceof LayoutError && /over the \d+-byte limit/.test(error.message);
    });
    await writeFile(layout.blobPath(parseDigest(descriptor.digest)), "config BYTES");
    await assert.rejects(layout.readBlob(descriptor, 100), DigestMismatchError);
    const stream = layout.openBlob(descriptor);
    await assert.rejects(async () => {
      for await (const _ of stream) {
        // consume
      }
    }, DigestMismatchError);
  });

  test("openBlob of a missing blob fails with NotFoundError", async (t) => {
    const layout = await newLayout(t);
    const stream = layout.openBlob(descriptorFor(Buffer.from("nope")));
    await assert.rejects(async () => {
      for await (const _ of stream) {
        // consume
      }
    }, NotFoundError);
  });

  test("removeBlob, listBlobs ignores stray files, removeStaleTemp", async (t) => {
    const layout = await newLayout(t);
    const d = await layout.writeBytes(Buffer.from("x"), MediaType.OciConfig);
    await writeFile(join(layout.root, "blobs", "sha256", "not-a-digest"), "junk");
    assert.deepEqual(await layout.listBlobs(), [d.digest]);
    await layout.removeBlob(parseDigest(d.digest));
    assert.deepEqual(await layout.listBlobs(), []);

    await mkdir(join(layout.root, ".tmp"), { recursive: true });
    await writeFile(join(layout.root, ".tmp", "999999-aa.tmp"), "dead");
    await writeFile(join(layout.root, ".tmp", `${process.pid}-bb.tmp`), "alive");
    const removed = await layout.removeStaleTemp((pid) => pid === process.pid);
    assert.deepEqual(removed, { removed: 1, bytes: 4 });
    assert.deepEqual(await readdir(join(layout.root, ".tmp")), [`${process.pid}-bb.tmp`]);
  });
});

describe("index.json", () => {
  test("addManifest replaces an entry with the same ref name and keeps the others", async (t) => {
    const layout = await newLayout(t);
    await layout.addManifest(manifestDescriptor(1), "v1");
    await layout.addManifest(manifestDescriptor(2), "v2");
    await layout.addManifest(manifestDescriptor(3), "v1");
    const index = await layout.readIndex();
    assert.deepEqual(
      index.manifests.map((d) => [d.annotations?.[REF_NAME_ANNOTATION], d.digest]),
      [
        ["v2", manifestDescriptor(2).digest],
        ["v1", manifestDescriptor(3).digest],
      ],
    );
    assert.equal((await layout.resolve("v1")).digest, manifestDescriptor(3).digest);
    assert.equal((await layout.resolve("v2")).size, manifestDescriptor(2).size);
  });

  test("addManifest keeps the descriptor's own annotations", async (t) => {
    const layout = await newLayout(t);
    await layout.addManifest({ ...manifestDescriptor(1), annotations: { "x.y": "z" } }, "tag");
    assert.deepEqual((await layout.resolve("tag")).annotations, { "x.y": "z", [REF_NAME_ANNOTATION]: "tag" });
  });

  test("an unnamed manifest is added once per digest", async (t) => {
    const layout = await newLayout(t);
    await layout.addManifest(manifestDescriptor(1));
    await layout.addManifest(manifestDescriptor(1));
    assert.equal((await layout.readIndex()).manifests.length, 1);
  });

  test("resolve with no name returns the only image, else explains", async (t) => {
    const layout = await newLayout(t);
    await assert.rejects(layout.resolve(), (error: unknown) => {
      return error instanceof LayoutError && /holds 0 images/.test(error.message);
    });
    await layout.addManifest(manifestDescriptor(1), "only");
    assert.equal((await layout.resolve()).digest, manifestDescriptor(1).digest);
    await layout.addManifest(manifestDescriptor(2), "second");
    await assert.rejects(layout.resolve(), (error: unknown) => {
      return (
        error instanceof LayoutError &&
        /holds 2 images/.test(error.message) &&
        /\bonly\b.*\bsecond\b/.test(error.hint ?? "")
      );
    });
  });

  test("resolve by digest and a missing name", async (t) => {
    const layout = await newLayout(t);
    await layout.addManifest(manifestDescriptor(4), "four");
    assert.equal((await layout.resolve(manifestDescriptor(4).digest)).digest, manifestDescriptor(4).digest);
    await assert.rejects(layout.resolve("nope"), (error: unknown) => {
      return error instanceof NotFoundError && error.message.includes('"nope"');
    });
  });

  test("removeManifest", async (t) => {
    const layout = await newLayout(t);
    await layout.addManifest(manifestDescriptor(1), "a");
    await layout.addManifest(manifestDescriptor(2), "b");
    assert.equal((await layout.removeManifest("a"))?.digest, manifestDescriptor(1).digest);
    assert.equal(await layout.removeManifest("a"), undefined);
    assert.deepEqual(
      (await layout.readIndex()).manifests.map((d) => d.annotations?.[REF_NAME_ANNOTATION]),
      ["b"],
    );
  });

  test("concurrent addManifest calls are serialised by the lock", async (t) => {
    const layout = await newLayout(t);
    await Promise.all([1, 2, 3, 4, 5, 6].map((n) => layout.addManifest(manifestDescriptor(n), `tag${n}`)));
    const names = (await layout.readIndex()).manifests
      .map((d) => d.annotations?.[REF_NAME_ANNOTATION])
      .sort();
    assert.deepEqual(names, ["tag1", "tag2", "tag3", "tag4", "tag5", "tag6"]);
  });

  test("readIndex rejects an index.json that is missing, not JSON or not an index", async (t) => {
    const layout = await newLayout(t);
    const path = join(layout.root, "index.json");
    const cases: [string, RegExp][] = [
      ["{", /not valid JSON/],
      ["[]", /not a valid image index/],
      ['{"schemaVersion":2}', /not a valid image index/],
      ['{"schemaVersion":1,"manifests":[]}', /not a valid image index/],
      [
        JSON.stringify({
          schemaVersion: 2,
          manifests: [{ mediaType: MediaType.OciManifest, digest: "x", size: -1 }],
        }),
        /not a valid image index/,
      ],
    ];
    for (const [text, pattern] of cases) {
      await writeFile(path, text);
      await assert.rejects(layout.readIndex(), (error: unknown) => {
        assert.ok(error instanceof LayoutError, `${text}: got ${error}`);
        assert.match(error.message, pattern);
        return true;
      });
    }
    await rm(path);
    await assert.rejects(layout.readIndex(), (error: unknown) => {
      return error instanceof LayoutError && /has no index.json/.test(error.message);
    });
  });

  test("readIndex refuses an entry whose digest could escape blobs/", async (t) => {
    const layout = await newLayout(t);
    await writeFile(
      join(layout.root, "index.json"),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ mediaType: MediaType.OciManifest, digest: "sha256:../../../etc/passwd", size: 1 }],
      }),
    );
    await assert.rejects(layout.readIndex(), InvalidDigestError);
    await assert.rejects(layout.resolve(), InvalidDigestError);
  });
});
