import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { DigestMismatchError, InvalidDigestError, SizeLimitError } from "./errors.js";

export type DigestAlgorithm = "sha256" | "sha512";

/** A validated `algorithm:hex` string; only produced by {@link parseDigest} and {@link digestOf}. */
export type Digest = string & { readonly __digest: unique symbol };

const patterns: Record<DigestAlgorithm, RegExp> = {
  sha256: /^sha256:[a-f0-9]{64}$/,
  sha512: /^sha512:[a-f0-9]{128}$/,
};

/**
 * Validates a digest before it is ever used in a URL or a path (CVE-2024-3727): only the
 * algorithms we can verify, only lowercase hex of the exact length.
 */
export function parseDigest(value: string): Digest {
  const algorithm = value.slice(0, value.indexOf(":"));
  // Own keys only: the algorithm is untrusted input and must not reach Object.prototype.
  const pattern = Object.hasOwn(patterns, algorithm) ? patterns[algorithm as DigestAlgorithm] : undefined;
  if (pattern === undefined || !pattern.test(value)) {
    const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
    throw new InvalidDigestError(
      `"${shown}" is not a valid digest: expected sha256:<64 hex> or sha512:<128 hex>.`,
    );
  }
  return value as Digest;
}

export function isDigest(value: string): value is Digest {
  try {
    parseDigest(value);
    return true;
  } catch {
    return false;
  }
}

export function digestAlgorithm(digest: Digest): DigestAlgorithm {
  return digest.slice(0, digest.indexOf(":")) as DigestAlgorithm;
}

export function digestHex(digest: Digest): string {
  return digest.slice(digest.indexOf(":") + 1);
}

export function digestOf(data: Uint8Array | string, algorithm: DigestAlgorithm = "sha256"): Digest {
  return `${algorithm}:${createHash(algorithm).update(data).digest("hex")}` as Digest;
}

/** Incremental digest + size check of a byte stream against a descriptor. */
export class DigestVerifier {
  private hash: Hash;
  private received = 0;

  constructor(
    readonly expected: Digest,
    readonly expectedSize: number | undefined,
    private readonly what: string,
  ) {
    this.hash = createHash(digestAlgorithm(expected));
  }

  get bytes(): number {
    return this.received;
  }

  update(chunk: Uint8Array): void {
    this.received += chunk.length;
    if (this.expectedSize !== undefined && this.received > this.expectedSize) {
      throw new SizeLimitError(
        `${this.what} is larger than its descriptor says (${this.expectedSize} bytes); refusing the extra data.`,
      );
    }
    this.hash.update(chunk);
  }

  /** Throws unless every byte arrived and the digest matches. */
  finish(): void {
    if (this.expectedSize !== undefined && this.received !== this.expectedSize) {
      throw new DigestMismatchError(
        `${this.what} ended after ${this.received} of ${this.expectedSize} bytes.`,
        { hint: "The download was cut short; try again." },
      );
    }
    const actual = `${digestAlgorithm(this.expected)}:${this.hash.digest("hex")}`;
    if (actual !== this.expected) {
      throw new DigestMismatchError(
        `${this.what} does not match its digest: expected ${this.expected}, got ${actual}.`,
        {
          hint: "The registry or a proxy served different content (for example an HTML error page); nothing was stored.",
        },
      );
    }
  }
}

/** A pass-through stream that fails at the end (or early on oversize) unless the bytes verify. */
export function verifyingStream(expected: Digest, size: number | undefined, what: string): Transform {
  const verifier = new DigestVerifier(expected, size, what);
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      try {
        verifier.update(chunk);
        callback(null, chunk);
      } catch (error) {
        callback(error as Error);
      }
    },
    flush(callback: TransformCallback) {
      try {
        verifier.finish();
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
  });
}

/** Verifies a whole in-memory document (manifest, config) against its digest and size. */
export function verifyBytes(
  data: Uint8Array,
  expected: Digest,
  size: number | undefined,
  what: string,
): void {
  const verifier = new DigestVerifier(expected, size, what);
  verifier.update(data);
  verifier.finish();
}
