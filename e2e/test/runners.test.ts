/**
 * The ContainerRuntime seam: one process in a root filesystem with bind mounts, by runc and by
 * bubblewrap, as root and as an unprivileged user; bubblewrap over the host's own OS; and a
 * hostile root whose mount point is a symlink to the host.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { removeTree } from "@locald/oci";
import { makeTempDir, requireBinary, TEST_CALLERS, unprivilegedUser } from "../src/index.js";

const execFileAsync = promisify(execFile);
const OCI = fileURLToPath(new URL("../../../packages/oci/dist/src/index.js", import.meta.url));

interface Outcome {
  code?: number;
  out?: string;
  error?: { code: string; message: string };
}

/** Runs one sandboxed process through the library, in a child node process as `as` (or root). */
async function sandbox(
  runtime: "runc" | "bubblewrap",
  request: Record<string, unknown>,
  home: string,
  as?: { uid: number; gid: number },
): Promise<Outcome> {
  const script = `
    import { RuncRuntime, BubblewrapRuntime } from ${JSON.stringify(OCI)};
    const request = JSON.parse(process.argv[1]);
    let out = "";
    try {
      const runtime = ${runtime === "runc" ? "await RuncRuntime.find(process.env.LOCALD_HOME)" : "await BubblewrapRuntime.find()"};
      const code = await runtime.run({ ...request, output: (chunk) => { out += chunk; } });
      process.stdout.write(JSON.stringify({ code, out }));
    } catch (error) {
      process.stdout.write(JSON.stringify({ error: { code: error.code, message: error.message } }));
    }`;
  const command = [process.execPath, "--input-type=module", "-e", script, JSON.stringify(request)];
  const [file, ...args] = as
    ? ["setpriv", `--reuid=${as.uid}`, `--regid=${as.gid}`, "--clear-groups", "--", ...command]
    : command;
  const { stdout } = await execFileAsync(file as string, args, {
    // HIDDEN must not reach the sandboxed process: its environment is exactly the one asked for.
    env: {
      PATH: process.env.PATH,
      HOME: home,
      LOCALD_HOME: join(home, "locald"),
      XDG_RUNTIME_DIR: home,
      HIDDEN: "leak",
    },
  });
  return JSON.parse(stdout) as Outcome;
}

let work: string;
let busybox: string;
before(async () => {
  await requireBinary("runc");
  await requireBinary("bwrap");
  busybox = await requireBinary("busybox");
  work = await makeTempDir("runners");
  await chmod(work, 0o755);
});
after(async () => {
  if (work) await removeTree(work);
});

