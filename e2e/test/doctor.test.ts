import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { OciLayout, push } from "@locald/oci";
import {
  type CliResult,
  callerIn,
  runLocald,
  sampleImage,
  startRegistry,
  TEST_CALLERS,
  type TestCaller,
  type TestRegistry,
  tempDir,
} from "../src/index.js";

const run = promisify(execFile);

interface Check {
  check: string;
  status: "ok" | "warn" | "fail";
  detail: string;
  fix: string | null;
}

function parseChecks(result: CliResult): Check[] {
  const checks = JSON.parse(result.stdout) as Check[];
  assert.ok(Array.isArray(checks), result.stdout);
  return checks;
}

const named = (checks: readonly Check[], name: string): Check => {
  const found = checks.find((c) => c.check === name);
  assert.ok(found, `a "${name}" check in ${JSON.stringify(checks)}`);
  return found;
};

/** A temporary directory the test user can enter (mkdtemp makes it 0700). */
async function reachable(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await tempDir(t, "locald-doctor-");
  await chmod(dir, 0o755);
  return dir;
}

/** doctor as `who`, with a HOME and LOCALD_HOME of its own. */
async function doctor(
  t: { after: (fn: () => Promise<void>) => void },
  who: TestCaller,
  args: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<CliResult> {
  const { as, env: homeEnv } = await callerIn(who, join(await reachable(t), "home"));
  return runLocald(["doctor", ...args], { ...(as ? { as } : {}), env: { ...homeEnv, ...env } });
}

describe("locald doctor", () => {
  for (const who of TEST_CALLERS)
    test(`this machine has what locald needs, as ${who}: no fail, exit 0`, async (t) => {
      const text = await doctor(t, who);
      assert.equal(text.code, 0, `${text.stdout}${text.stderr}`);
      assert.doesNotMatch(text.stdout, /^fail /m, text.stdout);
      assert.match(text.stdout, /^ok {4}user namespaces {2,}bubblewrap made one/m, text.stdout);
      assert.match(text.stdout, /^ok {4}go {2,}not needed/m);
      const checks = parseChecks(await doctor(t, who, ["--json"]));
      assert.deepEqual(
        checks.filter((c) => c.status === "fail"),
        [],
      );
      for (const name of ["user namespaces", "runc", "bubblewrap", "disk space (store)", "zstd"])
        assert.equal(named(checks, name).status, "ok", JSON.stringify(named(checks, name)));
      // The suite's test user has subordinate ids (util.ts gives them), root needs none.
      assert.equal(named(checks, "subordinate ids").status, "ok");
    });

  test("--json: an array of {check, status, detail, fix}, fix null when ok", async (t) => {
    const result = await doctor(t, "root", ["--json"]);
    assert.equal(result.code, 0, result.stderr);
    const checks = parseChecks(result);
    assert.ok(checks.length >= 8);
    for (const c of checks) {
      assert.deepEqual(Object.keys(c).sort(), ["check", "detail", "fix", "status"]);
      assert.ok(["ok", "warn", "fail"].includes(c.status), c.status);
      assert.equal(typeof c.check, "string");
      assert.ok(c.detail.length > 0);
      if (c.status === "ok") assert.equal(c.fix, null);
      else assert.equal(typeof c.fix, "string", `${c.check} says how to fix it`);
    }
  });

  test("a missing runc is a fail with the fix, and exit 1", async (t) => {
    // runc is looked for on PATH and then in the system directories, so a PATH without it still
    // finds /usr/sbin/runc; LOCALD_RUNC is where the runtime looks instead, as for every command.
    const text = await doctor(t, "an unprivileged user", [], { LOCALD_RUNC: "/nonexistent/runc" });
    assert.equal(text.code, 1, text.stdout);
    assert.match(
      text.stdout,
      /^fail {2}runc {2,}Cannot run containers: the runc program was not found at \/nonexistent\/runc\./m,
    );
    assert.match(text.stdout, /fix: LOCALD_RUNC names \/nonexistent\/runc: .*apt-get install runc/);
    assert.equal(text.stderr, "", "the failure is a line of the report, not an error");
    const runc = named(
      parseChecks(await doctor(t, "root", ["--json"], { LOCALD_RUNC: "/nonexistent/runc" })),
      "runc",
    );
    assert.equal(runc.status, "fail");
    assert.match(runc.detail, /It runs images: container run/);
  });

  describe("a user without subordinate ids", () => {
    const user = "locald-e2e-nosubid";
    let ids: { uid: number; gid: number } | undefined;
    before(async () => {
      if (process.getuid?.() !== 0) return;
      await run("id", ["-u", user]).catch(() =>
        run("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]),
      );
      const id = async (flag: string) => Number((await run("id", [flag, user])).stdout.trim());
      ids = { uid: await id("-u"), gid: await id("-g") };
    });
    after(async () => {
      if (ids !== undefined) await run("userdel", [user]).catch(() => undefined);
    });

    test("a warning (not a fail) saying what still works, with the usermod to run", async (t) => {
      if (ids === undefined) return t.skip("needs root, to add a user");
      const subuid = await readFile("/etc/subuid", "utf8").catch(() => "");
      assert.ok(!subuid.split("\n").some((line) => line.startsWith(`${user}:`)), "the user has no range");
      const home = join(await reachable(t), "home");
      const { env } = await callerIn("root", home);
      await run("chown", ["-R", `${ids.uid}:${ids.gid}`, home]);
      const result = await runLocald(["doctor", "--json"], { as: ids, env });
      assert.equal(result.code, 0, result.stdout);
      const check = named(parseChecks(result), "subordinate ids");
      assert.equal(check.status, "warn");
      assert.match(check.detail, new RegExp(`no range in /etc/subuid, no range in /etc/subgid for ${user}`));
      assert.match(check.detail, /Builds are unaffected/);
      assert.match(
        check.fix ?? "",
        new RegExp(`usermod --add-subuids \\d+-\\d+ --add-subgids \\d+-\\d+ ${user}`),
      );
    });
  });

  describe("--registry", () => {
    let open: TestRegistry;
    let locked: TestRegistry;
    before(async () => {
      [open, locked] = await Promise.all([
        startRegistry({ flavour: "anonymous" }),
        startRegistry({ flavour: "basic", users: { alice: "wonderland" } }),
      ]);
    });
    after(async () => {
      await Promise.all([open?.stop(), locked?.stop()]);
    });

    test("a registry serving the image: ok, with its digest", async (t) => {
      const layout = await OciLayout.open(join(await tempDir(t, "locald-doctor-"), "src"), { create: true });
      const image = await sampleImage(layout, { seed: 191 });
      await layout.addManifest(image.descriptor, "app");
      await push({ kind: "layout", dir: layout.root, name: "app" }, `${open.host}/doctor/app:1`);
      const result = await doctor(t, "an unprivileged user", [
        "--json",
        "--registry",
        `${open.host}/doctor/app:1`,
      ]);
      assert.equal(result.code, 0, result.stdout);
      const check = named(parseChecks(result), `registry ${open.host}`);
      assert.equal(check.status, "ok", check.detail);
      assert.equal(
        check.detail,
        `answers at http://${open.host}; ${open.host}/doctor/app:1 is ${image.descriptor.digest}`,
      );
    });

    test("a registry that needs a login: a warning with the login command", async (t) => {
      const result = await doctor(t, "root", ["--registry", `${locked.host}/doctor/app:1`]);
      assert.equal(result.code, 0, result.stdout);
      assert.match(
        result.stdout,
        new RegExp(
          `^warn  registry ${locked.host} +answers at http://${locked.host}, but needs a login`,
          "m",
        ),
      );
      assert.match(
        result.stdout,
        new RegExp(`fix: Run: locald login ${locked.host} -u <user> --password-stdin`),
      );
    });

    test("nothing listening: a fail in words, exit 1", async (t) => {
      const result = await doctor(t, "root", ["--registry", "127.0.0.1:9/doctor/app:1"]);
      assert.equal(result.code, 1, result.stdout);
      assert.match(
        result.stdout,
        /^fail {2}registry 127\.0\.0\.1:9 +unreachable: Cannot reach https:\/\/127\.0\.0\.1:9\/v2\/: nothing is listening there \(connection refused\)/m,
      );
      assert.doesNotMatch(result.stdout + result.stderr, /\n\s+at /, "no stack trace");
    });

    test("a reference that is not one: a usage error", async (t) => {
      const result = await doctor(t, "root", ["--registry", "not a ref"]);
      assert.equal(result.code, 2);
      assert.match(result.stderr, /^Error: --registry: "not a ref" is not a valid image reference/);
    });
  });
});
