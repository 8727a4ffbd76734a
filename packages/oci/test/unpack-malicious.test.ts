/**
 * The malicious-layer corpus: hand-crafted archives for every extraction pitfall in
 * oci-pitfalls.md (escapes by name, root replacement, writes through symlinks, hardlinks and
 * whiteouts reaching out, metadata following links, devices and setuid, bombs, integrity).
 *
 * Every case unpacks into `<case>/canary-parent/root`, next to canary files, a directory
 * `outside` and a file `passwd`, so that any relative escape lands in a tree we watch. The
 * whole case directory (and the host's /etc/passwd) is snapshotted before and after — paths,
 * types, modes, owners, link counts, sizes, content hashes, mtimes — and must not change,
 * whatever the outcome. Each case then asserts its outcome: a clear error with the right code,
 * or a safe success with the expected content inside the root.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink as symlinkFile,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { applyLayers, digestOf, OciError } from "../src/index.js";
import {
  BLOCK,
  dir,
  type Entry,
  entry,
  file,
  hardlink,
  header,
  paxGlobal,
  repeatedEntries,
  symlink,
  tar,
  writeGzipLayer,
  zeroFile,
} from "./tar-craft.js";

const TAR = "application/vnd.oci.image.layer.v1.tar";
const TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";

type LayerDescriptor = Parameters<typeof applyLayers>[1][number];
type ApplyOptions = NonNullable<Parameters<typeof applyLayers>[2]>;
type UnpackReport = Awaited<ReturnType<typeof applyLayers>>;

/** Canary mtimes: 2000-01-01, unlike any entry's, so a stray utimes() through a link shows. */
const CANARY_TIME = 946_684_800;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const isRoot = process.getuid?.() === 0;

let base: string;
let cases = 0;

before(async () => {
  base = await mkdtemp(join(tmpdir(), "locald-malicious-"));
});

