/**
 * A user's first hour: the mistakes and odd machines a newcomer meets, each answered by one
 * paragraph (what, why, what to do) with the right exit status — never a raw errno, a runc log
 * line, "unexpected" or a stack trace — and nothing lost. The cases of cli.test.ts ("CLI bad
 * input": malformed references, usage errors, --env-file, a LOCALD_HOME that is a file, names
 * that do not resolve, `up` without a locald.toml) and build.test.ts (no ANSI colour off a
 * terminal) belong to the same list; these are the rest.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { OciLayout, push } from "@locald/oci";
import {
  assertBlobsVerify,
  busyboxLayer,
  type CliResult,
  makeTempDir,
  multiPlatformImage,
  removeDir,
  runLocald,
  sampleImage,
  startRegistry,
  type TestRegistry,
  writeImage,
} from "../src/index.js";

const run = promisify(execFile);

/** One clean paragraph: no stack, no runc log line, no raw OpenSSL or errno text. */
function assertClean(result: CliResult, code: number, pattern: RegExp): void {
  assert.equal(result.code, code, result.stderr);
  const message = result.stderr.slice(result.stderr.search(/^Error: /m));
  assert.match(message, /^Error: /, result.stderr);
  assert.match(message, pattern);
  assert.doesNotMatch(
    result.stderr,
    /\n\s+at |unexpected|level=error|runc run failed|ssl3_|ENOSPC:|EROFS:|EACCES:/,
    result.stderr,
  );
  assert.ok(message.split("\n").filter((l) => l.trim() !== "").length <= 4, message);
}

