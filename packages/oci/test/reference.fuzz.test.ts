/**
 * Property-based fuzzing of the image reference parser: whatever the string, the only failure is
 * InvalidReferenceError; whatever it accepts formats back to itself; references built from the
 * grammar parse to their parts; ports outside 1–65535 are refused.
 *
 * Findings: none. Without a find: 20,000 runs per property (a random seed) and twice 100,000
 * (scripts/fuzz.sh, seeds 1029577469 and 1050610802); the unit run does 2,000 per property (seed
 * 1906).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { InvalidReferenceError } from "../src/errors.js";
import { formatReference, parseReference, type Reference } from "../src/reference.js";
import { budget } from "./fuzz.js";

const RUNS = 2000;

function parsed(input: string, options?: { defaultTag?: string | null }): Reference | undefined {
  try {
    return parseReference(input, options);
  } catch (error) {
    assert.ok(error instanceof InvalidReferenceError, `${JSON.stringify(input)} threw ${String(error)}`);
    assert.equal(error.code, "INVALID_REFERENCE");
    return undefined;
  }
}

const hex = (length: number) => fc.stringMatching(new RegExp(`^[a-f0-9]{${length}}$`));
const digest = fc.oneof(
  hex(64).map((h) => `sha256:${h}`),
  hex(128).map((h) => `sha512:${h}`),
);
const pathComponent = fc.stringMatching(/^[a-z0-9]{1,8}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,8}){0,3}$/);
const tag = fc.stringMatching(/^\w[\w.-]{0,127}$/);
const port = fc.integer({ min: 1, max: 65535 });
/** IPv6 as the grammar has it: hex and colons only (an embedded IPv4 is not allowed, as in docker). */
const ipv6 = fc
  .ipV6()
  .filter((address) => /^[a-fA-F0-9:]+$/.test(address))
  .map((address) => `[${address}]`);
const host = fc.oneof(
  fc.domain(),
  fc.domain().map((domain) => domain.toUpperCase()),
  fc.ipV4(),
  ipv6,
  fc.constant("localhost"),
  fc.constantFrom("docker.io", "index.docker.io", "registry-1.docker.io"),
);
const registry = fc.tuple(host, fc.option(port)).map(([h, p]) => (p === null ? h : `${h}:${p}`));

/** Pieces references are made of, and the characters that break them, for strings near the grammar. */
const fragment = fc.oneof(
  pathComponent,
  tag,
  digest,
  host,
  fc.constantFrom(
    "/",
    ":",
    "@",
    ".",
    "-",
    "_",
    "__",
    "[",
    "]",
    "::",
    "sha256:",
    "A",
    " ",
    "\t",
    "é",
    "\u0000",
  ),
  fc.integer({ min: 0, max: 1_000_000 }).map(String),
  fc.string({ maxLength: 4, unit: "binary" }),
);
const nearReference = fc.array(fragment, { maxLength: 12 }).map((parts) => parts.join(""));

describe("parseReference (fuzzed)", () => {
  test("any string: a Reference or an InvalidReferenceError, and what parses formats back to itself", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: "binary" }), fc.string({ unit: "grapheme-ascii" }), nearReference),
        fc.constantFrom<string | null | undefined>(undefined, null, "stable"),
        (input, defaultTag) => {
          const ref = parsed(input, { defaultTag });
          if (ref === undefined) return;
          const again = parsed(formatReference(ref), { defaultTag: null });
          assert.deepEqual(again, ref, `${JSON.stringify(input)} did not survive format → parse`);
        },
      ),
      budget(RUNS),
    );
  });

  test("a reference built from the grammar parses to its parts, and round-trips", () => {
    fc.assert(
      fc.property(
        fc.option(registry),
        fc.array(pathComponent, { minLength: 1, maxLength: 5 }),
        fc.option(tag),
        fc.option(digest),
        (reg, components, tg, dg) => {
          // Without a registry the first component must not read as one (docker's own rule).
          fc.pre(reg !== null || !(components[0]?.includes(".") || components[0] === "localhost"));
          const input = `${reg === null ? "" : `${reg}/`}${components.join("/")}${tg === null ? "" : `:${tg}`}${dg === null ? "" : `@${dg}`}`;
          const hub = reg === null || /^(?:docker\.io|index\.docker\.io|registry-1\.docker\.io)$/.test(reg);
          const expected: Reference = {
            registry: hub ? "docker.io" : (reg as string),
            repository: hub && components.length === 1 ? `library/${components[0]}` : components.join("/"),
            ...(tg === null ? (dg === null ? { tag: "latest" } : {}) : { tag: tg }),
            ...(dg === null ? {} : { digest: dg }),
          } as Reference;
          const ref = parsed(input);
          if (`${expected.registry}/${expected.repository}`.length > 255) {
            assert.equal(ref, undefined, `${input} is too long but was accepted`);
            return;
          }
          assert.deepEqual(ref === undefined ? undefined : { ...ref }, expected, input);
          assert.deepEqual(parsed(formatReference(expected)), expected);
        },
      ),
      budget(RUNS),
    );
  });

  test("a port outside 1–65535 is refused", () => {
    const badPort = fc.oneof(
      fc.constantFrom("0", "00", "00000", "65536", "99999", "4294967297", "18446744073709551617"),
      fc.integer({ min: 65536, max: Number.MAX_SAFE_INTEGER }).map(String),
      fc.stringMatching(/^[1-9][0-9]{5,40}$/),
    );
    fc.assert(
      fc.property(host, badPort, pathComponent, (h, p, component) => {
        const input = `${h}:${p}/${component}`;
        assert.throws(
          () => parseReference(input),
          (error: unknown) => error instanceof InvalidReferenceError && error.message.includes(`port ${p}`),
          input,
        );
      }),
      budget(RUNS),
    );
  });
});