after(async () => {
  await rm(base, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// The canary tree

interface Case {
  /** `<base>/<n>`: everything the snapshot watches. */
  dir: string;
  /** `<dir>/canary-parent`: the root's parent, where `../` lands. */
  parent: string;
  /** `<parent>/root`: where the layers are applied. */
  root: string;
  /** `<parent>/outside`: a directory with `victim` and `sub/deep`. */
  outside: string;
  /** `<parent>/passwd`: a file an attacker would like to link to or overwrite. */
  passwd: string;
  /** Where the layer blobs are written (inside `dir`, so they are watched too). */
  blobs: string;
  /** A name unique to this case, used for escape attempts; checked in every ancestor of root. */
  marker: string;
}

async function newCase(options: { createRoot?: boolean } = {}): Promise<Case> {
  const caseDir = join(base, String(++cases));
  const parent = join(caseDir, "canary-parent");
  const outside = join(parent, "outside");
  const c: Case = {
    dir: caseDir,
    parent,
    root: join(parent, "root"),
    outside,
    passwd: join(parent, "passwd"),
    blobs: join(caseDir, "blobs"),
    marker: `escaped-${randomBytes(6).toString("hex")}`,
  };
  await mkdir(join(outside, "sub"), { recursive: true, mode: 0o755 });
  await mkdir(c.blobs);
  await writeFile(join(caseDir, "canary.txt"), "canary above the parent\n", { mode: 0o644 });
  await writeFile(join(parent, "canary.txt"), "canary\n", { mode: 0o644 });
  await writeFile(c.passwd, "root:x:0:0:root:/root:/bin/sh\n", { mode: 0o644 });
  await writeFile(join(outside, "victim"), "victim\n", { mode: 0o600 });
  await writeFile(join(outside, "sub", "deep"), "deep\n", { mode: 0o640 });
  await symlinkFile("outside", join(parent, "link-to-outside"));
  if (options.createRoot ?? true) await mkdir(c.root, { mode: 0o755 });
  for (const path of [
    join(outside, "sub", "deep"),
    join(outside, "sub"),
    join(outside, "victim"),
    outside,
    c.passwd,
    join(parent, "canary.txt"),
    join(caseDir, "canary.txt"),
    parent,
    caseDir,
  ])
    await utimes(path, CANARY_TIME, CANARY_TIME);
  return c;
}

/** `path` (absolute, on the host) as an entry name: the same path inside the image. */
function mirror(hostPath: string): string {
  return hostPath.replace(/^\/+/, "");
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

async function describePath(path: string, withTimes: boolean): Promise<string> {
  const info = await lstat(path);
  const kind = info.isSymbolicLink()
    ? "symlink"
    : info.isDirectory()
      ? "dir"
      : info.isFile()
        ? "file"
        : info.isCharacterDevice()
          ? "char"
          : info.isBlockDevice()
            ? "block"
            : info.isFIFO()
              ? "fifo"
              : "other";
  let text = `${kind} mode=${(info.mode & 0o7777).toString(8)} uid=${info.uid} gid=${info.gid} ino=${info.ino}`;
  if (withTimes) text += ` nlink=${info.nlink} mtime=${info.mtimeMs}`;
  if (info.isFile()) text += ` size=${info.size} sha256=${sha256(await readFile(path))}`;
  if (info.isSymbolicLink()) text += ` -> ${await readlink(path)}`;
  return text;
}

/**
 * Every path under `c.dir` except the root's subtree. The root's parent loses its mtime and
 * link count when the root itself appeared or vanished (a legitimate create or clean-up).
 */
async function snapshot(c: Case, parentTimes: boolean): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (path: string, rel: string): Promise<void> => {
    if (path === c.root) return;
    out[rel] = await describePath(path, path !== c.parent || parentTimes);
    if ((await lstat(path)).isDirectory())
      for (const name of (await readdir(path)).sort()) await walk(join(path, name), `${rel}/${name}`);
  };
  await walk(c.dir, ".");
  return out;
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

/** Host files an escape could reach, watched in every case. */
const HOST_WATCHED = ["/etc/passwd", "/etc/hostname"];

async function hostSnapshot(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const path of HOST_WATCHED)
    out[path] = (await exists(path)) ? await describePath(path, true) : "absent";
  return out;
}

type Layer =
  | Buffer
  | { tar: Buffer; gzip?: boolean; diffId?: string; digest?: string; mediaType?: string }
  | { ready: LayerDescriptor };

async function writeLayers(c: Case, layers: readonly Layer[]): Promise<LayerDescriptor[]> {
  const out: LayerDescriptor[] = [];
  for (const [index, layer] of layers.entries()) {
    if (!Buffer.isBuffer(layer) && "ready" in layer) {
      out.push(layer.ready);
      continue;
    }
    const spec = Buffer.isBuffer(layer) ? { tar: layer } : layer;
    const blob = spec.gzip ? gzipSync(spec.tar) : spec.tar;
    const path = join(c.blobs, `layer-${index}${spec.gzip ? ".tar.gz" : ".tar"}`);
    await writeFile(path, blob);
    out.push({
      path,
      mediaType: spec.mediaType ?? (spec.gzip ? TAR_GZIP : TAR),
      digest: spec.digest ?? digestOf(blob),
      diffId: spec.diffId ?? digestOf(spec.tar),
    });
  }
  return out;
}

type Outcome = { ok: true; report: UnpackReport } | { ok: false; error: unknown };

interface RunOptions {
  /** Host paths that must not exist afterwards (absolute-name escapes); removed if they do. */
  hostAbsent?: string[];
}

/**
 * Applies `layers` to `c.root` and, whatever the outcome, checks that nothing outside the root
 * changed: the canary tree, the watched host files, the marker in every ancestor of the root,
 * and the root itself is still a real directory.
 */
async function run(
  c: Case,
  layers: readonly Layer[],
  options?: ApplyOptions,
  extra: RunOptions = {},
): Promise<Outcome> {
  const descriptors = await writeLayers(c, layers);
  const rootBefore = await exists(c.root);
  const before = await snapshot(c, true);
  const hostBefore = await hostSnapshot();
  let outcome: Outcome;
  try {
    outcome = { ok: true, report: await applyLayers(c.root, descriptors, options) };
  } catch (error) {
    outcome = { ok: false, error };
  }
  const rootAfter = await exists(c.root);
  const after = await snapshot(c, rootBefore === rootAfter);
  const expected = rootBefore === rootAfter ? before : await snapshotWithoutParentTimes(before, c);
  assert.deepEqual(after, expected, `the tree around the root changed (${describeOutcome(outcome)})`);
  assert.deepEqual(await hostSnapshot(), hostBefore, "a watched host file changed");
  for (let ancestor = dirname(c.root); ; ancestor = dirname(ancestor)) {
    assert.equal(await exists(join(ancestor, c.marker)), false, `${c.marker} escaped into ${ancestor}`);
    if (ancestor === dirname(ancestor)) break;
  }
  for (const path of extra.hostAbsent ?? []) {
    const escaped = await exists(path);
    if (escaped) await rm(path, { recursive: true, force: true });
    assert.equal(escaped, false, `${path} was written on the host`);
  }
  if (rootAfter) assert.ok((await lstat(c.root)).isDirectory(), "the root is no longer a real directory");
  if (outcome.ok) assert.ok(rootAfter, "the root is missing after a successful unpack");
  return outcome;
}

/** `before` as it would have been recorded without the parent's mtime and link count. */
async function snapshotWithoutParentTimes(
  before: Record<string, string>,
  c: Case,
): Promise<Record<string, string>> {
  const copy = { ...before };
  copy["./canary-parent"] = (copy["./canary-parent"] ?? "").replace(/ nlink=\S+ mtime=\S+/, "");
  assert.ok((await lstat(c.parent)).isDirectory());
  return copy;
}

function describeOutcome(outcome: Outcome): string {
  if (outcome.ok) return "the layers were applied";
  const error = outcome.error as { code?: unknown; message?: unknown };
  return `failed with ${String(error.code)}: ${String(error.message)}`;
}

function expectApplied(outcome: Outcome): UnpackReport {
  if (!outcome.ok) assert.fail(`expected the layers to apply, but ${describeOutcome(outcome)}`);
  return outcome.report;
}

/** A rejection with one of `codes`, whose message names `mentions` when given. */
function expectRefused(outcome: Outcome, codes: string | readonly string[], mentions?: string): OciError {
  const allowed = typeof codes === "string" ? [codes] : codes;
  if (outcome.ok) assert.fail(`expected ${allowed.join(" or ")}, but the layers were applied`);
  const error = outcome.error;
  assert.ok(error instanceof OciError, `expected an OciError, got ${describeOutcome(outcome)}`);
  assert.ok(
    allowed.includes(error.code),
    `expected ${allowed.join(" or ")}, got ${describeOutcome(outcome)}`,
  );
  if (mentions !== undefined)
    assert.ok(error.message.includes(mentions), `the message should name "${mentions}": ${error.message}`);
  return error;
}

async function readInRoot(c: Case, path: string): Promise<string> {
  return readFile(join(c.root, path), "utf8");
}

async function lstatInRoot(c: Case, path: string) {
  return lstat(join(c.root, path));
}

async function existsInRoot(c: Case, path: string): Promise<boolean> {
  return exists(join(c.root, path));
}

// ---------------------------------------------------------------------------------------------
// 1. Entry names that climb out of the root (node-tar CVE-2021-32804)

describe("entry names escaping the root", () => {
  test("../x is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([file("ok", "fine"), file(`../${c.marker}`, "escaped")])]);
    expectRefused(outcome, "UNSAFE_LAYER", c.marker);
  });

  test("a deep ../../../../../../../../../../x is refused (would reach the host's /)", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([file(`${"../".repeat(16)}${c.marker}`, "escaped")])]);
    expectRefused(outcome, "UNSAFE_LAYER", c.marker);
  });

  test("/../../x is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([file(`/../../${c.marker}`, "escaped")])]);
    expectRefused(outcome, "UNSAFE_LAYER", c.marker);
  });

  test("a/../../x is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([dir("a/"), file(`a/../../${c.marker}`, "escaped")])]);
    expectRefused(outcome, "UNSAFE_LAYER", c.marker);
  });

  test("a directory entry ../x/ is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([dir(`../${c.marker}/`)])]);
    expectRefused(outcome, "UNSAFE_LAYER", c.marker);
  });

  test("an escape hidden in the ustar prefix field (prefix '..', name x) is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([{ name: c.marker, prefix: "..", content: "escaped" }])]);
    expectRefused(outcome, "UNSAFE_LAYER", c.marker);
  });

  test("a PAX path ../x overriding an innocent ustar name is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([{ name: "innocent", content: "escaped", pax: { path: `../${c.marker}` } }]),
    ]);
    expectRefused(outcome, "UNSAFE_LAYER", c.marker);
    assert.equal(await existsInRoot(c, "innocent"), false, "the PAX path must win over the ustar name");
  });

  test("a GNU long name (L) ../x is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([{ name: "innocent", content: "escaped", gnuLongName: `../${c.marker}` }]),
    ]);
    expectRefused(outcome, "UNSAFE_LAYER", c.marker);
  });

  test("a PAX global header path ../x is refused or never used outside the root", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([paxGlobal({ path: `../${c.marker}` }), file("ok", "fine")])]);
    if (!outcome.ok) expectRefused(outcome, "UNSAFE_LAYER");
  });

  test("an absolute name /etc/x is written inside root/etc, never on the host", async () => {
    const c = await newCase();
    const hostPath = `/etc/${c.marker}`;
    const outcome = await run(c, [tar([dir("/etc/"), file(hostPath, "inside")])], undefined, {
      hostAbsent: [hostPath],
    });
    expectApplied(outcome);
    assert.equal(await readInRoot(c, `etc/${c.marker}`), "inside");
  });

  test("an absolute name naming the canary on the host is written inside the root", async () => {
    const c = await newCase();
    const target = join(c.parent, "canary.txt");
    const outcome = await run(c, [tar([file(target, "overwritten")])]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, mirror(target)), "overwritten");
  });

  test("a/../x through a symlink a -> host dir is resolved lexically to root/x", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([symlink("a", join(c.outside, "sub"))]),
      tar([file(`a/../${c.marker}`, "lexical")]),
    ]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, c.marker), "lexical");
  });
});

