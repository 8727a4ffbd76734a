import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, type TestContext, test } from "node:test";
import { CredentialsError } from "../src/errors.js";
import {
  anonymous,
  dockerConfigCredentials,
  dockerConfigDir,
  dockerConfigKey,
  parseChallenge,
  removeDockerCredentials,
  saveDockerCredentials,
  staticCredentials,
} from "../src/registry/auth.js";

async function tempDir(t: TestContext, prefix = "oci-auth-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function writeConfig(dir: string, config: unknown, mode = 0o644): Promise<string> {
  const path = join(dir, "config.json");
  await writeFile(path, JSON.stringify(config), { mode });
  await chmod(path, mode);
  return path;
}

function b64(text: string): string {
  return Buffer.from(text).toString("base64");
}

/**
 * Installs `docker-credential-testhelper` first on PATH. It logs "<action> <stdin>" lines to
 * `log`, answers `get` from a table of server URL → JSON, prints "credentials not found" with
 * exit 1 for anything else, and stores/erases by appending to the log.
 */
async function installHelper(
  t: TestContext,
  answers: Record<string, { Username: string; Secret: string }>,
  name = "testhelper",
): Promise<{ log: string }> {
  const dir = await tempDir(t, "oci-helper-");
  const log = join(dir, "calls.log");
  const cases = Object.entries(answers)
    .map(
      ([url, value]) =>
        `    ${shellQuote(url)}) printf '%s' ${shellQuote(JSON.stringify({ ServerURL: url, ...value }))} ;;`,
    )
    .join("\n");
  const script = `#!/bin/sh
input=$(cat)
printf '%s %s\\n' "$1" "$input" >> ${shellQuote(log)}
case "$1" in
  get)
    case "$input" in
${cases}
    *) echo "credentials not found in native keychain"; exit 1 ;;
    esac ;;
  store|erase) exit 0 ;;
  *) exit 2 ;;
esac
`;
  const path = join(dir, `docker-credential-${name}`);
  await writeFile(path, script, { mode: 0o755 });
  const previous = process.env.PATH;
  process.env.PATH = `${dir}:${previous ?? ""}`;
  t.after(() => {
    process.env.PATH = previous;
  });
  return { log };
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

async function helperCalls(log: string): Promise<string[]> {
  try {
    return (await readFile(log, "utf8")).split("\n").filter((line) => line !== "");
  } catch {
    return [];
  }
}

describe("parseChallenge", () => {
  test("Bearer with a comma inside a quoted scope", () => {
    const challenge = parseChallenge(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push"',
    );
    assert.deepEqual(challenge, {
      scheme: "bearer",
      params: {
        realm: "https://auth.docker.io/token",
        service: "registry.docker.io",
        scope: "repository:a/b:pull,push",
      },
    });
  });

  test("Basic realm", () => {
    assert.deepEqual(parseChallenge('Basic realm="x"'), { scheme: "basic", params: { realm: "x" } });
  });

  test("spaces after commas, unquoted values, mixed-case names and escapes", () => {
    assert.deepEqual(
      parseChallenge('bearer Realm="http://h/t", service=svc, error="invalid_token", x="a\\"b"'),
      {
        scheme: "bearer",
        params: { realm: "http://h/t", service: "svc", error: "invalid_token", x: 'a"b' },
      },
    );
  });

  test("a scheme alone", () => {
    assert.deepEqual(parseChallenge("Negotiate"), { scheme: "negotiate", params: {} });
  });

  // Found by challenge.fuzz.test.ts (minimal counterexamples).
  test("any RFC 9110 token is a scheme or a parameter name", () => {
    assert.deepEqual(parseChallenge("0"), { scheme: "0", params: {} });
    assert.deepEqual(parseChallenge("X-Auth.v2 a.b=1, c~d=2"), {
      scheme: "x-auth.v2",
      params: { "a.b": "1", "c~d": "2" },
    });
  });

  test("empty list elements are skipped, not the end of the parameters", () => {
    assert.deepEqual(parseChallenge('A a=A,,A0=""'), { scheme: "a", params: { a: "A", a0: "" } });
    assert.deepEqual(parseChallenge('Bearer , realm="r", ,service=s'), {
      scheme: "bearer",
      params: { realm: "r", service: "s" },
    });
  });

  test("a __proto__ parameter is a parameter like any other", () => {
    const challenge = parseChallenge('Bearer __proto__="x", realm="r"');
    assert.equal(Object.getOwnPropertyDescriptor(challenge?.params, "__proto__")?.value, "x");
    assert.equal(challenge?.params.realm, "r");
  });

  test("garbage", () => {
    assert.equal(parseChallenge(""), undefined);
    assert.equal(parseChallenge("=== "), undefined);
  });
});

describe("small helpers", () => {
  test("dockerConfigDir honours DOCKER_CONFIG, else HOME/.docker", () => {
    assert.equal(dockerConfigDir({ DOCKER_CONFIG: "/x/y" }), "/x/y");
    assert.equal(dockerConfigDir({ HOME: "/home/u" }), "/home/u/.docker");
  });

  test("dockerConfigKey uses docker's legacy Hub key", () => {
    assert.equal(dockerConfigKey("docker.io"), "https://index.docker.io/v1/");
    assert.equal(dockerConfigKey("127.0.0.1:5000"), "127.0.0.1:5000");
  });

  test("staticCredentials and anonymous", async () => {
    const provider = staticCredentials({ "a:1": { username: "u", password: "p" } });
    assert.deepEqual(await provider("a:1"), { username: "u", password: "p" });
    assert.equal(await provider("b"), undefined);
    assert.equal(await anonymous("a:1"), undefined);
  });
});

describe("dockerConfigCredentials: auths", () => {
  test("no config.json means no credentials", async (t) => {
    const dir = await tempDir(t);
    assert.equal(await dockerConfigCredentials({ configDir: dir })("docker.io"), undefined);
  });

  test("base64 auth, identitytoken, registrytoken and plain username/password", async (t) => {
    const dir = await tempDir(t);
    await writeConfig(dir, {
      auths: {
        "registry.example.com": { auth: b64("alice:s3cr:et") },
        "id.example.com": { auth: "", identitytoken: "refresh-123", username: "bob" },
        "rt.example.com": { registrytoken: "tok-9" },
        "plain.example.com": { username: "carol", password: "pw" },
        "empty.example.com": {},
      },
    });
    const provider = dockerConfigCredentials({ configDir: dir });
    assert.deepEqual(await provider("registry.example.com"), { username: "alice", password: "s3cr:et" });
    assert.deepEqual(await provider("id.example.com"), { identityToken: "refresh-123", username: "bob" });
    assert.deepEqual(await provider("rt.example.com"), { registryToken: "tok-9" });
    assert.deepEqual(await provider("plain.example.com"), { username: "carol", password: "pw" });
    assert.equal(await provider("empty.example.com"), undefined);
    assert.equal(await provider("other.example.com"), undefined);
  });

  test("the key https://index.docker.io/v1/ is matched for docker.io", async (t) => {
    const dir = await tempDir(t);
    await writeConfig(dir, { auths: { "https://index.docker.io/v1/": { auth: b64("hub:pw") } } });
    const provider = dockerConfigCredentials({ configDir: dir });
    assert.deepEqual(await provider("docker.io"), { username: "hub", password: "pw" });
    assert.equal(await provider("index.docker.io/v1"), undefined);
  });

  test("the key http://127.0.0.1:5000 is matched for 127.0.0.1:5000 but not for another port", async (t) => {
    const dir = await tempDir(t);
    await writeConfig(dir, { auths: { "http://127.0.0.1:5000": { auth: b64("local:pw") } } });
    const provider = dockerConfigCredentials({ configDir: dir });
    assert.deepEqual(await provider("127.0.0.1:5000"), { username: "local", password: "pw" });
    assert.equal(await provider("127.0.0.1:5001"), undefined);
    assert.equal(await provider("127.0.0.1"), undefined);
  });

  test("a malformed auth field is a CredentialsError", async (t) => {
    const dir = await tempDir(t);
    await writeConfig(dir, { auths: { "r.example.com": { auth: b64("no-colon") } } });
    await assert.rejects(dockerConfigCredentials({ configDir: dir })("r.example.com"), (error: unknown) => {
      assert.ok(error instanceof CredentialsError);
      assert.equal(error.code, "CREDENTIALS");
      assert.match(error.message, /malformed/);
      assert.ok(!error.message.includes("no-colon"), "the message must not leak the secret");
      return true;
    });
  });

  test("invalid JSON in config.json is a CredentialsError", async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, "config.json"), "{not json");
    await assert.rejects(dockerConfigCredentials({ configDir: dir })("x"), (error: unknown) => {
      return error instanceof CredentialsError && /not valid JSON/.test(error.message);
    });
    await writeFile(join(dir, "config.json"), "[]");
    await assert.rejects(dockerConfigCredentials({ configDir: dir })("x"), CredentialsError);
  });
});

