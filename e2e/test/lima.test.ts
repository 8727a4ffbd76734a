import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, chown, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
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
 * unprivileged test user because limactl refuses root); locald's own limactl download installs
 * a real release-layout tarball from a local HTTP server only when its SHA-256 matches — the
 * pinned one, else the one the release's SHA256SUMS gives — leaving nothing behind otherwise; and
 * a limactl the user names (LOCALD_LIMACTL, `[host] limactl`) is used as it is when it is Lima,
 * refused when it is not. Starting a vz VM needs a Mac; that part is not run here.
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
  /** Every path the server was asked for, in order. */
  const requests: string[] = [];
  const routes = new Map<string, (res: import("node:http").ServerResponse) => void>();
  let asset: string;
  let tarball: Buffer;
  let sum: string;
  let host: Awaited<ReturnType<typeof localdHost>>;

  before(async () => {
    server = createServer((req, res) => {
      requests.push(req.url ?? "");
      const route = routes.get(req.url ?? "");
      if (route === undefined) {
        res.writeHead(404).end();
        return;
      }
      route(res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    host = await localdHost();
    asset = host.limaAsset(LIMA_VERSION, "linux", process.arch);
    tarball = await readFile(await limaReleaseTarball(work, asset));
    sum = createHash("sha256").update(tarball).digest("hex");
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const serve = (path: string, body: Buffer | string) =>
    routes.set(path, (res) => res.writeHead(200, { "content-length": Buffer.byteLength(body) }).end(body));
  const refused = (pattern: RegExp) => (error: unknown) =>
    error instanceof host.LimaInstallError && error.code === "LIMA_INSTALL" && pattern.test(error.message);
  const asked = (suffix: string) => requests.filter((r) => r.endsWith(suffix)).length;

  test("pinned sum: right installs; wrong, truncated, cut or missing leave nothing; SHA256SUMS never asked", async () => {
    const half = tarball.subarray(0, Math.floor(tarball.length / 2));
    serve(`/good/${asset}`, tarball);
    // Were the pinned sum not to win, this SHA256SUMS would let the truncated file in.
    serve(`/truncated/${asset}`, half);
    serve(`/truncated/SHA256SUMS`, `${createHash("sha256").update(half).digest("hex")}  ${asset}\n`);
    routes.set(`/cut/${asset}`, (res) => {
      res.writeHead(200, { "content-length": tarball.length });
      res.write(half, () => res.destroy());
    });
    const release = { version: LIMA_VERSION, baseUrl: `${base}/good`, sha256: { [asset]: sum } };
    const home = join(work, "locald-home");
    const tools = join(home, "tools", "lima");
    const log: string[] = [];
    const install = (baseUrl: string, pinned = release) =>
      host.ensureLimactl({
        home,
        release: pinned,
        platform: "linux",
        arch: process.arch,
        baseUrl,
        env: {},
        log: (line) => log.push(line),
      });

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
    assert.ok(
      log.some((l) => /^Installed Lima .*\(checked against the pinned SHA-256\)$/.test(l)),
      log.join("\n"),
    );
    assert.ok(!log.some((l) => l.includes("SHA256SUMS")), log.join("\n"));
    // With a sum pinned, the release's SHA256SUMS is not even fetched.
    assert.equal(asked("/SHA256SUMS"), 0, requests.join("\n"));

    // Installed once: the next call downloads nothing.
    const before = requests.length;
    assert.equal(await install(`${base}/good`), limactl);
    assert.equal(requests.length, before);
  });

  test("no pinned sum: the release's SHA256SUMS decides; wrong, lineless, malformed, huge or absent leave nothing", async () => {
    const release = { version: LIMA_VERSION, baseUrl: "https://lima.invalid/never-used", sha256: {} };
    const home = join(work, "locald-home-sums");
    const tools = join(home, "tools", "lima");
    const log: string[] = [];
    const install = (dir: string) =>
      host.ensureLimactl({
        home,
        release,
        platform: "linux",
        arch: process.arch,
        baseUrl: `${base}/${dir}`,
        env: {},
        log: (line) => log.push(line),
      });
    const other = createHash("sha256").update("another file").digest("hex");
    const neighbours = `${other}  lima-${LIMA_VERSION}-Darwin-arm64.tar.gz\n${other}  lima-${LIMA_VERSION}-Darwin-x86_64.tar.gz\n`;
    const cases: Array<[string, string | undefined, RegExp, boolean]> = [
      // [directory, SHA256SUMS (undefined: 404), what the refusal says, whether the tarball is fetched]
      [
        "wrong",
        `${neighbours}${other}  ${asset}\n`,
        /does not match the SHA-256 the release's SHA256SUMS/,
        true,
      ],
      ["lineless", neighbours, /SHA256SUMS has no SHA-256 for lima-/, false],
      [
        "malformed",
        `${neighbours}${sum.slice(1)}  ${asset}\n`,
        /is not a SHA256SUMS file: line 3 is not/,
        false,
      ],
      ["twice", `${sum}  ${asset}\n${neighbours}${sum} *${asset}\n`, /names lima-.* on 2 lines/, false],
      [
        "huge",
        `${sum}  ${asset}\n${`${other}  padding\n`.repeat(2000)}`,
        /larger than a sums file|larger than 65536 bytes/,
        false,
      ],
      ["absent", undefined, /No SHA-256 is pinned .* SHA256SUMS .* cannot be fetched: HTTP 404/, false],
    ];
    for (const [dir, sums, pattern, fetchesTarball] of cases) {
      serve(`/${dir}/${asset}`, tarball);
      if (sums !== undefined) serve(`/${dir}/SHA256SUMS`, sums);
      await assert.rejects(
        install(dir),
        (error: unknown) =>
          refused(pattern)(error) &&
          /LOCALD_LIMACTL=\$\(command -v limactl\)/.test((error as { hint?: string }).hint ?? ""),
        dir,
      );
      assert.equal(asked(`/${dir}/SHA256SUMS`), 1, dir);
      assert.equal(asked(`/${dir}/${asset}`), fetchesTarball ? 1 : 0, dir);
      assert.deepEqual(await readdir(tools), [], dir);
    }

    // The release's own file, as sha256sum writes it, among the other assets' lines.
    serve(`/release/${asset}`, tarball);
    serve(
      `/release/SHA256SUMS`,
      `${neighbours}${sum}  ${asset}\n${other}  lima-${LIMA_VERSION}-Linux-other.tar.gz\n`,
    );
    const limactl = await install("release");
    assert.equal(limactl, join(tools, LIMA_VERSION, "bin", "limactl"));
    assert.deepEqual(await readdir(tools), [LIMA_VERSION]);
    const { limactl: built } = await limactlBuild();
    assert.ok((await readFile(limactl)).equals(await readFile(built)));
    // SHA256SUMS first: a release that cannot be checked costs no download.
    const order = requests.filter((r) => r.startsWith("/release/"));
    assert.deepEqual(order, ["/release/SHA256SUMS", `/release/${asset}`]);
    assert.ok(
      log.some((l) => /^Installed Lima .*\(checked against the release's SHA256SUMS\)$/.test(l)),
      log.join("\n"),
    );
    assert.ok(!log.some((l) => l.includes("pinned")), log.join("\n"));
  });

  test("LOCALD_LIMACTL or [host] limactl: the user's real limactl is used, nothing downloaded; a non-Lima is refused", async () => {
    const user = await unprivilegedUser();
    const home = join(work, "home-user-lima");
    await mkdir(home);
    await chown(home, user.uid, user.gid);
    // A copy where the unprivileged user can reach it (the fixture cache may be under /root).
    const { limactl: built } = await limactlBuild();
    const theirs = join(work, "their-lima", "bin", "limactl");
    await mkdir(join(theirs, ".."), { recursive: true });
    await writeFile(theirs, await readFile(built), { mode: 0o755 });
    await chmod(join(work, "their-lima"), 0o755);
    // Whatever locald would download comes from here, so a download would show in the log.
    const env = { HOME: home, LOCALD_HOME: home, LOCALD_LIMA_BASE_URL: `${base}/user-lima` };
    serve(`/user-lima/${asset}`, tarball);
    serve(`/user-lima/SHA256SUMS`, `${sum}  ${asset}\n`);
    const before = requests.length;

    // `locald vm status` runs limactl list (as the user: limactl refuses root) with our Lima home.
    const viaEnv = await runLocald(["vm", "status"], {
      env: { ...env, LOCALD_LIMACTL: theirs },
      as: user,
      cwd: work,
    });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.equal(viaEnv.stdout, "absent\n");
    assert.ok((await stat(join(home, "vm", "lima"))).isDirectory());

    const project = join(work, "project-with-lima");
    await mkdir(project);
    await writeFile(join(project, "locald.toml"), '[host]\nlimactl = "../their-lima/bin/limactl"\n');
    const viaFile = await runLocald(["vm", "status"], { env, as: user, cwd: project });
    assert.equal(viaFile.code, 0, viaFile.stderr);
    assert.equal(viaFile.stdout, "absent\n");
    assert.equal(requests.length, before, requests.slice(before).join("\n"));
    assert.equal(await stat(join(home, "tools")).catch(() => undefined), undefined);

    // The library call says the same: the path as given, no request.
    assert.equal(
      await host.ensureLimactl({
        home,
        platform: "linux",
        arch: process.arch,
        env: { LOCALD_LIMACTL: theirs },
      }),
      theirs,
    );
    assert.equal(requests.length, before);

    // Not Lima: refused with what, why and what to do, from the env or from locald.toml.
    const fake = join(work, "their-lima", "bin", "not-lima");
    await writeFile(fake, "#!/bin/sh\necho 'Docker version 27.0.1, build 1'\n", { mode: 0o755 });
    const old = join(work, "their-lima", "bin", "old-lima");
    await writeFile(old, "#!/bin/sh\necho 'limactl version 0.23.2'\n", { mode: 0o755 });
    for (const [path, pattern] of [
      [
        "/bin/true",
        /LOCALD_LIMACTL names \/bin\/true, which printed .* for `--version` where limactl prints "limactl version X\.Y\.Z": it is not Lima's limactl/,
      ],
      [fake, /which printed "Docker version 27\.0\.1, build 1" for `--version`/],
      [old, /which is Lima 0\.23\.2, older than 1\.0/],
      [join(work, "nowhere", "limactl"), /which does not exist/],
    ] as const) {
      const result = await runLocald(["vm", "status"], {
        env: { ...env, LOCALD_LIMACTL: path },
        as: user,
        cwd: work,
      });
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, pattern);
      assert.match(result.stderr, /so locald will not use it as limactl\.\n/);
      assert.match(result.stderr, /Point LOCALD_LIMACTL at the limactl of a Lima ≥ 1\.0/);
      assert.doesNotMatch(result.stderr, /\n\s+at /);
    }
    await writeFile(join(project, "locald.toml"), '[host]\nlimactl = "../their-lima/bin/not-lima"\n');
    const fromFile = await runLocald(["vm", "status"], { env, as: user, cwd: project });
    assert.equal(fromFile.code, 1, fromFile.stderr);
    assert.match(
      fromFile.stderr,
      /\[host\] limactl in .*project-with-lima\/locald\.toml names .*their-lima\/bin\/not-lima, which printed "Docker version/,
    );
    assert.equal(requests.length, before, requests.slice(before).join("\n"));
    assert.equal(await stat(join(home, "tools")).catch(() => undefined), undefined);
  });
});