// ---------------------------------------------------------------------------------------------
// 2. The root entry changing type (umoci CVE-2021-29136)

describe("the root entry never changes type", () => {
  for (const name of ["./", ".", "/", "a/.."]) {
    test(`root entry "${name}" as a symlink to the parent, then a write, is refused`, async () => {
      const c = await newCase();
      const outcome = await run(c, [tar([symlink(name, c.parent), file(c.marker, "through the root")])]);
      expectRefused(outcome, "UNSAFE_LAYER");
    });
  }

  test("root as a symlink '..' in one layer, written through in the next, is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("./", "..")]), tar([file(c.marker, "through the root")])]);
    expectRefused(outcome, "UNSAFE_LAYER");
  });

  test("root entry './' as a regular file is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([file("keep", "k")]), tar([file("./", "not a directory")])]);
    expectRefused(outcome, "UNSAFE_LAYER");
  });

  test("root entry './' as a hardlink is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([dir("etc/"), file("etc/passwd", "root:x:0:0::/:/bin/sh\n"), hardlink("./", "etc/passwd")]),
    ]);
    expectRefused(outcome, "UNSAFE_LAYER");
  });

  test("a missing root is created 0700, whatever mode the image gives './'", async () => {
    const c = await newCase({ createRoot: false });
    const outcome = await run(c, [tar([dir("./", { mode: 0o777 }), file("hello", "hi")])]);
    expectApplied(outcome);
    assert.equal((await stat(c.root)).mode & 0o777, 0o700);
    assert.equal(await readInRoot(c, "hello"), "hi");
  });
});

