/**
 * `locald container run` on runc with a busybox-static image built by our factory and served by
 * a real registry: Entrypoint/Cmd overrides, env, workdir, named user, exit codes, bind mounts,
 * as root and as an unprivileged user; and the message when runc is missing.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, chown, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { OciLayout, push } from "@locald/oci";
import {
  type CliResult,
  LOCALD_BIN,
  makeTempDir,
  removeDir,
  requireBinary,
  runLocald,
  startRegistry,
  type TestRegistry,
  unprivilegedUser,
  writeImage,
} from "../src/index.js";

const run = promisify(execFile);
const APPLETS = ["sh", "echo", "id", "cat", "pwd", "ls", "env", "sleep", "true"];

describe("container run", () => {
  let registry: TestRegistry;
  let work: string;
  let ref: string;
  before(async () => {
    await requireBinary("runc");
    const busybox = await requireBinary("busybox");
    registry = await startRegistry({ flavour: "anonymous" });
    work = await makeTempDir("locald-container-");
    await chmod(work, 0o755);
    const layout = await OciLayout.open(join(work, "layout"), { create: true });
    const image = await writeImage(layout, {
      config: {
        Entrypoint: ["/bin/sh", "-c"],
        Cmd: ["echo default"],
        Env: ["FROM_IMAGE=yes"],
        WorkingDir: "/",
      },
      layers: [
        [
          { path: "bin/", type: "directory" },
          { path: "bin/busybox", content: await readFile(busybox), mode: 0o755 },
          ...APPLETS.map((name) => ({ path: `bin/${name}`, type: "symlink" as const, linkname: "busybox" })),
          { path: "etc/", type: "directory" },
          {
            path: "etc/passwd",
            content: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
          },
          { path: "etc/group", content: "root:x:0:\napp:x:1000:\n" },
          { path: "srv/", type: "directory" },
        ],
      ],
    });
    await layout.addManifest(image.descriptor, "busybox");
    ref = `${registry.host}/e2e/busybox:1`;
    await push({ kind: "layout", dir: layout.root, name: "busybox" }, ref);
  });
  after(async () => {
    await registry?.stop();
    if (work) await removeDir(work);
  });

  const home = () => ({ LOCALD_HOME: join(work, "home") });
  const container = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
    runLocald(["container", "run", "--rm", ...args], { env: { ...home(), ...env } });

  test("the image's Entrypoint and Cmd, and a command that replaces the Cmd", async () => {
    const plain = await container([ref]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout.trim(), "default");
    const replaced = await container([ref, "echo replaced"]);
    assert.equal(replaced.stdout.trim(), "replaced");
    const entry = await container(["--entrypoint", "/bin/echo", ref, "a", "b"]);
    assert.equal(entry.stdout.trim(), "a b");
  });

  test("env, workdir, user and a read-only bind mount", async () => {
    const data = join(work, "data");
    await mkdir(data, { recursive: true });
    await writeFile(join(data, "greeting"), "hi from the host\n");
    const result = await container([
      "-e",
      "A=1",
      "-w",
      "/srv",
      "-u",
      "app",
      "-v",
      `${data}:/data:ro`,
      ref,
      'echo "$A $FROM_IMAGE $(pwd) $(id -u) $HOME"; cat /data/greeting; echo x > /data/new || echo read-only',
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.stdout.trim().split("\n"), [
      "1 yes /srv 1000 /home/app",
      "hi from the host",
      "read-only",
    ]);
  });

  test("the exit code is the container's", async () => {
    const result = await container([ref, "exit 7"]);
    assert.equal(result.code, 7);
  });

  test("an unknown user is a clear error, and nothing is left behind", async () => {
    const result = await container(["-u", "nobody", ref]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /No user "nobody" in the image's \/etc\/passwd/);
    assert.doesNotMatch(result.stderr, /at .*\.js:\d+/);
    const left = await run("ls", [join(work, "home", "containers")]);
    assert.equal(left.stdout.trim(), "");
  });

  test("a missing runc names the package to install", async () => {
    const result = await container([ref, "true"], { LOCALD_RUNC: join(work, "no-such-runc") });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /runc program was not found/);
    assert.match(result.stderr, /apt-get install runc/);
  });

  test("as an unprivileged user (rootless runc)", async () => {
    const { uid, gid } = await unprivilegedUser();
    const userHome = join(work, "user-home");
    await mkdir(userHome, { recursive: true });
    await chown(userHome, uid, gid);
    const result = await new Promise<CliResult>((resolve) => {
      execFile(
        "setpriv",
        [
          `--reuid=${uid}`,
          `--regid=${gid}`,
          "--clear-groups",
          "--",
          process.execPath,
          LOCALD_BIN,
          "container",
          "run",
          "--rm",
          "-e",
          "B=2",
          ref,
          'echo "$B $(id -u)"; exit 3',
        ],
        {
          env: {
            PATH: process.env.PATH,
            HOME: userHome,
            LOCALD_HOME: join(userHome, "locald"),
            NO_COLOR: "1",
            XDG_RUNTIME_DIR: userHome,
          },
        },
        (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
      );
    });
    assert.equal(result.code, 3, result.stderr);
    assert.equal(result.stdout.trim(), "2 0", "the caller is root inside its user namespace");
  });
});
