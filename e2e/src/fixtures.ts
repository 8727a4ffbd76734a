import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { OciLayout, type Platform } from "@locald/oci";
import {
  type ImageFormat,
  type LayerEntry,
  pseudoRandomBytes,
  type WrittenImage,
  writeImage,
  writeIndex,
} from "./image-factory.js";
import { makeTempDir, removeDir, requireBinary } from "./util.js";

/** A small two-layer image with a file per layer, distinct per `seed`. */
export async function sampleImage(
  layout: OciLayout,
  options: { seed?: number; format?: ImageFormat; platform?: Platform; layerBytes?: number } = {},
): Promise<WrittenImage> {
  const seed = options.seed ?? 1;
  return writeImage(layout, {
    format: options.format ?? "oci",
    ...(options.platform ? { platform: options.platform } : {}),
    config: { Entrypoint: ["/bin/app"], Cmd: ["--serve"], Env: [`SEED=${seed}`], WorkingDir: "/srv" },
    layers: [
      [
        { path: "etc/", type: "directory" },
        { path: "etc/hello", content: `hello ${seed}\n` },
      ],
      [{ path: "data.bin", content: pseudoRandomBytes(options.layerBytes ?? 64 * 1024, seed) }],
    ],
  });
}

/** Applets linked to busybox in `busyboxLayer()`. */
export const BUSYBOX_APPLETS = [
  "sh",
  "echo",
  "id",
  "cat",
  "pwd",
  "ls",
  "env",
  "sleep",
  "true",
  "touch",
  "tty",
  "kill",
];

/** `/bin/busybox` (Debian's static build) and its applets as symlinks: a shell for test images. */
export async function busyboxLayer(): Promise<LayerEntry[]> {
  return [
    { path: "bin/", type: "directory" },
    { path: "bin/busybox", content: await readFile(await requireBinary("busybox")), mode: 0o755 },
    ...BUSYBOX_APPLETS.map((name) => ({
      path: `bin/${name}`,
      type: "symlink" as const,
      linkname: "busybox",
    })),
  ];
}

export const TEST_PLATFORMS: readonly Platform[] = [
  { os: "linux", architecture: "amd64" },
  { os: "linux", architecture: "arm64", variant: "v8" },
  { os: "linux", architecture: "arm", variant: "v7" },
  { os: "linux", architecture: "arm", variant: "v6" },
];

/** A multi-platform image (one sample image per platform) plus a buildx-style attestation entry. */
export async function multiPlatformImage(
  layout: OciLayout,
  format: ImageFormat = "oci",
): Promise<{ index: import("@locald/oci").Descriptor; images: WrittenImage[] }> {
  const images: WrittenImage[] = [];
  for (const [i, platform] of TEST_PLATFORMS.entries())
    images.push(await sampleImage(layout, { seed: 100 + i, format, platform, layerBytes: 4096 }));
  const attestation = await sampleImage(layout, {
    seed: 999,
    format,
    platform: { os: "unknown", architecture: "unknown" },
    layerBytes: 16,
  });
  const index = await writeIndex(
    layout,
    images.map((img) => img.descriptor),
    format,
    [attestation.descriptor],
  );
  return { index, images };
}

/** A temp directory removed when the test ends. */
export async function tempDir(
  t: { after: (fn: () => Promise<void>) => void },
  prefix = "locald-e2e-",
): Promise<string> {
  const dir = await makeTempDir(prefix);
  t.after(() => removeDir(dir));
  return dir;
}

export async function newLayout(
  t: { after: (fn: () => Promise<void>) => void },
  name = "layout",
): Promise<OciLayout> {
  return OciLayout.open(join(await tempDir(t), name), { create: true });
}

/** Every blob file in a layout or store hashes to its name; returns how many were checked. */
export async function assertBlobsVerify(root: string): Promise<number> {
  const { readdir, readFile } = await import("node:fs/promises");
  const { createHash } = await import("node:crypto");
  const dir = join(root, "blobs", "sha256");
  let checked = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const actual = createHash("sha256")
      .update(await readFile(join(dir, name)))
      .digest("hex");
    if (actual !== name)
      throw new Error(`blob ${name} in ${root} does not verify (content hashes to ${actual})`);
    checked++;
  }
  return checked;
}