// ---------------------------------------------------------------------------------------------
// 3. Writes through symlinks (GNU tar CVE-2025-45582, node-tar CVE-2021-32803/-37701/-37712,
//    tar-fs CVE-2024-12905): resolved inside the root, never followed out of it.

describe("writing through symlinks stays inside the root", () => {
  test("l -> .. then l/x writes root/x", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("l", ".."), file(`l/${c.marker}`, "clamped")])]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, c.marker), "clamped");
    assert.equal(await readlink(join(c.root, "l")), "..");
  });

  test("l -> ../../.. then l/x writes root/x", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("l", "../../.."), file(`l/${c.marker}`, "clamped")])]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, c.marker), "clamped");
  });

  test("absolute l -> <host outside> then l/evil writes root/<host outside>/evil", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([
        dir(`${mirror(c.outside)}/`),
        symlink("l", c.outside),
        file("l/evil", "evil"),
        file("l/victim", "pwned"),
      ]),
    ]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, `${mirror(c.outside)}/evil`), "evil");
    assert.equal(await readInRoot(c, `${mirror(c.outside)}/victim`), "pwned");
  });

  test("absolute l -> <host outside> with no such directory in the image: created inside the root", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("l", c.outside), file("l/evil", "evil")])]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, `${mirror(c.outside)}/evil`), "evil");
  });

  test("a symlink chain a -> b, b -> ../.. then a/x writes root/x", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([symlink("a", "b"), symlink("b", "../.."), file(`a/${c.marker}`, "chained")]),
    ]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, c.marker), "chained");
  });

  test("a chain through a nested symlink d/l -> ../../.. then d/l/x writes root/x", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([dir("d/"), symlink("d/l", "../../.."), file(`d/l/${c.marker}`, "nested")]),
    ]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, c.marker), "nested");
  });

  test("a symlink loop a -> b, b -> a then a/x is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([symlink("a", "b"), symlink("b", "a"), file(`a/${c.marker}`, "loop")]),
    ]);
    expectRefused(outcome, ["INVALID_LAYER", "UNSAFE_LAYER"]);
  });

  test("l -> .. in a previous layer, l/x in the next writes root/x", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("up", "..")]), tar([file(`up/${c.marker}`, "next layer")])]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, c.marker), "next layer");
  });

  test("l -> <host parent> in a previous layer, l/canary.txt in the next stays inside", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("up", c.parent)]), tar([file("up/canary.txt", "pwned")])]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, `${mirror(c.parent)}/canary.txt`), "pwned");
  });

  test("a directory replaced by a symlink, then written through in the next layer", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([dir("outside/"), dir("d/"), file("d/f", "f")]),
      tar([symlink("d", "../outside")]),
      tar([file("d/evil", "evil")]),
    ]);
    expectApplied(outcome);
    assert.ok((await lstatInRoot(c, "d")).isSymbolicLink());
    assert.equal(await readInRoot(c, "outside/evil"), "evil");
  });

  test("directory cache poisoning in one layer: d/, d -> ../outside, d/evil", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([dir("outside/"), dir("d/"), file("d/f", "f"), symlink("d", "../outside"), file("d/evil", "evil")]),
    ]);
    expectApplied(outcome);
    assert.ok((await lstatInRoot(c, "d")).isSymbolicLink());
    assert.equal(await readInRoot(c, "outside/evil"), "evil");
  });

  test("unicode normalisation: a dir 'café' (NFC), a symlink 'café' (NFD) -> .., then a write through NFD", async () => {
    const c = await newCase();
    const nfc = "caf\u00e9";
    const nfd = "cafe\u0301";
    const outcome = await run(c, [
      tar([dir(`${nfc}/`), file(`${nfc}/f`, "f"), symlink(nfd, ".."), file(`${nfd}/${c.marker}`, "clamped")]),
    ]);
    expectApplied(outcome);
    assert.ok((await lstatInRoot(c, nfc)).isDirectory());
    assert.ok((await lstatInRoot(c, nfd)).isSymbolicLink());
    assert.equal(await readInRoot(c, c.marker), "clamped");
  });

  test("/etc/passwd in the image as a symlink to the host's passwd is stored verbatim, not followed", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([dir("etc/"), symlink("etc/passwd", c.passwd), symlink("etc/group", "../../passwd")]),
    ]);
    expectApplied(outcome);
    assert.equal(await readlink(join(c.root, "etc/passwd")), c.passwd);
    assert.equal(await readlink(join(c.root, "etc/group")), "../../passwd");
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Hardlinks whose target is outside the root (umoci, gcr #2002)

describe("hardlinks resolve inside the root", () => {
  test("a hardlink to /etc/passwd links the image's own etc/passwd", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([dir("etc/"), file("etc/passwd", "image:x:0:0::/:/bin/sh\n"), hardlink("h", "/etc/passwd")]),
    ]);
    expectApplied(outcome);
    const [link, target] = await Promise.all([lstatInRoot(c, "h"), lstatInRoot(c, "etc/passwd")]);
    assert.equal(link.ino, target.ino);
    assert.equal(await readInRoot(c, "h"), "image:x:0:0::/:/bin/sh\n");
  });

  test("a hardlink to /etc/passwd when the image has none is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([hardlink("h", "/etc/passwd")])]);
    expectRefused(outcome, ["INVALID_LAYER", "UNSAFE_LAYER"]);
    assert.equal(await existsInRoot(c, "h"), false);
  });

  test("a hardlink to ../passwd is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([file("passwd", "inside"), hardlink("h", "../passwd")])]);
    expectRefused(outcome, "UNSAFE_LAYER");
  });

  test("a hardlink to ../outside/victim is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([hardlink("h", "../outside/victim")])]);
    expectRefused(outcome, "UNSAFE_LAYER");
  });

  test("a hardlink to the host path of the canary passwd is refused (not in the image)", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([hardlink("h", c.passwd)])]);
    expectRefused(outcome, ["INVALID_LAYER", "UNSAFE_LAYER"]);
  });

  test("a PAX linkpath ../passwd overriding an innocent ustar link name is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([
        file("passwd", "inside"),
        { name: "h", type: "hardlink", linkname: "passwd", pax: { linkpath: "../passwd" } },
      ]),
    ]);
    expectRefused(outcome, "UNSAFE_LAYER");
  });

  test("a hardlink named ../x is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([file("passwd", "inside"), hardlink(`../${c.marker}`, "passwd")])]);
    expectRefused(outcome, "UNSAFE_LAYER", c.marker);
  });

  test("a hardlink through a symlinked dir l -> .. links the image's file (l/passwd = root/passwd)", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([file("passwd", "inside"), symlink("l", ".."), hardlink("h", "l/passwd")]),
    ]);
    expectApplied(outcome);
    assert.equal((await lstatInRoot(c, "h")).ino, (await lstatInRoot(c, "passwd")).ino);
  });

  test("a hardlink through a symlinked dir l -> <host parent> is refused (not in the image)", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("l", c.parent), hardlink("h", "l/passwd")])]);
    expectRefused(outcome, ["INVALID_LAYER", "UNSAFE_LAYER"]);
  });

  test("a hardlink to a symlink pointing outside links the symlink itself", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([symlink("s", "../passwd"), symlink("abs", c.passwd), hardlink("h", "s"), hardlink("habs", "abs")]),
    ]);
    expectApplied(outcome);
    const [s, h, abs, habs] = await Promise.all(
      ["s", "h", "abs", "habs"].map((name) => lstatInRoot(c, name)),
    );
    assert.ok(
      h?.isSymbolicLink() && habs?.isSymbolicLink(),
      "the hardlinks must be links to the symlink inodes",
    );
    assert.equal(h?.ino, s?.ino);
    assert.equal(habs?.ino, abs?.ino);
    assert.equal(await readlink(join(c.root, "h")), "../passwd");
  });
});

