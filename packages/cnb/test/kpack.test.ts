import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  applyKpack,
  followBuild,
  KpackBuildError,
  KpackConfigError,
  type KpackOptions,
  KubectlMissingError,
  type KubectlRunner,
  kpackDefaults,
  kpackResources,
  kubectlRunner,
  kubernetesName,
  latestBuildNumber,
  parseBuilds,
  parseKpackBuilder,
  prepareKpackHandOff,
  renderKpackYaml,
  sourceEntries,
  sourceImage,
  sourceImageFor,
} from "../src/remote/index.js";

const BASE: KpackOptions = {
  tag: "registry.example.com/team/my-app",
  source: {
    kind: "git",
    url: "https://example.com/app.git",
    revision: "0123456789abcdef0123456789abcdef01234567",
  },
};

const refused = (options: KpackOptions, message: RegExp) =>
  assert.throws(
    () => kpackResources(options),
    (error: unknown) => error instanceof KpackConfigError && message.test(error.message),
  );

describe("kpack resources", () => {
  test("defaults: the name from the tag, namespace and service account default, ClusterBuilder default, a 2G cache", () => {
    const resolved = kpackDefaults(BASE);
    assert.equal(resolved.name, "my-app");
    assert.equal(resolved.namespace, "default");
    assert.equal(resolved.serviceAccount, "default");
    assert.deepEqual(resolved.builder, { kind: "ClusterBuilder", name: "default" });
    assert.equal(resolved.cacheSize, "2G");
    const [image, ...rest] = kpackResources(BASE);
    assert.equal(rest.length, 0);
    assert.deepEqual(image, {
      apiVersion: "kpack.io/v1alpha2",
      kind: "Image",
      metadata: { name: "my-app", namespace: "default" },
      spec: {
        tag: "registry.example.com/team/my-app",
        builder: { kind: "ClusterBuilder", name: "default" },
        serviceAccountName: "default",
        source: {
          git: {
            url: "https://example.com/app.git",
            revision: BASE.source.kind === "git" ? BASE.source.revision : "",
          },
        },
        cache: { volume: { size: "2G" } },
      },
    });
  });

  test("env: in order, a later value wins, none means no spec.build", () => {
    const [image] = kpackResources({
      ...BASE,
      env: ["A=1", "B=x=y", "A=2"],
      source: { kind: "registry", image: `r.example/a-source@sha256:${"a".repeat(64)}` },
    });
    assert.equal(image?.kind, "Image");
    if (image?.kind !== "Image") return;
    assert.deepEqual(image.spec.build, {
      env: [
        { name: "A", value: "2" },
        { name: "B", value: "x=y" },
      ],
    });
    assert.deepEqual(image.spec.source, {
      registry: { image: `r.example/a-source@sha256:${"a".repeat(64)}` },
    });
  });

  test("a builder image becomes a namespaced Builder with its order, on the default stack and store", () => {
    const resources = kpackResources({
      ...BASE,
      namespace: "team",
      serviceAccount: "builder-sa",
      builder: {
        kind: "image",
        reference: "paketobuildpacks/builder-jammy-base",
        order: [
          {
            group: [
              { id: "paketo-buildpacks/nodejs", version: "1.2.3" },
              { id: "x/opt", optional: true },
            ],
          },
        ],
      },
    });
    assert.deepEqual(
      resources.map((r) => r.kind),
      ["Builder", "Image"],
    );
    const [builder, image] = resources;
    if (builder?.kind !== "Builder" || image?.kind !== "Image") throw new Error("kinds");
    assert.deepEqual(builder.metadata, {
      name: "my-app-builder",
      namespace: "team",
      annotations: { "locald.dev/builder-image": "paketobuildpacks/builder-jammy-base" },
    });
    assert.equal(builder.spec.tag, "registry.example.com/team/my-app-builder:latest");
    assert.deepEqual(builder.spec.stack, { kind: "ClusterStack", name: "default" });
    assert.deepEqual(builder.spec.store, { kind: "ClusterStore", name: "default" });
    assert.equal(builder.spec.serviceAccountName, "builder-sa");
    assert.deepEqual(builder.spec.order, [
      {
        group: [
          { id: "paketo-buildpacks/nodejs", version: "1.2.3" },
          { id: "x/opt", optional: true },
        ],
      },
    ]);
    assert.deepEqual(image.spec.builder, { kind: "Builder", name: "my-app-builder" });
  });

  test("--builder: explicit kinds, bare names are ClusterBuilders, anything else an image", () => {
    assert.deepEqual(parseKpackBuilder("base"), { kind: "ClusterBuilder", name: "base" });
    assert.deepEqual(parseKpackBuilder("Builder/mine"), { kind: "Builder", name: "mine" });
    assert.deepEqual(parseKpackBuilder("ClusterBuilder/x"), { kind: "ClusterBuilder", name: "x" });
    assert.deepEqual(parseKpackBuilder("paketobuildpacks/builder-jammy-base"), {
      kind: "image",
      reference: "paketobuildpacks/builder-jammy-base",
    });
    assert.deepEqual(parseKpackBuilder("localhost:5000/b:1"), {
      kind: "image",
      reference: "localhost:5000/b:1",
    });
  });

  test("names are made Kubernetes labels", () => {
    assert.equal(kubernetesName("My_App.v2"), "my-app-v2");
    assert.equal(kubernetesName("---"), "app");
    assert.equal(kubernetesName("a".repeat(80)).length, 63);
  });

  test("what kpack's webhook would refuse is refused first, every problem in one message", () => {
    refused({ ...BASE, name: "Bad_Name" }, /Image name "Bad_Name"/);
    refused({ ...BASE, namespace: "" }, /namespace/);
    refused({ ...BASE, tag: `registry.example.com/a@sha256:${"b".repeat(64)}` }, /names a digest/);
    refused({ ...BASE, cacheSize: "lots" }, /cache size "lots"/);
    refused({ ...BASE, env: ["1X=2"] }, /"1X" is not a variable name/);
    refused({ ...BASE, env: ["ALONE"] }, /has no value/);
    refused(
      { ...BASE, source: { kind: "git", url: "", revision: "" } },
      /no url; the git source has no revision/,
    );
    refused({ ...BASE, builder: { kind: "image", reference: "b/c", order: [] } }, /no buildpack order/);
    refused({ ...BASE, builder: { kind: "ClusterBuilder", name: "" } }, /has no name/);
    assert.throws(() => kpackResources({ ...BASE, tag: "Not A Tag" }), KpackConfigError);
  });

  test("YAML: the same resources, the same bytes, documents separated by ---", () => {
    const options: KpackOptions = {
      ...BASE,
      env: ["A=1"],
      builder: { kind: "image", reference: "b.example/builder:1", order: [{ group: [{ id: "x/y" }] }] },
    };
    const yaml = renderKpackYaml(kpackResources(options));
    assert.equal(yaml, renderKpackYaml(kpackResources(options)));
    assert.match(yaml, /^apiVersion: kpack.io\/v1alpha2\nkind: Builder\n/);
    assert.match(yaml, /\n---\napiVersion: kpack.io\/v1alpha2\nkind: Image\n/);
    assert.match(yaml, /\n {6}- name: A\n {8}value: "1"\n/);
  });
});

