import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, type TestContext, test } from "node:test";
import { ExecutableError } from "../src/errors.js";
import { checkExecutable } from "../src/runtime/executable.js";

/** An image root with a program, a script, a script whose interpreter is missing, and oddities. */
async function imageRoot(t: TestContext): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "oci-exec-"));
  t.after(() => rm(root, { recursive: true, force: true }));
  await mkdir(join(root, "bin"));
  await mkdir(join(root, "app"));
  await writeFile(join(root, "bin/sh"), "ELF", { mode: 0o755 });
  await writeFile(join(root, "app/run"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
  await writeFile(join(root, "app/py"), "#!/usr/bin/python3 -u\n", { mode: 0o755 });
  await writeFile(join(root, "app/data"), "x", { mode: 0o644 });
  await symlink("/bin/sh", join(root, "app/shell"));
  // A link that leaves the image: it must not find the host's /bin/sh.
  await symlink("../../../../../../../../usr/bin/env", join(root, "app/escape"));
  await chmod(join(root, "app/data"), 0o644);
  return root;
}

const run = (args: string[], cwd = "/", path = "/usr/bin:/bin") => ({
  args,
  env: [`PATH=${path}`, "HOME=/"],
  cwd,
});

function refused(fn: () => unknown, status: 126 | 127, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ExecutableError, String(error));
    assert.equal(error.code, "EXECUTABLE");
    assert.equal(error.exitStatus, status);
    assert.match(error.message, pattern);
    return true;
  });
}

describe("checkExecutable", () => {
  test("finds programs by path, on PATH, relative to the working directory and through links", async (t) => {
    const root = await imageRoot(t);
    assert.deepEqual(checkExecutable(root, run(["/bin/sh", "-c", "x"])), { kind: "found", path: "/bin/sh" });
    assert.deepEqual(checkExecutable(root, run(["sh"])), { kind: "found", path: "/bin/sh" });
    assert.deepEqual(checkExecutable(root, run(["./run"], "/app")), { kind: "found", path: "/app/run" });
    assert.deepEqual(checkExecutable(root, run(["/app/shell"])), { kind: "found", path: "/app/shell" });
  });

  test("a missing program is 127, one that is not executable or a directory 126", async (t) => {
    const root = await imageRoot(t);
    refused(() => checkExecutable(root, run(["/bin/nope"])), 127, /\/bin\/nope .*no such file/);
    refused(() => checkExecutable(root, run(["nope"])), 127, /"nope" .*no such program on the image's PATH/);
    refused(() => checkExecutable(root, run(["sh"], "/", "")), 127, /PATH \(empty\)/);
    refused(() => checkExecutable(root, run(["/app/data"])), 126, /not executable/);
    refused(() => checkExecutable(root, run(["/app"])), 126, /a directory/);
    refused(() => checkExecutable(root, run(["/app/py"])), 127, /script for \/usr\/bin\/python3/);
    // Resolved inside the image: the host's /usr/bin/env does not count.
    refused(() => checkExecutable(root, run(["/app/escape"])), 127, /no such file/);
  });

  test("a program under a bind mount is the mount's, not the image's, to have", async (t) => {
    const root = await imageRoot(t);
    assert.deepEqual(checkExecutable(root, run(["/work/tool"]), ["/work"]), {
      kind: "mounted",
      path: "/work/tool",
    });
    assert.deepEqual(checkExecutable(root, run(["tool"], "/", "/work/bin:/bin"), ["/work"]), {
      kind: "mounted",
      path: "/work/bin/tool",
    });
  });
});
