/**
 * `locald up`: a project with a Node build service, a Rust build service and a container service
 * (an image from the local registry) — all three answer on their PORT, a killed service comes
 * back, and Ctrl-C leaves no process, sandbox or container behind — as root and as an
 * unprivileged user.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, cp, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { OciLayout, push, removeTree } from "@locald/oci";
import {
  buildNodeVersion,
  busyboxLayer,
  type CliOptions,
  makeTempDir,
  pushSampleBuilder,
  requireBinary,
  runLocald,
  startLocald,
  startRegistry,
  TailBuffer,
  TEST_CALLERS,
  type TestRegistry,
  unprivilegedUser,
  waitForExit,
  writeImage,
} from "../src/index.js";

const run = promisify(execFile);
const EXAMPLES = fileURLToPath(new URL("../../../examples/", import.meta.url));

const shared: { registry?: TestRegistry; work?: string; builder?: string; httpd?: string } = {};

before(async () => {
  for (const tool of ["bwrap", "runc", "setpriv", "go", "busybox"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("up");
  await chmod(shared.work, 0o755);
  ({ builder: shared.builder } = await pushSampleBuilder(shared.registry, shared.work, ["nodejs", "rust"]));
  // A static file server: busybox httpd on $PORT.
  const layout = await OciLayout.open(join(shared.work, "layout-httpd"), { create: true });
  const image = await writeImage(layout, {
    config: { Cmd: ["/bin/sh", "-c", "echo serving on $PORT; exec httpd -f -p $PORT -h /www"] },
    layers: [
      [
        ...(await busyboxLayer()),
        { path: "bin/httpd", type: "symlink", linkname: "busybox" },
        { path: "www/", type: "directory" },
        { path: "www/index.html", content: "hello from the container service\n" },
      ],
    ],
  });
  await layout.addManifest(image.descriptor, "httpd");
  shared.httpd = `${shared.registry.host}/e2e/httpd:1`;
  await push({ kind: "layout", dir: layout.root, name: "httpd" }, shared.httpd);
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

/** Processes whose environment carries `mark` (every service's does), with their command names. */
async function markedProcesses(mark: string): Promise<{ pid: number; comm: string }[]> {
  const found: { pid: number; comm: string }[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const environ = await readFile(`/proc/${entry}/environ`).catch(() => undefined);
    if (!environ?.includes(`LOCALD_E2E_MARK=${mark}`)) continue;
    const comm = await readFile(`/proc/${entry}/comm`, "utf8").catch(() => "?");
    found.push({ pid: Number(entry), comm: comm.trim() });
  }
  return found;
}

