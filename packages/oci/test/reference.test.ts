import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidReferenceError } from "../src/errors.js";
import {
  formatReference,
  manifestIdentifier,
  parseReference,
  registryApiHost,
  repositoryName,
  withIdentifier,
} from "../src/reference.js";

const D = `sha256:${"a".repeat(64)}`;
const D2 = `sha256:${"b".repeat(64)}`;

describe("parseReference normalisation", () => {
  const table: [string, { registry: string; repository: string; tag?: string; digest?: string }][] = [
    ["ubuntu", { registry: "docker.io", repository: "library/ubuntu", tag: "latest" }],
    ["ubuntu:24.04", { registry: "docker.io", repository: "library/ubuntu", tag: "24.04" }],
    ["user/repo", { registry: "docker.io", repository: "user/repo", tag: "latest" }],
    ["user/repo:v1", { registry: "docker.io", repository: "user/repo", tag: "v1" }],
    ["docker.io/ubuntu", { registry: "docker.io", repository: "library/ubuntu", tag: "latest" }],
    ["index.docker.io/x", { registry: "docker.io", repository: "library/x", tag: "latest" }],
    ["registry-1.docker.io/a/b", { registry: "docker.io", repository: "a/b", tag: "latest" }],
    ["localhost/x", { registry: "localhost", repository: "x", tag: "latest" }],
    ["localhost:5000/a/b:tag", { registry: "localhost:5000", repository: "a/b", tag: "tag" }],
    [`127.0.0.1:5000/x@${D}`, { registry: "127.0.0.1:5000", repository: "x", digest: D }],
    ["[::1]:5000/x", { registry: "[::1]:5000", repository: "x", tag: "latest" }],
    ["[::1]:5000/x:1.0", { registry: "[::1]:5000", repository: "x", tag: "1.0" }],
    [`ubuntu:22.04@${D}`, { registry: "docker.io", repository: "library/ubuntu", tag: "22.04", digest: D }],
    [
      `ghcr.io/org/team/app:v1.2_3-rc@${D}`,
      { registry: "ghcr.io", repository: "org/team/app", tag: "v1.2_3-rc", digest: D },
    ],
    ["Foo.com/x", { registry: "Foo.com", repository: "x", tag: "latest" }],
    ["example.com/e--f.g__h_i", { registry: "example.com", repository: "e--f.g__h_i", tag: "latest" }],
    ["localhost", { registry: "docker.io", repository: "library/localhost", tag: "latest" }],
  ];
  for (const [input, expected] of table) {
    test(`${input} → ${JSON.stringify(expected)}`, () => {
      assert.deepEqual({ ...parseReference(input) }, expected);
    });
  }

  test("a digest-only reference gets no default tag", () => {
    const ref = parseReference(`ubuntu@${D}`);
    assert.equal(ref.tag, undefined);
    assert.equal(ref.digest, D);
    assert.equal("tag" in ref, false);
  });

  test("defaultTag option: custom and null", () => {
    assert.equal(parseReference("ubuntu", { defaultTag: "stable" }).tag, "stable");
    const bare = parseReference("ubuntu", { defaultTag: null });
    assert.equal(bare.tag, undefined);
    assert.equal("tag" in bare, false);
    assert.equal(parseReference("ubuntu:1", { defaultTag: null }).tag, "1");
  });

  test("a 128-character tag is accepted", () => {
    const tag = `t${"x".repeat(127)}`;
    assert.equal(parseReference(`app:${tag}`).tag, tag);
  });
});

describe("formatReference", () => {
  const inputs = [
    "ubuntu",
    "user/repo:v1",
    "localhost:5000/a/b:tag",
    `127.0.0.1:5000/x@${D}`,
    "[::1]:5000/x",
    `ubuntu:22.04@${D}`,
    "Foo.com/x:y",
  ];
  for (const input of inputs) {
    test(`round trip of ${input}`, () => {
      const ref = parseReference(input);
      const text = formatReference(ref);
      assert.deepEqual({ ...parseReference(text) }, { ...ref });
      assert.equal(formatReference(parseReference(text)), text);
    });
  }

  test("canonical strings", () => {
    assert.equal(formatReference(parseReference("ubuntu")), "docker.io/library/ubuntu:latest");
    assert.equal(formatReference(parseReference(`ubuntu:22.04@${D}`)), `docker.io/library/ubuntu:22.04@${D}`);
    assert.equal(formatReference(parseReference(`127.0.0.1:5000/x@${D}`)), `127.0.0.1:5000/x@${D}`);
    assert.equal(repositoryName(parseReference("user/repo:v1")), "docker.io/user/repo");
  });
});

