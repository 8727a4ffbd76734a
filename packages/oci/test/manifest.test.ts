import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidManifestError } from "../src/errors.js";
import { descriptorDigest, manifestBlobs, parseManifestDocument } from "../src/manifest.js";
import { MediaType } from "../src/media-types.js";

const D1 = `sha256:${"1".repeat(64)}`;
const D2 = `sha256:${"2".repeat(64)}`;
const D3 = `sha256:${"3".repeat(64)}`;

function bytes(value: unknown): Buffer {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value));
}

interface LooseDescriptor {
  mediaType: string;
  digest: string;
  size: number;
}

function ociManifest(
  extra: Record<string, unknown> = {},
): { layers: LooseDescriptor[] } & Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: D1, size: 10 },
    layers: [
      { mediaType: MediaType.OciLayerGzip, digest: D2, size: 20 },
      { mediaType: MediaType.OciLayerGzip, digest: D3, size: 30 },
    ],
    ...extra,
  };
}

function dockerManifest(extra: Record<string, unknown> = {}) {
  return {
    schemaVersion: 2,
    mediaType: MediaType.DockerManifest,
    config: { mediaType: MediaType.DockerConfig, digest: D1, size: 10 },
    layers: [{ mediaType: MediaType.DockerLayerGzip, digest: D2, size: 20 }],
    ...extra,
  };
}

function ociIndex(
  extra: Record<string, unknown> = {},
): { manifests: (LooseDescriptor & Record<string, unknown>)[] } & Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [
      {
        mediaType: MediaType.OciManifest,
        digest: D1,
        size: 100,
        platform: { os: "linux", architecture: "amd64" },
      },
      {
        mediaType: MediaType.OciManifest,
        digest: D2,
        size: 200,
        platform: { os: "linux", architecture: "arm64", variant: "v8" },
      },
    ],
    ...extra,
  };
}

function dockerList(extra: Record<string, unknown> = {}) {
  return {
    schemaVersion: 2,
    mediaType: MediaType.DockerManifestList,
    manifests: [
      {
        mediaType: MediaType.DockerManifest,
        digest: D1,
        size: 100,
        platform: { os: "linux", architecture: "amd64" },
      },
    ],
    ...extra,
  };
}

function rejects(value: unknown, declared: string | undefined, pattern: RegExp): void {
  assert.throws(
    () => parseManifestDocument(bytes(value), declared, "manifest T"),
    (error: unknown) => {
      assert.ok(error instanceof InvalidManifestError, `expected InvalidManifestError, got ${error}`);
      assert.equal(error.code, "INVALID_MANIFEST");
      assert.ok(error.message.startsWith("manifest T"), error.message);
      assert.match(error.message, pattern);
      return true;
    },
  );
}

describe("parseManifestDocument: the four media types", () => {
  test("OCI image manifest", () => {
    const doc = parseManifestDocument(bytes(ociManifest()), MediaType.OciManifest, "m");
    assert.equal(doc.kind, "manifest");
    assert.equal(doc.mediaType, MediaType.OciManifest);
    assert.ok(doc.kind === "manifest");
    assert.equal(doc.manifest.layers.length, 2);
    assert.deepEqual(
      manifestBlobs(doc.manifest).map((d) => d.digest),
      [D1, D2, D3],
    );
    assert.equal(descriptorDigest(doc.manifest.config), D1);
  });

  test("OCI image index", () => {
    const doc = parseManifestDocument(bytes(ociIndex()), MediaType.OciIndex, "m");
    assert.equal(doc.kind, "index");
    assert.equal(doc.mediaType, MediaType.OciIndex);
    assert.ok(doc.kind === "index");
    assert.equal(doc.index.manifests.length, 2);
    assert.equal(doc.index.manifests[1]?.platform?.variant, "v8");
  });

  test("Docker v2 schema 2 manifest", () => {
    const doc = parseManifestDocument(bytes(dockerManifest()), MediaType.DockerManifest, "m");
    assert.equal(doc.kind, "manifest");
    assert.equal(doc.mediaType, MediaType.DockerManifest);
  });

  test("Docker manifest list", () => {
    const doc = parseManifestDocument(bytes(dockerList()), MediaType.DockerManifestList, "m");
    assert.equal(doc.kind, "index");
    assert.equal(doc.mediaType, MediaType.DockerManifestList);
  });

  test("a Content-Type with parameters is compared without them", () => {
    const doc = parseManifestDocument(bytes(ociManifest()), `${MediaType.OciManifest}; charset=utf-8`, "m");
    assert.equal(doc.mediaType, MediaType.OciManifest);
  });

  test("application/json and empty Content-Type defer to the body", () => {
    assert.equal(
      parseManifestDocument(bytes(dockerManifest()), "application/json; charset=utf-8", "m").mediaType,
      MediaType.DockerManifest,
    );
    assert.equal(parseManifestDocument(bytes(dockerList()), "", "m").mediaType, MediaType.DockerManifestList);
    assert.equal(parseManifestDocument(bytes(ociIndex()), undefined, "m").kind, "index");
  });
});

