import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, type TestContext, test } from "node:test";
import { anonymous, staticCredentials } from "../src/registry/auth.js";
import {
  bubblewrapCheck,
  cgroupCheck,
  checkRegistry,
  DISK_FAIL_BYTES,
  DISK_WARN_BYTES,
  diskCheck,
  freeSubordinateRange,
  type HostCheck,
  type HostFacts,
  judgeHost,
  runcCheck,
  subordinateIdCheck,
  userNamespaceCheck,
  zstdCheck,
} from "../src/runtime/host-checks.js";

const GiB = 1024 ** 3;

/** A machine where everything is in order, for an unprivileged user. */
function machine(change: Partial<HostFacts> = {}): HostFacts {
  return {
    caller: { uid: 1000, name: "dev", root: false },
    sysctls: { maxUserNamespaces: "63000" },
    userNamespaceProbe: { ok: true },
    subordinate: {
      subuids: { start: 100000, count: 65536 },
      subgids: { start: 100000, count: 65536 },
      taken: [{ start: 100000, count: 65536 }],
      newuidmap: "/usr/bin/newuidmap",
      newgidmap: "/usr/bin/newgidmap",
    },
    runc: { path: "/usr/sbin/runc", version: "1.1.5" },
    runcPreferred: undefined,
    bwrap: { path: "/usr/bin/bwrap", version: "0.8.0" },
    cgroup: {
      mode: "unified",
      own: "/user.slice/user-1000.slice/user@1000.service/app.slice/locald.scope",
      delegated: {
        path: "/user.slice/user-1000.slice/user@1000.service",
        controllers: ["cpu", "memory", "pids"],
      },
      writable: false,
    },
    disks: [
      {
        role: "store",
        path: "/home/dev/.local/share/locald",
        existing: "/home/dev",
        free: 80 * GiB,
        writable: true,
      },
    ],
    zstd: { program: "/usr/bin/zstd", native: false, node: "v20.19.0" },
    ...change,
  };
}

const root = { uid: 0, name: "root", root: true };

describe("judgeHost", () => {
  test("a machine in order: every line ok, Go among them", () => {
    const checks = judgeHost(machine());
    assert.deepEqual(
      checks.map((c) => c.status),
      checks.map(() => "ok"),
      JSON.stringify(checks, null, 2),
    );
    assert.deepEqual(
      checks.map((c) => c.check),
      [
        "user namespaces",
        "subordinate ids",
        "runc",
        "bubblewrap",
        "cgroups",
        "disk space (store)",
        "zstd",
        "go",
      ],
    );
    for (const c of checks) assert.equal(c.fix, undefined, `${c.check} has no fix when ok`);
    assert.match(checks.find((c) => c.check === "go")?.detail ?? "", /not needed/);
  });
});