// ---------------------------------------------------------------------------------------------
// 5. Whiteouts (umoci 635306a3)

describe("whiteouts resolve inside the root", () => {
  test("a whiteout ../.wh.x is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([file("../.wh.canary.txt")])]);
    expectRefused(outcome, "UNSAFE_LAYER", "canary.txt");
  });

  for (const name of [".wh.", "sub/.wh.", ".wh..", "sub/.wh.."]) {
    test(`a whiteout "${name}" (of nothing, or of a parent) is refused`, async () => {
      const c = await newCase();
      const outcome = await run(c, [
        tar([dir("sub/"), file("sub/keep", "keep"), file("keep", "keep")]),
        tar([file(name)]),
      ]);
      expectRefused(outcome, ["INVALID_LAYER", "UNSAFE_LAYER"]);
      // Unless the unpacker cleaned up after the failure, the lower layer must be intact.
      if (await existsInRoot(c, "keep")) assert.equal(await readInRoot(c, "sub/keep"), "keep");
    });
  }

  test("a whiteout through a symlinked parent l -> <host outside> deletes nothing on the host", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([symlink("l", c.outside)]),
      tar([file("l/.wh.victim"), file("l/.wh.sub")]),
    ]);
    expectApplied(outcome);
  });

  test("a whiteout through l -> ../outside removes the image's outside/victim only", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([
        dir("outside/"),
        file("outside/victim", "image"),
        file("outside/other", "other"),
        symlink("l", "../outside"),
      ]),
      tar([file("l/.wh.victim")]),
    ]);
    expectApplied(outcome);
    assert.equal(await existsInRoot(c, "outside/victim"), false);
    assert.equal(await readInRoot(c, "outside/other"), "other");
  });

  test("a whiteout of the root's parent through l -> ../.. (l/.wh.canary-parent) deletes nothing outside", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([file("keep", "keep"), symlink("l", "../..")]),
      tar([file("l/.wh.canary-parent")]),
    ]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, "keep"), "keep");
  });

  test("a whiteout of a symlink removes the link, not its target", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([symlink("s", "../outside"), symlink("f", "../passwd"), symlink("abs", c.outside)]),
      tar([file(".wh.s"), file(".wh.f"), file(".wh.abs")]),
    ]);
    expectApplied(outcome);
    for (const name of ["s", "f", "abs"]) assert.equal(await existsInRoot(c, name), false, name);
  });

  test("an opaque whiteout through a symlinked parent l -> <host outside> empties nothing on the host", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("l", c.outside)]), tar([file("l/.wh..wh..opq")])]);
    expectApplied(outcome);
  });

  test("an opaque whiteout through l -> .. (the root) empties nothing outside", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([file("keep", "keep"), symlink("l", "..")]),
      tar([file("l/.wh..wh..opq")]),
    ]);
    expectApplied(outcome);
  });

  test("an opaque whiteout over a directory holding symlinks to the outside does not follow them", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([dir("d/"), symlink("d/rel", "../../outside"), symlink("d/abs", c.outside), file("d/old", "old")]),
      tar([file("d/.wh..wh..opq"), file("d/new", "new")]),
    ]);
    expectApplied(outcome);
    assert.deepEqual((await readdir(join(c.root, "d"))).sort(), ["new"]);
  });
});

