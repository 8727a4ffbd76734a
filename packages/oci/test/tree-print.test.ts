import assert from "node:assert/strict";
import { lstatSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { samePrint, TreePrinter } from "../src/unpack/tree-print.js";

describe("TreePrinter", () => {
  const dir = mkdtempSync(join(tmpdir(), "locald-tree-print-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const names = ["a", "b", "c"];
  for (const name of names) writeFileSync(join(dir, name), name);
  const info = (name: string) => lstatSync(join(dir, name));

  test("does not depend on the order, nor on how the files were split between printers", () => {
    const whole = new TreePrinter();
    for (const name of names) whole.add(name, info(name));
    const reversed = new TreePrinter();
    for (const name of [...names].reverse()) reversed.add(name, info(name));
    const first = new TreePrinter();
    first.add("c", info("c"));
    const second = new TreePrinter();
    second.add("a", info("a"));
    second.add("b", info("b"));
    const merged = TreePrinter.from(first.print);
    merged.merge(second.print);
    assert.equal(whole.print.files, 3);
    assert.match(whole.print.sum, /^[0-9a-f]{64}$/);
    assert.ok(samePrint(whole.print, reversed.print));
    assert.ok(samePrint(whole.print, merged.print));
  });

  test("sees a file edited in place, renamed, added or gone; remove takes back an add", () => {
    const base = new TreePrinter();
    for (const name of names) base.add(name, info(name));
    const before = base.print;

    const renamed = new TreePrinter();
    for (const name of names) renamed.add(name === "a" ? "z" : name, info(name));
    assert.ok(!samePrint(before, renamed.print), "a path of another name");

    const fewer = new TreePrinter();
    for (const name of names.slice(1)) fewer.add(name, info(name));
    assert.ok(!samePrint(before, fewer.print), "a file gone");

    const more = TreePrinter.from(before);
    more.add("d", info("a"));
    assert.ok(!samePrint(before, more.print), "a file more");
    more.remove("d", info("a"));
    assert.ok(samePrint(before, more.print), "remove undoes add");

    writeFileSync(join(dir, "b"), "bigger");
    const grown = new TreePrinter();
    for (const name of names) grown.add(name, info(name));
    assert.ok(!samePrint(before, grown.print), "a file edited in place to a new size");
  });
});