describe("parseManifestDocument: missing mediaType", () => {
  test("a body with manifests and no mediaType is an OCI index", () => {
    const { mediaType: _, ...body } = ociIndex();
    const doc = parseManifestDocument(bytes(body), undefined, "m");
    assert.equal(doc.kind, "index");
    assert.equal(doc.mediaType, MediaType.OciIndex);
  });

  test("a body with layers and no mediaType is an OCI manifest", () => {
    const { mediaType: _, ...body } = ociManifest();
    const doc = parseManifestDocument(bytes(body), undefined, "m");
    assert.equal(doc.kind, "manifest");
    assert.equal(doc.mediaType, MediaType.OciManifest);
  });

  test("the declared type is used when the body has none", () => {
    const { mediaType: _, ...body } = dockerManifest();
    const doc = parseManifestDocument(bytes(body), MediaType.DockerManifest, "m");
    assert.equal(doc.mediaType, MediaType.DockerManifest);
    const { mediaType: __, ...list } = dockerList();
    assert.equal(
      parseManifestDocument(bytes(list), MediaType.DockerManifestList, "m").mediaType,
      MediaType.DockerManifestList,
    );
  });

  test("declared as an index but the body has only layers", () => {
    const { mediaType: _, ...body } = ociManifest();
    rejects(body, MediaType.OciIndex, /has no "manifests"/);
  });

  test("declared as a manifest but the body has only manifests", () => {
    const { mediaType: _, ...body } = ociIndex();
    rejects(body, MediaType.OciManifest, /has no "layers"/);
  });
});

describe("parseManifestDocument: rejections", () => {
  test("declared media type differs from the body's", () => {
    rejects(ociManifest(), MediaType.DockerManifest, /declares media type .* but was served as/);
    rejects(ociIndex(), MediaType.OciManifest, new RegExp(MediaType.OciManifest.replace(/[.+]/g, "\\$&")));
    rejects(dockerList(), MediaType.OciIndex, /but was served as/);
  });

  test("a document with both manifests and layers (CVE-2021-41190)", () => {
    rejects(ociIndex({ layers: [] }), undefined, /both "manifests" and "layers"/);
    rejects(ociManifest({ manifests: [] }), MediaType.OciManifest, /both "manifests" and "layers"/);
    rejects(
      { schemaVersion: 2, manifests: [], config: { mediaType: MediaType.OciConfig, digest: D1, size: 1 } },
      undefined,
      /ambiguous/,
    );
  });

  test("Docker schema 1 with a clear message", () => {
    const schema1 = { schemaVersion: 1, name: "library/x", tag: "latest", fsLayers: [], history: [] };
    rejects(schema1, undefined, /schema 1.*not supported/);
    rejects(schema1, MediaType.DockerManifestSchema1Signed, /schema 1/);
    rejects({ ...schema1, mediaType: MediaType.DockerManifestSchema1 }, undefined, /schema 1/);
    rejects(dockerManifest(), MediaType.DockerManifestSchema1, /schema 1/);
  });

  test("schema 1 hint says what to do", () => {
    assert.throws(
      () => parseManifestDocument(bytes({ schemaVersion: 1 }), undefined, "m"),
      (error: unknown) => error instanceof InvalidManifestError && /re-push/i.test(error.hint ?? ""),
    );
  });

  test("negative size", () => {
    const m = ociManifest();
    m.layers[0] = { ...m.layers[0]!, size: -1 };
    rejects(m, undefined, /not a valid image manifest/);
    const i = ociIndex();
    i.manifests[0] = { ...i.manifests[0]!, size: -5 };
    rejects(i, undefined, /not a valid image index/);
  });

  test("non-integer size", () => {
    rejects(
      ociManifest({ config: { mediaType: MediaType.OciConfig, digest: D1, size: 1.5 } }),
      undefined,
      /valid/,
    );
  });

  test("an invalid digest in a layer", () => {
    const m = ociManifest();
    m.layers[1] = { ...m.layers[1]!, digest: "sha256:../../etc/passwd" };
    rejects(m, undefined, /etc\/passwd.*is not a valid digest/);
  });

  test("an invalid digest in the config", () => {
    rejects(
      ociManifest({
        config: { mediaType: MediaType.OciConfig, digest: `sha256:${"A".repeat(64)}`, size: 1 },
      }),
      undefined,
      /not a valid digest/,
    );
  });

  test("an invalid digest in an index entry", () => {
    const i = ociIndex();
    i.manifests[0] = { ...i.manifests[0]!, digest: `md5:${"a".repeat(32)}` };
    rejects(i, MediaType.OciIndex, /not a valid digest/);
  });

  test("non-JSON", () => {
    rejects("<html>502 Bad Gateway</html>", MediaType.OciManifest, /not valid JSON/);
    rejects("", undefined, /not valid JSON/);
  });

  test("JSON that is not an object", () => {
    rejects("[]", undefined, /not a JSON object/);
    rejects("null", undefined, /not a JSON object/);
    rejects('"x"', undefined, /not a JSON object/);
  });

  test("an unsupported media type", () => {
    rejects(
      ociManifest({ mediaType: "application/vnd.oci.artifact.manifest.v1+json" }),
      undefined,
      /not an image manifest or index/,
    );
  });

  test("schemaVersion other than 2", () => {
    rejects(ociManifest({ schemaVersion: 3 }), undefined, /not a valid image manifest/);
  });

  test("missing config", () => {
    const { config: _, ...m } = ociManifest();
    rejects(m, undefined, /not a valid image manifest/);
  });

  test("an empty descriptor media type", () => {
    const m = ociManifest();
    m.layers[0] = { ...m.layers[0]!, mediaType: "" };
    rejects(m, undefined, /not a valid image manifest/);
  });
});