async function body(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/`);
  return response.text();
}

for (const who of TEST_CALLERS) {
  describe(`locald up, as ${who}`, () => {
    let home: string;
    let project: string;
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    const mark = randomBytes(8).toString("hex");
    before(async () => {
      home = join(shared.work as string, `home-${who === "root" ? "root" : "user"}`);
      project = join(home, "shop");
      await mkdir(project, { recursive: true });
      await cp(join(EXAMPLES, "hello-node"), join(project, "web"), { recursive: true });
      await cp(join(EXAMPLES, "hello-rust"), join(project, "api"), { recursive: true });
      await writeFile(
        join(project, "locald.toml"),
        [
          "[project]",
          'name = "shop"',
          `builder = "${shared.builder}"`,
          "",
          "[services.web]",
          'build = { path = "web" }',
          'depends_on = ["api", "static"]',
          `env = { LOCALD_E2E_MARK = "${mark}" }`,
          "",
          "[services.api]",
          // The sample build image has no Rust (see debianBuildImageLayer): the host's cargo builds it.
          'build = { path = "api", isolation = "host" }',
          `env = { LOCALD_E2E_MARK = "${mark}" }`,
          "",
          "[services.static]",
          'type = "container"',
          `image = "${shared.httpd}"`,
          `env = { LOCALD_E2E_MARK = "${mark}" }`,
          "",
        ].join("\n"),
      );
      await chmod(home, 0o755);
      if (who !== "root") {
        as = await unprivilegedUser();
        await run("chown", ["-R", `${as.uid}:${as.gid}`, home]);
      }
      env = { HOME: home, LOCALD_HOME: join(home, "locald"), XDG_RUNTIME_DIR: home };
    });

    test("all three come up on their PORT, a killed one is restarted, Ctrl-C leaves nothing behind", async () => {
      const child = startLocald(["up", "--timeout", "5"], { env, cwd: project, ...(as ? { as } : {}) });
      const stdout = new TailBuffer();
      const stderr = new TailBuffer();
      const waiters: { pattern: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
      /** Resolves when stdout (from now on or already) matches. */
      const seen = (pattern: RegExp) =>
        new Promise<RegExpMatchArray>((resolve, reject) => {
          const already = stdout.toString().match(pattern);
          if (already) return resolve(already);
          waiters.push({ pattern, resolve });
          child.once("exit", () =>
            reject(new Error(`locald up exited before ${pattern}:\n${stdout}\n${stderr}`)),
          );
        });
      child.stdout.on("data", (chunk: Buffer) => {
        stdout.append(chunk.toString());
        for (const waiter of [...waiters]) {
          const match = stdout.toString().match(waiter.pattern);
          if (match) {
            waiters.splice(waiters.indexOf(waiter), 1);
            waiter.resolve(match);
          }
        }
      });
      child.stderr.on("data", (chunk: Buffer) => stderr.append(chunk.toString()));
      try {
        const up = await seen(/up: (\w+) on (\d+), (\w+) on (\d+), (\w+) on (\d+)/);
        const ports = new Map<string, number>();
        for (let i = 1; i < 7; i += 2) ports.set(up[i] as string, Number(up[i + 1]));
        assert.deepEqual([...ports.keys()].sort(), ["api", "static", "web"]);
        // Dependencies first: web starts last.
        assert.equal(up[5], "web");
        await seen(/web\s+\| hello-node listening on/);
        assert.equal(
          await body(ports.get("web") ?? 0),
          `Hello from hello-node on Node.js ${await buildNodeVersion()}\n`,
        );
        assert.equal(await body(ports.get("api") ?? 0), "Hello from hello-rust\n");
        assert.equal(await body(ports.get("static") ?? 0), "hello from the container service\n");
        assert.match(stderr.toString(), /web\s+\| ===> BUILDING/, "the build service was built");

        const node = (await markedProcesses(mark)).find((p) => p.comm === "node");
        assert.ok(node, "the web service's node process runs");
        process.kill(node.pid, "SIGKILL");
        await seen(/web\s+\| \[locald\] exited with code 137; restarting/);
        await seen(/hello-node listening on[\s\S]*hello-node listening on/);
        assert.equal(
          await body(ports.get("web") ?? 0),
          `Hello from hello-node on Node.js ${await buildNodeVersion()}\n`,
        );
        assert.ok(
          (await markedProcesses(mark)).some((p) => p.comm === "node" && p.pid !== node.pid),
          "a new node process serves",
        );

        child.kill("SIGINT");
        await waitForExit(child);
        assert.equal(child.exitCode, 130, `${stdout}\n${stderr}`);
        assert.match(stdout.toString(), /every service stopped/);
      } catch (error) {
        throw new Error(`${(error as Error).message}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`, {
          cause: error,
        });
      } finally {
        // A failed test still stops the services the way a user would.
        if (child.exitCode === null) child.kill("SIGINT");
        const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
        await waitForExit(child);
        clearTimeout(timer);
      }
      assert.deepEqual(await markedProcesses(mark), [], "no service process is left");
      for (const port of ["web", "api", "static"].map((name) =>
        Number(stdout.toString().match(new RegExp(`${name} on (\\d+)`))?.[1]),
      ))
        await assert.rejects(body(port), "nothing answers on the service's port any more");
      const containers = await runLocald(["container", "ls", "-a"], { env, ...(as ? { as } : {}) });
      assert.equal(containers.code, 0, containers.stderr);
      assert.doesNotMatch(containers.stdout, /shop-static/, "the container is removed");
    });
  });
}
