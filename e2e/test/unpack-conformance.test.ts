/**
 * Conformance of our layer unpacker with `umoci unpack` (0.4.7, the reference implementation of
 * the image-spec's changeset rules). Every case is an image built with the factory, pushed to a
 * real registry, unpacked with `locald image unpack` and, from the same layout, with umoci; the
 * two root filesystems are then compared object by object: type, mode (incl. setuid, setgid,
 * sticky), content, symlink target, device numbers, hardlink identity, mtime and ownership.
 *
 * What umoci 0.4.7 does, checked by hand against these images (and what we therefore demand):
 * - mtimes come from the tar headers for files, directories, symlinks (lutimes), fifos and
 *   devices, epoch 0 included; a PAX `mtime` record wins over the ustar field (sub-second
 *   precision, dates past 2038);
 * - a directory keeps the mtime of its own header however its children change later — in the
 *   same layer or in a later layer that does not list the directory again (umoci saves the parent's
 *   metadata before each entry and restores it afterwards; whiteouts and opaque markers too). The
 *   one exception is a umoci artefact, not compared: see `umociTouches` in opaque-marker-last;
 * - hardlinks carry no metadata of their own (the inode keeps its first name's), and a later
 *   layer that rewrites one name of a hardlinked pair gives it a new inode (the other keeps the
 *   old content);
 * - a whiteout removes the symlink, never what it points to; whiteouts and opaque markers apply
 *   to lower layers only, whatever their position in the tar;
 * - symlinks in a parent path are followed as if the root were `/` (a `lib -> /usr/lib` link
 *   writes into `<root>/usr/lib`, `up -> ../../..` stops at the root);
 * - parents that no entry lists are created 0777 & ~umask (0755 here: we pin the umask) with the
 *   time of creation as mtime; that mtime, and the root's own metadata, are the tool's choice and
 *   are not compared (locald keeps the root 0700 and never applies a `./` entry to it).
 * - zstd layers are refused ("blob is not correct mediatype") and Docker media types are not
 *   read: for such images umoci unpacks a twin in the layout with the same tars, gzip-compressed,
 *   so both sides apply the same DiffIDs.
 * - rootless (`--rootless`): no chown (everything belongs to the caller; we still compare uid/gid,
 *   which then must be the caller's on both sides), devices become empty regular files (locald
 *   skips them and reports them in `skipped`), read-only directories still receive children.
 * One deliberate difference: an entry name that climbs out of the root with `..` is refused by
 * locald (umoci cleans it lexically and writes inside the root) — see its own test below.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, chown, lstat, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { applyLayers, type LayerBlob, OciLayout, parseDigest, push } from "@locald/oci";
import {
  type BuiltLayer,
  type CliResult,
  type Compression,
  compressLayer,
  diffTrees,
  formatTree,
  type ImageFormat,
  type LayerEntry,
  LOCALD_BIN,
  opaqueWhiteout,
  paxTime,
  pseudoRandomBytes,
  requireBinary,
  runLocald,
  snapshotTree,
  startRegistry,
  subtree,
  type TestRegistry,
  type TreeNode,
  type TreeSnapshot,
  tarEntries,
  unprivilegedUser,
  whiteout,
  writeImage,
} from "../src/index.js";

// ---------------------------------------------------------------------------------------------
// Entry shorthands: every entry gets an explicit, distinct mtime so that a wrong one shows.

const day = (n: number) => new Date(Date.UTC(2020, 0, 1 + n));
type Extra = Omit<LayerEntry, "path" | "type" | "mtime">;

const dir = (path: string, d: number, extra: Extra = {}): LayerEntry => ({
  path: `${path}/`,
  type: "directory",
  mtime: day(d),
  ...extra,
});
const file = (path: string, content: string | Buffer, d: number | Date, extra: Extra = {}): LayerEntry => ({
  path,
  type: "file",
  content,
  mtime: typeof d === "number" ? day(d) : d,
  ...extra,
});
const symlink = (path: string, target: string, d: number, extra: Extra = {}): LayerEntry => ({
  path,
  type: "symlink",
  linkname: target,
  mtime: day(d),
  ...extra,
});
const hardlink = (path: string, target: string): LayerEntry => ({ path, type: "link", linkname: target });
const fifo = (path: string, mode: number, d: number): LayerEntry => ({
  path,
  type: "fifo",
  mode,
  mtime: day(d),
});
const device = (
  path: string,
  type: "character-device" | "block-device",
  devmajor: number,
  devminor: number,
  mode: number,
  d: number,
  extra: Extra = {},
): LayerEntry => ({ path, type, devmajor, devminor, mode, mtime: day(d), ...extra });

// ---------------------------------------------------------------------------------------------
// The cases. Names are repository names; contents differ between cases, so that no case can be
// served from another's cached root (locald caches roots by ChainID).

interface ConformanceCase {
  name: string;
  layers: ReadonlyArray<readonly LayerEntry[]>;
  /** Per layer; default gzip. */
  compressions?: readonly Compression[];
  format?: ImageFormat;
  /** Device nodes in the final tree: a rootless unpack skips them and says so. */
  devices?: readonly string[];
  /** Directories no entry lists: their mtime is the time the tool created them. */
  implicitDirs?: readonly string[];
  /** Paths whose mtime umoci leaves at the time of unpacking (a umoci artefact, see the case). */
  umociTouches?: readonly string[];
  /** Names that must not appear next to the output directory or above it (escape attempts). */
  escapeMarkers?: readonly string[];
}

