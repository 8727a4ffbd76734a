/**
 * What a build sees of the machine it runs on, in host isolation (today's only mode): a probe buildpack lists `/` and
 * tries to read secrets planted where people keep them — `~/.docker/config.json` and `~/.ssh` in a
 * home under `/home`, files under `/root`, `/opt`, `/var` and `/srv` — as root and as an
 * unprivileged user. None may be visible to the build, appear in its output, or end up in the
 * image; the host's OS (its `/etc/os-release`) is what the build runs on.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { removeTree } from "@locald/oci";
import {
  type CliOptions,
  type CliResult,
  callerIn,
  findLeaks,
  makeTempDir,
  pushSampleBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  type TestRegistry,
} from "../src/index.js";

const tag = randomBytes(6).toString("hex");
const TOKEN = `locald-isolation-secret-${tag}`;
/** Places outside any home that hold data, never the OS: none of them is the build's business. */
const SYSTEM_SECRETS = [
  `/root/locald-e2e-${tag}`,
  `/opt/locald-e2e-${tag}/secret`,
  `/var/lib/locald-e2e-${tag}/secret`,
  `/srv/locald-e2e-${tag}/secret`,
];
/** Top-level names a build must not see: data, not the OS. */
const HIDDEN_TOP = ["home", "root", "opt", "var", "srv", "mnt", "media"];

const shared: { registry?: TestRegistry; work?: string; builder?: string; homes: string[] } = { homes: [] };

before(async () => {
  for (const tool of ["bwrap", "setpriv", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("isolation");
  await chmod(shared.work, 0o755);
  ({ builder: shared.builder } = await pushSampleBuilder(shared.registry, shared.work, ["probe"]));
  for (const path of SYSTEM_SECRETS) {
    await mkdir(join(path, ".."), { recursive: true, mode: 0o755 });
    await writeFile(path, `${TOKEN}\n`, { mode: 0o644 });
  }
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
  for (const path of SYSTEM_SECRETS)
    await rm(path.startsWith("/root/") ? path : join(path, ".."), { recursive: true, force: true });
  for (const home of shared.homes) await removeTree(home);
});

/** Lines of the probe's report, by their first word. */
function reportLines(text: string): Map<string, string> {
  const lines = new Map<string, string>();
  for (const line of text.split("\n")) {
    const match = /^(absent|readable|listed|present): ([^:]+)/.exec(line);
    if (match) lines.set(match[2] as string, match[1] as string);
  }
  return lines;
}

for (const who of ["root", "an unprivileged user"] as const) {
  describe(`host isolation, as ${who}: the build sees the host's OS and nobody's data`, () => {
    let home: string;
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    let secrets: string[];
    before(async () => {
      // Under /home, where a real user's home is (the suite's temp dirs are under /tmp, which the
      // sandbox replaces anyway, so a home there would prove nothing).
      home = `/home/locald-e2e-${tag}-${who === "root" ? "root" : "user"}`;
      shared.homes.push(home);
      await mkdir(join(home, ".docker"), { recursive: true });
      await mkdir(join(home, ".ssh"), { recursive: true, mode: 0o700 });
      await writeFile(join(home, ".docker", "config.json"), JSON.stringify({ auths: {}, planted: TOKEN }));
      await writeFile(join(home, ".ssh", "id_ed25519"), `${TOKEN}\n`, { mode: 0o600 });
      await mkdir(join(home, "app"));
      secrets = [join(home, ".docker", "config.json"), join(home, ".ssh", "id_ed25519"), ...SYSTEM_SECRETS];
      await writeFile(join(home, "app", "probe-paths"), `${[...secrets, home, "/home"].join("\n")}\n`);
      ({ as, env } = await callerIn(who, home));
    });
    const locald = (args: string[]): Promise<CliResult> => runLocald(args, { env, ...(as ? { as } : {}) });

    test("the probe runs on the host's OS, and finds no home, no /root, /opt, /var, /srv", async () => {
      const built = await locald([
        "build",
        join(home, "app"),
        "--builder",
        shared.builder as string,
        "-t",
        "probe",
      ]);
      assert.equal(built.code, 0, built.stderr);
      const output = built.stdout + built.stderr;
      assert.ok(!output.includes(TOKEN), "no secret in the build's output");
      const hostOs = /^ID=(.*)$/m.exec(await readFile("/etc/os-release", "utf8"))?.[1]?.replaceAll('"', "");
      assert.match(output, new RegExp(`^os: ${hostOs} `, "m"), "the host's own OS");
      const top = /^top: (.*)$/m.exec(output)?.[1]?.trim().split(" ") ?? [];
      assert.ok(top.includes("usr") && top.includes("workspace"), `top: ${top.join(" ")}`);
      for (const name of HIDDEN_TOP)
        assert.ok(!top.includes(name), `/${name} is not shown (top: ${top.join(" ")})`);
      const seen = reportLines(output);
      for (const path of [...secrets, home, "/home"]) assert.equal(seen.get(path), "absent", path);
    });

    test("the image holds the probe's report and no secret", async () => {
      const ran = await locald(["container", "run", "--rm", "probe"]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.match(ran.stdout, /^top: /m);
      assert.ok(!ran.stdout.includes(TOKEN));
      const rootfs = join(home, "probe-rootfs");
      const unpacked = await locald(["image", "unpack", "probe", rootfs]);
      assert.equal(unpacked.code, 0, unpacked.stderr);
      assert.deepEqual(
        await findLeaks(rootfs, { content: TOKEN }),
        [],
        "no file of the image holds a secret",
      );
    });
  });
}
