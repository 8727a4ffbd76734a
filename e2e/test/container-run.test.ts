/**
 * `locald container run|ls|stop|rm|logs` on runc with a busybox-static image built by our
 * factory and served by a real registry — every case as root and as an unprivileged user:
 * Entrypoint/Cmd overrides, env, workdir, named user, bind mounts, exit codes and signals,
 * detached containers, `--rm`, a terminal, the overlay over the unpack cache (no second
 * extraction), hostile images, and the message when runc is missing.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { chmod, chown, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { OciLayout, push, removeTree, runContainer, Store } from "@locald/oci";
import {
  busyboxLayer,
  type CliOptions,
  type CliResult,
  DEBIAN_PATH,
  type LayerEntry,
  LOCALD_BIN,
  makeTempDir,
  pushDebianImage,
  requireBinary,
  runLocald,
  startLocald,
  startRegistry,
  TEST_CALLERS,
  type TestRegistry,
  unprivilegedUser,
  writeImage,
} from "../src/index.js";

const shared: { registry?: TestRegistry; work?: string } = {};

async function pushImage(
  name: string,
  layers: LayerEntry[][],
  config: Record<string, unknown>,
): Promise<string> {
  const { registry, work } = shared as Required<typeof shared>;
  const layout = await OciLayout.open(join(work, `layout-${name}`), { create: true });
  const image = await writeImage(layout, { config, layers });
  await layout.addManifest(image.descriptor, name);
  const ref = `${registry.host}/e2e/${name}:1`;
  await push({ kind: "layout", dir: layout.root, name }, ref);
  return ref;
}

let debian: Promise<string> | undefined;

/** A Debian minbase image (mmdebstrap), pushed once for both users. */
function debianImage(): Promise<string> {
  debian ??= (async () => {
    const { registry, work } = shared as Required<typeof shared>;
    return pushDebianImage(registry, work, "e2e/debian:bookworm", { Cmd: ["bash"], Env: [DEBIAN_PATH] });
  })();
  return debian;
}