for (const who of TEST_CALLERS) {
  for (const runtime of ["runc", "bubblewrap"] as const) {
    describe(`${runtime}, as ${who}`, () => {
      let home: string;
      let root: string;
      let as: { uid: number; gid: number } | undefined;
      before(async () => {
        home = join(work, `${runtime}-${who === "root" ? "root" : "user"}`);
        root = join(home, "rootfs");
        await mkdir(join(root, "bin"), { recursive: true });
        await writeFile(join(root, "bin", "busybox"), await readFile(busybox), { mode: 0o755 });
        for (const applet of ["sh", "id", "cat", "pwd", "echo", "ls"])
          await symlink("busybox", join(root, "bin", applet));
        await mkdir(join(home, "in"));
        await writeFile(join(home, "in", "file"), "from the host\n");
        await mkdir(join(home, "out"));
        await chmod(home, 0o755);
        if (who !== "root") {
          as = await unprivilegedUser();
          await execFileAsync("chown", ["-R", `${as.uid}:${as.gid}`, home]);
        }
      });

      test("runs one process in a root with env, cwd, ids and bind mounts", async () => {
        const result = await sandbox(
          runtime,
          {
            root,
            args: [
              "/bin/sh",
              "-c",
              'echo "$X $(id -u):$(id -g) $(pwd) [$HIDDEN]"; cat /in/file; echo out > /out/file; (echo x > /in/new) 2>/dev/null || echo ro',
            ],
            env: ["X=1", "PATH=/bin"],
            cwd: "/in",
            mounts: [
              { source: join(home, "in"), destination: "/in", readonly: true },
              { source: join(home, "out"), destination: "/out", readonly: false },
            ],
          },
          home,
          as,
        );
        assert.equal(result.code, 0, JSON.stringify(result));
        assert.equal(result.out, "1 0:0 /in []\nfrom the host\nro\n");
        assert.equal(await readFile(join(home, "out", "file"), "utf8"), "out\n");
      });

      test("a mount point that is a symlink in the root is refused (or kept inside it)", async () => {
        const hostile = join(home, "hostile");
        await mkdir(join(hostile, "bin"), { recursive: true });
        await writeFile(join(hostile, "bin", "busybox"), await readFile(busybox), { mode: 0o755 });
        await symlink("busybox", join(hostile, "bin", "sh"));
        const target = join(home, "host-target");
        await mkdir(target);
        await symlink(target, join(hostile, "workspace"));
        const project = join(home, "project");
        await mkdir(project);
        if (as) await execFileAsync("chown", ["-R", "-h", `${as.uid}:${as.gid}`, hostile, target, project]);
        const result = await sandbox(
          runtime,
          {
            root: hostile,
            args: ["/bin/sh", "-c", "echo pwned > /workspace/file; true"],
            env: ["PATH=/bin"],
            cwd: "/",
            mounts: [{ source: project, destination: "/workspace", readonly: false }],
          },
          home,
          as,
        );
        if (runtime === "bubblewrap") {
          assert.equal(result.error?.code, "CONTAINER_CONFIG", JSON.stringify(result));
          assert.match(result.error?.message ?? "", /\/workspace in the root is a symlink/);
        } else {
          // runc resolves the link inside the root and mounts there: the write lands in the mount.
          assert.equal(result.code, 0, JSON.stringify(result));
          assert.equal(await readFile(join(project, "file"), "utf8"), "pwned\n");
        }
        await assert.rejects(readFile(join(target, "file")), "nothing reached the link's host target");
      });

      if (runtime === "bubblewrap")
        test("the host's own OS, read-only, with the project mounted at /workspace", async () => {
          const result = await sandbox(
            runtime,
            {
              root: "host",
              args: [
                "/bin/sh",
                "-c",
                "cat /workspace/file; cat /etc/debian_version >/dev/null && echo host-os; touch /usr/x 2>/dev/null || echo ro",
              ],
              env: ["PATH=/usr/bin:/bin"],
              cwd: "/workspace",
              mounts: [{ source: join(home, "in"), destination: "/workspace", readonly: false }],
            },
            home,
            as,
          );
          assert.equal(result.code, 0, JSON.stringify(result));
          assert.equal(result.out, "from the host\nhost-os\nro\n");
        });

      if (runtime === "bubblewrap")
        test("a shared root is shown read-only and never written, even where its mount points are links", async () => {
          const shared = join(home, "shared");
          await mkdir(join(shared, "bin"), { recursive: true });
          await writeFile(join(shared, "bin", "busybox"), await readFile(busybox), { mode: 0o755 });
          for (const applet of ["sh", "cat", "id", "touch", "ls"])
            await symlink("busybox", join(shared, "bin", applet));
          await mkdir(join(shared, "etc"));
          await writeFile(join(shared, "etc", "os-release"), "ID=shared\n");
          await writeFile(join(shared, "etc", "resolv.conf"), "nameserver 192.0.2.1\n");
          const target = join(home, "shared-target");
          await mkdir(target);
          // A hostile image's mount point: bound over, never followed.
          await symlink(target, join(shared, "workspace"));
          if (as) await execFileAsync("chown", ["-R", "-h", `${as.uid}:${as.gid}`, shared, target]);
          const before = (await execFileAsync("find", [shared, "-printf", "%p %M %s\n"])).stdout;
          const result = await sandbox(
            runtime,
            {
              root: { shared },
              args: [
                "/bin/sh",
                "-c",
                "cat /etc/os-release /workspace/file; id -u; (touch /bin/x || touch /etc/x) 2>/dev/null || echo ro; " +
                  "touch /tmp/x /layers/y && echo writable; cat /etc/resolv.conf | grep -c 192.0.2.1 || true",
              ],
              env: ["PATH=/bin"],
              cwd: "/workspace",
              uid: 1000,
              gid: 1000,
              mounts: [
                { source: join(home, "in"), destination: "/workspace", readonly: true },
                { source: join(home, "out"), destination: "/layers", readonly: false },
              ],
            },
            home,
            as,
          );
          assert.equal(result.code, 0, JSON.stringify(result));
          // The host's resolv.conf replaces the image's, so a build resolves names as the host does.
          assert.equal(result.out, "ID=shared\nfrom the host\n1000\nro\nwritable\n0\n");
          assert.equal((await execFileAsync("find", [shared, "-printf", "%p %M %s\n"])).stdout, before);
          await assert.rejects(readFile(join(target, "file")), "nothing reached the link's host target");
        });
    });
  }
}
