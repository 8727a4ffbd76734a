import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { buildEnvFiles, parseBuilderConfig } from "../src/create/builder-config.js";
import { CreateConfigError } from "../src/errors.js";

const BASE = `
[[buildpacks]]
uri = "./bp"
[[order]]
[[order.group]]
id = "x/y"
[lifecycle]
uri = "lifecycle.tgz"
[build]
image = "build:1"
[[run.images]]
image = "run:1"
`;

const refused = (text: string, message: RegExp) =>
  assert.throws(
    () => parseBuilderConfig(text, "builder.toml"),
    (error: unknown) => error instanceof CreateConfigError && message.test(error.message),
  );

describe("builder.toml", () => {
  test("pack's keys are read, the run images in order without repeats", () => {
    const config = parseBuilderConfig(
      `${BASE}\n[[run.images]]\nimage = "run:1"\n[stack]\nid = "s"\nrun-image = "legacy:1"\nrun-image-mirrors = ["m:1"]\n[[build.env]]\nname = "A"\nvalue = "1"\nsuffix = "append"\ndelim = ":"\n`,
      "builder.toml",
    );
    assert.deepEqual(config.buildpacks, [{ uri: "./bp" }]);
    assert.deepEqual(config.lifecycle, { uri: "lifecycle.tgz" });
    assert.equal(config.buildImage, "build:1");
    assert.deepEqual(config.runImages, [
      { image: "run:1", mirrors: [] },
      { image: "legacy:1", mirrors: ["m:1"] },
    ]);
    assert.equal(config.stackId, "s");
    assert.deepEqual(config.buildEnv.flatMap(buildEnvFiles), [
      { name: "A.append", content: "1" },
      { name: "A.delim", content: ":" },
    ]);
  });

  test("the legacy [stack] build-image and a buildpack image = … are understood", () => {
    const config = parseBuilderConfig(
      '[[buildpacks]]\nimage = "bp:1"\n[[order]]\n[[order.group]]\nid = "a"\n[stack]\nbuild-image = "b:1"\nrun-image = "r:1"\n',
      "builder.toml",
    );
    assert.equal(config.buildImage, "b:1");
    assert.deepEqual(config.buildpacks, [{ uri: "docker://bp:1" }]);
    assert.deepEqual(config.lifecycle, { version: "" });
  });

  test("mistakes are said in words", () => {
    refused("[[buildpacks]\n", /not valid TOML/);
    refused(BASE.replace('uri = "./bp"', 'id = "x/y"'), /\[\[buildpacks\]\] #1 .* has no uri/);
    refused(BASE.replace('[build]\nimage = "build:1"', ""), /names no build image/);
    refused(BASE.replace('[[run.images]]\nimage = "run:1"', ""), /names no run image/);
    refused(`${BASE}\n[[extensions]]\nuri = "e"\n`, /image extensions/);
    refused(
      BASE.replace('uri = "lifecycle.tgz"', 'uri = "l.tgz"\nversion = "0.21.0"'),
      /both a uri and a version/,
    );
    refused(BASE.replace('[[order]]\n[[order.group]]\nid = "x/y"', ""), /no detection order/);
    refused(BASE.replace('image = "build:1"', "image = 3"), /not a valid builder configuration/);
  });

  test("a build env name that is not a variable name is refused", () => {
    assert.throws(() => buildEnvFiles({ name: "../etc", value: "x" }), CreateConfigError);
  });
});