before(async () => {
  await requireBinary("runc");
  await requireBinary("setpriv");
  await requireBinary("busybox");
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("container");
  await chmod(shared.work, 0o755);
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

for (const who of TEST_CALLERS) {
  describe(`container run, as ${who}`, () => {
    let ref: string;
    let home: string;
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    before(async () => {
      const work = shared.work as string;
      const slug = who === "root" ? "root" : "user";
      home = join(work, `home-${slug}`);
      await mkdir(home, { recursive: true, mode: 0o755 });
      if (who !== "root") {
        as = await unprivilegedUser();
        await chown(home, as.uid, as.gid);
      }
      env = { HOME: home, LOCALD_HOME: join(home, "locald"), XDG_RUNTIME_DIR: home };
      ref = await pushImage(
        `busybox-${slug}`,
        [
          [
            ...(await busyboxLayer()),
            { path: "etc/", type: "directory" },
            {
              path: "etc/passwd",
              content: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            },
            { path: "etc/group", content: "root:x:0:\napp:x:1000:\n" },
            { path: "srv/", type: "directory" },
          ],
        ],
        { Entrypoint: ["/bin/sh", "-c"], Cmd: ["echo default"], Env: ["FROM_IMAGE=yes"], WorkingDir: "/" },
      );
    });

    const locald = (args: string[], extra: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
      runLocald(args, { env: { ...env, ...extra }, ...(as ? { as } : {}) });
    const run = (args: string[], extra: NodeJS.ProcessEnv = {}) =>
      locald(["container", "run", "--rm", ...args], extra);
    const containersDir = () => join(home, "locald", "containers");
    const leftovers = async () => (await readdir(containersDir()).catch(() => [])).sort();

    test("the image's Entrypoint and Cmd, a command that replaces the Cmd, and --entrypoint", async () => {
      const plain = await run([ref]);
      assert.equal(plain.code, 0, plain.stderr);
      assert.equal(plain.stdout.trim(), "default");
      const replaced = await run([ref, "echo replaced"]);
      assert.equal(replaced.stdout.trim(), "replaced");
      const entry = await run(["--entrypoint", "/bin/echo", ref, "a", "b"]);
      assert.equal(entry.stdout.trim(), "a b");
      const bare = await run(["--entrypoint", "/bin/echo", ref]);
      assert.equal(bare.stdout, "\n", "--entrypoint drops the image's Cmd");
    });

    test("env (-e, --env-file, the image's), workdir, a named user, and bind mounts rw and ro", async () => {
      const data = join(home, `data-ro`);
      const out = join(home, `data-rw`);
      await mkdir(data, { recursive: true });
      await mkdir(out, { recursive: true, mode: 0o777 });
      await chmod(out, 0o777);
      await writeFile(join(data, "greeting"), "hi from the host\n");
      await writeFile(join(home, "env.list"), "# a comment\nFROM_FILE=f\n");
      const result = await run([
        "-e",
        "A=1",
        "--env-file",
        join(home, "env.list"),
        "-w",
        "/srv",
        "-u",
        "app",
        "-v",
        `${data}:/data:ro`,
        "-v",
        `${out}:/out`,
        ref,
        'echo "$A $FROM_FILE $FROM_IMAGE $(pwd) $(id -u) $HOME"; cat /data/greeting; ' +
          "echo x > /data/new || echo read-only; echo written > /out/file",
      ]);
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(result.stdout.trim().split("\n"), [
        "1 f yes /srv 1000 /home/app",
        "hi from the host",
        "read-only",
      ]);
      assert.equal(await readFile(join(out, "file"), "utf8"), "written\n");
      await assert.rejects(stat(join(data, "new")), "nothing was written through the read-only mount");
      const missing = await run(["-v", `${join(home, "no-such-dir")}:/data`, ref, "true"]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /The volume source .*no-such-dir does not exist on this machine/);
      assert.doesNotMatch(missing.stderr, /runc|level=error/);
    });

    test("exit codes, and SIGTERM forwarded to a foreground container", async () => {
      assert.equal((await run([ref, "exit 7"])).code, 7);
      const child = startLocald(
        [
          "container",
          "run",
          "--rm",
          ref,
          'trap "echo got TERM; exit 5" TERM; echo ready; while true; do sleep 0.05; done',
        ],
        { env: { ...process.env, NO_COLOR: "1", ...env }, ...(as ? { as } : {}) },
      );
      let stdout = "";
      child.stdout.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
        if (stdout.includes("ready\n") && !stdout.includes("sent")) {
          stdout += "sent";
          child.kill("SIGTERM");
        }
      });
      const [code] = (await once(child, "close")) as [number];
      assert.equal(code, 5, stdout);
      assert.match(stdout, /got TERM/);
      assert.deepEqual(await leftovers(), []);
    });

    test("-d, then ls, logs, stop (SIGTERM, then SIGKILL after the grace period) and rm", async () => {
      const started = await locald([
        "container",
        "run",
        "-d",
        "--name",
        "web",
        ref,
        'trap "echo stopping; exit 3" TERM; echo serving; while true; do sleep 0.05; done',
      ]);
      assert.equal(started.code, 0, started.stderr);
      assert.equal(started.stdout.trim(), "web");
      const running = await locald(["container", "ls"]);
      assert.match(running.stdout, /^web\s+\S+\s+.*\sUp$/m);
      const stubborn = await locald([
        "container",
        "run",
        "-d",
        "--name",
        "stubborn",
        ref,
        'trap "" TERM; sleep 1000',
      ]);
      assert.equal(stubborn.code, 0, stubborn.stderr);
      const taken = await locald(["container", "run", "-d", "--name", "web", ref, "true"]);
      assert.equal(taken.code, 1);
      assert.match(taken.stderr, /A container named "web" already exists/);

      const refused = await locald(["container", "rm", "web"]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /Container "web" is running/);

      assert.equal((await locald(["container", "stop", "web"])).code, 0);
      assert.equal((await locald(["container", "stop", "-t", "0.2", "stubborn"])).code, 0);
      const all = JSON.parse((await locald(["container", "ls", "-a", "--json"])).stdout) as Array<{
        name: string;
        status: string;
        exitCode?: number;
      }>;
      assert.deepEqual(
        all.map(({ name, status, exitCode }) => ({ name, status, exitCode })),
        [
          { name: "stubborn", status: "exited", exitCode: 137 },
          { name: "web", status: "exited", exitCode: 3 },
        ],
      );
      assert.equal((await locald(["container", "ls", "-q"])).stdout, "", "ls without -a shows running ones");
      const logs = await locald(["container", "logs", "web"]);
      assert.equal(logs.stdout, "serving\nstopping\n");
      assert.equal((await locald(["container", "rm", "web", "stubborn"])).code, 0);
      assert.deepEqual(await leftovers(), []);
      const gone = await locald(["container", "logs", "web"]);
      assert.equal(gone.code, 1);
      assert.match(gone.stderr, /No container named "web"/);
    });

    test("a container whose locald was killed is found stale: stopped, its runc state deleted", async () => {
      const child = startLocald(
        ["container", "run", "--name", "orphan", ref, "echo ready; while true; do sleep 0.05; done"],
        { env: { ...process.env, NO_COLOR: "1", ...env }, ...(as ? { as } : {}) },
      );
      let stdout = "";
      child.stdout.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
        if (stdout.includes("ready\n")) child.kill("SIGKILL");
      });
      // runc outlives its killed parent and keeps the pipes open: wait for the exit, not the close.
      await once(child, "exit");
      const listed = JSON.parse((await locald(["container", "ls", "-a", "--json"])).stdout) as Array<{
        name: string;
        status: string;
      }>;
      assert.deepEqual(
        listed.map(({ name, status }) => ({ name, status })),
        [{ name: "orphan", status: "exited" }],
      );
      const runcState = await readdir(join(home, "locald", "runc")).catch(() => [] as string[]);
      assert.ok(!runcState.includes("orphan"), "runc's state of the container is gone");
      assert.equal((await locald(["container", "rm", "orphan"])).code, 0);
      assert.deepEqual(await leftovers(), []);
    });

    test("--rm leaves nothing behind, a kept container stays until rm, and a failing start leaves nothing", async () => {
      assert.equal((await run([ref, "touch /scratch"])).code, 0);
      assert.deepEqual(await leftovers(), []);
      const kept = await locald(["container", "run", "--name", "kept", ref, "touch /scratch; exit 2"]);
      assert.equal(kept.code, 2);
      assert.deepEqual(await leftovers(), ["kept"]);
      const listed = await locald(["container", "ls", "-a"]);
      assert.match(listed.stdout, /^kept\s.*Exited \(2\)/m);
      assert.equal((await locald(["container", "rm", "kept"])).code, 0);
      const unknown = await run(["-u", "nobody", ref]);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /No user "nobody" in the image's \/etc\/passwd/);
      assert.doesNotMatch(unknown.stderr, /at .*\.js:\d+/);
      assert.deepEqual(await leftovers(), []);
      const runc = await readdir(join(home, "locald", "runc")).catch(() => []);
      assert.deepEqual(runc, [], "no runc state is left either");
    });

    test("-t gives the container a real terminal", async () => {
      await requireBinary("script");
      const command = [process.execPath, LOCALD_BIN, "container", "run", "--rm", "-t", ref, "tty; echo $TERM"]
        .map((word) => `'${word.replaceAll("'", "'\\''")}'`)
        .join(" ");
      const wrapped = as
        ? `setpriv --reuid=${as.uid} --regid=${as.gid} --clear-groups -- ${command}`
        : command;
      const result = await runLocaldScript(wrapped, env);
      assert.match(result, /\/dev\/pts\/\d+\r?\n/);
      assert.match(result, /xterm/);
    });

    test("a second run stands on the cached root: an overlay, nothing extracted again", async () => {
      const options = {
        home: join(home, "library"),
        remove: true,
        command: ["true"],
      };
      if (as !== undefined) {
        // The library runs in this (root) process; the unprivileged path is the CLI's, above.
        const first = await locald(["container", "run", "--rm", ref, "true"]);
        assert.equal(first.code, 0, first.stderr);
        const cache = join(home, "locald", "cache", "rootfs");
        const before = await readdir(cache);
        const inode = (await stat(join(cache, before.find((n) => !n.endsWith(".json")) as string))).ino;
        const second = await locald(["container", "run", "--rm", ref, "touch /etc/changed"]);
        assert.equal(second.code, 0, second.stderr);
        const afterRun = await readdir(cache);
        assert.deepEqual(afterRun, before, "no new cache entry");
        const entry = join(cache, before.find((n) => !n.endsWith(".json")) as string);
        assert.equal((await stat(entry)).ino, inode, "the same cached root");
        await assert.rejects(stat(join(entry, "etc", "changed")), "container writes stay in its upper dir");
        return;
      }
      const store = await Store.open(join(options.home, "store"));
      const first = await runContainer(ref, { ...options, store });
      assert.deepEqual([first.exitCode, first.rootfs, first.cached], [0, "overlay", false]);
      const second = await runContainer(ref, { ...options, store, command: ["touch /etc/changed"] });
      assert.deepEqual([second.exitCode, second.rootfs, second.cached], [0, "overlay", true]);
      const copy = await runContainer(ref, { ...options, store, rootfs: "copy" });
      assert.deepEqual([copy.exitCode, copy.rootfs], [0, "copy"]);
    });

    test("a hostile image cannot make locald read or write host files", async () => {
      const canaryDir = join(home, "canary");
      await mkdir(canaryDir, { recursive: true });
      await writeFile(join(canaryDir, "resolv"), "canary\n");
      // What a lookup that followed the links out to the host would find.
      await writeFile(join(canaryDir, "passwd"), "intruder:x:4242:4242::/:/bin/sh\n");
      await writeFile(join(canaryDir, "group"), "intruders:x:4242:\n");
      const up = "../../../../../../../../..";
      const hostile = await pushImage(
        `hostile-${who === "root" ? "root" : "user"}`,
        [
          [
            ...(await busyboxLayer()),
            { path: "etc/", type: "directory" },
            // Absolute and climbing links: every one must resolve inside the container's root.
            { path: "etc/passwd", type: "symlink", linkname: `${up}${canaryDir}/passwd` },
            { path: "etc/group", type: "symlink", linkname: `${canaryDir}/group` },
            { path: "etc/resolv.conf", type: "symlink", linkname: `${up}${canaryDir}/resolv` },
            { path: "escape", type: "symlink", linkname: `${up}${canaryDir}` },
            { path: "data", type: "symlink", linkname: canaryDir },
          ],
        ],
        { Entrypoint: ["/bin/sh", "-c"], Cmd: ["true"] },
      );
      const user = await run(["-u", "intruder", hostile, "id -u"]);
      assert.equal(user.code, 1);
      assert.match(user.stderr, /No user "intruder" in the image's \/etc\/passwd/);
      const group = await run(["-u", "0:intruders", hostile, "id -g"]);
      assert.equal(group.code, 1);
      assert.match(group.stderr, /No group "intruders" in the image's \/etc\/group/);
      const writes = await run([
        hostile,
        "echo pwned > /escape/resolv; echo pwned > /data/new; echo pwned > /etc/resolv.conf; true",
      ]);
      assert.equal(writes.code, 0, writes.stderr);
      assert.equal(await readFile(join(canaryDir, "resolv"), "utf8"), "canary\n");
      assert.deepEqual((await readdir(canaryDir)).sort(), ["group", "passwd", "resolv"]);
      assert.deepEqual(await leftovers(), []);
    });

    test("a Debian minbase image: bash, a system user, the image's own dpkg database", async () => {
      const image = await debianImage();
      const result = await run([
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "-e",
        "X=1",
        image,
        "/bin/bash",
        "-c",
        'echo "$(id -un) $(id -gn) $(pwd) $X $(cat /etc/debian_version)"; dpkg-query -W dash | cut -f1',
      ]);
      assert.equal(result.code, 0, result.stderr);
      const [identity, dash] = result.stdout.trim().split("\n");
      assert.match(identity ?? "", /^nobody nogroup \/tmp 1 12\.\d+$/);
      assert.equal(dash, "dash");
    });

    test("a missing runc names the package to install", async () => {
      const result = await run([ref, "true"], { LOCALD_RUNC: join(home, "no-such-runc") });
      assert.equal(result.code, 1);
      assert.match(result.stderr, /runc program was not found/);
      assert.match(result.stderr, /apt-get install runc/);
      assert.deepEqual(await leftovers(), []);
    });
  });
}

/** Runs a shell command under `script`, which gives it a pseudo-terminal; returns what it printed. */
async function runLocaldScript(command: string, env: NodeJS.ProcessEnv): Promise<string> {
  const { stdout } = await promisify(execFile)("script", ["-qec", command, "/dev/null"], {
    env: { ...process.env, NO_COLOR: "1", ...env },
  });
  return stdout;
}
