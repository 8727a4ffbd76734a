import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { LayerEntry } from "@locald/oci";
import { buildpackFromEntries, buildpackLayerEntries } from "../src/create/buildpack-source.js";
import { CreateConfigError } from "../src/errors.js";

const toml = (id: string, version: string) =>
  Buffer.from(`api = "0.10"\n[buildpack]\nid = "${id}"\nversion = "${version}"\n`);
const file = (path: string, content = "x"): LayerEntry => ({
  path,
  type: "file",
  content: Buffer.from(content),
});
const link = (path: string, linkname: string): LayerEntry => ({ path, type: "symlink", linkname });
const buildpack = (extra: LayerEntry[], id = "team/bp", version = "1.0.0") =>
  buildpackFromEntries(
    [file("buildpack.toml", toml(id, version).toString()), file("bin/build"), ...extra],
    "test",
  );

const refused = (make: () => unknown, message: RegExp) =>
  assert.throws(make, (error: unknown) => error instanceof CreateConfigError && message.test(error.message));

describe("buildpacks read for a builder or package", () => {
  test("a plain buildpack lands under /cnb/buildpacks/<id with _>/<version>", () => {
    const entries = buildpackLayerEntries(buildpack([link("bin/detect", "build")]));
    assert.deepEqual(
      entries.map((entry) => entry.path),
      [
        "cnb/buildpacks/team_bp/",
        "cnb/buildpacks/team_bp/1.0.0/",
        "cnb/buildpacks/team_bp/1.0.0/buildpack.toml",
        "cnb/buildpacks/team_bp/1.0.0/bin/build",
        "cnb/buildpacks/team_bp/1.0.0/bin/detect",
      ],
    );
  });

  test("links out of the buildpack, or files written through its links, are refused", () => {
    refused(() => buildpack([link("evil", "/cnb/lifecycle")]), /points outside it/);
    refused(() => buildpack([link("evil", "../../../lifecycle")]), /points outside it/);
    refused(() => buildpack([link("dir", "bin"), file("dir/exporter")]), /through a symlink of its own/);
  });

  test("ids and versions that are not plain names are refused", () => {
    for (const [id, version] of [
      ["team/bp", "."],
      ["team/bp", "1/2"],
      ["../x", "1.0.0"],
      ["team//bp", "1"],
      ["/abs", "1"],
      ["a/./b", "1"],
    ] as const)
      refused(() => buildpack([], id, version), /not a plain name/);
  });
});
