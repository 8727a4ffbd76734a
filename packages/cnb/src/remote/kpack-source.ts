import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import {
  archiveLayer,
  type ClientOptions,
  composeImage,
  type Digest,
  deliverImage,
  directoryEntries,
  formatReference,
  type LayerEntry,
  OciLayout,
  parseReference,
  type Store,
} from "@locald/oci";
import { type ProjectDescriptor, projectFilter } from "../project-descriptor.js";
import type { KpackSource } from "./kpack-resources.js";

const run = promisify(execFile);

/**
 * The app's source for kpack: its git remote and commit when the directory is a clean checkout
 * with a remote (nothing to upload; kpack clones it), else an image of its files pushed next to
 * the app's image.
 */

/**
 * `{ url, revision }` when `appDir` is the top of a git checkout with no changes (untracked files
 * included: kpack would not see them) and an `origin` (else the first) remote; undefined when
 * git is missing or any of that is not so — the caller then uploads the files instead.
 */
export async function gitSource(
  appDir: string,
  options: { git?: string } = {},
): Promise<{ url: string; revision: string } | undefined> {
  const git = async (...args: string[]) =>
    (
      await run(options.git ?? "git", ["-C", appDir, ...args], {
        env: { ...process.env, GIT_OPTIONAL_LOCKS: "0" },
      })
    ).stdout.trim();
  try {
    // A subdirectory of a checkout would build the whole repository on kpack (spec.source.subPath
    // could say which part, but its excludes would not follow): upload those instead.
    if (resolve(await git("rev-parse", "--show-toplevel")) !== resolve(appDir)) return undefined;
    if ((await git("status", "--porcelain", "--untracked-files=normal")) !== "") return undefined;
    const remotes = (await git("remote")).split("\n").filter((line) => line !== "");
    const remote = remotes.includes("origin") ? "origin" : remotes[0];
    if (remote === undefined) return undefined;
    const url = await git("remote", "get-url", remote);
    const revision = await git("rev-parse", "HEAD");
    return url === "" ? undefined : { url, revision };
  } catch {
    return undefined;
  }
}

/** The source image's name for an app tag: same repository, `-source` appended. */
export function sourceImageFor(appTag: string): string {
  const ref = parseReference(appTag);
  return formatReference({ registry: ref.registry, repository: `${ref.repository}-source`, tag: "latest" });
}

/** The app's files that reach kpack: all but `.git` and what project.toml excludes. */
export async function sourceEntries(
  appDir: string,
  descriptor: ProjectDescriptor | undefined,
): Promise<LayerEntry[]> {
  const app = resolve(appDir);
  const reaches = projectFilter(app, descriptor);
  return (await directoryEntries(app, "")).filter((entry) => {
    const isDirectory = entry.type === "directory";
    const path = isDirectory ? entry.path.slice(0, -1) : entry.path;
    // An excluded directory takes everything under it along, as it does for local builds.
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++)
      if (!reaches(resolve(app, parts.slice(0, i).join("/")), true)) return false;
    return reaches(resolve(app, path), isDirectory);
  });
}

/**
 * The app's files as a one-layer image (kpack unpacks a source image's layers into the build's
 * workspace, so they sit at the layer's root), pushed to `reference` — or, with `push: false`
 * (a dry run), only composed, in a scratch layout, to know its digest. Same files, same digest.
 * Returns the source by digest, so the Image names exactly this upload.
 */
export async function sourceImage(
  appDir: string,
  reference: string,
  options: { store?: Store; descriptor?: ProjectDescriptor; client?: ClientOptions; push: boolean },
): Promise<KpackSource> {
  const layer = await archiveLayer(await sourceEntries(appDir, options.descriptor));
  const image = { layers: [layer], config: {}, createdBy: "locald build --remote kpack (app source)" };
  const ref = parseReference(reference);
  let digest: string;
  if (options.push) {
    if (options.store === undefined) throw new TypeError("sourceImage: pushing needs a store");
    const composed = await composeImage(options.store.layout, image);
    digest = await deliverImage(
      options.store,
      composed.descriptor,
      { kind: "registry", reference },
      options.client ?? {},
    );
  } else {
    const scratch = await mkdtemp(join(tmpdir(), "locald-kpack-source-"));
    try {
      digest = (await composeImage(await OciLayout.open(scratch, { create: true }), image)).descriptor.digest;
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }
  return {
    kind: "registry",
    image: formatReference({ registry: ref.registry, repository: ref.repository, digest: digest as Digest }),
  };
}