describe("user namespaces", () => {
  test("the probe's success is ok, with the kernel's settings said", () => {
    const check = userNamespaceCheck(machine());
    assert.equal(check.status, "ok");
    assert.match(check.detail, /bubblewrap made one as dev/);
    assert.match(check.detail, /user\.max_user_namespaces = 63000/);
  });

  test("the probe's failure is a fail with bubblewrap's words, the settings to blame and the fix", () => {
    const check = userNamespaceCheck(
      machine({
        sysctls: { unprivilegedUsernsClone: "0", maxUserNamespaces: "63000" },
        userNamespaceProbe: {
          ok: false,
          message:
            "The sandbox could not be set up: bubblewrap cannot create a user namespace here (No permissions).",
          hint: "Enable them.",
        },
      }),
    );
    assert.equal(check.status, "fail");
    assert.match(check.detail, /cannot create a user namespace/);
    assert.match(check.detail, /The kernel's settings: kernel\.unprivileged_userns_clone = 0, user\.max/);
    assert.equal(check.fix, "Enable them.");
  });

  test("without bubblewrap the settings decide: forbidden is a fail, allowed a warning", () => {
    const forbidden = userNamespaceCheck(
      machine({ userNamespaceProbe: undefined, sysctls: { maxUserNamespaces: "0" } }),
    );
    assert.equal(forbidden.status, "fail");
    assert.match(forbidden.detail, /user\.max_user_namespaces = 0/);
    assert.match(forbidden.fix ?? "", /sysctl/);
    const untried = userNamespaceCheck(machine({ userNamespaceProbe: undefined }));
    assert.equal(untried.status, "warn");
    assert.match(untried.detail, /not tried/);
  });

  test("settings for unprivileged users do not bind root", () => {
    const check = userNamespaceCheck(
      machine({
        caller: root,
        userNamespaceProbe: undefined,
        sysctls: { unprivilegedUsernsClone: "0", apparmorRestrictUnprivilegedUserns: "1" },
      }),
    );
    assert.equal(check.status, "warn");
  });
});

describe("subordinate ids", () => {
  test("root needs none", () => {
    const check = subordinateIdCheck(
      machine({
        caller: root,
        subordinate: {
          subuids: undefined,
          subgids: undefined,
          taken: [],
          newuidmap: undefined,
          newgidmap: undefined,
        },
      }),
    );
    assert.equal(check.status, "ok");
    assert.match(check.detail, /not needed as root/);
  });

  test("a user with ranges and helpers is ok, the ranges said", () => {
    const check = subordinateIdCheck(machine());
    assert.equal(check.status, "ok");
    assert.match(check.detail, /uids 100000–165535 and gids 100000–165535 for dev/);
  });

  test("no range: a warning saying what still works, and a usermod with a free range", () => {
    const check = subordinateIdCheck(
      machine({
        subordinate: {
          subuids: undefined,
          subgids: undefined,
          taken: [{ start: 100000, count: 65536 }],
          newuidmap: "/usr/bin/newuidmap",
          newgidmap: "/usr/bin/newgidmap",
        },
      }),
    );
    assert.equal(check.status, "warn");
    assert.match(check.detail, /no range in \/etc\/subuid, no range in \/etc\/subgid for dev/);
    assert.match(check.detail, /Builds are unaffected/);
    assert.match(check.detail, /another user are refused/);
    assert.equal(check.fix, "As root: usermod --add-subuids 165536-231071 --add-subgids 165536-231071 dev.");
  });

  test("no helpers: the package to install", () => {
    const facts = machine();
    const check = subordinateIdCheck({
      ...facts,
      subordinate: { ...facts.subordinate, newgidmap: undefined },
    });
    assert.equal(check.status, "warn");
    assert.match(check.detail, /^no newgidmap for dev/);
    assert.match(check.fix ?? "", /apt-get install uidmap/);
    assert.doesNotMatch(check.fix ?? "", /usermod/);
  });

  test("a uid without a name still gets a usermod to fill in", () => {
    const facts = machine({ caller: { uid: 4242, name: undefined, root: false } });
    const check = subordinateIdCheck({ ...facts, subordinate: { ...facts.subordinate, subuids: undefined } });
    assert.match(check.detail, /for uid 4242/);
    assert.match(check.fix ?? "", /<your user name>\.$/);
  });
});

describe("freeSubordinateRange", () => {
  test("usermod's own start when nothing is taken", () =>
    assert.deepEqual(freeSubordinateRange([]), { start: 100000, count: 65536 }));
  test("past every range it would overlap, in any order", () =>
    assert.deepEqual(
      freeSubordinateRange([
        { start: 165536, count: 10 },
        { start: 100000, count: 65536 },
        { start: 300000, count: 65536 },
      ]),
      { start: 165546, count: 65536 },
    ));
  test("a gap big enough is used", () =>
    assert.deepEqual(freeSubordinateRange([{ start: 300000, count: 65536 }]), {
      start: 100000,
      count: 65536,
    }));
});

describe("runc and bubblewrap", () => {
  test("found: path, version and what each is for", () => {
    assert.match(runcCheck(machine()).detail, /^\/usr\/sbin\/runc, 1\.1\.5; runs images: container run/);
    assert.match(bubblewrapCheck(machine()).detail, /^\/usr\/bin\/bwrap, 0\.8\.0; runs builds/);
    assert.match(
      runcCheck(machine({ runc: { path: "/opt/runc", version: undefined } })).detail,
      /version unknown/,
    );
  });

  test("missing: a fail with the library's words and the install command", () => {
    const runc = runcCheck(
      machine({
        runc: {
          missing: "Cannot run containers: the runc program was not found.",
          hint: "Install it (Debian/Ubuntu: apt-get install runc; Fedora: dnf install runc) and try again.",
        },
      }),
    );
    assert.equal(runc.status, "fail");
    assert.match(runc.detail, /runc program was not found\. It runs images/);
    assert.match(runc.fix ?? "", /apt-get install runc/);
    const bwrap = bubblewrapCheck(
      machine({
        bwrap: { missing: "Cannot run builds: the bwrap program was not found.", hint: "Install it." },
      }),
    );
    assert.equal(bwrap.status, "fail");
    assert.equal(bwrap.fix, "Install it.");
  });

  test("LOCALD_RUNC naming nothing: the fix says so", () => {
    const check = runcCheck(
      machine({
        runcPreferred: "/nowhere/runc",
        runc: {
          missing: "Cannot run containers: the runc program was not found at /nowhere/runc.",
          hint: "Install it.",
        },
      }),
    );
    assert.match(
      check.fix ?? "",
      /^LOCALD_RUNC names \/nowhere\/runc: point it at the runc program, or unset it\. Install it\.$/,
    );
  });
});

describe("cgroups", () => {
  const cgroup = (change: Partial<HostFacts["cgroup"]>, caller = machine().caller): HostCheck =>
    cgroupCheck(machine({ caller, cgroup: { ...machine().cgroup, ...change } }));

  test("delegated v2 is ok, with where and which controllers", () => {
    const check = cgroup({});
    assert.equal(check.status, "ok");
    assert.match(
      check.detail,
      /delegated to dev at \/user\.slice.*user@1000\.service \(controllers: cpu memory pids\)/,
    );
  });

  test("v2 not delegated: a warning saying what is lost and how to get it", () => {
    const check = cgroup({ delegated: undefined, own: "/user.slice/user-1000.slice/session-3.scope" });
    assert.equal(check.status, "warn");
    assert.match(
      check.detail,
      /not delegated to dev \(its cgroup \/user\.slice\/user-1000\.slice\/session-3\.scope/,
    );
    assert.match(check.detail, /no memory or CPU limits/);
    assert.match(check.fix ?? "", /systemd-run --user --scope -p Delegate=yes/);
  });

  test("v1 for a user: cannot be delegated, a warning", () => {
    const check = cgroup({ mode: "hybrid", delegated: undefined });
    assert.equal(check.status, "warn");
    assert.match(check.detail, /cgroup v1 \(hybrid.*cannot be delegated/);
  });

  test("root: v2 writable is ok, v1 a warning, read-only a fail", () => {
    assert.equal(cgroup({ writable: true, delegated: undefined }, root).status, "ok");
    const v1 = cgroup({ mode: "legacy", writable: true }, root);
    assert.equal(v1.status, "warn");
    assert.match(v1.detail, /runc still gives each container a cgroup/);
    const readOnly = cgroup({ writable: false }, root);
    assert.equal(readOnly.status, "fail");
    assert.match(readOnly.detail, /cannot be written/);
    assert.match(readOnly.fix ?? "", /cgroupns=private/);
  });
});

describe("disk space", () => {
  const disk = (free: number | undefined, writable = true) =>
    diskCheck({ role: "store", path: "/data/locald", existing: "/data/locald", free, writable });

  test("thresholds: ok above 5 GiB, warn below, fail below 1 GiB", () => {
    assert.equal(disk(DISK_WARN_BYTES + 1).status, "ok");
    assert.match(disk(80 * GiB).detail, /^80\.0 GiB free at \/data\/locald$/);
    const low = disk(DISK_WARN_BYTES - 1);
    assert.equal(low.status, "warn");
    assert.match(low.fix ?? "", /locald image prune/);
    const full = disk(DISK_FAIL_BYTES - 1);
    assert.equal(full.status, "fail");
    assert.match(full.detail, /under 1\.0 GiB/);
  });

  test("a store to be made says where; one that cannot be written fails", () => {
    const later = diskCheck({
      role: "store",
      path: "/home/dev/x",
      existing: "/home/dev",
      free: 9 * GiB,
      writable: true,
    });
    assert.match(later.detail, /\/home\/dev\/x \(to be made under \/home\/dev\)/);
    const locked = disk(80 * GiB, false);
    assert.equal(locked.status, "fail");
    assert.match(locked.fix ?? "", /LOCALD_HOME/);
  });
});

describe("zstd", () => {
  test("the program, Node's own, or a warning naming both ways", () => {
    assert.equal(zstdCheck(machine()).status, "ok");
    const native = zstdCheck(machine({ zstd: { program: undefined, native: true, node: "v24.1.0" } }));
    assert.equal(native.status, "ok");
    assert.match(native.detail, /in-process: Node v24\.1\.0/);
    const none = zstdCheck(machine({ zstd: { program: undefined, native: false, node: "v20.19.0" } }));
    assert.equal(none.status, "warn");
    assert.match(none.detail, /gzip layers, most images, can/);
    assert.match(none.fix ?? "", /apt-get install zstd.*22\.15/);
  });
});

/** A plain-HTTP registry on loopback that answers with `handler`; its `host:port`. */
async function registry(
  t: TestContext,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<string> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const DIGEST = `sha256:${"a".repeat(64)}`;

/** /v2/ answers; a manifest HEAD gets `status` (200 with a descriptor's headers). */
const serving =
  (status: number, basicAuth = false) =>
  (req: IncomingMessage, res: ServerResponse) => {
    if (req.url !== "/v2/" && basicAuth && req.headers.authorization === undefined) {
      res.writeHead(401, { "www-authenticate": 'Basic realm="test"' }).end();
      return;
    }
    if (req.url === "/v2/" || status !== 200) {
      res.writeHead(req.url === "/v2/" ? 200 : status).end();
      return;
    }
    res
      .writeHead(200, {
        "content-type": "application/vnd.oci.image.manifest.v1+json",
        "docker-content-digest": DIGEST,
        "content-length": "100",
      })
      .end();
  };

describe("checkRegistry", () => {
  test("a registry serving the image: ok, with where and the digest", async (t) => {
    const host = await registry(t, serving(200));
    const check = await checkRegistry(`${host}/app:1`, { credentials: anonymous });
    assert.equal(check.status, "ok", check.detail);
    assert.equal(check.check, `registry ${host}`);
    assert.equal(check.detail, `answers at http://${host}; ${host}/app:1 is ${DIGEST}`);
  });

  test("no such image: a warning", async (t) => {
    const host = await registry(t, serving(404));
    const check = await checkRegistry(`${host}/app:1`, { credentials: anonymous });
    assert.equal(check.status, "warn");
    assert.match(check.detail, /but has no .*\/app:1/);
  });

  test("a login needed and none saved: a warning with the login command", async (t) => {
    const host = await registry(t, serving(200, true));
    const check = await checkRegistry(`${host}/app:1`, { credentials: anonymous });
    assert.equal(check.status, "warn");
    assert.match(check.detail, /needs a login/);
    assert.equal(check.fix, `Run: locald login ${host} -u <user> --password-stdin`);
  });

  test("a saved login refused: a fail", async (t) => {
    const host = await registry(t, (req, res) => {
      res.writeHead(req.url === "/v2/" ? 200 : 401, { "www-authenticate": 'Basic realm="test"' }).end();
    });
    const check = await checkRegistry(`${host}/app:1`, {
      credentials: staticCredentials({ [host]: { username: "u", password: "wrong" } }),
    });
    assert.equal(check.status, "fail");
    assert.match(check.detail, /refuses the saved login/);
  });

  test("nothing listening: a fail in words, quickly", async () => {
    const started = Date.now();
    const check = await checkRegistry("127.0.0.1:9/app:1", { credentials: anonymous });
    assert.equal(check.status, "fail");
    assert.match(check.detail, /^unreachable: .*nothing is listening there \(connection refused\)/);
    assert.ok(check.fix);
    assert.ok(Date.now() - started < 5000, "no pull-length backoff");
  });
});
