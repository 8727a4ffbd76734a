import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  forwardedEnv,
  hostProvider,
  LIMA_RELEASE,
  limaShellArgs,
  withoutHostProviderFlag,
} from "../src/host/index.js";

/**
 * Command forwarding to Lima, against a RECORDING STAND-IN FOR `limactl` (not the real one: a
 * real `limactl shell` needs a running macOS VM): a small Node script installed where locald
 * keeps its own limactl, which writes down every call — argv, working directory, the environment
 * it was given, what came on stdin, signals received — and answers `list` as a running VM would.
 * What it records is what the real limactl would have been asked to do.
 */

const MAIN = join(dirname(fileURLToPath(import.meta.url)), "..", "src", "main.js");

const STAND_IN = `#!${process.execPath}
// Recording stand-in for limactl (locald's host-forward unit test).
const fs = require("node:fs");
const path = require("node:path");
const record = path.join(process.env.LIMA_HOME, "calls.jsonl");
fs.mkdirSync(process.env.LIMA_HOME, { recursive: true });
const argv = process.argv.slice(2);
const note = (entry) => fs.appendFileSync(record, JSON.stringify(entry) + "\\n");
if (argv[0] === "list") {
  note({ argv });
  process.stdout.write(JSON.stringify({ name: "other", status: "Running" }) + "\\n");
  process.stdout.write(JSON.stringify({ name: "locald", status: "Running" }) + "\\n");
  process.exit(0);
}
const args = argv.slice(argv.indexOf("locald", argv.indexOf("env")) + 1);
const entry = { argv, cwd: process.cwd(), limaHome: process.env.LIMA_HOME };
const mode = args[args.length - 1] ?? "";
if (mode === "read-stdin") {
  entry.stdin = fs.readFileSync(0, "utf8");
  note(entry);
  process.exit(0);
}
if (mode === "wait-signal") {
  for (const s of ["SIGINT", "SIGTERM"])
    process.on(s, () => { note({ ...entry, signal: s }); process.exit(s === "SIGINT" ? 130 : 143); });
  note({ ...entry, ready: true });
  setInterval(() => {}, 1000);
} else {
  note(entry);
  const exit = /^exit=(\\d+)$/.exec(mode);
  process.exit(exit ? Number(exit[1]) : 0);
}
`;

let home: string;
let project: string;

async function calls(): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(join(home, "vm", "lima", "calls.jsonl"), "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function shellCalls(): Promise<Array<Record<string, unknown>>> {
  return (await calls()).filter((c) => (c.argv as string[])[0] === "shell");
}

function limaEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    LOCALD_HOME: home,
    LOCALD_HOST_PROVIDER: "lima",
    ...extra,
  };
}