describe("dockerConfigCredentials: credential helpers", () => {
  test("credHelpers runs docker-credential-<name> get with the server URL on stdin", async (t) => {
    const { log } = await installHelper(t, {
      "127.0.0.1:5000": { Username: "helper-user", Secret: "helper-pw" },
      "https://index.docker.io/v1/": { Username: "hub-user", Secret: "hub-pw" },
    });
    const dir = await tempDir(t);
    await writeConfig(dir, {
      credHelpers: { "127.0.0.1:5000": "testhelper", "docker.io": "testhelper" },
      auths: { "127.0.0.1:5000": { auth: b64("ignored:ignored") } },
    });
    const provider = dockerConfigCredentials({ configDir: dir });
    assert.deepEqual(await provider("127.0.0.1:5000"), { username: "helper-user", password: "helper-pw" });
    assert.deepEqual(await provider("docker.io"), { username: "hub-user", password: "hub-pw" });
    assert.deepEqual(await helperCalls(log), ["get 127.0.0.1:5000", "get https://index.docker.io/v1/"]);
  });

  test("a helper answering Username <token> gives an identity token", async (t) => {
    await installHelper(t, { "r.example.com": { Username: "<token>", Secret: "refresh-xyz" } });
    const dir = await tempDir(t);
    await writeConfig(dir, { credHelpers: { "r.example.com": "testhelper" } });
    assert.deepEqual(await dockerConfigCredentials({ configDir: dir })("r.example.com"), {
      identityToken: "refresh-xyz",
    });
  });

  test("credsStore is used for every registry", async (t) => {
    const { log } = await installHelper(t, {
      "r.example.com": { Username: "store-user", Secret: "store-pw" },
    });
    const dir = await tempDir(t);
    await writeConfig(dir, { credsStore: "testhelper", auths: { "r.example.com": {} } });
    assert.deepEqual(await dockerConfigCredentials({ configDir: dir })("r.example.com"), {
      username: "store-user",
      password: "store-pw",
    });
    assert.deepEqual(await helperCalls(log), ["get r.example.com"]);
  });

  test("credHelpers wins over credsStore", async (t) => {
    await installHelper(t, { "r.example.com": { Username: "from-a", Secret: "a" } }, "helpera");
    await installHelper(t, { "r.example.com": { Username: "from-b", Secret: "b" } }, "helperb");
    const dir = await tempDir(t);
    await writeConfig(dir, { credsStore: "helpera", credHelpers: { "r.example.com": "helperb" } });
    assert.deepEqual(await dockerConfigCredentials({ configDir: dir })("r.example.com"), {
      username: "from-b",
      password: "b",
    });
  });

  test("a helper printing 'credentials not found' with exit 1 means no credentials", async (t) => {
    const { log } = await installHelper(t, {});
    const dir = await tempDir(t);
    await writeConfig(dir, { credHelpers: { "r.example.com": "testhelper" } });
    assert.equal(await dockerConfigCredentials({ configDir: dir })("r.example.com"), undefined);
    assert.deepEqual(await helperCalls(log), ["get r.example.com"]);
  });

  test("credsStore without the entry falls back to a plain auths entry", async (t) => {
    await installHelper(t, {});
    const dir = await tempDir(t);
    await writeConfig(dir, { credsStore: "testhelper", auths: { "r.example.com": { auth: b64("u:p") } } });
    assert.deepEqual(await dockerConfigCredentials({ configDir: dir })("r.example.com"), {
      username: "u",
      password: "p",
    });
  });

  test("a helper that is not installed is a CredentialsError", async (t) => {
    const dir = await tempDir(t);
    await writeConfig(dir, { credHelpers: { "r.example.com": "definitely-not-installed-xyz" } });
    await assert.rejects(dockerConfigCredentials({ configDir: dir })("r.example.com"), (error: unknown) => {
      return error instanceof CredentialsError && /not on PATH/.test(error.message);
    });
  });

  test("a helper name that is not a plain word is refused without running anything", async (t) => {
    const dir = await tempDir(t);
    await writeConfig(dir, { credHelpers: { "r.example.com": "../../bin/sh" } });
    await assert.rejects(dockerConfigCredentials({ configDir: dir })("r.example.com"), (error: unknown) => {
      return error instanceof CredentialsError && /not a valid credential helper name/.test(error.message);
    });
  });
});