// ---------------------------------------------------------------------------------------------
// 6. Metadata never follows links (containerd CVE-2021-32760)

describe("metadata never follows a symlink", () => {
  const meta = { mode: 0o666, uid: 4242, gid: 4242, mtime: 5 } satisfies Partial<Entry>;

  test("a file entry over a symlink to an outside file (previous layer) replaces the symlink", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("f", "../passwd")]), tar([file("f", "new", meta)])]);
    expectApplied(outcome);
    const info = await lstatInRoot(c, "f");
    assert.ok(info.isFile());
    assert.equal(info.mode & 0o7777, 0o666);
    assert.equal(info.mtimeMs, 5000);
    if (isRoot) assert.equal(info.uid, 4242);
    assert.equal(await readInRoot(c, "f"), "new");
  });

  test("a file entry over an absolute symlink to the host file (same layer) replaces the symlink", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("f", c.passwd), file("f", "new", meta)])]);
    expectApplied(outcome);
    assert.ok((await lstatInRoot(c, "f")).isFile());
    assert.equal(await readInRoot(c, "f"), "new");
  });

  test("a directory entry over a symlink to an outside directory replaces the symlink", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([symlink("d", "../outside")]),
      tar([dir("d/", { ...meta, mode: 0o777 })]),
    ]);
    expectApplied(outcome);
    const info = await lstatInRoot(c, "d");
    assert.ok(info.isDirectory());
    assert.equal(info.mode & 0o7777, 0o777);
  });

  test("a symlink entry with mode, owner and mtime changes only the link", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("s", "../passwd", meta), symlink("d", "../outside", meta)])]);
    expectApplied(outcome);
    assert.ok((await lstatInRoot(c, "s")).isSymbolicLink());
  });

  test("a directory's deferred mode/mtime is not redirected when it is later replaced by a symlink", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([
        dir("a/", { mode: 0o777, mtime: 5 }),
        dir("a/sub/", { mode: 0o777, mtime: 5 }),
        dir("b/", { mode: 0o777, mtime: 5 }),
        symlink("a", "../outside"),
        symlink("b", c.outside),
      ]),
    ]);
    expectApplied(outcome);
    assert.ok((await lstatInRoot(c, "a")).isSymbolicLink());
    assert.ok((await lstatInRoot(c, "b")).isSymbolicLink());
  });

  test("a hardlink entry with metadata to a symlink changes nothing outside", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("s", "../passwd"), hardlink("h", "s", meta)])]);
    expectApplied(outcome);
  });
});

// ---------------------------------------------------------------------------------------------
// 7. Device nodes and setuid files (umoci #181/#182)

