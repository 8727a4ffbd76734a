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
    assert.deepEqual({ ...config.services?.worker }, {});
  });

  test("a TOML syntax error names the file, line and column", () => {
    rejects('[project]\nbuilder = "x\n', /^\/project\/locald\.toml:2:\d+: /);
  });

  test("a wrong type names the key", () => {
    rejects("[services.web.build]\nbuilder = 3\n", /services\.web\.build\.builder: Expected string/);
  });

  test("an unknown key (a typo) is refused, not ignored", () => {
    rejects('[services.web.build]\nbuidler = "x"\n', /services\.web\.build/);
    rejects('[projects]\nbuilder = "x"\n', /locald\.toml: /);
  });

  test("environment variable names and service names are checked", () => {
    rejects('[services.web.build]\nenv = { "1BAD" = "x" }\n', /services\.web\.build\.env/);
    rejects("[services.Web]\n", /services/);
  });
});
