import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidReferenceError, PlatformNotFoundError } from "../src/errors.js";
import type { Descriptor, ImageIndex } from "../src/manifest.js";
import { MediaType } from "../src/media-types.js";
import {
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  parsePlatform,
  platformMatches,
  selectPlatformManifest,
} from "../src/platform.js";

function digest(n: number): string {
  return `sha256:${n.toString(16).padStart(64, "0")}`;
}

function entry(
  n: number,
  platform?: Descriptor["platform"],
  annotations?: Record<string, string>,
): Descriptor {
  return {
    mediaType: MediaType.OciManifest,
    digest: digest(n),
    size: 100 + n,
    ...(platform === undefined ? {} : { platform }),
    ...(annotations === undefined ? {} : { annotations }),
  };
}

/** A buildx-style index: the attestation entries come first so a naive pick would choose them. */
const index: ImageIndex = {
  schemaVersion: 2,
  mediaType: MediaType.OciIndex,
  manifests: [
    entry(
      100,
      { os: "unknown", architecture: "unknown" },
      {
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": digest(4),
      },
    ),
    entry(101, { os: "unknown", architecture: "unknown" }),
    entry(1, { os: "linux", architecture: "arm", variant: "v6" }),
    entry(2, { os: "linux", architecture: "arm", variant: "v7" }),
    entry(3, { os: "linux", architecture: "arm64", variant: "v8" }),
    entry(4, { os: "linux", architecture: "amd64" }),
  ],
};

describe("parsePlatform", () => {
  test("os/arch and os/arch/variant", () => {
    assert.deepEqual(parsePlatform("linux/amd64"), { os: "linux", architecture: "amd64" });
    assert.deepEqual(parsePlatform("linux/arm64/v8"), { os: "linux", architecture: "arm64", variant: "v8" });
    assert.deepEqual(parsePlatform("Linux/ARM/V7"), { os: "linux", architecture: "arm", variant: "v7" });
    assert.deepEqual(parsePlatform("windows/x86_64"), { os: "windows", architecture: "x86_64" });
  });

  for (const bad of ["", "linux", "linux/", "/amd64", "linux/amd64/v8/x", "linux/amd 64", "linux/amd64;rm"]) {
    test(`rejects ${JSON.stringify(bad)}`, () => {
      assert.throws(
        () => parsePlatform(bad),
        (error: unknown) =>
          error instanceof InvalidReferenceError &&
          error.message.includes(`"${bad}"`) &&
          error.hint !== undefined,
      );
    });
  }

  test("formatPlatform is the inverse", () => {
    for (const text of ["linux/amd64", "linux/arm64/v8", "windows/amd64"]) {
      assert.equal(formatPlatform(parsePlatform(text)), text);
    }
    assert.equal(formatPlatform({ os: "linux", architecture: "arm", variant: "" }), "linux/arm");
  });

  test("hostPlatform uses docker's names", () => {
    const host = hostPlatform();
    assert.equal(host.os, process.platform === "win32" ? "windows" : process.platform);
    if (process.arch === "x64") assert.equal(host.architecture, "amd64");
    if (process.arch === "arm64") assert.equal(host.architecture, "arm64");
    assert.notEqual(host.architecture, "x64");
  });
});

