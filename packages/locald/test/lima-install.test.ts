import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import { limaContext, vmConfigInput } from "../src/commands/vm.js";
import { parseConfig } from "../src/config.js";
import {
  ensureLimactl,
  LimaInstallError,
  limactlVersion,
  MAX_SHA256SUMS_BYTES,
  sha256FromSums,
} from "../src/host/index.js";

/**
 * The parts of the limactl install a unit test can pin down: the strict SHA256SUMS parser, the
 * `limactl --version` reader, and the checks of a limactl the user chose (against small shell
 * scripts standing in for one; the real limactl is the e2e suite's, `e2e/test/lima.test.ts`).
 */

const ASSET = "lima-1.2.3-Darwin-arm64.tar.gz";
const SUM = `${"a".repeat(63)}b`;
const OTHER = "0123456789abcdef".repeat(4);
const SOURCE = "https://example.test/v1.2.3/SHA256SUMS";

const bytes = (text: string) => new TextEncoder().encode(text);
const sums = (lines: string[]) => bytes(lines.map((l) => `${l}\n`).join(""));
const refused = (pattern: RegExp) => (error: unknown) =>
  error instanceof LimaInstallError && error.code === "LIMA_INSTALL" && pattern.test(error.message);

describe("sha256FromSums (a release's SHA256SUMS)", () => {
  test("finds the asset's line among the release's, text or binary mode, any hex case", () => {
    const file = sums([
      `${OTHER}  lima-1.2.3-Darwin-x86_64.tar.gz`,
      `${SUM}  ${ASSET}`,
      `${OTHER}  ${ASSET}.sig`,
      `${OTHER}  lima-1.2.3-Linux-aarch64.tar.gz`,
    ]);
    assert.equal(sha256FromSums(file, ASSET, SOURCE), SUM);
    assert.equal(sha256FromSums(sums([`${SUM} *${ASSET}`]), ASSET, SOURCE), SUM);
    assert.equal(sha256FromSums(sums([`${SUM.toUpperCase()}  ${ASSET}`]), ASSET, SOURCE), SUM);
    // A last line without its newline is still a line.
    assert.equal(sha256FromSums(bytes(`${OTHER}  x\n${SUM}  ${ASSET}`), ASSET, SOURCE), SUM);
  });

  test("no line for the asset: refused, naming the file and the asset", () => {
    const file = sums([
      `${OTHER}  lima-1.2.3-Darwin-x86_64.tar.gz`,
      `${SUM}  ./${ASSET}`,
      `${SUM}  ${ASSET}.sig`,
    ]);
    assert.throws(
      () => sha256FromSums(file, ASSET, SOURCE),
      (error: unknown) =>
        refused(/has no SHA-256 for lima-1\.2\.3-Darwin-arm64\.tar\.gz/)(error) &&
        (error as LimaInstallError).message.includes(SOURCE) &&
        /LOCALD_LIMACTL=\$\(command -v limactl\)/.test((error as LimaInstallError).hint ?? ""),
    );
  });

  test("the asset named twice is refused, even with the same sum", () => {
    for (const second of [SUM, OTHER])
      assert.throws(
        () => sha256FromSums(sums([`${SUM}  ${ASSET}`, `${second} *${ASSET}`]), ASSET, SOURCE),
        refused(/not a SHA256SUMS file: it names .* on 2 lines/),
      );
  });

  test("any malformed line refuses the whole file", () => {
    const bad = [
      `${SUM.slice(1)}  ${ASSET}`, // 63 hex digits
      `${SUM}0  ${ASSET}`, // 65
      `${SUM.slice(1)}g  ${ASSET}`, // not hex
      `${SUM} ${ASSET}`, // one space: no mode character
      `${SUM}\t${ASSET}`,
      `${SUM}  `, // no name
      ` ${SUM}  ${ASSET}`,
      `sha256:${SUM}  ${ASSET}`,
      "",
      "# a comment",
      `SHA256 (${ASSET}) = ${SUM}`, // BSD style
    ];
    for (const line of bad) {
      // The broken line is elsewhere in the file than the asset's: it still condemns the file.
      const file = sums([`${SUM}  ${ASSET}`, line, `${OTHER}  other.tar.gz`]);
      assert.throws(
        () => sha256FromSums(file, ASSET, SOURCE),
        refused(/is not a SHA256SUMS file: line 2 is not/),
        JSON.stringify(line),
      );
    }
    // CRLF line ends are not sha256sum's.
    assert.throws(
      () => sha256FromSums(bytes(`${SUM}  ${ASSET}\r\n`), ASSET, SOURCE),
      refused(/line 1 is not/),
    );
  });

  test("empty, not UTF-8, or larger than the cap: refused", () => {
    assert.throws(() => sha256FromSums(bytes(""), ASSET, SOURCE), refused(/it is empty/));
    assert.throws(() => sha256FromSums(bytes("\n"), ASSET, SOURCE), refused(/line 1 is not/));
    assert.throws(
      () => sha256FromSums(new Uint8Array([...bytes(`${SUM}  `), 0xff, 0xfe, 0x0a]), ASSET, SOURCE),
      refused(/not UTF-8/),
    );
    const line = `${OTHER}  ${"x".repeat(100)}\n`;
    const big = bytes(`${SUM}  ${ASSET}\n${line.repeat(Math.ceil(MAX_SHA256SUMS_BYTES / line.length))}`);
    assert.ok(big.length > MAX_SHA256SUMS_BYTES);
    assert.throws(() => sha256FromSums(big, ASSET, SOURCE), refused(/larger than 65536 bytes/));
  });
});

