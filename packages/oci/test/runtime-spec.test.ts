import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, type TestContext, test } from "node:test";
import {
  DEFAULT_PATH,
  envFileLines,
  mergeEnv,
  parseVolume,
  processArgs,
  resolveUser,
  runtimeSpec,
} from "../src/runtime/runtime-spec.js";
import { readFileInRoot } from "../src/unpack/rootfs.js";

async function rootfs(t: TestContext, files: Record<string, string> = {}): Promise<string> {
  const base = await mkdtemp(join(tmpdir(), "oci-spec-"));
  t.after(() => rm(base, { recursive: true, force: true }));
  const root = join(base, "rootfs");
  await mkdir(join(root, "etc"), { recursive: true });
  for (const [path, content] of Object.entries(files)) await writeFile(join(root, path), content);
  return root;
}

const PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP = "root:x:0:\nstaff:x:50:app,other\napp:x:1000:\n";

describe("processArgs (docker's Entrypoint/Cmd rules)", () => {
  const config = { Entrypoint: ["/bin/app"], Cmd: ["--serve"] };
  test("image defaults", () => assert.deepEqual(processArgs(config, {}), ["/bin/app", "--serve"]));
  test("a command replaces Cmd only", () =>
    assert.deepEqual(processArgs(config, { command: ["--once"] }), ["/bin/app", "--once"]));
  test("--entrypoint drops the image's Cmd", () =>
    assert.deepEqual(processArgs(config, { entrypoint: "/bin/sh" }), ["/bin/sh"]));
  test("--entrypoint with a command", () =>
    assert.deepEqual(processArgs(config, { entrypoint: "/bin/sh", command: ["-c", "true"] }), [
      "/bin/sh",
      "-c",
      "true",
    ]));
  test('--entrypoint "" clears it', () =>
    assert.deepEqual(processArgs(config, { entrypoint: "", command: ["ls"] }), ["ls"]));
  test("nothing to run is a clear error", () =>
    assert.throws(() => processArgs({}, {}), { code: "CONTAINER_CONFIG" }));
});

describe("environment", () => {
  test("image env, defaults, env files then -e; -e NAME takes the host's value", () => {
    const env = mergeEnv(
      ["A=image", "PATH=/image/bin"],
      [...envFileLines("# comment\nB=file\n\nA=file\n"), "A=flag", "FROM_HOST", "MISSING"],
      { FROM_HOST: "host" },
      { PATH: DEFAULT_PATH, HOME: "/root" },
    );
    assert.deepEqual(env, ["A=flag", "PATH=/image/bin", "HOME=/root", "B=file", "FROM_HOST=host"]);
  });
  test("an empty name is refused", () =>
    assert.throws(() => mergeEnv([], ["=x"], {}, {}), { code: "CONTAINER_CONFIG" }));
});

describe("volumes", () => {
  test("host:container[:ro]", () => {
    assert.deepEqual(parseVolume("/data:/srv/data:ro"), {
      source: "/data",
      destination: "/srv/data",
      readonly: true,
    });
    assert.deepEqual(parseVolume("/data:/srv/"), { source: "/data", destination: "/srv/", readonly: false });
  });
  for (const bad of ["data:/srv", "/data", "/data:srv", "/a:/b:rx", "/a:/b:ro:x"])
    test(`refuses ${bad}`, () => assert.throws(() => parseVolume(bad), { code: "CONTAINER_CONFIG" }));
});

