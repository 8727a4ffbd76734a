import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { setYoungCollector, shortLivedBytes } from "../src/registry/heap.js";

describe("young collector", () => {
  afterEach(() => setYoungCollector(undefined));

  test("runs once per 8 MiB of short-lived bytes, and not at all without a collector", () => {
    let collections = 0;
    shortLivedBytes(64 * 1024 * 1024);
    setYoungCollector(() => collections++);
    for (let i = 0; i < 127; i++) shortLivedBytes(64 * 1024);
    assert.equal(collections, 0, "127 × 64 KiB is under 8 MiB");
    shortLivedBytes(64 * 1024);
    assert.equal(collections, 1);
    for (let i = 0; i < 128 * 3; i++) shortLivedBytes(64 * 1024);
    assert.equal(collections, 4);
    setYoungCollector(undefined);
    shortLivedBytes(64 * 1024 * 1024);
    assert.equal(collections, 4, "stopped");
  });
});
