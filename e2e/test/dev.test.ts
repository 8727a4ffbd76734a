/**
 * Dev environments: `locald exec` and `locald shell` in the sample apps with the test builder —
 * tools from the buildpacks' layers with no Node on the caller's PATH, cargo building the live app
 * directory, no second detect/build when no input changed, and a shell on a real terminal — as
 * root and as an unprivileged user.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, cp, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { removeTree } from "@locald/oci";
import { Ajv } from "ajv";
import {
  buildNodeVersion,
  type CliOptions,
  type CliResult,
  LOCALD_BIN,
  makeTempDir,
  pushSampleBuilder,
  requireBinary,
  runLocald,
  startRegistry,
  TEST_CALLERS,
  type TestRegistry,
  unprivilegedUser,
} from "../src/index.js";

const run = promisify(execFile);
const DEVCONTAINER_SCHEMA = fileURLToPath(
  new URL("../../fixtures/devcontainer.schema.json", import.meta.url),
);
const DEVCONTAINERS_CLI = createRequire(import.meta.url).resolve("@devcontainers/cli/devcontainer.js");
const EXAMPLES = fileURLToPath(new URL("../../../examples/", import.meta.url));
/** The caller's PATH without the directories that hold a node binary. */
const PATH_WITHOUT_NODE = "/usr/local/sbin:/usr/sbin:/sbin:/bin";

const shared: { registry?: TestRegistry; work?: string; builder?: string } = {};