describe("a user's first hour", () => {
  let registry: TestRegistry;
  let home: string;
  const env = () => ({ LOCALD_HOME: join(home, "locald") });
  before(async () => {
    registry = await startRegistry({ flavour: "anonymous" });
    home = await makeTempDir("locald-first-hour-");
    const layout = await OciLayout.open(join(home, "src"), { create: true });
    const { index } = await multiPlatformImage(layout);
    await layout.addManifest(index, "multi");
    await push({ kind: "layout", dir: layout.root, name: "multi" }, `${registry.host}/fh/multi:1`);
    const shell = await writeImage(layout, {
      format: "oci",
      config: { Entrypoint: ["/bin/missing"], Cmd: [] },
      layers: [
        await busyboxLayer(),
        [{ path: "bin/plain", content: "#!/bin/sh\necho hi\n", mode: 0o644 }],
        [{ path: "bin/python-app", content: "#!/usr/bin/python3\nprint(1)\n", mode: 0o755 }],
      ],
    });
    await layout.addManifest(shell.descriptor, "shell");
    await push({ kind: "layout", dir: layout.root, name: "shell" }, `${registry.host}/fh/shell:1`);
    // Incompressible, so that it fills a small disk as its compressed self too.
    const big = await sampleImage(layout, { seed: 7, layerBytes: 24 * 1024 * 1024 });
    await layout.addManifest(big.descriptor, "big");
    await push({ kind: "layout", dir: layout.root, name: "big" }, `${registry.host}/fh/big:1`);
  });
  after(async () => {
    await registry?.stop();
    if (home) await removeDir(home);
  });

  test("HTTPS spoken to a plain-HTTP registry names the host and the flag that allows it", async () => {
    // 0.0.0.0 reaches this machine's loopback listener, but is not a loopback *name*, so locald
    // insists on HTTPS there as it would for any remote registry.
    const host = `0.0.0.0:${registry.host.split(":")[1]}`;
    const refused = await runLocald(["image", "pull", `${host}/fh/multi:1`], { env: env() });
    assertClean(
      refused,
      1,
      new RegExp(`${host} speaks plain HTTP, not HTTPS\\.\\n.*--insecure-registry ${host}`),
    );
    const allowed = await runLocald(["--insecure-registry", host, "image", "pull", `${host}/fh/multi:1`], {
      env: env(),
    });
    assert.equal(allowed.code, 0, allowed.stderr);
  });

  test("a port out of range in a reference is a bad reference, said as such", async () => {
    for (const [ref, port] of [
      ["localhost:99999/x", "99999"],
      ["127.0.0.1:0/x:1", "0"],
    ] as const)
      assertClean(
        await runLocald(["image", "pull", ref], { env: env() }),
        1,
        new RegExp(`not a valid image reference: the port ${port} .* is not between 1 and 65535`),
      );
  });

  test("a command the image lacks exits 127, one it cannot execute 126, in words, as docker does", async () => {
    const image = `${registry.host}/fh/shell:1`;
    const cases: Array<[string[], number, RegExp]> = [
      [[image], 127, /Cannot run \/bin\/missing in the container: the image has no such file\./],
      [["--entrypoint", "nosuch", image], 127, /Cannot run "nosuch" .*no such program on the image's PATH/],
      [["--entrypoint", "/bin/plain", image], 126, /Cannot run \/bin\/plain .*not executable/],
      [["--entrypoint", "/bin", image], 126, /Cannot run \/bin .*a directory/],
      [
        ["--entrypoint", "/bin/python-app", image],
        127,
        /a script for \/usr\/bin\/python3, which the image does not have/,
      ],
    ];
    for (const [args, code, pattern] of cases)
      assertClean(await runLocald(["container", "run", "--rm", ...args], { env: env() }), code, pattern);
    // The container's own exit status still comes through untouched.
    const exited = await runLocald(
      ["container", "run", "--rm", "--entrypoint", "/bin/sh", image, "-c", "exit 3"],
      {
        env: env(),
      },
    );
    assert.equal(exited.code, 3, exited.stderr);
    // A -v source that does not exist: our words, before runc's.
    assertClean(
      await runLocald(
        ["container", "run", "--rm", "-v", `${home}/nowhere:/x`, "--entrypoint", "/bin/true", image],
        {
          env: env(),
        },
      ),
      1,
      /The volume source .*nowhere does not exist on this machine\.\nCreate it first/,
    );
    const left = await runLocald(["container", "ls", "-a", "--json"], { env: env() });
    assert.equal(left.code, 0, left.stderr);
    assert.doesNotMatch(left.stdout, /fh\/shell/, "a container that never ran leaves nothing behind");
  });

  test("--platform is honoured when the store already has the image for another platform", async () => {
    const ref = `${registry.host}/fh/multi:1`;
    const first = await runLocald(["image", "pull", "--platform", "linux/amd64", "--json", ref], {
      env: env(),
    });
    assert.equal(first.code, 0, first.stderr);
    const inspected = await runLocald(["image", "inspect", "--platform", "linux/arm/v7", "--json", ref], {
      env: env(),
    });
    assert.equal(inspected.code, 0, inspected.stderr);
    const info = JSON.parse(inspected.stdout) as { platform?: string; config?: { Env?: string[] } };
    assert.match(
      JSON.stringify(info),
      /SEED=102/,
      "the linux/arm/v7 image (seed 102), not the stored amd64 one",
    );
    const target = join(home, "arm64-root");
    const unpacked = await runLocald(
      ["image", "unpack", "--platform", "linux/arm64", "--json", ref, target],
      {
        env: env(),
      },
    );
    assert.equal(unpacked.code, 0, unpacked.stderr);
    assert.notEqual(
      (JSON.parse(unpacked.stdout) as { digest: string }).digest,
      (JSON.parse(first.stdout) as { digest: string }).digest,
      "the linux/arm64 image was unpacked, not the stored linux/amd64 one",
    );
    const listed = await runLocald(["image", "ls"], { env: env() });
    assert.match(listed.stdout, /linux\/arm64/, "the name now holds the platform last asked for");
  });

  test("a full disk during pull and unpack says where and how much, keeps no partial file, and loses nothing", async (t) => {
    if (process.getuid?.() !== 0) {
      assert.fail("this test mounts a small tmpfs and needs root, as CI has");
    }
    const disk = join(home, "tiny");
    await mkdir(disk);
    await run("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", disk]);
    t.after(() => run("umount", [disk]));
    const small = { LOCALD_HOME: join(disk, "locald") };
    const ok = await runLocald(
      ["image", "pull", "--platform", "linux/amd64", `${registry.host}/fh/multi:1`],
      {
        env: small,
      },
    );
    assert.equal(ok.code, 0, ok.stderr);

    const pulled = await runLocald(["image", "pull", `${registry.host}/fh/big:1`], { env: small });
    assertClean(
      pulled,
      1,
      /Cannot pull .*fh\/big:1: the disk that holds .*tiny\/locald\/store is full \([\d.]+ (MiB|bytes) free, [\d.]+ MiB needed\)\. Nothing partial was kept\.\n.*locald image prune/,
    );
    const store = join(disk, "locald", "store");
    assert.deepEqual(await readdir(join(store, ".tmp")), [], "no partial blob is left");
    const listed = await runLocald(["image", "ls", "--json"], { env: small });
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /fh\/multi:1/, "the image stored before is still there");
    assert.doesNotMatch(listed.stdout, /fh\/big/);
    await assertBlobsVerify(store);

    // Unpacking onto the small disk from a store elsewhere.
    const target = join(disk, "root");
    const unpacked = await runLocald(["image", "unpack", `${registry.host}/fh/big:1`, target], {
      env: env(),
    });
    assertClean(
      unpacked,
      1,
      /the disk that holds .*tiny\/root is full \([\d.]+ (MiB|bytes) free\)\. Nothing partial was kept\./,
    );
    assert.deepEqual(
      (await readdir(disk)).filter((name) => name !== "locald"),
      [],
      "the half-written root is removed",
    );
  });

  // `container ls` lists nothing there and writes nothing, so it has nothing to refuse.
  test("a LOCALD_HOME on a read-only disk: every command that writes says so, in words", async (t) => {
    if (process.getuid?.() !== 0) assert.fail("this test mounts a read-only tmpfs and needs root, as CI has");
    const readOnly = join(home, "ro");
    await mkdir(readOnly);
    await run("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", readOnly]);
    t.after(() => run("umount", [readOnly]));
    const ro = { LOCALD_HOME: join(readOnly, "locald") };
    const app = join(home, "app");
    await mkdir(app, { recursive: true });
    await writeFile(join(app, "Procfile"), "web: true\n");
    for (const args of [
      ["image", "ls"],
      ["image", "pull", `${registry.host}/fh/multi:1`],
      ["container", "run", "--rm", `${registry.host}/fh/shell:1`],
      ["build", app, "--builder", `${registry.host}/fh/no-builder:1`],
      ["builder", "inspect", `${registry.host}/fh/no-builder:1`],
    ]) {
      const result = await runLocald(args, { env: ro });
      assertClean(result, 1, /ro is on a read-only filesystem\./);
    }
  });
});