describe("devices and special modes", () => {
  test("device nodes are skipped and reported when rootless, not an error", async () => {
    const c = await newCase();
    const outcome = await run(
      c,
      [
        tar([
          dir("dev/"),
          { name: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 },
          { name: "dev/sda", type: "block", devmajor: 8, devminor: 0, mode: 0o660 },
          file("after", "after"),
        ]),
      ],
      { rootless: true },
    );
    const report = expectApplied(outcome);
    for (const name of ["dev/null", "dev/sda"]) {
      const info = await lstatInRoot(c, name).catch(() => undefined);
      assert.ok(
        info === undefined || !(info.isCharacterDevice() || info.isBlockDevice()),
        `${name} was created`,
      );
      assert.ok(
        report.skipped.some((skipped) => skipped.path.replace(/^\/+/, "") === name),
        `the report should list the skipped ${name}: ${JSON.stringify(report.skipped)}`,
      );
    }
    assert.equal(await readInRoot(c, "after"), "after");
  });

  test("setuid, setgid and sticky modes are preserved", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([
        dir("bin/"),
        file("bin/su", "#!/bin/sh\n", { mode: 0o4755 }),
        file("bin/wall", "#!/bin/sh\n", { mode: 0o2755 }),
        dir("tmp/", { mode: 0o1777 }),
      ]),
    ]);
    expectApplied(outcome);
    assert.equal((await lstatInRoot(c, "bin/su")).mode & 0o7777, 0o4755);
    assert.equal((await lstatInRoot(c, "bin/wall")).mode & 0o7777, 0o2755);
    assert.equal((await lstatInRoot(c, "tmp")).mode & 0o7777, 0o1777);
  });
});

// ---------------------------------------------------------------------------------------------
// 8. Bombs and unbounded reads (CVE-2017-14992, CVE-2020-1702)

describe("size and entry caps", () => {
  test("a million entries are stopped by the default entry cap", { timeout: 180_000 }, async () => {
    const c = await newCase();
    const path = join(c.blobs, "million.tar.gz");
    // One directory entry repeated: cheap to build (about 0.5 MB gzipped, one chunk in memory)
    // and cheap to apply, so the time goes into counting, not into creating inodes.
    const layer = await writeGzipLayer(path, repeatedEntries(dir("d/"), 1_000_000), 6);
    assert.equal(layer.uncompressedSize, 1_000_000 * BLOCK + 2 * BLOCK);
    // No limits passed: the defaults must stop it. 512 MB of headers is far below any sane
    // default byte cap, so it is the entry cap that has to trip.
    const outcome = await run(c, [
      { ready: { path, mediaType: TAR_GZIP, digest: layer.digest, diffId: layer.diffId } },
    ]);
    const error = expectRefused(outcome, "SIZE_LIMIT");
    assert.match(error.message, /entr/i, "the entry cap, not a byte cap, should stop it");
  });

  test("limits.maxEntries overrides the cap downwards", async () => {
    const c = await newCase();
    const entries = Array.from({ length: 50 }, (_, i) => file(`f${i}`, String(i)));
    const outcome = await run(c, [tar(entries)], { limits: { maxEntries: 10 } });
    expectRefused(outcome, "SIZE_LIMIT");
  });

  test("limits.maxEntries above the count lets the layer through", async () => {
    const c = await newCase();
    const entries = Array.from({ length: 50 }, (_, i) => file(`f${i}`, String(i)));
    const outcome = await run(c, [tar(entries)], { limits: { maxEntries: 1000 } });
    expectApplied(outcome);
    assert.equal((await readdir(c.root)).length, 50);
  });

  test("a gzip bomb (1 GiB of zeros) stops at limits.maxBytes", { timeout: 120_000 }, async () => {
    const c = await newCase();
    const path = join(c.blobs, "bomb.tar.gz");
    const layer = await writeGzipLayer(path, zeroFile("zeros", GiB), 1);
    const outcome = await run(
      c,
      [{ ready: { path, mediaType: TAR_GZIP, digest: layer.digest, diffId: layer.diffId } }],
      {
        limits: { maxBytes: 64 * MiB },
      },
    );
    expectRefused(outcome, "SIZE_LIMIT");
    const written = await lstatInRoot(c, "zeros").catch(() => undefined);
    assert.ok(written === undefined || written.size <= 64 * MiB, `wrote ${written?.size} bytes past the cap`);
  });

  test("an uncompressed layer over limits.maxBytes is stopped too", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([file("big", Buffer.alloc(2 * MiB, 1))])], {
      limits: { maxBytes: MiB },
    });
    expectRefused(outcome, "SIZE_LIMIT");
  });
});

// ---------------------------------------------------------------------------------------------
// Long names (PATH_MAX, NAME_MAX)