before(async () => {
  for (const tool of ["bwrap", "setpriv", "script", "go"]) await requireBinary(tool);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("dev");
  await chmod(shared.work, 0o755);
  ({ builder: shared.builder } = await pushSampleBuilder(shared.registry, shared.work, [
    "nodejs",
    "rust",
    "procfile",
  ]));
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

for (const who of TEST_CALLERS) {
  describe(`locald exec and shell, as ${who}`, () => {
    let home: string;
    let apps: string;
    let as: CliOptions["as"];
    let env: NodeJS.ProcessEnv;
    before(async () => {
      home = join(shared.work as string, `home-${who === "root" ? "root" : "user"}`);
      apps = join(home, "apps");
      await mkdir(apps, { recursive: true });
      for (const app of ["hello-node", "hello-rust"])
        await cp(join(EXAMPLES, app), join(apps, app), { recursive: true });
      await chmod(home, 0o755);
      if (who !== "root") {
        as = await unprivilegedUser();
        await run("chown", ["-R", `${as.uid}:${as.gid}`, home]);
      }
      env = {
        HOME: home,
        LOCALD_HOME: join(home, "locald"),
        XDG_RUNTIME_DIR: home,
        LOCALD_BUILDER: shared.builder as string,
      };
    });

    const locald = (args: string[], cwd: string, extra: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
      runLocald(args, { env: { ...env, ...extra }, cwd, ...(as ? { as } : {}) });

    test("node and npm come from the environment, not the caller's PATH; the exit code is the command's", async () => {
      const app = join(apps, "hello-node");
      const node = await locald(["exec", "--", "node", "-v"], app, { PATH: PATH_WITHOUT_NODE });
      assert.equal(node.code, 0, node.stderr);
      assert.equal(node.stdout, `${await buildNodeVersion()}\n`);
      assert.match(node.stderr, /===> DETECTING[\s\S]*===> BUILDING/);
      const npm = await locald(["exec", "--", "npm", "--version"], app, { PATH: PATH_WITHOUT_NODE });
      assert.equal(npm.code, 0, npm.stderr);
      assert.match(npm.stdout, /^\d+\.\d+\.\d+\n$/);
      assert.doesNotMatch(npm.stderr, /===> DETECTING/, "no input changed: no second detect/build");
      const which = await locald(
        ["exec", "--", "sh", "-c", "command -v node; echo $LOCALD_SHELL; exit 7"],
        app,
      );
      assert.equal(which.code, 7);
      assert.equal(which.stdout, "/layers/locald-samples_nodejs/node/bin/node\n1\n");
    });

    test("a changed dependency manifest runs detect and build again", async () => {
      const app = join(apps, "hello-node");
      const manifest = join(app, "package.json");
      const pkg = JSON.parse(await readFile(manifest, "utf8")) as Record<string, unknown>;
      await writeFile(manifest, JSON.stringify({ ...pkg, description: "changed" }, null, 2));
      const again = await locald(["exec", "--", "true"], app);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, /===> BUILDING/);
      assert.match(again.stderr, /reusing the node layer/);
    });

    test("in host isolation, the host's cargo builds the live app directory", async () => {
      // The sample build image has no Rust (see debianBuildImageLayer): the host's cargo builds it.
      const app = join(apps, "hello-rust");
      const built = await locald(["exec", "--isolation", "host", "--", "cargo", "build", "--offline"], app);
      assert.equal(built.code, 0, built.stderr);
      assert.match(built.stderr, /Compiling hello-rust v1\.0\.0 \(\/workspace\)/);
      assert.ok(
        (await stat(join(app, "target", "debug", "hello-rust"))).isFile(),
        "the binary is in the user's directory",
      );
    });

    test("locald shell on a real terminal runs a command and exits with its status", async () => {
      const app = join(apps, "hello-node");
      const quoted = [process.execPath, LOCALD_BIN, "shell"].map((word) => `'${word}'`).join(" ");
      const command = `${as ? `setpriv --reuid=${as.uid} --regid=${as.gid} --clear-groups -- ` : ""}${quoted}`;
      const script = `cd '${app}' && ${command} <<'EOF'\necho "inside:$LOCALD_SHELL:$(node -v)"\nexit 5\nEOF`;
      const result = await new Promise<{ code: number; stdout: string }>((resolve) => {
        execFile(
          "script",
          ["-qec", script, "/dev/null"],
          { env: { ...process.env, ...env, NO_COLOR: "1" } },
          (error, stdout) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout }),
        );
      });
      const version = await buildNodeVersion();
      assert.match(result.stdout, new RegExp(`inside:1:${version.replaceAll(".", "\\.")}`));
      assert.equal(result.code, 5);
    });

    test("locald devcontainer writes a devcontainer.json that the devcontainers CLI reads and the schema accepts", async () => {
      const app = join(apps, "hello-node");
      const written = await locald(["devcontainer", "-t", "hello-node-dev"], app);
      assert.equal(written.code, 0, written.stderr);
      const file = join(app, ".devcontainer", "devcontainer.json");
      assert.match(
        written.stdout,
        /^Wrote \/.*\/\.devcontainer\/devcontainer\.json \(image docker\.io\/library\/hello-node-dev:latest, \d+ variables\)\n$/,
        await readFile(file, "utf8").catch(() => "no file"),
      );
      const config = JSON.parse(await readFile(file, "utf8")) as {
        image: string;
        workspaceFolder: string;
        containerEnv: Record<string, string>;
      };
      assert.equal(config.image, "docker.io/library/hello-node-dev:latest");
      assert.equal(config.workspaceFolder, "/workspace");
      // What the launcher gives the app: the node layer's bin on PATH, the layers' env.launch.
      assert.match(config.containerEnv.PATH ?? "", /\/layers\/locald-samples_nodejs\/node\/bin/);
      assert.match(config.containerEnv.NODE_PATH ?? "", /^\/layers\/locald-samples_nodejs\/.*node_modules$/);
      assert.equal(config.containerEnv.PORT, "8080");
      assert.equal(config.containerEnv.HOSTNAME, undefined);

      const validate = new Ajv({ allErrors: true }).compile(
        JSON.parse(await readFile(DEVCONTAINER_SCHEMA, "utf8")) as object,
      );
      assert.ok(validate(config), JSON.stringify(validate.errors));
      // The reference tool reads it (it needs no Docker for that, but looks for one first).
      const { stdout } = await run(
        process.execPath,
        [DEVCONTAINERS_CLI, "read-configuration", "--workspace-folder", app, "--docker-path", "/bin/true"],
        { env: { ...process.env, HOME: home } },
      );
      const read = JSON.parse(stdout) as {
        configuration: Record<string, unknown>;
        workspace: { workspaceFolder: string };
      };
      assert.equal(read.configuration.image, "docker.io/library/hello-node-dev:latest");
      assert.deepEqual(read.configuration.containerEnv, config.containerEnv);
      assert.equal(read.workspace.workspaceFolder, "/workspace");

      const again = await locald(["devcontainer", "-t", "hello-node-dev"], app);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /devcontainer\.json exists already; it was left as it is[\s\S]*--force/);
      assert.deepEqual(JSON.parse(await readFile(file, "utf8")), config, "the existing file is intact");
    });
  });
}