describe("saveDockerCredentials / removeDockerCredentials", () => {
  test("round trip preserves unrelated keys and writes mode 0600", async (t) => {
    const dir = await tempDir(t);
    await writeConfig(
      dir,
      {
        auths: {
          "other.example.com": { auth: b64("o:p") },
          "http://127.0.0.1:5000": { auth: b64("old:old") },
        },
        psFormat: "table {{.ID}}",
        proxies: { default: { httpProxy: "http://proxy:3128" } },
      },
      0o644,
    );
    const where = await saveDockerCredentials(
      "127.0.0.1:5000",
      { username: "new", password: "pa:ss" },
      { configDir: dir },
    );
    assert.equal(where, join(dir, "config.json"));
    const info = await stat(join(dir, "config.json"));
    assert.equal(info.mode & 0o777, 0o600);

    const saved = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    assert.equal(saved.psFormat, "table {{.ID}}");
    assert.deepEqual(saved.proxies, { default: { httpProxy: "http://proxy:3128" } });
    assert.deepEqual(saved.auths, {
      "other.example.com": { auth: b64("o:p") },
      "127.0.0.1:5000": { auth: b64("new:pa:ss") },
    });
    const provider = dockerConfigCredentials({ configDir: dir });
    assert.deepEqual(await provider("127.0.0.1:5000"), { username: "new", password: "pa:ss" });

    assert.equal(await removeDockerCredentials("127.0.0.1:5000", { configDir: dir }), true);
    const after = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    assert.deepEqual(after.auths, { "other.example.com": { auth: b64("o:p") } });
    assert.equal(after.psFormat, "table {{.ID}}");
    assert.equal((await stat(join(dir, "config.json"))).mode & 0o777, 0o600);
    assert.equal(await provider("127.0.0.1:5000"), undefined);
    assert.equal(await removeDockerCredentials("127.0.0.1:5000", { configDir: dir }), false);
  });

  test("saving for docker.io uses the legacy key and creates the directory", async (t) => {
    const parent = await tempDir(t);
    const dir = join(parent, "nested", ".docker");
    await saveDockerCredentials("docker.io", { username: "hub", password: "pw" }, { configDir: dir });
    const saved = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    assert.deepEqual(saved, { auths: { "https://index.docker.io/v1/": { auth: b64("hub:pw") } } });
    assert.equal((await stat(join(dir, "config.json"))).mode & 0o777, 0o600);
    assert.deepEqual(await dockerConfigCredentials({ configDir: dir })("docker.io"), {
      username: "hub",
      password: "pw",
    });
  });

  for (const helperKey of ["http://127.0.0.1:5000", "https://127.0.0.1:5000/v2/"]) {
    test(`a credHelpers entry keyed ${helperKey} is used when saving, as it is when reading`, async (t) => {
      const { log } = await installHelper(t, {});
      const dir = await tempDir(t);
      await writeConfig(dir, { credHelpers: { [helperKey]: "testhelper" } });
      const where = await saveDockerCredentials(
        "127.0.0.1:5000",
        { username: "u", password: "p" },
        { configDir: dir },
      );
      assert.equal(where, "docker-credential-testhelper");
      assert.ok((await helperCalls(log)).some((line) => line.startsWith("store ")));
      const saved = await readFile(join(dir, "config.json"), "utf8");
      assert.ok(!saved.includes(b64("u:p")), "the password must not be stored in clear");
      await removeDockerCredentials("127.0.0.1:5000", { configDir: dir });
      assert.ok((await helperCalls(log)).includes("erase 127.0.0.1:5000"), "logout erases from the helper");
    });
  }

  test("with a credsStore the secret goes to the helper and auths gets an empty entry", async (t) => {
    const { log } = await installHelper(t, {});
    const dir = await tempDir(t);
    await writeConfig(dir, { credsStore: "testhelper", currentContext: "x" });
    const where = await saveDockerCredentials(
      "r.example.com",
      { username: "u", password: "p" },
      { configDir: dir },
    );
    assert.equal(where, "docker-credential-testhelper");
    const saved = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    assert.deepEqual(saved, {
      credsStore: "testhelper",
      currentContext: "x",
      auths: { "r.example.com": {} },
    });
    assert.ok(!JSON.stringify(saved).includes('"p"'));
    const calls = await helperCalls(log);
    assert.equal(calls.length, 1);
    assert.ok(calls[0]?.startsWith("store "));
    assert.deepEqual(JSON.parse(calls[0]!.slice("store ".length)), {
      ServerURL: "r.example.com",
      Username: "u",
      Secret: "p",
    });

    assert.equal(await removeDockerCredentials("r.example.com", { configDir: dir }), true);
    assert.deepEqual((await helperCalls(log)).slice(1), ["erase r.example.com"]);
    const after = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    assert.deepEqual(after, { credsStore: "testhelper", currentContext: "x", auths: {} });
  });
});