describe("forwarding to Lima (recording stand-in for limactl)", () => {
  before(async () => {
    home = await mkdtemp(join(tmpdir(), "locald-forward-"));
    project = join(home, "my project");
    await mkdir(project);
    const bin = join(home, "tools", "lima", LIMA_RELEASE.version, "bin");
    await mkdir(bin, { recursive: true });
    await writeFile(join(bin, "limactl"), STAND_IN);
    await chmod(join(bin, "limactl"), 0o755);
  });
  after(() => rm(home, { recursive: true, force: true }));

  test("args, cwd and the allow-listed env arrive; the exit status comes back", async () => {
    const env = limaEnv({
      LOCALD_DEBUG: "1",
      BP_NODE_VERSION: "22",
      NO_COLOR: "1",
      AWS_SECRET_ACCESS_KEY: "not-for-the-vm",
      SSH_AUTH_SOCK: "/private/tmp/agent",
    });
    const argv = ["--host-provider", "lima", "build", ".", "-e", "A=b c", "--tag", "it's:1", "exit=7"];
    const provider = hostProvider(argv, { env, cwd: project, platform: "linux", io: { stdio: "pipe" } });
    assert.equal(provider.name, "lima");
    assert.ok(provider.forward);
    assert.equal(await provider.forward(argv), 7);
    const [call] = await shellCalls();
    assert.deepEqual(call?.argv, [
      "shell",
      `--workdir=${project}`,
      "locald",
      "env",
      "BP_NODE_VERSION=22",
      "LOCALD_DEBUG=1",
      "NO_COLOR=1",
      "locald",
      "build",
      ".",
      "-e",
      "A=b c",
      "--tag",
      "it's:1",
      "exit=7",
    ]);
    // Our own Lima home, never the user's ~/.lima.
    assert.equal(call?.limaHome, join(home, "vm", "lima"));
  });

  test("the environment allow-list: secrets, paths of this host and the provider stay behind", () => {
    const env = forwardedEnv({
      LOCALD_HOME: "/Users/me/.local/share/locald",
      LOCALD_HOST_PROVIDER: "lima",
      LOCALD_LIMACTL: "/opt/homebrew/bin/limactl",
      LOCALD_ISOLATION: "host",
      LC_ALL: "C.UTF-8",
      TERM: "xterm-256color",
      GITHUB_TOKEN: "x",
      HOME: "/Users/me",
      PATH: "/opt/homebrew/bin",
      "BAD-NAME": "x",
    });
    assert.deepEqual(env, { LC_ALL: "C.UTF-8", LOCALD_ISOLATION: "host", TERM: "xterm-256color" });
    assert.deepEqual(withoutHostProviderFlag(["--host-provider=lima", "up", "--", "--host-provider", "x"]), [
      "up",
      "--",
      "--host-provider",
      "x",
    ]);
    assert.deepEqual(limaShellArgs(["doctor"], { cwd: "/Users/me/app", env: {} }), [
      "shell",
      "--workdir=/Users/me/app",
      "locald",
      "env",
      "locald",
      "doctor",
    ]);
  });

  test("through main(): stdin passes, and a SIGTERM or SIGINT sent to locald reaches the command", async () => {
    const run = (args: string[], input: string | undefined, signal?: NodeJS.Signals) =>
      new Promise<number | null>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          [
            "--input-type=module",
            "-e",
            `const { main } = await import(${JSON.stringify(MAIN)}); process.exitCode = await main(${JSON.stringify(args)});`,
          ],
          { cwd: project, env: limaEnv(), stdio: ["pipe", "inherit", "inherit"] },
        );
        child.on("error", reject);
        child.on("close", (code) => resolve(code));
        if (input !== undefined) child.stdin.end(input);
        if (signal !== undefined) {
          const poll = setInterval(async () => {
            if ((await shellCalls()).some((c) => c.ready === true)) {
              clearInterval(poll);
              child.kill(signal);
            }
          }, 50);
        }
      });

    await rm(join(home, "vm", "lima", "calls.jsonl"), { force: true });
    assert.equal(await run(["container", "run", "img", "read-stdin"], "line one\nline two\n"), 0);
    assert.equal((await shellCalls())[0]?.stdin, "line one\nline two\n");
    assert.equal((await shellCalls())[0]?.cwd, project);

    for (const [signal, status] of [
      ["SIGTERM", 143],
      ["SIGINT", 130],
    ] as const) {
      await rm(join(home, "vm", "lima", "calls.jsonl"), { force: true });
      assert.equal(await run(["up", "wait-signal"], undefined, signal), status);
      const received = (await shellCalls()).find((c) => c.signal !== undefined);
      assert.equal(received?.signal, signal);
    }
  });

  test("commands that manage the VM or only print are not forwarded", async () => {
    await rm(join(home, "vm", "lima", "calls.jsonl"), { force: true });
    const child = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { main } = await import(${JSON.stringify(MAIN)}); process.exitCode = await main(["vm", "status"]);`,
      ],
      { cwd: project, env: limaEnv(), stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    assert.equal(code, 0);
    assert.equal(out, "Running\n");
    assert.deepEqual(await shellCalls(), []);
  });
});
