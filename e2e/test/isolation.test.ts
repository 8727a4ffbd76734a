/**
 * What a build sees of the machine it runs on, in both isolations: a probe buildpack lists `/`,
 * tries to read secrets planted where people keep them — `~/.docker/config.json` and `~/.ssh` in a
 * home under `/home`, files under `/root`, `/opt`, `/var` and `/srv` — and compiles a C program
 * with the build's own cc, as root and as an unprivileged user. No secret may be visible to the
 * build, appear in its output, or end up in the image. In builder isolation the build runs in the
 * build image (its marker file, none of the host's); in host isolation on the host's OS (a file
 * planted in the host's /etc, no marker). The compiled program runs in the image, on the run image.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { removeTree } from "@locald/oci";
import {
  BUILD_IMAGE_MARKER,
  type CliOptions,
  type CliResult,
  callerIn,
  findLeaks,
  makeTempDir,
  pushSampleBuilder,
  pushTestBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  TEST_CALLERS,
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
/** Top-level names a build over the host must not see: data, not the OS. */
const HIDDEN_TOP = ["home", "root", "opt", "var", "srv", "mnt", "media"];
/** A file only the host has, in its OS directories (which host isolation shows). */
const HOST_MARKER = `/etc/locald-e2e-host-${tag}`;

const shared: {
  registry?: TestRegistry;
  work?: string;
  builder?: string;
  runImage?: string;
  homes: string[];
} = { homes: [] };

