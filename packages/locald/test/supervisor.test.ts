import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { hostProcess } from "../src/services.js";
import { freePort, type SupervisedService, Supervisor, startOrder } from "../src/supervisor.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "locald-supervisor-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Recorded {
  lines: string[];
  notes: string[];
  /** Resolves when `times` lines or notes of `service` (so far) match. */
  seen(service: string, pattern: RegExp, times?: number): Promise<void>;
}

function recorder(): Recorded & { log(s: string, l: string): void; note(s: string, m: string): void } {
  const waiters: { service: string; pattern: RegExp; times: number; resolve: () => void }[] = [];
  const lines: string[] = [];
  const notes: string[] = [];
  const count = (service: string, pattern: RegExp) =>
    [...lines, ...notes].filter((text) => text.startsWith(`${service}: `) && pattern.test(text)).length;
  const check = (service: string) => {
    for (const waiter of [...waiters])
      if (waiter.service === service && count(service, waiter.pattern) >= waiter.times) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
  };
  return {
    lines,
    notes,
    log: (service, line) => {
      lines.push(`${service}: ${line}`);
      check(service);
    },
    note: (service, message) => {
      notes.push(`${service}: ${message}`);
      check(service);
    },
    seen: (service, pattern, times = 1) =>
      new Promise((resolve) => {
        if (count(service, pattern) >= times) return resolve();
        waiters.push({ service, pattern, times, resolve });
      }),
  };
}

const shell = (name: string, script: string, dependsOn: string[] = [], port = 0): SupervisedService => ({
  name,
  dependsOn,
  port,
  start: hostProcess(["/bin/sh", "-c", script], dir, [`PORT=${port}`]),
});

describe("startOrder", () => {
  test("puts each service after what it depends on, keeping the given order otherwise", () => {
    const order = startOrder([
      { name: "web", dependsOn: ["api", "db"] },
      { name: "api", dependsOn: ["db"] },
      { name: "db", dependsOn: [] },
      { name: "docs", dependsOn: [] },
    ]).map((s) => s.name);
    assert.deepEqual(order, ["db", "api", "web", "docs"]);
  });
});

describe("Supervisor", () => {
  test("a dependency's port answers before its dependents start; stop is in reverse order", async () => {
    const port = await freePort();
    const events = join(dir, "events");
    const record = recorder();
    const supervisor = new Supervisor(
      [
        shell(
          "web",
          `echo "web saw the port open" >> ${events}; trap 'echo web stops >> ${events}; exit 0' TERM; echo ready; while :; do sleep 0.1; done`,
          ["db"],
        ),
        {
          ...shell("db", "", [], port),
          // A node TCP server stands in for a database: it listens only after a moment.
          start: hostProcess(
            [
              process.execPath,
              "-e",
              `setTimeout(() => require("net").createServer().listen(${port}, "127.0.0.1"), 300);
               process.on("SIGTERM", () => { require("fs").appendFileSync(${JSON.stringify(events)}, "db stops\\n"); process.exit(0); });`,
            ],
            dir,
            [],
          ),
        },
      ],
      { ...record, stopTimeoutMs: 5_000 },
    );
    try {
      await supervisor.up();
      await record.seen("web", /ready/);
    } finally {
      await supervisor.down();
    }
    const lines = (await readFile(events, "utf8")).trim().split("\n");
    assert.deepEqual(lines, ["web saw the port open", "web stops", "db stops"]);
    assert.deepEqual(
      record.notes.filter((n) => /started|stopping/.test(n)).map((n) => n.replace(/ on port \d+/, "")),
      ["db: started", "web: started", "web: stopping", "db: stopping"],
    );
  });

  test("a crashed service is restarted with a growing delay, and its output comes line by line", async () => {
    const record = recorder();
    const supervisor = new Supervisor([shell("flaky", "printf 'one\\ntwo'; exit 3")], {
      ...record,
      backoffMs: 20,
      maxBackoffMs: 40,
    });
    try {
      await supervisor.up();
      await record.seen("flaky", /exited with code 3; restarting in 0\.0 s/, 3);
    } finally {
      await supervisor.down();
    }
    assert.ok(supervisor.restarts("flaky") >= 2);
    assert.deepEqual(record.lines.slice(0, 4), ["flaky: one", "flaky: two", "flaky: one", "flaky: two"]);
  });

  test("a service that ignores SIGTERM is killed after the timeout, with its children", async () => {
    const record = recorder();
    const pidFile = join(dir, "child.pid");
    const supervisor = new Supervisor(
      [shell("stubborn", `trap '' TERM; sleep 1000 & echo $! > ${pidFile}; echo ready; wait`)],
      { ...record, stopTimeoutMs: 200 },
    );
    await supervisor.up();
    await record.seen("stubborn", /ready/);
    const started = Date.now();
    await supervisor.down();
    assert.ok(Date.now() - started >= 200, "the grace period was given");
    assert.ok(record.notes.includes("stubborn: did not stop in time; killing it"));
    const child = Number(await readFile(pidFile, "utf8"));
    // Gone, or a zombie left for init to reap: either way it no longer runs.
    const state = await readFile(`/proc/${child}/stat`, "utf8").catch(() => "gone");
    assert.ok(state === "gone" || / Z /.test(state), `the service's child is gone too (${state})`);
  });

  test("a command that cannot start says so and is retried", async () => {
    const record = recorder();
    const supervisor = new Supervisor(
      [{ name: "missing", dependsOn: [], port: 0, start: hostProcess(["/nonexistent/program"], dir, []) }],
      { ...record, backoffMs: 10 },
    );
    try {
      await supervisor.up();
      await record.seen(
        "missing",
        /cannot start \/nonexistent\/program: spawn \/nonexistent\/program ENOENT/,
      );
      await record.seen("missing", /exited with code 127; restarting/);
    } finally {
      await supervisor.down();
    }
  });
});