const CASES: readonly ConformanceCase[] = [
  {
    name: "whiteouts",
    layers: [
      [
        dir("etc", 1),
        file("etc/keep", "keep\n", 2),
        file("etc/gone", "gone\n", 3),
        dir("var", 4),
        dir("var/lib", 5),
        dir("var/lib/gone", 6),
        file("var/lib/gone/a", "a", 7),
        dir("var/lib/gone/sub", 8),
        file("var/lib/gone/sub/b", "b", 9),
        file("var/lib/stays", "stays", 10),
        dir("links", 11),
        symlink("links/to-dir", "../var/lib", 12),
        symlink("links/to-file", "../etc/keep", 13),
        symlink("links/abs-to-dir", "/var/lib", 14),
        symlink("links/dangling", "nowhere", 15),
        symlink("links/keep", "../etc/keep", 16),
      ],
      [
        whiteout("etc/gone"),
        whiteout("var/lib/gone"),
        // Whiting out a symlink removes the link, never its target.
        whiteout("links/to-dir"),
        whiteout("links/to-file"),
        whiteout("links/abs-to-dir"),
        whiteout("links/dangling"),
        // A whiteout for something that never existed is not an error.
        whiteout("etc/never-existed"),
      ],
    ],
  },
  {
    name: "opaque-marker-first",
    layers: [
      [
        dir("srv", 1),
        file("srv/a", "a", 2),
        dir("srv/sub", 3),
        file("srv/sub/x", "x", 4),
        file("srv/sub/y", "y", 5),
        symlink("srv/link", "a", 6),
        dir("srv/deep", 7),
        dir("srv/deep/er", 8),
        file("srv/deep/er/z", "z", 9),
        dir("opt", 10),
        file("opt/old", "old", 11),
        dir("opt/olddir", 12),
      ],
      [
        dir("srv", 20, { mode: 0o750 }),
        opaqueWhiteout("srv"),
        dir("srv/sub", 21),
        file("srv/sub/new", "new", 22),
        file("srv/b", "b", 23),
      ],
      // An opaque marker alone, without the directory's own entry: it empties `opt`, whose mode
      // and mtime stay those of the first layer.
      [opaqueWhiteout("opt")],
    ],
  },
  {
    name: "opaque-marker-last",
    layers: [
      [
        dir("srv", 1),
        file("srv/a", "a-last", 2),
        dir("srv/sub", 3),
        file("srv/sub/x", "x", 4),
        file("srv/sub/y", "y", 5),
        symlink("srv/link", "a", 6),
        dir("srv/deep", 7),
        file("srv/deep/z", "z", 9),
        dir("opt", 10),
        file("opt/old", "old", 11),
      ],
      [
        // Everything this layer writes survives its own opaque marker, even when the marker
        // comes last; `srv/sub` is re-created by this layer, but `srv/sub/x` and `y` are not.
        dir("srv", 20, { mode: 0o750 }),
        dir("srv/sub", 21),
        file("srv/sub/new", "new", 22),
        file("srv/b", "b", 23),
        opaqueWhiteout("srv"),
      ],
      [file("opt/new", "new in opt", 30), opaqueWhiteout("opt")],
    ],
    // umoci restores only the opaque directory's own metadata; deleting `srv/sub/x` and `y`
    // below the re-created `srv/sub` leaves that directory at the time of unpacking. Its header
    // (day 21) is the right answer, and what the marker-first order gives in umoci too.
    umociTouches: ["srv/sub"],
  },
  {
    name: "whiteout-same-layer",
    layers: [
      [dir("x", 1), file("x/old", "old", 2), file("x/kept", "kept", 3)],
      // Whiteouts apply to lower layers only: `x/new`, written by this very layer, stays.
      [file("x/new", "new", 4), whiteout("x/new"), whiteout("x/old")],
    ],
  },
  {
    name: "hardlinks",
    layers: [
      [
        dir("bin", 1),
        file("bin/tool", "tool v1\n", 2, { mode: 0o755 }),
        hardlink("bin/tool-alias", "bin/tool"),
        hardlink("bin/tool-alias2", "bin/tool-alias"),
        dir("data", 3),
        file("data/orig", "orig\n", 4, { mode: 0o640 }),
        hardlink("data/pair", "data/orig"),
        dir("lib", 5),
        file("lib/libc.so.6", pseudoRandomBytes(5000, 11), 6),
      ],
      [
        // A hardlink to a file of an earlier layer.
        hardlink("bin/late", "bin/tool"),
        hardlink("lib/libc.so", "lib/libc.so.6"),
        // Rewriting one name of a pair gives it a new inode; `data/pair` keeps the old content.
        file("data/orig", "orig v2\n", 7),
      ],
      // The first name goes; the other names keep the content.
      [whiteout("bin/tool")],
    ],
  },
  {
    name: "replace-types",
    layers: [
      [
        file("a", "file a", 1),
        dir("b", 2),
        file("b/c", "c", 3),
        dir("b/d", 4),
        file("b/d/e", "e", 5),
        dir("target", 6),
        symlink("s", "target", 7),
        dir("t", 8),
        file("t/x", "x", 9),
        file("f2", "f2", 10),
        symlink("l", "nowhere", 11),
      ],
      [
        dir("a", 20), // file → directory
        file("a/inner", "inner", 21),
        file("b", "now a file", 22), // directory (with content) → file
        dir("s", 23), // symlink → directory: the link is replaced, `target` stays empty
        file("s/own", "own", 24),
        symlink("t", "a", 25), // directory → symlink
        symlink("f2", "a/inner", 26), // file → symlink
        file("l", "was a symlink", 27), // symlink → file
      ],
    ],
  },
  {
    name: "symlinks",
    layers: [
      [
        dir("usr", 1),
        dir("usr/bin", 2),
        file("usr/bin/real", "#!/bin/sh\necho real\n", 3, { mode: 0o755 }),
        symlink("usr/bin/rel", "real", 4),
        symlink("usr/bin/chain1", "rel", 5),
        symlink("usr/bin/chain2", "chain1", 6),
        symlink("usr/bin/abs", "/usr/bin/real", 7),
        symlink("usr/bin/dangling", "missing", 8),
        symlink("usr/bin/dangling-abs", "/nonexistent/locald-e2e", 9),
        symlink("usr/bin/updir", "../../..", 10),
        symlink("usr/bin/host", "/etc/passwd", 11),
        symlink("usr/bin/loop", "loop", 12),
        symlink("usr/bin/long", `${"x".repeat(90)}/${"y".repeat(90)}`, 13),
        dir("usr/lib", 14),
        symlink("lib", "usr/lib", 15),
        symlink("lib64", "/usr/lib", 16),
        symlink("libchain", "lib", 17),
      ],
      [
        symlink("usr/bin/rel", "/usr/bin/chain2", 20),
        // Written through symlinked parents, resolved inside the root: all land in usr/lib,
        // which keeps its own mtime.
        file("lib/libfoo.so", "foo", 21),
        file("lib64/libbar.so", "bar", 22),
        file("libchain/libbaz.so", "baz", 23),
      ],
    ],
  },
  {
    name: "modes-and-owners",
    layers: [
      [
        file("suid", "suid", 1, { mode: 0o4755, uid: 1000, gid: 1000 }),
        file("sgid", "sgid", 2, { mode: 0o2755, gid: 50 }),
        file("both", "both", 3, { mode: 0o6711 }),
        dir("tmp", 4, { mode: 0o1777 }),
        dir("shared", 5, { mode: 0o2775, gid: 100 }),
        file("shared/f", "f", 6, { gid: 100 }),
        dir("private", 7, { mode: 0o700, uid: 1000, gid: 1000 }),
        file("private/secret", "secret", 8, { mode: 0o600, uid: 1000, gid: 1000 }),
        dir("ro", 9, { mode: 0o555 }),
        file("ro/inside", "inside", 10, { mode: 0o444 }),
        dir("ro/sub", 11, { mode: 0o500 }),
        file("ro/sub/deep", "deep", 12, { mode: 0o400 }),
        file("none", "none", 13, { mode: 0o000 }),
        file("exec-only", "exec", 14, { mode: 0o711 }),
        symlink("owned-link", "suid", 15, { uid: 1000, gid: 1001 }),
        dir("locked", 16, { mode: 0o000 }),
        file("locked/x", "x", 17),
      ],
      [
        // Into read-only directories of an earlier layer: they must be opened up and closed again.
        file("ro/late", "late", 20),
        file("locked/y", "y", 21),
        // A new owner keeps the setuid bit (chown first, then chmod).
        file("suid", "suid v2", 22, { mode: 0o4755, uid: 2000, gid: 2000 }),
      ],
    ],
  },
  {
    name: "mtimes",
    layers: [
      [
        dir("m", 1),
        file("m/file", "f", 2),
        symlink("m/link", "file", 3),
        dir("m/sub", 4),
        file("m/sub/old", "o", 5),
        file("m/epoch", "0", new Date(0)),
        file("m/y2038", "2038", new Date("2038-01-19T03:14:07Z")),
        dir("m/emptydir", 6),
        fifo("m/pipe", 0o644, 7),
        file("m/link-target", "t", 8),
        hardlink("m/hl", "m/link-target"),
        dir("kept", 9),
        file("kept/a", "a", 10),
        dir("other", 11),
        file("other/b", "b", 12),
        symlink("other/c", "b", 13),
      ],
      [
        file("kept/b", "b", 20), // `kept` is not listed again: it keeps day 9
        whiteout("other/b"), // `other` keeps day 11
        whiteout("other/c"),
        file("m/sub/old", "o2", 21),
        symlink("m/link", "sub/old", 22),
      ],
    ],
  },
  {
    // Times a ustar header cannot hold travel in PAX `mtime` records, which win over the ustar
    // field (here day 0, or 2038 for dates past it).
    name: "pax-mtimes",
    layers: [
      [
        dir("p", 1),
        file("p/subsecond", "ms", 0, { pax: { mtime: paxTime(new Date("2021-06-01T12:00:00.250Z")) } }),
        file("p/future", "2100", new Date("2100-01-01T00:00:00Z")),
        { ...dir("p/dir", 0), mtime: new Date("2099-12-31T23:59:59.999Z") },
        symlink("p/link", "subsecond", 0, { pax: { mtime: paxTime(new Date("2022-02-02T02:02:02.002Z")) } }),
      ],
    ],
  },
  {
    name: "empty-layers",
    layers: [[], [dir("e", 1), file("e/one", "1", 2)], [], [file("e/two", "2", 3)], []],
  },
  {
    name: "dir-reappears",
    layers: [
      [dir("d", 1, { mode: 0o755 }), file("d/a", "a", 2), dir("d/keep", 3)],
      [dir("d", 10, { mode: 0o700, uid: 1000, gid: 1000 }), file("d/b", "b", 11)],
      [
        dir("d", 20, { mode: 0o750, gid: 100 }),
        dir("d/keep", 21, { mode: 0o711 }),
        // The same directory twice in one layer: the last header wins.
        dir("d", 22, { mode: 0o770, gid: 100 }),
      ],
    ],
  },
  {
    name: "special-files",
    layers: [
      [
        dir("dev", 1),
        device("dev/null", "character-device", 1, 3, 0o666, 2),
        device("dev/tty", "character-device", 5, 0, 0o620, 3, { gid: 5 }),
        device("dev/loop0", "block-device", 7, 0, 0o660, 4, { gid: 6 }),
        fifo("dev/initctl", 0o600, 5),
        dir("run", 6),
        fifo("run/pipe", 0o644, 7),
      ],
      [fifo("run/pipe2", 0o622, 8), device("dev/zero", "character-device", 1, 5, 0o666, 9)],
    ],
    devices: ["dev/null", "dev/tty", "dev/loop0", "dev/zero"],
  },
  {
    name: "compression-mixed",
    compressions: ["gzip", "zstd", "none"],
    layers: [
      [dir("mixed", 1), file("mixed/gz", "from the gzip layer", 2)],
      [file("mixed/zst", pseudoRandomBytes(200_000, 7), 3), symlink("mixed/zst-link", "zst", 4)],
      [file("mixed/raw", "from the uncompressed layer", 5), whiteout("mixed/gz")],
    ],
  },
  {
    name: "zstd",
    compressions: ["zstd", "zstd"],
    layers: [
      [
        dir("z", 1),
        file("z/big", pseudoRandomBytes(1 << 20, 3), 2),
        file("z/small", "small", 3),
        hardlink("z/small-link", "z/small"),
      ],
      [opaqueWhiteout("z"), file("z/after", "after", 4)],
    ],
  },
  {
    name: "uncompressed",
    compressions: ["none", "none"],
    layers: [
      [dir("u", 1), file("u/a", "a", 2), symlink("u/b", "a", 3), dir("u/gone", 4), file("u/gone/x", "x", 5)],
      [whiteout("u/gone"), file("u/c", "c", 6)],
    ],
  },
  {
    // Names as `tar -C dir .` writes them, with a `./` entry for the root itself.
    name: "docker-v2s2",
    format: "docker",
    layers: [
      [
        { path: "./", type: "directory", mode: 0o755, mtime: day(1) },
        dir("./etc", 2),
        file("./etc/hostname", "docker\n", 3),
        hardlink("./etc/hostname-link", "./etc/hostname"),
        symlink("./etc/alias", "hostname", 4),
      ],
      [whiteout("./etc/alias"), file("./etc/motd", "hello from a docker image\n", 5)],
    ],
  },
  {
    name: "names",
    layers: [
      [
        dir("names", 1),
        dir(`names/${"long-directory-name-".repeat(6)}`, 2),
        file(`names/${"long-directory-name-".repeat(6)}/${"f".repeat(150)}`, "long", 3),
        file("names/unicodé-日本語.txt", "unicode", 4),
        file("names/with space", "space", 5),
        file("names/-dash", "dash", 6),
        file("names/.hidden", "hidden", 7),
        symlink("names/unicode-link", "unicodé-日本語.txt", 8),
      ],
      [whiteout("names/unicodé-日本語.txt"), file("names/ünïcödé-2", "second", 9)],
    ],
  },
  {
    name: "implicit-parents",
    layers: [
      [file("implicit/a/b/file", "f", 1), file("top", "t", 2)],
      [dir("implicit/a", 3, { mode: 0o700 })],
    ],
    implicitDirs: ["implicit", "implicit/a/b"],
  },
  {
    name: "symlink-escapes",
    layers: [
      [
        dir("inside", 1),
        symlink("up", "../../../..", 2),
        symlink("root-link", "/", 3),
        symlink("dot", ".", 4),
      ],
      [
        // All of these resolve inside the root, as if it were `/`.
        file("up/locald-e2e-escape-1", "1", 5),
        file("root-link/locald-e2e-escape-2", "2", 6),
        file("inside/../locald-e2e-escape-3", "3", 7),
        file("dot/up/locald-e2e-escape-4", "4", 8),
      ],
    ],
    escapeMarkers: ["locald-e2e-escape-1", "locald-e2e-escape-2", "locald-e2e-escape-4"],
  },
];

