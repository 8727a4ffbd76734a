import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { OciLayout, push, removeTree } from "@locald/oci";
import {
  type CliResult,
  LOCALD_BIN,
  runLocald,
  sampleImage,
  startFaultProxy,
  startRegistry,
  type TestRegistry,
  tempDir,
} from "../src/index.js";

/** A failure renders as one short paragraph with a hint, never a stack trace. */
function assertCleanFailure(result: CliResult, pattern: RegExp): void {
  assert.equal(result.code, 1, result.stderr);
  const message = result.stderr.slice(result.stderr.search(/^Error: /m));
  assert.match(message, /^Error: /, result.stderr);
  assert.match(message, pattern);
  assert.doesNotMatch(message, /\n\s+at /, "no stack trace");
  assert.ok(message.split("\n").filter((l) => l.trim() !== "").length <= 3, message);
}

describe("CLI against a basic-auth registry", () => {
  let registry: TestRegistry;
  let home: string;
  let dockerConfig: string;
  let digest: string;
  let work: string | undefined;
  const env = () => ({ LOCALD_HOME: home, DOCKER_CONFIG: dockerConfig });

  before(async () => {
    registry = await startRegistry({ flavour: "basic", users: { alice: "wonderland" } });
    work = await mkdtemp("/tmp/locald-cli-");
    home = join(work, "home");
    dockerConfig = join(work, "docker");
    const layout = await OciLayout.open(join(work, "src"), { create: true });
    const image = await sampleImage(layout, { seed: 71 });
    digest = image.descriptor.digest;
    await layout.addManifest(image.descriptor, "app");
    await push({ kind: "layout", dir: layout.root, name: "app" }, `${registry.host}/cli/app:1`, {
      credentials: async () => ({ username: "alice", password: "wonderland" }),
    });
  });
  after(async () => {
    await registry.stop();
    if (work) await removeTree(work);
  });

  test("without a login, pull fails with a hint to log in", async () => {
    assertCleanFailure(
      await runLocald(["image", "pull", `${registry.host}/cli/app:1`], { env: env() }),
      /locald login/,
    );
  });

  test("login with a wrong password fails and saves nothing", async () => {
    const result = await runLocald(["login", registry.host, "-u", "alice", "--password-stdin"], {
      env: env(),
      input: "wrong-pass\n",
    });
    assertCleanFailure(result, /rejected|authentication/);
    assert.doesNotMatch(result.stderr + result.stdout, /wrong-pass/);
    await assert.rejects(stat(join(dockerConfig, "config.json")));
  });

  test("login, pull, inspect, ls, rm, prune, logout", async () => {
    const login = await runLocald(["login", registry.host, "-u", "alice", "--password-stdin"], {
      env: env(),
      input: "wonderland\n",
    });
    assert.equal(login.code, 0, login.stderr);
    const config = JSON.parse(await readFile(join(dockerConfig, "config.json"), "utf8")) as {
      auths: Record<string, { auth: string }>;
    };
    assert.equal(
      Buffer.from(config.auths[registry.host]?.auth ?? "", "base64").toString(),
      "alice:wonderland",
    );
    assert.equal((await stat(join(dockerConfig, "config.json"))).mode & 0o777, 0o600);

    const ref = `${registry.host}/cli/app:1`;
    const pulled = await runLocald(["image", "pull", "--json", ref], { env: env() });
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal((JSON.parse(pulled.stdout) as { digest: string }).digest, digest);
    assert.doesNotMatch(pulled.stderr + pulled.stdout, /wonderland/);

    const raw = await runLocald(["image", "inspect", "--raw", "manifest", ref], { env: env() });
    assert.equal(raw.code, 0, raw.stderr);
    const { createHash } = await import("node:crypto");
    assert.equal(
      `sha256:${createHash("sha256").update(raw.stdout).digest("hex")}`,
      digest,
      "raw manifest is byte-exact",
    );
    const inspected = await runLocald(["image", "inspect", "--json", ref], { env: env() });
    assert.deepEqual(
      (JSON.parse(inspected.stdout) as { config: { Entrypoint: string[] } }).config.Entrypoint,
      ["/bin/app"],
    );

    const listed = await runLocald(["image", "ls", "--json"], { env: env() });
    assert.deepEqual(
      (JSON.parse(listed.stdout) as { name: string }[]).map((i) => i.name),
      [ref],
    );
    const removed = await runLocald(["image", "rm", ref], { env: env() });
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(removed.stdout, /Deleted 4 blob/);
    const emptyList = await runLocald(["image", "ls", "-q"], { env: env() });
    assert.equal(emptyList.stdout, "");
    assertCleanFailure(await runLocald(["image", "rm", ref], { env: env() }), /No such image/);

    const logout = await runLocald(["logout", registry.host], { env: env() });
    assert.equal(logout.code, 0);
    const after = JSON.parse(await readFile(join(dockerConfig, "config.json"), "utf8")) as {
      auths: Record<string, unknown>;
    };
    assert.equal(after.auths[registry.host], undefined);
  });

  test("a docker credential helper supplies the login", async (t) => {
    const dir = await tempDir(t);
    const bin = join(dir, "bin");
    await mkdir(bin);
    const helper = join(bin, "docker-credential-e2etest");
    await writeFile(
      helper,
      `#!/bin/sh\nread server\nif [ "$1" = get ] && [ "$server" = "${registry.host}" ]; then echo '{"ServerURL":"'$server'","Username":"alice","Secret":"wonderland"}'; exit 0; fi\necho "credentials not found in native keychain"; exit 1\n`,
    );
    await chmod(helper, 0o755);
    const configDir = join(dir, "docker");
    await mkdir(configDir);
    await writeFile(
      join(configDir, "config.json"),
      JSON.stringify({ credHelpers: { [registry.host]: "e2etest" } }),
    );
    const result = await runLocald(["image", "pull", "-q", `${registry.host}/cli/app:1`], {
      env: { LOCALD_HOME: join(dir, "home"), DOCKER_CONFIG: configDir, PATH: `${bin}:${process.env.PATH}` },
    });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), digest);
  });
});

