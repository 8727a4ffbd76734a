import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, test } from "node:test";
import { main } from "../src/main.js";

/** `locald up`'s refusals: before anything is built or started, with a message, never a trace. */

let dir: string;
const home = process.cwd();
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "locald-up-"));
  process.chdir(dir);
});
after(async () => {
  process.chdir(home);
  await rm(dir, { recursive: true, force: true });
});

async function up(args: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on("data", (c: Buffer) => out.push(c));
  stderr.on("data", (c: Buffer) => err.push(c));
  const code = await main(["up", ...args], { stdout, stderr });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

describe("locald up", () => {
  test("without a locald.toml: a usage error", async () => {
    const result = await up();
    assert.equal(result.code, 2);
    assert.match(result.stderr, /No locald\.toml in .*\[services\.web\.build\]/s);
  });

  test("an invalid locald.toml: file, line, column and key, and no trace", async () => {
    await writeFile(
      join(dir, "locald.toml"),
      '[services.web]\ncommand = "node server.js"\ndepends_on = ["db"]\n',
    );
    const result = await up();
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      /locald\.toml:3:1: services\.web\.depends_on: there is no service "db"\.[\s\S]*Services: web\./,
    );
    assert.doesNotMatch(result.stderr, /\n\s+at /);
  });

  test("an unknown service: a usage error naming the services there are", async () => {
    await writeFile(join(dir, "locald.toml"), '[services.web]\ncommand = "true"\n');
    const result = await up(["wbe"]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /There is no service "wbe" in .*locald\.toml \(services: web\)/);
  });

  test("a bad --timeout: a usage error", async () => {
    const result = await up(["--timeout", "soon"]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--timeout must be seconds/);
  });
});