before(async () => {
  for (const tool of ["bwrap", "setpriv", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("isolation");
  await chmod(shared.work, 0o755);
  ({ builder: shared.builder, runImage: shared.runImage } = await pushSampleBuilder(
    shared.registry,
    shared.work,
    ["probe"],
  ));
  await writeFile(HOST_MARKER, "the host\n", { mode: 0o644 });
  for (const path of SYSTEM_SECRETS) {
    await mkdir(join(path, ".."), { recursive: true, mode: 0o755 });
    await writeFile(path, `${TOKEN}\n`, { mode: 0o644 });
  }
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
  await rm(HOST_MARKER, { force: true });
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

for (const isolation of ["builder", "host"] as const)
  for (const who of TEST_CALLERS) {
    describe(`${isolation} isolation, as ${who}: the build sees ${isolation === "builder" ? "the build image" : "the host's OS"} and nobody's data`, () => {
      let home: string;
      let as: CliOptions["as"];
      let env: NodeJS.ProcessEnv;
      let secrets: string[];
      const image = `probe-${isolation}`;
      before(async () => {
        // Under /home, where a real user's home is (the suite's temp dirs are under /tmp, which the
        // sandbox replaces anyway, so a home there would prove nothing).
        home = `/home/locald-e2e-${tag}-${isolation}-${who === "root" ? "root" : "user"}`;
        shared.homes.push(home);
        await mkdir(join(home, ".docker"), { recursive: true });
        await mkdir(join(home, ".ssh"), { recursive: true, mode: 0o700 });
        await writeFile(join(home, ".docker", "config.json"), JSON.stringify({ auths: {}, planted: TOKEN }));
        await writeFile(join(home, ".ssh", "id_ed25519"), `${TOKEN}\n`, { mode: 0o600 });
        await mkdir(join(home, "app"));
        secrets = [join(home, ".docker", "config.json"), join(home, ".ssh", "id_ed25519"), ...SYSTEM_SECRETS];
        const probed = [...secrets, home, "/home", BUILD_IMAGE_MARKER, HOST_MARKER];
        await writeFile(join(home, "app", "probe-paths"), `${probed.join("\n")}\n`);
        ({ as, env } = await callerIn(who, home));
      });
      const locald = (args: string[]): Promise<CliResult> => runLocald(args, { env, ...(as ? { as } : {}) });

      test(`the probe runs on ${isolation === "builder" ? "the build image" : "the host's OS"}, and finds no one's data`, async () => {
        const built = await locald([
          "build",
          join(home, "app"),
          "--builder",
          shared.builder as string,
          "-t",
          image,
          ...(isolation === "host" ? ["--isolation", "host"] : []),
        ]);
        assert.equal(built.code, 0, built.stderr);
        const output = built.stdout + built.stderr;
        assert.ok(!output.includes(TOKEN), "no secret in the build's output");
        // Both are Debian 12 here: which one the build ran on is told by the marker files.
        assert.match(output, /^os: debian 12$/m);
        const seen = reportLines(output);
        assert.equal(seen.get(BUILD_IMAGE_MARKER), isolation === "builder" ? "readable" : "absent");
        assert.equal(seen.get(HOST_MARKER), isolation === "host" ? "readable" : "absent");
        const top = /^top: (.*)$/m.exec(output)?.[1]?.trim().split(" ") ?? [];
        assert.ok(top.includes("usr") && top.includes("workspace"), `top: ${top.join(" ")}`);
        // The build image has its own (empty) /home, /root, /var…; the host's must not show.
        if (isolation === "host")
          for (const name of HIDDEN_TOP)
            assert.ok(!top.includes(name), `/${name} is not shown (top: ${top.join(" ")})`);
        for (const path of [...secrets, home]) assert.equal(seen.get(path), "absent", path);
        assert.notEqual(seen.get("/home"), "readable");
        assert.match(output, /^compiled: \/usr\/bin\/cc$/m, "the build's own C compiler");
      });

      test("the image holds the probe's report and no secret; what the build compiled runs on the run image", async () => {
        const ran = await locald(["container", "run", "--rm", image]);
        assert.equal(ran.code, 0, ran.stderr);
        assert.match(ran.stdout, /^top: /m);
        assert.ok(!ran.stdout.includes(TOKEN));
        const compiled = await locald([
          "container",
          "run",
          "--rm",
          "--entrypoint",
          "/layers/locald-samples_probe/probe/bin/probe-c",
          image,
        ]);
        assert.equal(compiled.code, 0, compiled.stderr);
        assert.equal(compiled.stdout, "compiled by the build's cc\n");
        const rootfs = join(home, `${image}-rootfs`);
        const unpacked = await locald(["image", "unpack", image, rootfs]);
        assert.equal(unpacked.code, 0, unpacked.stderr);
        assert.deepEqual(
          await findLeaks(rootfs, { content: TOKEN }),
          [],
          "no file of the image holds a secret",
        );
        assert.ok(
          !(await stat(join(rootfs, BUILD_IMAGE_MARKER)).catch(() => undefined)),
          "the image is based on the run image, not the build image",
        );
      });
    });
  }

describe("a builder with no OS of its own", () => {
  let env: NodeJS.ProcessEnv;
  let bare: string;
  before(async () => {
    const home = join(shared.work as string, "bare");
    await mkdir(join(home, "app"), { recursive: true });
    await writeFile(join(home, "app", "probe-paths"), "/etc/os-release\n");
    env = { HOME: home, LOCALD_HOME: join(home, "locald") };
    bare = await pushTestBuilder(
      shared.registry as TestRegistry,
      join(shared.work as string, "bare-builder"),
      {
        runImage: shared.runImage as string,
        buildpacks: ["probe"],
        buildImage: "none",
        name: "cnb/builder:bare",
      },
    );
  });

  test("builder isolation refuses it with a clear error; host isolation builds with it", async () => {
    const app = join(env.HOME as string, "app");
    const refused = await runLocald(["build", app, "--builder", bare, "-t", "bare"], { env });
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /has no operating system to build in \(no \/bin\/sh in its image\)/);
    assert.match(refused.stderr, /--isolation host/);
    assert.doesNotMatch(refused.stderr, /\n\s+at /, "no stack trace");
    const hosted = await runLocald(["build", app, "--builder", bare, "-t", "bare"], {
      env: { ...env, LOCALD_ISOLATION: "host" },
    });
    assert.equal(hosted.code, 0, hosted.stderr);
    const wrong = await runLocald(["build", app, "--builder", bare, "--isolation", "vm"], { env });
    assert.equal(wrong.code, 2, wrong.stderr);
    assert.match(wrong.stderr, /--isolation is "vm"; it must be "builder"/);
  });
});

describe("a machine that forbids user namespaces", () => {
  test("a build stops with what to change, not bubblewrap's line alone", async () => {
    const home = join(shared.work as string, "no-userns");
    await mkdir(join(home, "app"), { recursive: true });
    await writeFile(join(home, "app", "probe-paths"), "/etc/os-release\n");
    // The limit is per user namespace: set to 0 inside one of its own, it forbids them to locald
    // (root there, so in builder isolation too) without changing the machine's setting.
    const unshare = await requireBinary("unshare");
    const built = await runLocald(["build", join(home, "app"), "--builder", shared.builder as string], {
      env: { HOME: home, LOCALD_HOME: join(home, "locald") },
      wrapper: [
        unshare,
        "--user",
        "--map-root-user",
        "sh",
        "-c",
        'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"',
        "sh",
      ],
    });
    assert.equal(built.code, 1, built.stderr);
    assert.match(
      built.stderr,
      /The sandbox could not be set up: bubblewrap cannot create a user namespace here/,
    );
    assert.match(built.stderr, /kernel\.unprivileged_userns_clone=1/);
    assert.doesNotMatch(built.stderr, /\n\s+at /, "no stack trace");
  });
});