describe("normalizePlatform", () => {
  test("arm64 gets the default variant v8", () => {
    assert.deepEqual(normalizePlatform({ os: "linux", architecture: "arm64" }), {
      os: "linux",
      architecture: "arm64",
      variant: "v8",
    });
  });

  test("aarch64 → arm64/v8, x86_64 → amd64", () => {
    assert.deepEqual(normalizePlatform({ os: "linux", architecture: "aarch64" }), {
      os: "linux",
      architecture: "arm64",
      variant: "v8",
    });
    assert.equal(normalizePlatform({ os: "linux", architecture: "x86_64" }).architecture, "amd64");
    assert.equal(normalizePlatform({ os: "linux", architecture: "armhf" }).architecture, "arm");
  });

  test("an explicit variant is kept", () => {
    assert.equal(normalizePlatform({ os: "linux", architecture: "arm", variant: "v6" }).variant, "v6");
    assert.equal(normalizePlatform({ os: "linux", architecture: "arm" }).variant, "v7");
  });

  test("an architecture without a default variant gets none", () => {
    const p = normalizePlatform({ os: "linux", architecture: "s390x" });
    assert.equal(p.variant, undefined);
    assert.equal("variant" in p, false);
  });

  test("platformMatches treats aliases and default variants as equal", () => {
    const linux = (architecture: string, variant?: string) => ({
      os: "linux",
      architecture,
      ...(variant === undefined ? {} : { variant }),
    });
    assert.ok(platformMatches(linux("arm64"), linux("arm64", "v8")));
    assert.ok(platformMatches(linux("arm64", "v8"), linux("aarch64")));
    assert.ok(platformMatches(linux("amd64"), linux("x86_64")));
    assert.ok(platformMatches(linux("arm"), linux("arm", "v7")));
    assert.ok(!platformMatches(linux("arm", "v6"), linux("arm", "v7")));
    assert.ok(!platformMatches(linux("arm64"), linux("amd64")));
    assert.ok(!platformMatches({ os: "windows", architecture: "amd64" }, linux("amd64")));
  });
});

describe("selectPlatformManifest", () => {
  const cases: [string, number][] = [
    ["linux/arm/v6", 1],
    ["linux/arm/v7", 2],
    ["linux/arm", 2],
    ["linux/arm64/v8", 3],
    ["linux/arm64", 3],
    ["linux/aarch64", 3],
    ["linux/amd64", 4],
    ["linux/x86_64", 4],
  ];
  for (const [wanted, n] of cases) {
    test(`${wanted} picks ${formatPlatform(index.manifests.find((d) => d.digest === digest(n))!.platform!)}`, () => {
      const chosen = selectPlatformManifest(index, parsePlatform(wanted), "image x");
      assert.equal(chosen.digest, digest(n));
    });
  }

  test("arm64 with no variant in the index matches linux/arm64/v8", () => {
    const plain: ImageIndex = {
      schemaVersion: 2,
      manifests: [
        entry(4, { os: "linux", architecture: "amd64" }),
        entry(7, { os: "linux", architecture: "arm64" }),
      ],
    };
    assert.equal(selectPlatformManifest(plain, parsePlatform("linux/arm64/v8"), "x").digest, digest(7));
  });

  test("attestation entries are never selected, even for unknown/unknown", () => {
    assert.throws(
      () => selectPlatformManifest(index, { os: "unknown", architecture: "unknown" }, "image x"),
      PlatformNotFoundError,
    );
  });

  test("an entry annotated as an attestation is skipped whatever its platform", () => {
    const tricky: ImageIndex = {
      schemaVersion: 2,
      manifests: [
        entry(
          9,
          { os: "linux", architecture: "amd64" },
          { "vnd.docker.reference.type": "attestation-manifest" },
        ),
        entry(4, { os: "linux", architecture: "amd64" }),
      ],
    };
    assert.equal(selectPlatformManifest(tricky, parsePlatform("linux/amd64"), "x").digest, digest(4));
  });

  test("PlatformNotFoundError lists the available platforms and no attestations", () => {
    assert.throws(
      () => selectPlatformManifest(index, parsePlatform("linux/s390x"), "image x"),
      (error: unknown) => {
        assert.ok(error instanceof PlatformNotFoundError);
        assert.equal(error.code, "PLATFORM_NOT_FOUND");
        assert.match(error.message, /^image x has no image for platform linux\/s390x/);
        assert.ok(
          error.message.includes("linux/arm/v6, linux/arm/v7, linux/arm64/v8, linux/amd64"),
          error.message,
        );
        assert.ok(!error.message.includes("unknown"), error.message);
        assert.ok(error.hint?.includes("linux/amd64"));
        return true;
      },
    );
  });

  test("an index with no platform entries says so", () => {
    const none: ImageIndex = { schemaVersion: 2, manifests: [entry(5)] };
    assert.throws(
      () => selectPlatformManifest(none, parsePlatform("linux/amd64"), "x"),
      (error: unknown) =>
        error instanceof PlatformNotFoundError &&
        /no platform-specific images/.test(error.message) &&
        error.hint === undefined,
    );
  });
});
