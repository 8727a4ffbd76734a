import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConfigError, parseConfig } from "../src/config.js";

const FILE = "/project/locald.toml";

function rejects(text: string, pattern: RegExp): void {
  assert.throws(
    () => parseConfig(text, FILE),
    (error: unknown) =>
      error instanceof ConfigError && error.code === "CONFIG" && pattern.test(error.message),
  );
}

describe("locald.toml", () => {
  test("a project builder and services with build tables", () => {
    const config = parseConfig(
      [
        "[project]",
        'builder = "paketobuildpacks/builder-jammy-base"',
        "",
        "[services.web.build]",
        'path = "apps/web"',
        'buildpacks = ["paketo-buildpacks/nodejs"]',
        'env = { NODE_ENV = "production" }',
        'image = "registry.example.com/team/web:1"',
        "",
        "[services.worker]",
        'command = ["node", "worker.js"]',
        'depends_on = ["db", "web"]',
        "",
        "[services.db]",
        'type = "container"',
        'image = "redis:7"',
        "port = 6379",
        'env = { REDIS_ARGS = "--save 60 1" }',
      ].join("\n"),
      FILE,
    );
    assert.equal(config.project?.builder, "paketobuildpacks/builder-jammy-base");
    assert.deepEqual(JSON.parse(JSON.stringify(config.services?.web?.build)), {
      path: "apps/web",
      buildpacks: ["paketo-buildpacks/nodejs"],
      env: { NODE_ENV: "production" },
      image: "registry.example.com/team/web:1",
    });
    assert.deepEqual(config.services?.worker?.command, ["node", "worker.js"]);
    assert.equal(config.services?.db?.port, 6379);
  });

  test("a TOML syntax error names the file, line and column", () => {
    rejects('[project]\nbuilder = "x\n', /^\/project\/locald\.toml:2:\d+: /);
  });

  test("a wrong type names the key", () => {
    rejects("[services.web.build]\nbuilder = 3\n", /services\.web\.build\.builder: Expected string/);
  });

  test("an unknown key (a typo) is refused, not ignored", () => {
    rejects('[services.web.build]\nbuidler = "x"\n', /services\.web\.build/);
    rejects('[projects]\nbuilder = "x"\n', /locald\.toml:1:1: projects: /);
  });

  test("schema errors give the line and column of the key", () => {
    rejects(
      '[services.web]\ncommand = "x"\nport = "abc"\n',
      /^\/project\/locald\.toml:3:1: services\.web\.port: Expected integer/,
    );
    rejects(
      '[services.web]\ncommand = "x"\nbuild = { path = "a", bad = 1 }\n',
      /:3:23: services\.web\.build\.bad: Unexpected property/,
    );
    rejects(
      'services.web.command = "x"\nservices.web.prot = 1\n',
      /:2:1: services\.web\.prot: Unexpected property/,
    );
  });

  test("what a service is must add up", () => {
    rejects(
      '[services.db]\ntype = "container"\n',
      /:2:1: services\.db\.type: a "container" service needs an image/,
    );
    rejects(
      '[services.db]\nimage = "redis"\ntype = "command"\ncommand = "x"\n',
      /:2:1: services\.db\.image: only a "container"/,
    );
    rejects("[services.db]\nport = 1\n", /:1:1: services\.db: nothing to run/);
    rejects(
      '[services.a]\nimage = "x"\npath = "sub"\n',
      /services\.a\.path: path is where a command service runs/,
    );
  });

  test("dependencies must exist, not be the service itself, and not go round", () => {
    rejects(
      '[services.a]\ncommand = "x"\ndepends_on = ["b"]\n',
      /:3:1: services\.a\.depends_on: there is no service "b"/,
    );
    rejects('[services.a]\ncommand = "x"\ndepends_on = ["a"]\n', /cannot depend on itself/);
    rejects(
      '[services.a]\ncommand = "x"\ndepends_on = ["b"]\n[services.b]\ncommand = "y"\ndepends_on = ["a"]\n',
      /a dependency cycle: a → b → a/,
    );
  });

  // Found while fuzzing (config.fuzz.test.ts): the dependency walk recursed once per service.
  test("a chain of 10,000 dependent services is checked without exhausting the stack", () => {
    const count = 10_000;
    const text = Array.from(
      { length: count },
      (_, i) => `[services.s${i}]\ncommand = "x"\n${i + 1 < count ? `depends_on = ["s${i + 1}"]\n` : ""}`,
    ).join("");
    assert.equal(Object.keys(parseConfig(text, FILE).services ?? {}).length, count);
  });

  // Found while fuzzing: the key came out as a JSON pointer ("x~1y"), and without its line.
  test("a key with / or ~ in it is named as written, at its line", () => {
    rejects('[services.web]\ncommand = "x"\n"x/y" = 1\n', /:3:1: services\.web\.x\/y: Unexpected property/);
    rejects('[services.web]\ncommand = "x"\nenv = { "A~B" = "1" }\n', /:3:9: services\.web\.env\.A~B: /);
  });

  test("two services cannot share a fixed port", () => {
    rejects(
      '[services.a]\ncommand = "x"\nport = 80\n[services.b]\ncommand = "y"\nport = 80\n',
      /:6:1: services\.b\.port: port 80 is service "a"'s port too/,
    );
  });

  test("environment variable names and service names are checked", () => {
    rejects('[services.web.build]\nenv = { "1BAD" = "x" }\n', /services\.web\.build\.env/);
    rejects("[services.Web]\n", /services/);
  });
});
