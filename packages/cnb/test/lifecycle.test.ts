import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DiskFullError } from "@locald/oci";
import { BuildError, DetectError } from "../src/errors.js";
import { phaseError } from "../src/lifecycle.js";

describe("phaseError", () => {
  test("a phase that ran out of disk space says so, with its last lines, whatever its exit code", () => {
    const output = [
      "Timer: Exporter started",
      "ERROR: failed to export: saving image: write /layout-repo/blobs/sha256/ab.tmp: no space left on device",
    ].join("\n");
    const error = phaseError("exporter", 62, output);
    assert.ok(error instanceof DiskFullError, String(error));
    assert.equal(error.code, "DISK_FULL");
    assert.match(error.message, /^The lifecycle.s exporter ran out of disk space \(exit 62\)\./);
    assert.match(error.message, /no space left on device/);
    assert.match(error.hint ?? "", /locald image prune/);
    assert.ok(phaseError("restorer", 1, "tar: write error: Disk quota exceeded") instanceof DiskFullError);
    // A push into the store's loopback registry that found the disk full: the server's words.
    const pushed = phaseError(
      "exporter",
      62,
      "ERROR: failed to export: saving image: PUT http://127.0.0.1:41234/v2/locald/app/blobs/uploads/1?digest=sha256:ab: UNKNOWN: ENOSPC: no space left on device, write",
    );
    assert.ok(pushed instanceof DiskFullError, String(pushed));
  });

  test("detection and other failures keep their own families", () => {
    assert.ok(phaseError("detector", 20, "fail: sample/procfile") instanceof DetectError);
    const other = phaseError("analyzer", 1, "ERROR: something else");
    assert.ok(other instanceof BuildError && !(other instanceof DiskFullError));
  });
});
