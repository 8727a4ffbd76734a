import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, type TestContext, test } from "node:test";
import { gzipSync } from "node:zlib";
import { pack } from "tar-stream";
import { archiveEntries } from "../src/authoring/archive-entries.js";
import { directoryEntries } from "../src/authoring/directory-entries.js";
import { composeImage } from "../src/authoring/image-composer.js";
import { archiveLayer, tarLayer } from "../src/authoring/layer-archive.js";
import { fileEntry, parentDirectories } from "../src/authoring/layer-entry.js";
import { InvalidLayerError } from "../src/errors.js";
import { OciLayout } from "../src/store/layout.js";

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "oci-authoring-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A tar of raw headers, so that hostile names and kinds can be written. */
async function rawTar(
  entries: Array<{ name: string; type?: string; linkname?: string; body?: string }>,
): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve) => {
    tar.on("data", (chunk: unknown) => chunks.push(chunk as Buffer));
    tar.on("end", () => resolve(Buffer.concat(chunks)));
  });
  for (const entry of entries) {
    const header = {
      name: entry.name,
      type: (entry.type ?? "file") as "file",
      ...(entry.linkname ? { linkname: entry.linkname } : {}),
    };
    if (entry.body !== undefined) tar.entry(header, entry.body);
    else tar.entry(header);
  }
  tar.finalize();
  return done;
}

describe("authoring", () => {
  test("the same entries give the same layer digest, whoever and whenever", async () => {
    const entries = [
      fileEntry("cnb/order.toml", "[[order]]\n"),
      fileEntry("cnb/run.toml", "x", { mode: 0o600 }),
    ];
    const [a, b] = [await archiveLayer(entries), await archiveLayer(entries)];
    assert.equal(a.descriptor.digest, b.descriptor.digest);
    assert.equal(a.diffId, b.diffId);
    const tar = await tarLayer(entries);
    // Names of users and groups would tie the bytes to this machine's /etc/passwd.
    assert.equal(
      tar
        .subarray(265, 265 + 32)
        .toString("latin1")
        .replace(/\0+$/, ""),
      "",
    );
  });

  test("parentDirectories lists each directory above a path, parents first", () => {
    assert.deepEqual(parentDirectories("cnb/buildpacks/x/1.0/"), [
      "cnb/",
      "cnb/buildpacks/",
      "cnb/buildpacks/x/",
    ]);
    assert.deepEqual(parentDirectories("file"), []);
  });

  test("directoryEntries keeps modes and links, sorted, under a prefix", async (t) => {
    const dir = await tempDir(t);
    await mkdir(join(dir, "bin"));
    await writeFile(join(dir, "bin", "build"), "#!/bin/sh\n", { mode: 0o755 });
    await writeFile(join(dir, "buildpack.toml"), 'api = "0.10"\n');
    await symlink("/etc/passwd", join(dir, "link"));
    const entries = await directoryEntries(dir, "cnb/buildpacks/x/1");
    assert.deepEqual(
      entries.map((entry) => [entry.path, entry.type, entry.mode ?? null, entry.linkname ?? null]),
      [
        ["cnb/buildpacks/x/1/bin/", "directory", 0o755, null],
        ["cnb/buildpacks/x/1/bin/build", "file", 0o755, null],
        ["cnb/buildpacks/x/1/buildpack.toml", "file", 0o644, null],
        ["cnb/buildpacks/x/1/link", "symlink", null, "/etc/passwd"],
      ],
    );
  });

  test("archiveEntries reads a .tgz, cleaning ./ prefixes", async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, "bp.tgz");
    await writeFile(
      file,
      gzipSync(
        await rawTar([
          { name: "./", type: "directory" },
          { name: "./bin/build", body: "x" },
        ]),
      ),
    );
    const entries = await archiveEntries(file);
    assert.deepEqual(
      entries.map((entry) => entry.path),
      ["bin/build"],
    );
  });

  for (const [what, entry, message] of [
    ["a path that climbs out", { name: "../../etc/cron.d/x", body: "x" }, /leaves the archive's root/],
    ["a hard link", { name: "a", type: "link", linkname: "/etc/shadow" }, /is a link/],
    ["a device", { name: "dev", type: "character-device" }, /is a character-device/],
  ] as const) {
    test(`archiveEntries refuses ${what}, in words`, async (t) => {
      const file = join(await tempDir(t), "bad.tar");
      await writeFile(file, await rawTar([entry]));
      await assert.rejects(archiveEntries(file), (error: unknown) => {
        assert.ok(error instanceof InvalidLayerError);
        assert.match(error.message, message);
        return true;
      });
    });
  }

  test("archiveEntries says a file that is not a tar is not one", async (t) => {
    const file = join(await tempDir(t), "notes.tgz");
    await writeFile(file, gzipSync(Buffer.from("just text, not a tar archive at all")));
    await assert.rejects(archiveEntries(file), InvalidLayerError);
  });

  test("composeImage writes new layers over a base, history and diff ids in step", async (t) => {
    const layout = await OciLayout.open(join(await tempDir(t), "layout"), { create: true });
    const first = await composeImage(layout, {
      layers: [await archiveLayer([fileEntry("a", "1")])],
      config: {},
    });
    const base = {
      manifest: JSON.parse((await readFile(layout.blobPath(first.descriptor.digest as never))).toString()),
      config: first.config,
    };
    const second = await composeImage(layout, {
      base,
      layers: [await archiveLayer([fileEntry("b", "2")])],
      config: { Env: ["A=1"] },
      createdBy: "test",
    });
    assert.equal(second.config.rootfs.diff_ids.length, 2);
    assert.equal(second.config.history?.length, 2);
    assert.equal(second.config.history?.[1]?.created_by, "test");
    assert.deepEqual(second.config.config, { Env: ["A=1"] });
    assert.equal(second.config.created, "1980-01-01T00:00:01.000Z");
  });
});
