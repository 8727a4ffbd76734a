/**
 * `locald build --remote kpack`: the resources it writes pass kpack's own validation (kpack
 * v0.16.1's v1alpha2 types and webhook rules, compiled into e2e/go/kpack-check), the dry run is
 * stable (a golden file), the source image it pushes to a real registry holds exactly the app's
 * files minus its excludes, and without kubectl it says so. No cluster runs here: the apply and
 * the Build it follows are answered by a recording stand-in for kubectl, named as such below.
 */
import assert from "node:assert/strict";
import { chmod, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { removeTree } from "@locald/oci";
import {
  checkKpack,
  kpackChecker,
  makeTempDir,
  pushSampleBuilder,
  runBinary,
  runLocald,
  sampleBuildpack,
  startRegistry,
  type TestRegistry,
} from "../src/index.js";

const GOLDEN = fileURLToPath(new URL("../../fixtures/kpack/dry-run.yaml", import.meta.url));
const shared: { registry?: TestRegistry; work?: string } = {};
const work = () => shared.work as string;

before(async () => {
  const started = Date.now();
  await kpackChecker();
  process.stderr.write(`kpack checker ready in ${Date.now() - started} ms\n`);
  shared.registry = await startRegistry({ flavour: "anonymous" });
  shared.work = await makeTempDir("kpack");
});

after(async () => {
  await shared.registry?.stop();
  if (shared.work) await removeTree(shared.work);
});

/**
 * A project with one service: `shop/` with a project.toml excluding logs and `secrets/`, every
 * mode set, so its source image — and so the dry run's digest — is the same on every machine.
 */
async function project(root: string): Promise<string> {
  const app = join(root, "shop");
  await mkdir(join(app, "secrets"), { recursive: true });
  await mkdir(join(app, "src", "lib"), { recursive: true });
  const files: Array<[string, string, number]> = [
    [
      "project.toml",
      '[_]\nschema-version = "0.2"\n\n[io.buildpacks]\nexclude = ["*.log", "secrets"]\n',
      0o644,
    ],
    ["Procfile", "web: node src/index.js\n", 0o644],
    ["src/index.js", "console.log('shop');\n", 0o644],
    ["src/lib/util.js", "export const x = 1;\n", 0o644],
    ["run.sh", "#!/bin/sh\nexec node src/index.js\n", 0o755],
    ["debug.log", "noise\n", 0o644],
    ["secrets/key", "do not ship\n", 0o600],
  ];
  for (const [path, content, mode] of files) {
    await writeFile(join(app, path), content);
    await chmod(join(app, path), mode);
  }
  for (const dir of ["", "secrets", "src", "src/lib"]) await chmod(join(app, dir), 0o755);
  await writeFile(
    join(root, "locald.toml"),
    '[services.shop.build]\npath = "shop"\nenv = { NODE_ENV = "production" }\n',
  );
  return app;
}

const KPACK_FLAGS = [
  "--remote",
  "kpack",
  "-t",
  "registry.example.com/team/shop",
  "--namespace",
  "team",
  "--service-account",
  "kpack-builds",
  "--cache-size",
  "1Gi",
  "-e",
  "BP_LOG_LEVEL=DEBUG",
];

describe("locald build --remote kpack", () => {
  test("--dry-run prints the same YAML every time (golden), and kpack's validation accepts it", async () => {
    const root = join(work(), "golden");
    await mkdir(root);
    await project(root);
    const args = ["build", "shop", ...KPACK_FLAGS, "--builder", "ClusterBuilder/base", "--dry-run"];
    const first = await runLocald(args, { cwd: root, env: { LOCALD_HOME: join(work(), "home") } });
    assert.equal(first.code, 0, first.stderr);
    if (process.env.LOCALD_UPDATE_GOLDEN === "1") await writeFile(GOLDEN, first.stdout);
    assert.equal(
      first.stdout,
      await readFile(GOLDEN, "utf8"),
      "the dry run matches e2e/fixtures/kpack/dry-run.yaml",
    );
    const second = await runLocald(args, { cwd: root, env: { LOCALD_HOME: join(work(), "home") } });
    assert.equal(second.stdout, first.stdout);
    const checked = await checkKpack(first.stdout);
    assert.ok(checked.ok, checked.output);
    assert.match(checked.output, /1 kpack resources valid/);
  });

  test("a builder image becomes a Builder with -b's order; a clean git checkout is sent as its commit; both valid", async () => {
    const root = join(work(), "git");
    await mkdir(root);
    const app = await project(root);
    await writeFile(join(app, ".gitignore"), "*.log\nsecrets/\n");
    const git = (...args: string[]) => runBinary("git", ["-C", app, ...args]);
    await git("init", "-q");
    await git("-c", "user.name=t", "-c", "user.email=t@example.com", "add", ".");
    await git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "shop");
    await git("remote", "add", "origin", "https://git.example.com/team/shop.git");
    const head = (await git("rev-parse", "HEAD")).stdout.trim();
    const result = await runLocald(
      [
        "build",
        "shop",
        ...KPACK_FLAGS,
        "--builder",
        "localhost:5000/builders/base:1",
        "-b",
        "example/node@1.0.0",
        "-b",
        "example/procfile",
        "--dry-run",
      ],
      { cwd: root, env: { LOCALD_HOME: join(work(), "home") } },
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^kind: Builder$/m);
    assert.match(
      result.stdout,
      /^ {4}git:\n {6}url: https:\/\/git.example.com\/team\/shop.git\n {6}revision: ([0-9a-f]{40})$/m,
    );
    assert.ok(result.stdout.includes(`revision: ${head}`));
    assert.match(result.stdout, /- id: example\/node\n {10}version: 1.0.0\n {8}- id: example\/procfile/);
    const checked = await checkKpack(result.stdout);
    assert.ok(checked.ok, checked.output);
    assert.match(checked.output, /2 kpack resources valid/);
  });

  test("--builder REF alone: the Builder's order is the builder image's own (read from a real registry)", async () => {
    const registry = shared.registry as TestRegistry;
    const { builder } = await pushSampleBuilder(registry, work(), ["procfile"]);
    const procfile = await sampleBuildpack("procfile");
    const root = join(work(), "builder-order");
    await mkdir(root);
    await project(root);
    const result = await runLocald(
      [
        "--insecure-registry",
        registry.host,
        "build",
        "shop",
        ...KPACK_FLAGS,
        "--builder",
        builder,
        "--dry-run",
      ],
      { cwd: root, env: { LOCALD_HOME: join(work(), "home") } },
    );
    assert.equal(result.code, 0, result.stderr);
    assert.ok(result.stdout.includes(`locald.dev/builder-image: ${builder}`), result.stdout);
    assert.ok(
      result.stdout.includes(
        `- group:\n        - id: ${procfile.id}\n          version: ${procfile.version}\n`,
      ),
      result.stdout,
    );
    const checked = await checkKpack(result.stdout);
    assert.ok(checked.ok, checked.output);
  });

  test("kpack's validation catches a wrong field and a wrong value (the checker is no rubber stamp)", async () => {
    const golden = await readFile(GOLDEN, "utf8");
    const misspelt = await checkKpack(golden.replace("serviceAccountName:", "serviceAccount_Name:"));
    assert.equal(misspelt.ok, false);
    assert.match(misspelt.output, /unknown field "serviceAccount_Name"/);
    const wrongKind = await checkKpack(golden.replace("kind: ClusterBuilder", "kind: Stack"));
    assert.equal(wrongKind.ok, false);
    assert.match(wrongKind.output, /invalid value: Stack: spec\.builder\.kind/);
    const noTag = await checkKpack(golden.replace(/^ {2}tag: .*\n/m, ""));
    assert.equal(noTag.ok, false);
    assert.match(noTag.output, /missing field\(s\): spec\.tag/);
  });

  test("applied: the source image is pushed with exactly the app's files minus the excludes, the Build followed", async () => {
    const registry = shared.registry as TestRegistry;
    const root = join(work(), "push");
    await mkdir(root);
    await project(root);
    // A recording stand-in for kubectl (no cluster here): it keeps what is applied, and reports
    // one succeeded Build once something has been.
    const bin = join(work(), "fake-kubectl-bin");
    await mkdir(bin);
    const builds = JSON.stringify({
      apiVersion: "v1",
      kind: "List",
      items: [
        {
          metadata: { name: "shop-build-1", labels: { "image.kpack.io/buildNumber": "1" } },
          status: {
            conditions: [{ type: "Succeeded", status: "True" }],
            latestImage: `${registry.host}/team/shop@sha256:${"1".repeat(64)}`,
          },
        },
      ],
    });
    await writeFile(join(bin, "builds.json"), builds);
    await writeFile(
      join(bin, "kubectl"),
      `#!/bin/sh
here=$(dirname "$0")
echo "$*" >> "$here/calls"
case "$1" in
  apply) cat > "$here/applied.yaml"; echo "image.kpack.io/shop created" ;;
  get) if [ -f "$here/applied.yaml" ]; then cat "$here/builds.json"; else echo '{"items":[]}'; fi ;;
  *) echo "unexpected kubectl $*" >&2; exit 2 ;;
esac
`,
    );
    await chmod(join(bin, "kubectl"), 0o755);
    const tag = `${registry.host}/team/shop`;
    const result = await runLocald(
      ["--insecure-registry", registry.host, "build", "shop", "--remote", "kpack", "-t", tag],
      // No git on this PATH: the directory is uploaded (it is no checkout anyway).
      { cwd: root, env: { LOCALD_HOME: join(work(), "home"), PATH: `${bin}:/bin` } },
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /Source: pushed the app's files as /);
    assert.match(result.stderr, /shop-build-1: succeeded/);
    assert.match(
      result.stdout,
      /kpack built .*\/team\/shop@sha256:1{64} \(shop-build-1 in namespace default\)/,
    );
    const calls = (await readFile(join(bin, "calls"), "utf8")).trim().split("\n");
    assert.deepEqual(calls, [
      "get builds --namespace default -l image.kpack.io/image=shop -o json",
      "apply --namespace default -f -",
      "get builds --namespace default -l image.kpack.io/image=shop -o json",
    ]);
    const applied = await readFile(join(bin, "applied.yaml"), "utf8");
    const checked = await checkKpack(applied);
    assert.ok(checked.ok, checked.output);
    const source = /image: (\S+-source@sha256:[0-9a-f]{64})/.exec(applied)?.[1];
    assert.ok(source, applied);
    const out = join(work(), "pulled");
    const unpacked = await runLocald(["--insecure-registry", registry.host, "image", "unpack", source, out], {
      env: { LOCALD_HOME: join(work(), "home2") },
    });
    assert.equal(unpacked.code, 0, unpacked.stderr);
    const files: string[] = [];
    const walk = async (dir: string) => {
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) await walk(path);
        else files.push(relative(out, path));
      }
    };
    await walk(out);
    assert.deepEqual(files.sort(), ["Procfile", "project.toml", "run.sh", "src/index.js", "src/lib/util.js"]);
    assert.equal(await readFile(join(out, "src/index.js"), "utf8"), "console.log('shop');\n");
  });

  test("without kubectl: one clear paragraph, exit 1, nothing pushed", async () => {
    const root = join(work(), "nokubectl");
    await mkdir(root);
    await project(root);
    const empty = join(work(), "empty-path");
    await mkdir(empty);
    const result = await runLocald(
      ["build", "shop", "--remote", "kpack", "-t", "registry.example.com/team/shop"],
      {
        cwd: root,
        env: { LOCALD_HOME: join(work(), "home"), PATH: empty },
      },
    );
    assert.equal(result.code, 1);
    assert.match(result.stderr, /there is no kubectl on PATH, so nothing was pushed or applied/);
    assert.match(result.stderr, /Install kubectl .* or run with --dry-run/);
    assert.equal(result.stdout, "");
  });

  test("kpack-only flags without --remote, and local-only flags with it, are usage errors", async () => {
    const a = await runLocald(["build", ".", "--namespace", "x"], { cwd: work() });
    assert.equal(a.code, 2);
    assert.match(a.stderr, /--namespace is for builds handed to kpack/);
    const b = await runLocald(["build", ".", "--remote", "kpack", "-t", "r.example/a", "--publish"], {
      cwd: work(),
    });
    assert.equal(b.code, 2);
    assert.match(b.stderr, /--publish is for builds run here/);
  });
});