/** An image whose layers spell out `/cnb` for `--path` (and files around it that must stay out). */
const CNB_IMAGE: ConformanceCase = {
  name: "cnb-builder",
  layers: [
    [
      dir("etc", 1),
      file("etc/os-release", "ID=test\n", 2),
      dir("cnb", 3),
      dir("cnb/lifecycle", 4),
      file("cnb/lifecycle/lifecycle", pseudoRandomBytes(30_000, 5), 5, { mode: 0o755 }),
      hardlink("cnb/lifecycle/detector", "cnb/lifecycle/lifecycle"),
      symlink("cnb/lifecycle/builder", "lifecycle", 6),
      symlink("cnb/lifecycle/os-release", "/etc/os-release", 7),
      file("cnb/order.toml", "[[order]]\n", 8),
      dir("cnb-other", 9),
      file("cnb-other/file", "not under /cnb", 10),
      file("cnbfile", "not under /cnb either", 11),
    ],
    [
      dir("cnb/buildpacks", 20),
      dir("cnb/buildpacks/old", 21),
      file("cnb/buildpacks/old/buildpack.toml", "old", 22),
      dir("cnb/buildpacks/keep", 23),
      file("cnb/buildpacks/keep/buildpack.toml", "keep", 24, { uid: 1000, gid: 1000 }),
      dir("usr", 25),
      file("usr/tool", "tool", 26),
    ],
    [
      whiteout("cnb/buildpacks/old"),
      file("cnb/order.toml", "[[order]]\n[[order.group]]\n", 30),
      dir("cnb/lifecycle", 31, { mode: 0o750 }),
      whiteout("etc/os-release"),
      file("cnb/stack.toml", "stack", 32),
    ],
  ],
};