describe("reference helpers", () => {
  test("manifestIdentifier prefers the digest, else the tag, else throws", () => {
    assert.equal(manifestIdentifier(parseReference(`a:1@${D}`)), D);
    assert.equal(manifestIdentifier(parseReference("a:1")), "1");
    assert.throws(
      () => manifestIdentifier(parseReference("a", { defaultTag: null })),
      (error: unknown) =>
        error instanceof InvalidReferenceError && /neither a tag nor a digest/.test(error.message),
    );
  });

  test("registryApiHost maps docker.io only", () => {
    assert.equal(registryApiHost("docker.io"), "registry-1.docker.io");
    assert.equal(registryApiHost("127.0.0.1:5000"), "127.0.0.1:5000");
  });

  test("withIdentifier replaces tag and digest", () => {
    const ref = parseReference(`a/b:1@${D}`);
    assert.deepEqual(
      { ...withIdentifier(ref, { digest: D2 as never }) },
      {
        registry: "docker.io",
        repository: "a/b",
        digest: D2,
      },
    );
    assert.deepEqual(
      { ...withIdentifier(ref, { tag: "2" }) },
      {
        registry: "docker.io",
        repository: "a/b",
        tag: "2",
      },
    );
  });
});

describe("invalid references", () => {
  const invalid: [string, string, RegExp?][] = [
    ["empty", "", /empty/],
    ["whitespace inside", "ubuntu latest", /whitespace/],
    ["leading whitespace", " ubuntu", /whitespace/],
    ["trailing newline", "ubuntu\n", /whitespace/],
    ["uppercase repository", "docker.io/Ubuntu", /lowercase/],
    ["uppercase repository on a custom registry", "localhost:5000/team/App", /lowercase/],
    ["empty path component", "a//b", /path component/],
    ["trailing slash", "a/b/", /path component/],
    ["trailing colon", "ubuntu:", /tag/],
    ["short digest", "ubuntu@sha256:abc", /digest/],
    ["uppercase digest", `ubuntu@sha256:${"A".repeat(64)}`, /digest/],
    ["unknown digest algorithm", `ubuntu@md5:${"a".repeat(32)}`, /digest/],
    ["tag of 129 characters", `ubuntu:${"a".repeat(129)}`, /tag/],
    ["tag starting with -", "ubuntu:-tag", /tag/],
    ["tag starting with .", "ubuntu:.tag", /tag/],
    ["name longer than 255 characters", `example.com/${"a".repeat(250)}`, /255/],
    ["name longer than 255 after docker.io/library/", "a".repeat(240), /255/],
    ["missing repository", "localhost:5000/", /repository name is missing|path component/],
    ["only a digest", `@${D}`, /repository name is missing/],
    ["bad registry host", "-bad.com/x", /registry host/],
    ["separator at the end", "a-/b", /path component/],
    ["underscore in a registry host", "a_b.com/x", /registry host/],
    ["triple underscore", "a___b", /path component/],
    ["port that is not a number", "a:b/c", /registry host/],
    ["port above 65535", "localhost:99999/x", /port 99999 .* between 1 and 65535/],
    ["port 0", "127.0.0.1:0/x", /port 0 .* between 1 and 65535/],
  ];
  for (const [label, input, why] of invalid) {
    test(`${label}: ${JSON.stringify(input.length > 40 ? `${input.slice(0, 40)}…` : input)}`, () => {
      assert.throws(
        () => parseReference(input),
        (error: unknown) => {
          assert.ok(error instanceof InvalidReferenceError, `expected InvalidReferenceError, got ${error}`);
          assert.equal(error.code, "INVALID_REFERENCE");
          assert.equal(error.name, "InvalidReferenceError");
          assert.ok(error.message.includes(`"${input}"`), `message should quote the input: ${error.message}`);
          if (why !== undefined) assert.match(error.message, why);
          assert.ok(error.hint !== undefined && error.hint.length > 0);
          return true;
        },
      );
    });
  }
});

describe("digest algorithms that collide with Object.prototype", () => {
  for (const input of ["ubuntu@constructor:abc", "ubuntu@toString:abc", "ubuntu@__proto__:abc"]) {
    test(`${input} is an InvalidReferenceError, not a TypeError`, () => {
      assert.throws(
        () => parseReference(input),
        (error: unknown) => error instanceof InvalidReferenceError && error.message.includes(input),
      );
    });
  }
});