describe("users, read inside the rootfs", () => {
  test("names and numbers, primary and supplementary groups, home", async (t) => {
    const root = await rootfs(t, { "etc/passwd": PASSWD, "etc/group": GROUP });
    assert.deepEqual(resolveUser(root, "app"), {
      uid: 1000,
      gid: 1000,
      additionalGids: [50],
      home: "/home/app",
    });
    assert.deepEqual(resolveUser(root, "1000:staff"), {
      uid: 1000,
      gid: 50,
      additionalGids: [],
      home: "/home/app",
    });
    assert.deepEqual(resolveUser(root, "4242"), { uid: 4242, gid: 0, additionalGids: [], home: "/" });
    assert.deepEqual(resolveUser(root, undefined), { uid: 0, gid: 0, additionalGids: [], home: "/root" });
    assert.throws(() => resolveUser(root, "nobody"), { code: "CONTAINER_CONFIG" });
    assert.throws(() => resolveUser(root, "app:wheel"), { code: "CONTAINER_CONFIG" });
  });

  test("a symlinked /etc/passwd resolves inside the rootfs, never to the host's", async (t) => {
    const root = await rootfs(t);
    const host = join(root, "..", "host-passwd");
    await writeFile(host, "evil:x:0:0::/:/bin/sh\n");
    await symlink(host, join(root, "etc/passwd"));
    assert.equal(
      readFileInRoot(root, "/etc/passwd"),
      undefined,
      "the absolute target is taken inside the root",
    );
    await mkdir(join(root, join(host, "..").slice(1)), { recursive: true });
    await writeFile(join(root, host.slice(1)), "inside:x:7:7::/in:/bin/sh\n");
    assert.deepEqual(resolveUser(root, "inside"), { uid: 7, gid: 7, additionalGids: [], home: "/in" });
    assert.throws(() => resolveUser(root, "evil"), { code: "CONTAINER_CONFIG" });
  });

  test("a relative symlink climbing out stops at the root", async (t) => {
    const root = await rootfs(t);
    await symlink("../../../../../../etc/passwd", join(root, "etc/passwd"));
    assert.equal(readFileInRoot(root, "/etc/passwd"), undefined);
  });

  // Found by unpack.fuzz.test.ts, where the same walk refused layers with a raw ENAMETOOLONG.
  test("a symlink to a name longer than 255 bytes is no file, not an ENAMETOOLONG", async (t) => {
    const root = await rootfs(t);
    await symlink("x".repeat(300), join(root, "etc/passwd"));
    assert.equal(readFileInRoot(root, "/etc/passwd"), undefined);
    assert.throws(() => resolveUser(root, "app"), { code: "CONTAINER_CONFIG" });
  });
});

describe("runtimeSpec", () => {
  test("a complete spec: args, env, cwd, user, mounts, masked paths", async (t) => {
    const root = await rootfs(t, { "etc/passwd": PASSWD, "etc/group": GROUP });
    const spec = runtimeSpec(
      { Entrypoint: ["/bin/app"], Env: ["A=1"], WorkingDir: "/srv", User: "app" },
      root,
      { env: ["B=2"], tty: true, volumes: [parseVolume("/tmp:/data:ro")], hostname: "box", hostEnv: {} },
    );
    assert.deepEqual(spec.process.args, ["/bin/app"]);
    assert.deepEqual(spec.process.env, [
      "A=1",
      `PATH=${DEFAULT_PATH}`,
      "HOSTNAME=box",
      "HOME=/home/app",
      "TERM=xterm",
      "B=2",
    ]);
    assert.equal(spec.process.cwd, "/srv");
    assert.deepEqual(spec.process.user, { uid: 1000, gid: 1000, additionalGids: [50] });
    assert.deepEqual(spec.process.capabilities.effective, [], "no capabilities for a non-root user");
    assert.ok(spec.mounts.some((m) => m.destination === "/data" && m.options.includes("ro")));
    assert.ok(
      spec.mounts.some((m) => m.destination === "/etc/resolv.conf" && m.source === "/etc/resolv.conf"),
    );
    assert.ok(spec.linux.maskedPaths.includes("/proc/kcore"));
    assert.equal(spec.linux.uidMappings, undefined);
  });

  test("rootless: a user namespace mapping the caller to root, and subordinate ids after it", async (t) => {
    const root = await rootfs(t, { "etc/passwd": PASSWD });
    const spec = runtimeSpec({ Cmd: ["sh"] }, root, { rootless: { uid: 1234, gid: 1234 }, hostEnv: {} });
    assert.ok(spec.linux.namespaces.some((n) => n.type === "user"));
    assert.deepEqual(spec.linux.uidMappings, [{ containerID: 0, hostID: 1234, size: 1 }]);
    const ranged = runtimeSpec({ Cmd: ["sh"], User: "app" }, root, {
      rootless: {
        uid: 1234,
        gid: 1235,
        subuids: { start: 100000, count: 65536 },
        subgids: { start: 200000, count: 65536 },
      },
      hostEnv: {},
    });
    assert.deepEqual(ranged.linux.uidMappings, [
      { containerID: 0, hostID: 1234, size: 1 },
      { containerID: 1, hostID: 100000, size: 65536 },
    ]);
    assert.deepEqual(ranged.linux.gidMappings, [
      { containerID: 0, hostID: 1235, size: 1 },
      { containerID: 1, hostID: 200000, size: 65536 },
    ]);
    assert.equal(ranged.process.user.uid, 1000);
    assert.throws(
      () =>
        runtimeSpec({ Cmd: ["sh"], User: "app" }, root, { rootless: { uid: 1234, gid: 1234 }, hostEnv: {} }),
      (error: Error & { code?: string }) =>
        error.code === "CONTAINER_CONFIG" &&
        /subordinate ids/.test(error.message) &&
        /usermod/.test(error.message + (error as { hint?: string }).hint),
    );
    assert.ok(spec.mounts.some((m) => m.destination === "/sys" && m.options.includes("rbind")));
    assert.ok(!spec.mounts.some((m) => m.options.includes("gid=5")));
  });
});