// ---------------------------------------------------------------------------------------------
// Building, running, comparing.

interface PreparedImage {
  spec: ConformanceCase;
  ref: string;
  digest: string;
  /** Tag in the layout that umoci unpacks (a gzip/OCI twin when umoci cannot read the original). */
  umociTag: string;
  built: BuiltLayer[];
  entries: number;
  tarBytes: number;
}

async function prepare(
  layout: OciLayout,
  registry: TestRegistry,
  spec: ConformanceCase,
): Promise<PreparedImage> {
  const format = spec.format ?? "oci";
  const built: BuiltLayer[] = [];
  const twin: BuiltLayer[] = [];
  let entries = 0;
  let tarBytes = 0;
  for (const [index, layerEntries] of spec.layers.entries()) {
    const compression = spec.compressions?.[index] ?? "gzip";
    const tar = await tarEntries(layerEntries);
    entries += layerEntries.length;
    tarBytes += tar.length;
    const layer = await compressLayer(tar, compression, format);
    built.push(layer);
    twin.push(
      compression === "zstd" || format === "docker" ? await compressLayer(tar, "gzip", "oci") : layer,
    );
  }
  const image = await writeImage(layout, { format, layers: built });
  await layout.addManifest(image.descriptor, spec.name);
  let umociTag = spec.name;
  if (twin.some((layer, i) => layer !== built[i])) {
    const reference = await writeImage(layout, { layers: twin });
    umociTag = `${spec.name}-umoci`;
    await layout.addManifest(reference.descriptor, umociTag);
  }
  const ref = `${registry.host}/conformance/${spec.name}:1`;
  await push({ kind: "layout", dir: layout.root, name: spec.name }, ref);
  return { spec, ref, digest: image.descriptor.digest, umociTag, built, entries, tarBytes };
}