describe("CLI bad input", () => {
  let registry: TestRegistry;
  let home: string | undefined;
  before(async () => {
    registry = await startRegistry({ flavour: "anonymous" });
    home = await mkdtemp("/tmp/locald-bad-");
    const layout = await OciLayout.open(join(home, "src"), { create: true });
    const image = await sampleImage(layout, { seed: 81 });
    await layout.addManifest(image.descriptor, "app");
    await push({ kind: "layout", dir: layout.root, name: "app" }, `${registry.host}/bad/app:1`);
  });
  after(async () => {
    await registry.stop();
    if (home) await removeTree(home);
  });

  test("malformed references", async () => {
    for (const ref of ["library/UPPER", "a b", "repo:tag:extra!", "x@sha256:abc", ""]) {
      assertCleanFailure(
        await runLocald(["image", "pull", ref], { env: { LOCALD_HOME: home } }),
        /not a valid image reference/,
      );
    }
  });

  test("unknown image and unknown platform", async () => {
    assertCleanFailure(
      await runLocald(["image", "pull", `${registry.host}/bad/none:1`], { env: { LOCALD_HOME: home } }),
      /was not found/,
    );
    assertCleanFailure(
      await runLocald(["image", "pull", "--platform", "linux/riscv64", `${registry.host}/bad/app:1`], {
        env: { LOCALD_HOME: home },
      }),
      /linux\/riscv64/,
    );
    assertCleanFailure(
      await runLocald(["image", "pull", "--platform", "nonsense", `${registry.host}/bad/app:1`], {
        env: { LOCALD_HOME: home },
      }),
      /not a valid platform/,
    );
  });

  test("corrupt manifest and digest mismatch", async (t) => {
    const proxy = await startFaultProxy({ target: registry.url });
    t.after(() => proxy.stop());
    proxy.addFault({
      method: "GET",
      path: /\/manifests\//,
      times: Number.POSITIVE_INFINITY,
      kind: "status",
      status: 200,
      body: "{not json",
      headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
    });
    assertCleanFailure(
      await runLocald(["image", "pull", `${proxy.host}/bad/app:1`], { env: { LOCALD_HOME: home } }),
      /manifest/i,
    );
    proxy.clearFaults();
    proxy.addFault({ method: "GET", path: /\/blobs\//, times: Number.POSITIVE_INFINITY, kind: "flip" });
    assertCleanFailure(
      await runLocald(["image", "pull", `${proxy.host}/bad/app:1`], { env: { LOCALD_HOME: home } }),
      /does not match its digest/,
    );
  });

  test("usage errors exit 2", async () => {
    const result = await runLocald(["image", "pull"], { env: { LOCALD_HOME: home } });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /missing required argument/);
    assert.equal(
      (await runLocald(["login", registry.host, "-u", "x"], { env: { LOCALD_HOME: home } })).code,
      2,
    );
    for (const count of ["0", "-1", "1.5", "many"]) {
      const refused = await runLocald(
        ["image", "pull", "--concurrency", count, `${registry.host}/cli/app:1`],
        {
          env: { LOCALD_HOME: home },
        },
      );
      assert.equal(refused.code, 2, `--concurrency ${count}`);
      assert.match(refused.stderr, /positive whole number/);
    }
  });

  test("LOCALD_HOME that is a file: every command says so, in words", async () => {
    const file = join(home as string, "not-a-home");
    await writeFile(file, "x");
    for (const args of [
      ["container", "ls"],
      ["container", "run", "--rm", `${registry.host}/bad/app:1`, "true"],
      ["image", "ls"],
    ]) {
      const result = await runLocald(args, { env: { LOCALD_HOME: file } });
      assert.equal(result.code, 1, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, /not-a-home/, args.join(" "));
      assert.doesNotMatch(result.stderr, /unexpected|ENOTDIR|\n\s+at /, args.join(" "));
    }
    assert.equal(await readFile(file, "utf8"), "x", "the file is left as it was");
  });

  test("--env-file reaches locald, not Node, on every Node line (the installed bin, run by its #! line)", async () => {
    const node = process.execPath;
    for (const args of [
      ["container", "run", "--env-file", "/nonexistent/env", "x"],
      ["build", ".", "--env-file", "/nonexistent/env"],
    ]) {
      const child = await new Promise<CliResult>((resolve) => {
        execFile(
          LOCALD_BIN,
          args,
          {
            env: {
              ...process.env,
              PATH: `${dirname(node)}:${process.env.PATH}`,
              LOCALD_HOME: home,
              NO_COLOR: "1",
            },
          },
          (error, stdout, stderr) =>
            resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        );
      });
      assert.equal(child.code, 2, child.stderr);
      assert.match(
        child.stderr,
        /^Error: Cannot read the --env-file \/nonexistent\/env: it does not exist\.$/m,
      );
      assert.doesNotMatch(child.stderr, /not found|unexpected|\n\s+at /);
    }
  });

  test("a registry nobody answers at, and a name that does not resolve, are said in words", async () => {
    const refused = await runLocald(["image", "pull", "127.0.0.1:9/x"], { env: { LOCALD_HOME: home } });
    assertCleanFailure(
      refused,
      /Cannot reach .*127\.0\.0\.1:9.*: nothing is listening there \(connection refused\)/,
    );
    const unresolved = await runLocald(["image", "pull", "registry.invalid/x"], {
      env: { LOCALD_HOME: home },
    });
    assertCleanFailure(unresolved, /Cannot reach .*registry\.invalid.*: the host name does not resolve/);
  });

  test("up without a locald.toml says what a minimal one looks like", async () => {
    const empty = await mkdtemp(join(home as string, "no-project-"));
    const result = await runLocald(["up"], { env: { LOCALD_HOME: home }, cwd: empty });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /No locald\.toml in /);
    assert.match(result.stderr, /\[services\.web\.build\]\npath = "\."/);
    assert.doesNotMatch(result.stderr, /unexpected|\n\s+at /);
  });
});
