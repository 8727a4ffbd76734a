import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, chown, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { parse, stringify } from "yaml";
import {
  LIMA_VERSION,
  limactlBuild,
  limactlValidate,
  limaReleaseTarball,
  localdHost,
  makeTempDir,
  removeDir,
  runLocald,
  unprivilegedUser,
} from "../src/index.js";

/**
 * What a Linux machine can check of the Lima provider with the real Lima: the VM config locald
 * writes passes `limactl validate` (v1.2.3, built from the Go module proxy, run as the
 * unprivileged test user because limactl refuses root), and locald's own limactl download
 * installs a real release-layout tarball from a local HTTP server only when its SHA-256 matches,
 * leaving nothing behind otherwise. Starting a vz VM needs a Mac; that part is not run here.
 */

const run = promisify(execFile);
let work: string;

before(async () => {
  work = await makeTempDir("lima");
  await chmod(work, 0o755);
});
after(() => removeDir(work));

describe("the Lima VM config and the real limactl", () => {
  test("locald vm config output passes limactl validate; a broken one does not", async () => {
    const user = await unprivilegedUser();
    const home = join(work, "home");
    await mkdir(home);
    await chown(home, user.uid, user.gid);

    // A project with defaults, and one with [host] overrides, another mount and ports, in a
    // directory whose name has a space.
    const plain = join(work, "plain");
    const tuned = join(work, "my app");
    const data = join(work, "data");
    for (const dir of [plain, tuned, data]) await mkdir(dir);
    await writeFile(
      join(tuned, "locald.toml"),
      [
        "[host]",
        "cpus = 2",
        'memory = "6GiB"',
        'disk = "80GiB"',
        'mounts = ["../data"]',
        "[services.web]",
        'command = "node server.js"',
        "port = 8080",
        "[services.api]",
        'command = "node api.js"',
        "port = 3000",
        "",
      ].join("\n"),
    );
    const files: string[] = [];
    for (const [name, dir] of [
      ["locald-plain", plain],
      ["locald-tuned", tuned],
    ] as const) {
      const result = await runLocald(["vm", "config"], { cwd: dir });
      assert.equal(result.code, 0, result.stderr);
      const file = join(work, `${name}.yaml`);
      await writeFile(file, result.stdout, { mode: 0o644 });
      files.push(file);
    }
    const tunedConfig = parse(await readFile(files[1] as string, "utf8")) as {
      cpus: number;
      mounts: Array<{ location: string }>;
      portForwards: Array<{ hostPort: number }>;
    };
    assert.equal(tunedConfig.cpus, 2);
    assert.deepEqual(
      tunedConfig.mounts.map((m) => m.location),
      [tuned, data],
    );
    assert.deepEqual(
      tunedConfig.portForwards.map((p) => p.hostPort),
      [3000, 8080],
    );

    const good = await limactlValidate(files, user, home);
    assert.equal(good.code, 0, good.output);
    assert.match(good.output, /locald-plain\.yaml\\?": OK/);
    assert.match(good.output, /locald-tuned\.yaml\\?": OK/);

    // The check bites: the same config mounting over the VM's /etc, with a memory size that is
    // not one, is refused.
    const broken = parse(await readFile(files[0] as string, "utf8")) as Record<string, unknown>;
    broken.mounts = [{ location: plain, mountPoint: "/etc", writable: true }];
    broken.memory = "lots";
    const brokenFile = join(work, "locald-broken.yaml");
    await writeFile(brokenFile, stringify(broken), { mode: 0o644 });
    const bad = await limactlValidate([brokenFile], user, home);
    assert.notEqual(bad.code, 0);
    assert.match(bad.output, /mounts\[0\]\.mountPoint.*system path/);
    assert.match(bad.output, /memory/);
  });
});

describe("installing locald's own limactl", () => {
  let server: Server;
  let base: string;
  let requests = 0;
  const routes = new Map<string, (res: import("node:http").ServerResponse) => void>();

  before(async () => {
    server = createServer((req, res) => {
      requests++;
      const route = routes.get(req.url ?? "");
      if (route === undefined) {
        res.writeHead(404).end();
        return;
      }
      route(res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  test("right sum installs; wrong sum, a truncated file and a cut connection leave nothing", async () => {
    const host = await localdHost();
    const asset = host.limaAsset(LIMA_VERSION, "linux", process.arch);
    const tarball = await readFile(await limaReleaseTarball(work, asset));
    const sum = createHash("sha256").update(tarball).digest("hex");
    const half = tarball.subarray(0, Math.floor(tarball.length / 2));
    routes.set(`/good/${asset}`, (res) =>
      res.writeHead(200, { "content-length": tarball.length }).end(tarball),
    );
    routes.set(`/truncated/${asset}`, (res) =>
      res.writeHead(200, { "content-length": half.length }).end(half),
    );
    routes.set(`/cut/${asset}`, (res) => {
      res.writeHead(200, { "content-length": tarball.length });
      res.write(half, () => res.destroy());
    });
    const release = { version: LIMA_VERSION, baseUrl: `${base}/good`, sha256: { [asset]: sum } };
    const home = join(work, "locald-home");
    const tools = join(home, "tools", "lima");
    const install = (baseUrl: string, pinned = release) =>
      host.ensureLimactl({ home, release: pinned, platform: "linux", arch: process.arch, baseUrl });
    const refused = (pattern: RegExp) => (error: unknown) =>
      error instanceof host.LimaInstallError && error.code === "LIMA_INSTALL" && pattern.test(error.message);

    const wrong = {
      ...release,
      sha256: { [asset]: createHash("sha256").update("another file").digest("hex") },
    };
    await assert.rejects(install(`${base}/good`, wrong), refused(/does not match its pinned SHA-256/));
    assert.deepEqual(await readdir(tools), []);
    await assert.rejects(install(`${base}/truncated`), refused(/does not match its pinned SHA-256/));
    assert.deepEqual(await readdir(tools), []);
    await assert.rejects(install(`${base}/cut`), refused(/broke off|does not match/));
    assert.deepEqual(await readdir(tools), []);
    await assert.rejects(install(`${base}/missing`), refused(/HTTP 404/));
    assert.deepEqual(await readdir(tools), []);
    await assert.rejects(
      install(`${base}/good`, { ...release, sha256: {} }),
      refused(/No SHA-256 is pinned/),
    );

    const limactl = await install(`${base}/good`);
    assert.equal(limactl, join(tools, LIMA_VERSION, "bin", "limactl"));
    assert.deepEqual(await readdir(tools), [LIMA_VERSION]);
    assert.deepEqual((await readdir(join(tools, LIMA_VERSION))).sort(), ["bin", "share"]);
    assert.deepEqual(await readdir(join(tools, LIMA_VERSION, "share", "lima", "templates")), [
      "_images",
      "default.yaml",
    ]);
    // The installed binary is the real limactl, byte for byte, and runs.
    const { limactl: built } = await limactlBuild();
    assert.ok((await readFile(limactl)).equals(await readFile(built)));
    const version = await run(limactl, ["--version"]);
    assert.match(version.stdout, new RegExp(LIMA_VERSION.replaceAll(".", "\\.")));

    // Installed once: the next call downloads nothing.
    const before = requests;
    assert.equal(await install(`${base}/good`), limactl);
    assert.equal(requests, before);
  });
});