interface Ids {
  uid: number;
  gid: number;
}

const isRoot = process.getuid?.() === 0;
/** The unprivileged test user, when the suite runs as root (the rootless half needs one). */
async function testUser(): Promise<Ids | undefined> {
  return isRoot ? unprivilegedUser() : undefined;
}

/** Runs a program to completion, as `user` (through setpriv) when given; never throws on exit codes. */
function exec(
  file: string,
  args: readonly string[],
  options: { user?: Ids | undefined; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  const { user } = options;
  const command = user === undefined ? file : "setpriv";
  const argv =
    user === undefined
      ? args
      : [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--", file, ...args];
  return new Promise((resolve) => {
    execFile(
      command,
      argv,
      { env: options.env ?? process.env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 127;
        resolve({
          code,
          stdout,
          stderr: error !== null && code === 127 ? `${error.message}\n${stderr}` : stderr,
        });
      },
    );
  });
}

/** Who unpacks: root applying ownership and devices, or an unprivileged user (rootless). */
interface Unpacker {
  label: string;
  privileged: boolean;
  /** Set when the tools run as another user than this test process (through setpriv). */
  user: Ids | undefined;
  /** Working directory the unpacking user owns. */
  dir: string;
  home: string;
}

async function makeUnpacker(
  work: string,
  label: string,
  privileged: boolean,
  user: Ids | undefined,
): Promise<Unpacker> {
  const dir = join(work, label);
  const home = join(dir, "home");
  await mkdir(home, { recursive: true });
  if (user !== undefined) {
    await chown(dir, user.uid, user.gid);
    await chown(home, user.uid, user.gid);
  }
  return { label, privileged, user, dir, home };
}

interface UnpackJson {
  digest: string;
  dir: string;
  entries: number;
  bytes: number;
  cached: boolean;
  skipped: { path: string; reason: string }[];
}

async function locald(unpacker: Unpacker, args: readonly string[]): Promise<CliResult> {
  const env = { LOCALD_HOME: join(unpacker.home, "locald") };
  if (unpacker.user === undefined) return runLocald(args, { env });
  return exec(process.execPath, [LOCALD_BIN, ...args], {
    user: unpacker.user,
    env: { PATH: process.env.PATH, HOME: unpacker.home, NO_COLOR: "1", ...env },
  });
}

async function unpackWithLocald(
  unpacker: Unpacker,
  ref: string,
  out: string,
  extra: readonly string[] = [],
): Promise<UnpackJson> {
  const result = await locald(unpacker, ["image", "unpack", ref, out, "--json", ...extra]);
  assert.equal(result.code, 0, `locald image unpack ${ref} failed:\n${result.stderr}`);
  let report: UnpackJson;
  try {
    report = JSON.parse(result.stdout) as UnpackJson;
  } catch {
    assert.fail(`--json printed something else than one JSON object:\n${result.stdout}`);
  }
  assert.equal(typeof report.entries, "number", result.stdout);
  assert.equal(typeof report.bytes, "number", result.stdout);
  assert.equal(typeof report.cached, "boolean", result.stdout);
  assert.ok(Array.isArray(report.skipped), result.stdout);
  assert.equal(resolve(report.dir), resolve(out), "the report names the directory it wrote");
  return report;
}

async function unpackWithUmoci(
  unpacker: Unpacker,
  layout: string,
  tag: string,
  bundle: string,
): Promise<string> {
  const args = [
    "unpack",
    ...(unpacker.privileged ? [] : ["--rootless"]),
    "--image",
    `${layout}:${tag}`,
    bundle,
  ];
  const result = await exec(await requireBinary("umoci"), args, { user: unpacker.user });
  assert.equal(result.code, 0, `umoci ${args.join(" ")} failed:\n${result.stderr}`);
  return join(bundle, "rootfs");
}

/** `/dev/null`, `./dev/null` and `dev/null` are one path. */
const normalise = (path: string) => path.replace(/^(\.?\/)+/, "");

function assertSameTrees(
  ours: TreeSnapshot,
  theirs: TreeSnapshot,
  options: {
    /** Paths whose mtime is not compared. */
    freeMtimes?: readonly string[];
    ignore?: (path: string) => boolean;
    typeOnly?: (path: string) => boolean;
  },
): void {
  const implicit = new Set(options.freeMtimes ?? []);
  const differences = diffTrees(ours, theirs, {
    labels: ["locald", "umoci"],
    mtimes: (path) => !implicit.has(path),
    // Rootless, both sides own everything as the caller, so comparing owners still holds.
    ownership: true,
    ...(options.ignore ? { ignore: options.ignore } : {}),
    ...(options.typeOnly ? { typeOnly: options.typeOnly } : {}),
  });
  assert.deepEqual(
    differences,
    [],
    `the trees differ:\n  ${differences.join("\n  ")}\n--- locald\n${formatTree(ours)}\n--- umoci\n${formatTree(theirs)}`,
  );
}

/** Asserts that none of `names` exists next to `dir` or in any directory above it. */
async function assertNoEscape(dir: string, names: readonly string[]): Promise<void> {
  for (let at = dirname(resolve(dir)); ; at = dirname(at)) {
    for (const name of names)
      await assert.rejects(
        lstat(join(at, name)),
        { code: "ENOENT" },
        `${join(at, name)} was written outside the root`,
      );
    if (dirname(at) === at) break;
  }
}

async function conformance(unpacker: Unpacker, layout: string, image: PreparedImage): Promise<UnpackJson> {
  const { spec } = image;
  const out = join(unpacker.dir, `locald-${spec.name}`);
  const report = await unpackWithLocald(unpacker, image.ref, out);
  assert.equal(report.digest, image.digest);
  const rootfs = await unpackWithUmoci(
    unpacker,
    layout,
    image.umociTag,
    join(unpacker.dir, `umoci-${spec.name}`),
  );
  const ours = await snapshotTree(out);
  const theirs = await snapshotTree(rootfs);
  const devices = new Set(spec.devices ?? []);
  const skipsDevices = !unpacker.privileged;
  assertSameTrees(ours, theirs, {
    freeMtimes: [...(spec.implicitDirs ?? []), ...(spec.umociTouches ?? [])],
    ...(skipsDevices ? { ignore: (path: string) => devices.has(path) } : {}),
  });
  if (skipsDevices) {
    for (const path of devices) {
      assert.equal(ours.get(path), undefined, `/${path}: a rootless unpack creates no device`);
      assert.equal(theirs.get(path)?.type, "file", `/${path}: umoci --rootless leaves an empty file`);
    }
    assert.deepEqual(
      report.skipped.map((s) => normalise(s.path)).sort(),
      [...devices].sort(),
      `every device is reported skipped, nothing else: ${JSON.stringify(report.skipped)}`,
    );
    for (const entry of report.skipped) assert.ok(entry.reason.length > 0, "a skipped entry says why");
  } else {
    assert.deepEqual(report.skipped, [], "as root, nothing is skipped");
  }
  if (spec.escapeMarkers) await assertNoEscape(out, spec.escapeMarkers);
  // The first unpack was hardlinked into the unpack cache on the way: a second one is copied
  // from there and must be the same tree (types, modes, owners, mtimes, links, contents).
  const again = await unpackWithLocald(unpacker, image.ref, join(unpacker.dir, `locald-${spec.name}-cached`));
  assert.equal(again.cached, true, "the second unpack comes from the cache");
  assertSameTrees(await snapshotTree(join(unpacker.dir, `locald-${spec.name}-cached`)), ours, {});
  return report;
}

/** The layers of a prepared image as blobs in the layout, for `applyLayers`. */
function layerBlobs(layout: OciLayout, image: PreparedImage): LayerBlob[] {
  return image.built.map((layer) => ({
    path: layout.blobPath(parseDigest(layer.descriptor.digest)),
    mediaType: layer.descriptor.mediaType,
    digest: layer.descriptor.digest,
    diffId: layer.diffId,
  }));
}

// ---------------------------------------------------------------------------------------------

describe("locald image unpack conforms to umoci unpack", () => {
  let registry: TestRegistry;
  let work: string;
  let layout: OciLayout;
  const images = new Map<string, PreparedImage>();
  const image = (name: string) => {
    const found = images.get(name);
    assert.ok(found, `image ${name} was prepared`);
    return found;
  };

  before(async () => {
    // Both tools create unlisted parents 0777 & ~umask (locald: 0755): pin it so they agree.
    process.umask(0o022);
    await requireBinary("umoci");
    await requireBinary("zstd");
    if (isRoot) await requireBinary("setpriv");
    registry = await startRegistry({ flavour: "anonymous" });
    // World-traversable, so that the unprivileged user can read the layout umoci unpacks.
    work = await mkdtemp("/tmp/locald-conformance-");
    await chmod(work, 0o755);
    layout = await OciLayout.open(join(work, "layout"), { create: true });
    for (const spec of [...CASES, CNB_IMAGE]) images.set(spec.name, await prepare(layout, registry, spec));
  });
  after(async () => {
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  describe(isRoot ? "as root: ownership and devices applied" : "as the current (unprivileged) user", () => {
    let unpacker: Unpacker;
    before(async () => {
      unpacker = await makeUnpacker(work, "self", isRoot, undefined);
    });

    for (const spec of CASES)
      test(spec.name, async () => {
        await conformance(unpacker, layout.root, image(spec.name));
      });

    test("--path /cnb writes only /cnb (and the root), equal to umoci's /cnb, later whiteouts included", async () => {
      const cnb = image(CNB_IMAGE.name);
      const out = join(unpacker.dir, "locald-cnb-only");
      const report = await unpackWithLocald(unpacker, cnb.ref, out, ["--path", "/cnb"]);
      assert.deepEqual(report.skipped, []);
      const rootfs = await unpackWithUmoci(
        unpacker,
        layout.root,
        cnb.umociTag,
        join(unpacker.dir, "umoci-cnb"),
      );
      const ours = await snapshotTree(out);
      const outside = [...ours.keys()].filter((path) => path !== "cnb" && !path.startsWith("cnb/"));
      assert.deepEqual(outside, [], "nothing outside /cnb is written (not /cnb-other, not /cnbfile)");
      const theirs = subtree(await snapshotTree(rootfs), "cnb");
      assert.ok(theirs.has("cnb/buildpacks/keep/buildpack.toml") && !theirs.has("cnb/buildpacks/old"));
      assertSameTrees(ours, theirs, {});
    });

    test("several --path prefixes: each subtree as umoci has it, their parents as directories", async () => {
      const cnb = image(CNB_IMAGE.name);
      const out = join(unpacker.dir, "locald-cnb-parts");
      await unpackWithLocald(unpacker, cnb.ref, out, [
        "--path",
        "/cnb/lifecycle",
        "--path",
        "/cnb/order.toml",
      ]);
      const rootfs = await unpackWithUmoci(
        unpacker,
        layout.root,
        cnb.umociTag,
        join(unpacker.dir, "umoci-cnb-parts"),
      );
      const all = await snapshotTree(rootfs);
      const theirs: TreeSnapshot = new Map([
        ["cnb", all.get("cnb") as TreeNode],
        ...subtree(all, "cnb/lifecycle"),
        ...subtree(all, "cnb/order.toml"),
      ]);
      // How a parent of a selected path is made (its own header, or a plain 0755 directory) is
      // the unpacker's choice: only that it is a directory is compared.
      assertSameTrees(await snapshotTree(out), theirs, { typeOnly: (path) => path === "cnb" });
    });

    test("--json counts every archive entry and uncompressed byte; a second unpack is served from the cache", async () => {
      const hardlinks = image("hardlinks");
      const first = join(unpacker.dir, "locald-count-1");
      const report = await unpackWithLocald(unpacker, hardlinks.ref, first);
      assert.equal(report.entries, hardlinks.entries, "entries: archive entries over all layers");
      assert.equal(report.bytes, hardlinks.tarBytes, "bytes: uncompressed tar bytes over all layers");
      const second = join(unpacker.dir, "locald-count-2");
      const again = await unpackWithLocald(unpacker, hardlinks.ref, second);
      assert.equal(again.cached, true, "the same image unpacked again comes from the cache");
      assert.equal(again.digest, hardlinks.digest);
      assertSameTrees(await snapshotTree(second), await snapshotTree(first), {});
    });

    test("refuses a directory that is not empty, and leaves it alone", async () => {
      const out = join(unpacker.dir, "not-empty");
      await mkdir(out);
      await writeFile(join(out, "mine"), "mine");
      const result = await locald(unpacker, ["image", "unpack", image("whiteouts").ref, out]);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /not empty/);
      assert.deepEqual([...(await snapshotTree(out)).keys()], ["mine"]);
      assert.equal(await readFile(join(out, "mine"), "utf8"), "mine");
    });

    test("an entry name climbing out of the root with .. is refused (umoci would clamp it)", async (t) => {
      // umoci cleans `../../x` lexically to `x` and writes it inside the root. locald refuses
      // the layer: no honest tool writes such a name. The layout is ours: build it here.
      const hostile = await writeImage(layout, {
        layers: [[dir("ok", 1), file("../../locald-e2e-climb", "out", 2)]],
      });
      await layout.addManifest(hostile.descriptor, "climb");
      const ref = `${registry.host}/conformance/climb:1`;
      await push({ kind: "layout", dir: layout.root, name: "climb" }, ref);
      const out = join(unpacker.dir, "locald-climb");
      const result = await locald(unpacker, ["image", "unpack", ref, out]);
      t.after(() => rm(out, { recursive: true, force: true }));
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /\.\./);
      await assertNoEscape(out, ["locald-e2e-climb"]);
    });

    test("applyLayers (library) matches umoci, rootless mode skips devices, limits are enforced", async () => {
      const special = image("special-files");
      const mixed = image("compression-mixed");
      // Mixed gzip/zstd/none blobs straight from the layout.
      const mixedRoot = join(unpacker.dir, "lib-mixed");
      const mixedReport = await applyLayers(mixedRoot, layerBlobs(layout, mixed));
      assert.equal(mixedReport.entries, mixed.entries);
      const mixedUmoci = await unpackWithUmoci(
        unpacker,
        layout.root,
        mixed.umociTag,
        join(unpacker.dir, "lib-umoci-mixed"),
      );
      assertSameTrees(await snapshotTree(mixedRoot), await snapshotTree(mixedUmoci), {});

      // Rootless on request, even as root: like `umoci --rootless`, minus the device stand-ins.
      const rootless = { ...unpacker, privileged: false };
      const specialRoot = join(unpacker.dir, "lib-rootless");
      const report = await applyLayers(specialRoot, layerBlobs(layout, special), { rootless: true });
      const devices = new Set(special.spec.devices);
      assert.deepEqual(report.skipped.map((s) => normalise(s.path)).sort(), [...devices].sort());
      const specialUmoci = await unpackWithUmoci(
        rootless,
        layout.root,
        special.umociTag,
        join(unpacker.dir, "lib-umoci-rootless"),
      );
      assertSameTrees(await snapshotTree(specialRoot), await snapshotTree(specialUmoci), {
        ignore: (path) => devices.has(path),
      });

      const cnb = image(CNB_IMAGE.name);
      const cnbRoot = join(unpacker.dir, "lib-cnb");
      await applyLayers(cnbRoot, layerBlobs(layout, cnb), { paths: ["/cnb"] });
      const cnbUmoci = await unpackWithUmoci(
        unpacker,
        layout.root,
        cnb.umociTag,
        join(unpacker.dir, "lib-umoci-cnb"),
      );
      assertSameTrees(await snapshotTree(cnbRoot), subtree(await snapshotTree(cnbUmoci), "cnb"), {});

      await assert.rejects(
        applyLayers(join(unpacker.dir, "lib-max-entries"), layerBlobs(layout, cnb), {
          limits: { maxEntries: 5 },
        }),
        "more entries than maxEntries",
      );
      await assert.rejects(
        applyLayers(join(unpacker.dir, "lib-max-bytes"), layerBlobs(layout, cnb), {
          limits: { maxBytes: 16 * 1024 },
        }),
        "more bytes than maxBytes",
      );
    });
  });

  describe("as an unprivileged user (rootless)", () => {
    let unpacker: Unpacker;
    before(async () => {
      unpacker = await makeUnpacker(work, "user", false, await testUser());
    });

    for (const spec of CASES)
      test(spec.name, async () => {
        const report = await conformance(unpacker, layout.root, image(spec.name));
        if (unpacker.user !== undefined) {
          const out = await lstat(join(unpacker.dir, `locald-${spec.name}`));
          assert.equal(out.uid, unpacker.user.uid, "the unpacked root belongs to the user");
        }
        assert.equal(report.digest, image(spec.name).digest);
      });

    test("--path /cnb, rootless", async () => {
      const cnb = image(CNB_IMAGE.name);
      const out = join(unpacker.dir, "locald-cnb-only");
      await unpackWithLocald(unpacker, cnb.ref, out, ["--path", "/cnb"]);
      const rootfs = await unpackWithUmoci(
        unpacker,
        layout.root,
        cnb.umociTag,
        join(unpacker.dir, "umoci-cnb"),
      );
      assertSameTrees(await snapshotTree(out), subtree(await snapshotTree(rootfs), "cnb"), {});
    });
  });
});
