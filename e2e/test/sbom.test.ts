/**
 * SBOMs as pack hands them out: a sample buildpack (procfile) writes CycloneDX and SPDX SBOMs of
 * what it launches; `build --sbom-output-dir` copies what the lifecycle gathered, and
 * `sbom download` reads the SBOM layer of a built image — from the store, and from a registry on
 * a machine that never built it. As root and as an unprivileged user.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmod, cp, mkdir, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { removeTree } from "@locald/oci";
import {
  type CliOptions,
  type CliResult,
  callerIn,
  makeTempDir,
  pushSampleBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  TEST_CALLERS,
  type TestRegistry,
} from "../src/index.js";

const EXAMPLES = fileURLToPath(new URL("../../../examples/", import.meta.url));
const shared: { registry?: TestRegistry; work?: string; builder?: string } = {};
const SBOM_DIR = join("launch", "locald-samples_procfile");

before(async () => {
  for (const tool of ["bwrap", "runc", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("sbom");
  await chmod(shared.work, 0o755);
  ({ builder: shared.builder } = await pushSampleBuilder(shared.registry, shared.work, ["procfile"]));
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

/** Both SBOMs name the Procfile by its sha256. */
async function assertSboms(dir: string): Promise<void> {
  const procfile = await readFile(join(EXAMPLES, "procfile-static", "Procfile"));
  const sum = createHash("sha256").update(procfile).digest("hex");
  assert.deepEqual((await readdir(dir)).sort(), ["sbom.cdx.json", "sbom.spdx.json"]);
  const cdx = JSON.parse(await readFile(join(dir, "sbom.cdx.json"), "utf8")) as {
    bomFormat: string;
    components: Array<{ name: string; hashes: Array<{ content: string }> }>;
  };
  assert.equal(cdx.bomFormat, "CycloneDX");
  assert.equal(cdx.components[0]?.hashes[0]?.content, sum);
  const spdx = JSON.parse(await readFile(join(dir, "sbom.spdx.json"), "utf8")) as {
    spdxVersion: string;
    files: Array<{ checksums: Array<{ checksumValue: string }> }>;
  };
  assert.equal(spdx.spdxVersion, "SPDX-2.3");
  assert.equal(spdx.files[0]?.checksums[0]?.checksumValue, sum);
}

for (const who of TEST_CALLERS) {
  describe(`SBOMs, as ${who}`, () => {
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    let home: string;
    before(async () => {
      home = join(shared.work as string, `home-${who === "root" ? "root" : "user"}`);
      await mkdir(home, { recursive: true });
      await cp(join(EXAMPLES, "procfile-static"), join(home, "procfile-static"), { recursive: true });
      ({ as, env } = await callerIn(who, home));
    });
    const locald = (args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
      runLocald(["--insecure-registry", (shared.registry as TestRegistry).host, ...args], {
        env: { ...env, ...extraEnv },
        ...(as ? { as } : {}),
      });

    test("build --sbom-output-dir holds the SBOMs the buildpack wrote; sbom download reads the image's", async () => {
      const out = join(home, "sbom-out");
      const built = await locald([
        "build",
        join(home, "procfile-static"),
        "--builder",
        shared.builder as string,
        "-t",
        "with-sbom",
        "--sbom-output-dir",
        out,
      ]);
      assert.equal(built.code, 0, built.stderr);
      await assertSboms(join(out, SBOM_DIR));
      const downloaded = await locald(["sbom", "download", "with-sbom", "-o", join(home, "from-store")]);
      assert.equal(downloaded.code, 0, downloaded.stderr);
      assert.match(downloaded.stdout, /^Wrote \d+ SBOM files under /);
      await assertSboms(join(home, "from-store", "layers", "sbom", SBOM_DIR));
    });

    test("sbom download of a published image, on a machine that never built it", async () => {
      const image = `${(shared.registry as TestRegistry).host}/apps/sbom-${who === "root" ? "root" : "user"}:1`;
      const built = await locald([
        "build",
        join(home, "procfile-static"),
        "--builder",
        shared.builder as string,
        "-t",
        image,
        "--publish",
      ]);
      assert.equal(built.code, 0, built.stderr);
      const fresh = { LOCALD_HOME: join(home, "fresh-home") };
      const downloaded = await locald(["sbom", "download", image, "-o", join(home, "from-registry")], fresh);
      assert.equal(downloaded.code, 0, downloaded.stderr);
      await assertSboms(join(home, "from-registry", "layers", "sbom", SBOM_DIR));
    });

    test("an image without an SBOM is said in words", async () => {
      const pulled = await locald([
        "image",
        "pull",
        `${(shared.registry as TestRegistry).host}/cnb/run:bookworm`,
      ]);
      assert.equal(pulled.code, 0, pulled.stderr);
      const none = await locald([
        "sbom",
        "download",
        `${(shared.registry as TestRegistry).host}/cnb/run:bookworm`,
        "-o",
        join(home, "none"),
      ]);
      assert.equal(none.code, 1, none.stderr);
      assert.match(none.stderr, /has no SBOM/);
    });
  });
}