describe("kpack source", () => {
  test("the source image is named after the app's tag", () => {
    assert.equal(
      sourceImageFor("registry.example.com/team/app:v1"),
      "registry.example.com/team/app-source:latest",
    );
  });

  test("the source leaves out .git and project.toml's excludes; same files, same digest", async () => {
    const app = await mkdtemp(join(tmpdir(), "kpack-source-"));
    try {
      await mkdir(join(app, ".git"));
      await writeFile(join(app, ".git", "HEAD"), "ref: x\n");
      await mkdir(join(app, "secrets"));
      await writeFile(join(app, "secrets", "key"), "k");
      await writeFile(join(app, "app.js"), "1");
      await writeFile(join(app, "debug.log"), "x");
      const descriptor = { env: [], exclude: ["secrets", "*.log"], group: [], pre: [], post: [] };
      const paths = (await sourceEntries(app, descriptor)).map((entry) => entry.path);
      assert.deepEqual(paths, ["app.js"]);
      const a = await sourceImage(app, "r.example/app-source", { descriptor, push: false });
      const b = await sourceImage(app, "r.example/app-source:latest", { descriptor, push: false });
      assert.deepEqual(a, b);
      assert.match(a.kind === "registry" ? a.image : "", /^r\.example\/app-source@sha256:[0-9a-f]{64}$/);
    } finally {
      await rm(app, { recursive: true, force: true });
    }
  });
});

describe("kpack hand-off", () => {
  test("the order comes from -b, else project.toml's group; paths and images are refused as buildpacks", async () => {
    const app = await mkdtemp(join(tmpdir(), "kpack-handoff-"));
    try {
      await writeFile(join(app, "app.js"), "1");
      const common = {
        appDir: app,
        tag: "r.example/team/app",
        builder: "r.example/builder:1",
        dryRun: true,
        upload: true,
      };
      const group = { env: [], group: ["from/project@2.0"], pre: [], post: [] };
      const fromFlags = await prepareKpackHandOff({
        ...common,
        buildpacks: ["a/b@1.0", "c/d"],
        descriptor: group,
      });
      assert.match(fromFlags.yaml, /- id: a\/b\n {10}version: "1.0"\n {8}- id: c\/d\n/);
      const fromProject = await prepareKpackHandOff({ ...common, descriptor: group });
      assert.match(fromProject.yaml, /- id: from\/project\n {10}version: "2.0"\n/);
      assert.equal(fromProject.image, "app");
      assert.equal(fromProject.namespace, "default");
      for (const bad of ["./bp", "/abs/bp", "bp.tgz", "gcr.io/x/bp:1"])
        await assert.rejects(
          prepareKpackHandOff({ ...common, buildpacks: [bad] }),
          (error: unknown) => error instanceof KpackConfigError && /is not an id/.test(error.message),
        );
    } finally {
      await rm(app, { recursive: true, force: true });
    }
  });
});