describe("over-long names", () => {
  test("a path longer than 4096 bytes (PAX) is refused cleanly", async () => {
    const c = await newCase();
    const long = Array.from({ length: 20 }, (_, i) => `${String(i).padStart(2, "0")}${"a".repeat(248)}`).join(
      "/",
    );
    assert.ok(long.length > 4096);
    const outcome = await run(c, [tar([file(long, "deep")])]);
    expectRefused(outcome, ["INVALID_LAYER", "UNSAFE_LAYER"]);
  });

  test("a name component longer than 255 bytes is refused cleanly", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([dir("d/"), file(`d/${"b".repeat(300)}`, "wide")])]);
    expectRefused(outcome, ["INVALID_LAYER", "UNSAFE_LAYER"]);
  });

  // Found by unpack.fuzz.test.ts: these reached symlink(2) or open(2) and failed as host errors.
  test("a name within the limits in characters but not in bytes is refused as the layer's fault", async () => {
    const c = await newCase();
    expectRefused(await run(c, [tar([file("é".repeat(128))])]), "INVALID_LAYER", "255");
    const deep = `${"é".repeat(100)}/`.repeat(25);
    expectRefused(await run(c, [tar([file(deep)])]), "INVALID_LAYER", "4096");
  });

  test("a symlink with an empty target, or one longer than 4096 bytes, is refused as the layer's fault", async () => {
    const c = await newCase();
    expectRefused(await run(c, [tar([symlink("fz-a", "")])]), "INVALID_LAYER", "empty target");
    expectRefused(await run(c, [tar([symlink("fz-a", "fz-a/".repeat(900))])]), "INVALID_LAYER", "4096");
  });

  test("an entry through a symlink to a name longer than 255 bytes is refused as the layer's fault", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([symlink("fz-a", "x".repeat(300)), file("fz-a/b")])]);
    expectRefused(outcome, "INVALID_LAYER", "255");
  });
});

// ---------------------------------------------------------------------------------------------
// Integrity: corrupt archives, DiffIDs, data after the end marker (gcr #2303, umoci 4faf7539)

describe("archive integrity", () => {
  const payload = randomBytes(10 * 1024);

  test("a tar truncated in the middle of a file's data is refused", async () => {
    const c = await newCase();
    const truncated = tar([file("big", payload)]).subarray(0, BLOCK + 4000);
    const outcome = await run(c, [truncated]);
    expectRefused(outcome, "INVALID_LAYER");
  });

  test("a tar truncated in the middle of a header is refused", async () => {
    const c = await newCase();
    const whole = tar([file("a", "a"), file("b", "b")]);
    const outcome = await run(c, [whole.subarray(0, 2 * BLOCK + 300)]);
    expectRefused(outcome, "INVALID_LAYER");
  });

  test("a truncated gzip stream is refused", async () => {
    const c = await newCase();
    const whole = tar([file("big", payload)]);
    const gz = gzipSync(whole);
    const blob = gz.subarray(0, Math.floor(gz.length / 2));
    const outcome = await run(c, [{ tar: blob, mediaType: TAR_GZIP, diffId: digestOf(whole) }]);
    expectRefused(outcome, ["INVALID_LAYER", "DIGEST_MISMATCH"]);
  });

  test("a header with a bad checksum is refused", async () => {
    const c = await newCase();
    const bad = header({ name: "bad", type: "file", size: 0, checksum: 1234 });
    const outcome = await run(c, [tar([entry(file("good", "g")), bad])]);
    expectRefused(outcome, "INVALID_LAYER");
  });

  test("an HTML page instead of a tar is refused", async () => {
    const c = await newCase();
    const html = Buffer.from(
      `<!doctype html><html><body>${"<p>Service Unavailable</p>".repeat(100)}</body></html>`,
    );
    const outcome = await run(c, [html]);
    expectRefused(outcome, "INVALID_LAYER");
  });

  test("a plain tar declared as gzip is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [{ tar: tar([file("a", "a")]), mediaType: TAR_GZIP }]);
    expectRefused(outcome, "INVALID_LAYER");
  });

  test("a DiffID that does not match the uncompressed stream is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      { tar: tar([file("a", "a")]), gzip: true, diffId: digestOf("something else") },
    ]);
    expectRefused(outcome, "DIGEST_MISMATCH");
  });

  test("a blob digest that does not match the compressed file is refused", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      { tar: tar([file("a", "a")]), gzip: true, digest: digestOf("something else") },
    ]);
    expectRefused(outcome, "DIGEST_MISMATCH");
  });

  test("garbage after the end marker is drained and covered by the DiffID", async () => {
    const c = await newCase();
    const outcome = await run(c, [tar([file("a", "content")], { trailer: randomBytes(10_000) })]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, "a"), "content");
  });

  test("garbage after the end marker inside a gzip stream is drained and covered by the DiffID", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      { tar: tar([file("a", "content")], { trailer: randomBytes(10_000) }), gzip: true },
    ]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, "a"), "content");
  });

  test("garbage after the end marker that the DiffID does not cover is refused", async () => {
    const c = await newCase();
    const clean = tar([file("a", "content")]);
    const dirty = Buffer.concat([clean, randomBytes(10_000)]);
    const outcome = await run(c, [{ tar: dirty, gzip: true, diffId: digestOf(clean) }]);
    expectRefused(outcome, "DIGEST_MISMATCH");
  });

  test("an entry after the end marker is not extracted (but is covered by the DiffID)", async () => {
    const c = await newCase();
    const outcome = await run(c, [
      tar([file("a", "content")], { trailer: tar([file("after-end", "smuggled")]) }),
    ]);
    expectApplied(outcome);
    assert.equal(await readInRoot(c, "a"), "content");
    assert.equal(await existsInRoot(c, "after-end"), false);
  });
});
