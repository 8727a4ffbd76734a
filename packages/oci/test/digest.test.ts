import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, test } from "node:test";
import {
  DigestVerifier,
  digestAlgorithm,
  digestHex,
  digestOf,
  isDigest,
  parseDigest,
  verifyBytes,
  verifyingStream,
} from "../src/digest.js";
import { DigestMismatchError, InvalidDigestError, SizeLimitError } from "../src/errors.js";

const HELLO = Buffer.from("hello world");
const HELLO_SHA256 = `sha256:${createHash("sha256").update(HELLO).digest("hex")}`;
const HELLO_SHA512 = `sha512:${createHash("sha512").update(HELLO).digest("hex")}`;

function collect(into: Buffer[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      into.push(chunk);
      callback();
    },
  });
}

describe("parseDigest", () => {
  test("accepts lowercase sha256 and sha512 of the exact length", () => {
    const a = `sha256:${"0123456789abcdef".repeat(4)}`;
    const b = `sha512:${"0123456789abcdef".repeat(8)}`;
    assert.equal(parseDigest(a), a);
    assert.equal(parseDigest(b), b);
    assert.equal(isDigest(a), true);
    assert.equal(isDigest(b), true);
  });

  const bad: [string, string][] = [
    ["uppercase hex", `sha256:${"ABCDEF0123456789".repeat(4)}`],
    ["uppercase algorithm", `SHA256:${"a".repeat(64)}`],
    ["sha256 one short", `sha256:${"a".repeat(63)}`],
    ["sha256 one long", `sha256:${"a".repeat(65)}`],
    ["sha256 with a sha512-length hex", `sha256:${"a".repeat(128)}`],
    ["sha512 with a sha256-length hex", `sha512:${"a".repeat(64)}`],
    ["md5", `md5:${"a".repeat(32)}`],
    ["md5 with 64 hex", `md5:${"a".repeat(64)}`],
    ["path traversal", "sha256:../../etc/passwd"],
    ["traversal padded to length", `sha256:../${"a".repeat(61)}`],
    ["no algorithm", "a".repeat(64)],
    ["empty", ""],
    ["only a colon", ":"],
    ["non-hex letters", `sha256:${"g".repeat(64)}`],
    ["trailing newline", `sha256:${"a".repeat(64)}\n`],
    ["leading space", ` sha256:${"a".repeat(64)}`],
    ["slash inside", `sha256:${"a".repeat(32)}/${"a".repeat(31)}`],
  ];
  for (const [label, value] of bad) {
    test(`rejects ${label}`, () => {
      assert.throws(
        () => parseDigest(value),
        (error: unknown) => {
          assert.ok(error instanceof InvalidDigestError, `got ${error}`);
          assert.equal(error.code, "INVALID_DIGEST");
          assert.match(error.message, /is not a valid digest/);
          return true;
        },
      );
      assert.equal(isDigest(value), false);
    });
  }

  test("a very long invalid value is shortened in the message", () => {
    const value = `sha256:${"z".repeat(500)}`;
    assert.throws(
      () => parseDigest(value),
      (error: unknown) =>
        error instanceof InvalidDigestError && error.message.length < 200 && error.message.includes("…"),
    );
  });

  for (const algorithm of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
    test(`rejects the algorithm "${algorithm}" with InvalidDigestError`, () => {
      assert.throws(
        () => parseDigest(`${algorithm}:${"a".repeat(64)}`),
        (error: unknown) => error instanceof InvalidDigestError,
      );
      assert.equal(isDigest(`${algorithm}:abc`), false);
    });
  }
});

describe("digest helpers", () => {
  test("digestOf computes sha256 by default and sha512 on request", () => {
    assert.equal(digestOf(HELLO), HELLO_SHA256);
    assert.equal(digestOf("hello world"), HELLO_SHA256);
    assert.equal(digestOf(HELLO, "sha512"), HELLO_SHA512);
  });

  test("digestAlgorithm and digestHex split a digest", () => {
    const d = parseDigest(HELLO_SHA512);
    assert.equal(digestAlgorithm(d), "sha512");
    assert.equal(digestHex(d), HELLO_SHA512.slice("sha512:".length));
    assert.equal(digestHex(d).length, 128);
  });
});