/** A stand-in for kubectl: answers `get builds` from a script of replies, records every call. */
function recordingKubectl(replies: ReadonlyArray<ReadonlyArray<object>>) {
  const calls: Array<{ args: readonly string[]; input?: string }> = [];
  let next = 0;
  const runner: KubectlRunner = async (args, input) => {
    calls.push({ args, ...(input === undefined ? {} : { input }) });
    if (args[0] === "apply") return "image.kpack.io/app configured\n";
    const items = replies[Math.min(next++, replies.length - 1)] ?? [];
    return JSON.stringify({ apiVersion: "v1", kind: "List", items });
  };
  return { runner, calls };
}

const build = (number: number, status?: "True" | "False" | "Unknown", extra: object = {}) => ({
  metadata: { name: `app-build-${number}`, labels: { "image.kpack.io/buildNumber": String(number) } },
  status: status === undefined ? {} : { conditions: [{ type: "Succeeded", status, ...extra }], ...extra },
});

describe("following a kpack Build", () => {
  const noWait = async () => {};

  test("apply sends the YAML on stdin in the namespace", async () => {
    const { runner, calls } = recordingKubectl([]);
    await applyKpack(runner, "kind: Image\n", "team");
    assert.deepEqual(calls, [{ args: ["apply", "--namespace", "team", "-f", "-"], input: "kind: Image\n" }]);
  });

  test("builds are read from kubectl's JSON, ordered by number", () => {
    const parsed = parseBuilds(
      JSON.stringify({ items: [build(2, "Unknown"), build(1, "True", { latestImage: "r/a@sha256:1" })] }),
    );
    assert.deepEqual(
      parsed.map((b) => [b.name, b.succeeded, b.buildNumber]),
      [
        ["app-build-1", "True", 1],
        ["app-build-2", "Unknown", 2],
      ],
    );
    assert.throws(() => parseBuilds("not json"), /not a list of Builds/);
  });

  test("the new Build is followed until it succeeds, each change reported once", async () => {
    const { runner, calls } = recordingKubectl([
      [build(1, "True")],
      [build(1, "True"), build(2)],
      [build(1, "True"), build(2, "Unknown")],
      [build(1, "True"), build(2, "Unknown")],
      [build(1, "True"), build(2, "True", { latestImage: "r/app@sha256:2" })],
    ]);
    const waits: number[] = [];
    const seen: string[] = [];
    assert.equal(await latestBuildNumber(runner, "app", "default"), 1);
    const done = await followBuild(runner, "app", "default", {
      after: 1,
      sleep: async (ms) => {
        waits.push(ms);
      },
      onStatus: (s) => seen.push(`${s.name}:${s.succeeded}`),
    });
    assert.equal(done.latestImage, "r/app@sha256:2");
    assert.deepEqual(seen, ["app-build-2:Unknown", "app-build-2:True"]);
    assert.deepEqual(waits, [1000, 2000, 4000]);
    assert.deepEqual(calls[1]?.args, [
      "get",
      "builds",
      "--namespace",
      "default",
      "-l",
      "image.kpack.io/image=app",
      "-o",
      "json",
    ]);
  });

  test("a failed Build is a KpackBuildError with kpack's reason and message", async () => {
    const { runner } = recordingKubectl([
      [build(3, "False", { reason: "BuildFailed", message: "step-build exited 51" })],
    ]);
    await assert.rejects(
      followBuild(runner, "app", "default", { sleep: noWait }),
      (error: unknown) =>
        error instanceof KpackBuildError &&
        /app-build-3 failed \(BuildFailed\): step-build exited 51/.test(error.message),
    );
  });

  test("an unchanged Image starts no Build: the latest one is followed after a few polls", async () => {
    const { runner } = recordingKubectl([[build(4, "True")]]);
    const done = await followBuild(runner, "app", "default", { after: 4, sleep: noWait, newBuildPolls: 3 });
    assert.equal(done.name, "app-build-4");
  });

  test("no Build at all gives up after the timeout", async () => {
    const { runner } = recordingKubectl([[]]);
    await assert.rejects(
      followBuild(runner, "app", "default", { sleep: noWait, timeoutMs: 5000 }),
      /started no Build/,
    );
  });

  test("without kubectl on PATH: a KubectlMissingError saying what to do", async () => {
    const empty = await mkdtemp(join(tmpdir(), "no-kubectl-"));
    try {
      await assert.rejects(
        kubectlRunner(empty),
        (error: unknown) =>
          error instanceof KubectlMissingError &&
          error.code === "KUBECTL_MISSING" &&
          /--dry-run/.test(error.hint ?? ""),
      );
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});
