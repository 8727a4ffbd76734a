import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, chown, mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { OciLayout, push } from "@locald/oci";
import {
  assertBlobsVerify,
  LOCALD_BIN,
  sampleImage,
  startRegistry,
  type TestRegistry,
  unprivilegedUser,
} from "../src/index.js";

const run = promisify(execFile);
describe("as an unprivileged user", () => {
  let registry: TestRegistry;
  let work: string;
  before(async () => {
    registry = await startRegistry({ flavour: "basic", users: { bob: "builder" } });
    work = await mkdtemp("/tmp/locald-user-");
    await chmod(work, 0o755);
  });
  after(async () => {
    await registry.stop();
    await rm(work, { recursive: true, force: true });
  });

  test("login, pull into the store, push from it and re-pull, as a non-root user", async () => {
    const { uid, gid } = await unprivilegedUser();
    assert.notEqual(uid, 0, "the test user is not root");
    const layout = await OciLayout.open(join(work, "src"), { create: true });
    const image = await sampleImage(layout, { seed: 111 });
    await layout.addManifest(image.descriptor, "app");
    await push({ kind: "layout", dir: layout.root, name: "app" }, `${registry.host}/user/app:1`, {
      credentials: async () => ({ username: "bob", password: "builder" }),
    });
    const home = join(work, "home");
    await run("mkdir", ["-p", home]);
    await chown(home, uid, gid);
    const asUser = (args: string[], input?: string) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        const child = execFile(
          "setpriv",
          [`--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", "--", process.execPath, LOCALD_BIN, ...args],
          { env: { PATH: process.env.PATH, HOME: home, LOCALD_HOME: join(home, "locald"), NO_COLOR: "1" } },
          (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
        );
        child.stdin?.end(input ?? "");
      });
    const login = await asUser(["login", registry.host, "-u", "bob", "--password-stdin"], "builder\n");
    assert.equal(login.code, 0, login.stderr);
    const ref = `${registry.host}/user/app:1`;
    const pulled = await asUser(["image", "pull", "-q", ref]);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal(pulled.stdout.trim(), image.descriptor.digest);
    const pushed = await asUser(["image", "push", "-q", ref, `${registry.host}/user/copy:2`]);
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.equal(pushed.stdout.trim(), image.descriptor.digest);
    const again = await asUser(["image", "pull", "--json", ref]);
    assert.equal((JSON.parse(again.stdout) as { upToDate: boolean }).upToDate, true);
    await assertBlobsVerify(join(home, "locald", "store"));
    const { stat } = await import("node:fs/promises");
    assert.equal((await stat(join(home, "locald", "store"))).uid, uid, "the store belongs to the user");
  });
});