describe("DigestVerifier", () => {
  test("accepts the right bytes split across chunks", () => {
    const v = new DigestVerifier(parseDigest(HELLO_SHA256), HELLO.length, "blob");
    v.update(HELLO.subarray(0, 3));
    v.update(HELLO.subarray(3));
    assert.equal(v.bytes, HELLO.length);
    assert.doesNotThrow(() => v.finish());
  });

  test("accepts sha512 and an unknown size", () => {
    const v = new DigestVerifier(parseDigest(HELLO_SHA512), undefined, "blob");
    v.update(HELLO);
    assert.doesNotThrow(() => v.finish());
  });

  test("throws SizeLimitError as soon as the size is exceeded, before finish", () => {
    const v = new DigestVerifier(parseDigest(HELLO_SHA256), 5, "layer X");
    v.update(HELLO.subarray(0, 5));
    assert.throws(
      () => v.update(HELLO.subarray(5, 6)),
      (error: unknown) =>
        error instanceof SizeLimitError &&
        error.code === "SIZE_LIMIT" &&
        error.message.includes("layer X") &&
        error.message.includes("5 bytes"),
    );
  });

  test("a short stream is a DigestMismatchError naming the byte counts", () => {
    const v = new DigestVerifier(parseDigest(HELLO_SHA256), HELLO.length, "blob Y");
    v.update(HELLO.subarray(0, 4));
    assert.throws(
      () => v.finish(),
      (error: unknown) =>
        error instanceof DigestMismatchError &&
        error.code === "DIGEST_MISMATCH" &&
        error.message.includes(`after 4 of ${HELLO.length} bytes`),
    );
  });

  test("same size, different content is a DigestMismatchError with both digests", () => {
    const other = Buffer.from("hello World");
    const v = new DigestVerifier(parseDigest(HELLO_SHA256), HELLO.length, "blob Z");
    v.update(other);
    assert.throws(
      () => v.finish(),
      (error: unknown) =>
        error instanceof DigestMismatchError &&
        error.message.includes(HELLO_SHA256) &&
        error.message.includes(digestOf(other)),
    );
  });

  test("verifyBytes checks digest and size", () => {
    assert.doesNotThrow(() => verifyBytes(HELLO, parseDigest(HELLO_SHA256), HELLO.length, "doc"));
    assert.doesNotThrow(() => verifyBytes(HELLO, parseDigest(HELLO_SHA256), undefined, "doc"));
    assert.throws(
      () => verifyBytes(HELLO, parseDigest(HELLO_SHA256), HELLO.length - 1, "doc"),
      SizeLimitError,
    );
    assert.throws(
      () => verifyBytes(HELLO, parseDigest(HELLO_SHA256), HELLO.length + 1, "doc"),
      DigestMismatchError,
    );
    assert.throws(
      () => verifyBytes(Buffer.from("x"), parseDigest(HELLO_SHA256), undefined, "doc"),
      DigestMismatchError,
    );
  });
});

describe("verifyingStream", () => {
  test("passes the bytes through a pipeline when they verify", async () => {
    const out: Buffer[] = [];
    await pipeline(
      Readable.from([HELLO.subarray(0, 2), HELLO.subarray(2, 7), HELLO.subarray(7)]),
      verifyingStream(parseDigest(HELLO_SHA256), HELLO.length, "blob"),
      collect(out),
    );
    assert.deepEqual(Buffer.concat(out), HELLO);
  });

  test("fails the pipeline with DigestMismatchError on wrong content", async () => {
    await assert.rejects(
      pipeline(
        Readable.from([Buffer.from("hello World")]),
        verifyingStream(parseDigest(HELLO_SHA256), HELLO.length, "blob"),
        collect([]),
      ),
      DigestMismatchError,
    );
  });

  test("fails the pipeline with DigestMismatchError on a short stream", async () => {
    await assert.rejects(
      pipeline(
        Readable.from([HELLO.subarray(0, 4)]),
        verifyingStream(parseDigest(HELLO_SHA256), HELLO.length, "blob"),
        collect([]),
      ),
      (error: unknown) => error instanceof DigestMismatchError && /after 4 of 11 bytes/.test(error.message),
    );
  });

  test("fails early with SizeLimitError and does not pass the oversize chunk on", async () => {
    const out: Buffer[] = [];
    let pulled = 0;
    async function* source() {
      for (let i = 0; i < 100; i++) {
        pulled++;
        yield Buffer.alloc(4, 1);
      }
    }
    await assert.rejects(
      pipeline(source(), verifyingStream(parseDigest(HELLO_SHA256), 10, "blob"), collect(out)),
      SizeLimitError,
    );
    assert.equal(Buffer.concat(out).length, 8, "only the chunks within the size pass through");
    assert.ok(pulled < 100, `the source should stop early, pulled ${pulled}`);
  });
});