describe("limactlVersion", () => {
  test("reads what limactl --version prints, and nothing else", () => {
    assert.deepEqual(limactlVersion("limactl version 1.2.3\n"), {
      major: 1,
      minor: 2,
      patch: 3,
      text: "1.2.3",
    });
    assert.deepEqual(limactlVersion("limactl version v2.0.0-beta.0-3-gabcdef\n"), {
      major: 2,
      minor: 0,
      patch: 0,
      text: "2.0.0-beta.0-3-gabcdef",
    });
    assert.equal(limactlVersion("limactl version 0.23.2\n")?.major, 0);
    for (const other of [
      "",
      "limactl version <unknown>\n",
      "Docker version 27.0.1, build 1234\n",
      "version 1.2.3\n",
      "mylimactl version 1.2.3\n",
      "limactl version 1.2\n",
    ])
      assert.equal(limactlVersion(other), undefined, other);
  });
});

describe("a limactl the user chose (LOCALD_LIMACTL, [host] limactl)", () => {
  let work: string;
  let home: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "locald-limactl-"));
    home = join(work, "locald-home");
    await mkdir(home);
  });
  after(() => rm(work, { recursive: true, force: true }));

  /** A stand-in limactl: a shell script that prints `output` and counts its runs. */
  async function script(name: string, output: string, status = 0): Promise<string> {
    const file = join(work, name);
    const count = `${file}.runs`;
    await writeFile(file, `#!/bin/sh\necho run >> '${count}'\nprintf '%s' '${output}'\nexit ${status}\n`);
    await chmod(file, 0o755);
    return file;
  }
  const runs = async (file: string) =>
    (await readFile(`${file}.runs`, "utf8").catch(() => "")).split("\n").filter((l) => l !== "").length;
  /** Whatever happens, no download: the built-in base is plain HTTP on a closed port. */
  const release = { version: "1.2.3", baseUrl: "http://127.0.0.1:9/lima", sha256: {} };
  const ensure = (
    env: NodeJS.ProcessEnv,
    limactl?: () => Promise<{ path: string; from: string } | undefined>,
  ) => ensureLimactl({ home, release, platform: "darwin", arch: "arm64", env, limactl });

  test("a Lima ≥ 1.0 is used as it is, its --version run once, nothing downloaded", async () => {
    const lima = await script("limactl-good", "limactl version 1.2.3\n");
    for (let i = 0; i < 3; i++) assert.equal(await ensure({ LOCALD_LIMACTL: lima }), lima);
    assert.equal(await runs(lima), 1);
    const two = await script("limactl-two", "limactl version 2.0.1\n");
    assert.equal(await ensure({ LOCALD_LIMACTL: relative(process.cwd(), two) }), two);
    assert.deepEqual(await readdir(home), []);
  });

  test("LOCALD_LIMACTL overrides [host] limactl, which is read only without it", async () => {
    const fromEnv = await script("limactl-env", "limactl version 1.1.0\n");
    const fromFile = await script("limactl-file", "limactl version 1.0.0\n");
    let asked = 0;
    const file = async () => {
      asked++;
      return { path: fromFile, from: "[host] limactl in /p/locald.toml" };
    };
    assert.equal(await ensure({ LOCALD_LIMACTL: fromEnv }, file), fromEnv);
    assert.equal(asked, 0);
    assert.equal(await ensure({ LOCALD_LIMACTL: "" }, file), fromFile);
    assert.equal(asked, 1);
  });

  test("not Lima, too old, not there, not a file, not executable: refused, saying where it was set", async () => {
    const cases: Array<[string, RegExp]> = [
      [
        await script("docker", "Docker version 27.0.1\n"),
        /printed "Docker version 27\.0\.1" for `--version`.*not Lima's limactl/,
      ],
      [await script("silent", ""), /printed nothing for `--version`/],
      [
        await script("failing", "limactl version 1.2.3\n", 3),
        /exited with status 3 on `--version`: it is not Lima's limactl/,
      ],
      [await script("old", "limactl version 0.23.2\n"), /is Lima 0\.23\.2, older than 1\.0/],
      [join(work, "absent"), /which does not exist/],
      [work, /which is not a file/],
    ];
    const plain = join(work, "not-executable");
    await writeFile(plain, "#!/bin/sh\necho limactl version 1.2.3\n", { mode: 0o644 });
    cases.push([plain, /which is not executable/]);
    for (const [path, pattern] of cases) {
      await assert.rejects(
        ensure({ LOCALD_LIMACTL: path }),
        (error: unknown) =>
          refused(pattern)(error) &&
          refused(/^LOCALD_LIMACTL names .*, so locald will not use it as limactl\.$/)(error) &&
          /unset it to let locald download Lima 1\.2\.3/.test((error as LimaInstallError).hint ?? ""),
        path,
      );
    }
    await assert.rejects(
      ensure({}, async () => ({ path: join(work, "absent"), from: "[host] limactl in /p/locald.toml" })),
      (error: unknown) =>
        refused(/^\[host\] limactl in \/p\/locald\.toml names .*absent, which does not exist/)(error) &&
        /remove it to let locald download/.test((error as LimaInstallError).hint ?? ""),
    );
    // A refusal is not remembered: fixed, the same path is taken.
    await chmod(plain, 0o755);
    assert.equal(await ensure({ LOCALD_LIMACTL: plain }), plain);
    assert.deepEqual(await readdir(home), []);
  });

  test("no pinned sum and the built-in base is not HTTPS: refused before any download", async () => {
    await assert.rejects(
      ensure({}),
      (error: unknown) =>
        refused(/No SHA-256 is pinned for lima-1\.2\.3-Darwin-arm64\.tar\.gz.*would come over plain HTTP/)(
          error,
        ) && /LOCALD_LIMACTL=\$\(command -v limactl\)/.test((error as LimaInstallError).hint ?? ""),
    );
    assert.deepEqual(await readdir(home), []);
  });

  test("[host] limactl in locald.toml: a string, resolved against locald.toml's directory, not the VM's", async () => {
    assert.equal(
      parseConfig('[host]\nlimactl = "/opt/lima/bin/limactl"\n', "locald.toml").host?.limactl,
      "/opt/lima/bin/limactl",
    );
    assert.throws(() => parseConfig("[host]\nlimactl = 1\n", "locald.toml"), /host\.limactl/);
    assert.throws(() => parseConfig('[host]\nlimactl = ""\n', "locald.toml"), /host\.limactl/);
    const project = join(work, "my app");
    await mkdir(project);
    await writeFile(join(project, "locald.toml"), '[host]\ncpus = 2\nlimactl = "../tools/limactl"\n');
    assert.deepEqual(await limaContext(project).limactl?.(), {
      path: join(work, "tools", "limactl"),
      from: `[host] limactl in ${join(project, "locald.toml")}`,
    });
    const input = await vmConfigInput(project);
    assert.deepEqual(input.settings, { cpus: 2 });
    assert.equal(await limaContext(work).limactl?.(), undefined);
  });
});
