import { randomBytes } from "node:crypto";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import {
  type AuthoredLayer,
  archiveLayer,
  type ClientOptions,
  composeImage,
  deliverImage,
  directoryEntries,
  hostPlatform,
  type ImageDestination,
  type PullOptions,
  removeTree,
  type Store,
  tarLayer,
} from "@locald/oci";
import { CreateConfigError } from "../errors.js";
import { locateBuildpacks } from "./buildpack-locator.js";
import {
  type BuildpackSource,
  buildpackKey,
  buildpackLayerEntries,
  layersLabel,
} from "./buildpack-source.js";
import { BuildpackageLabel } from "./buildpackage.js";
import { parsePackageConfig } from "./package-config.js";
import { readConfigFile } from "./tree-source.js";

/**
 * `buildpack package`: a buildpack (and a meta-buildpack's dependencies) as a buildpackage — an
 * image of one layer per buildpack with the distribution spec's labels — into the store, a
 * registry, or a `.cnb` file (that image as an OCI layout in a tar, as pack writes it).
 */

export type PackageDestination = ImageDestination | { readonly kind: "file"; readonly path: string };

export interface PackageBuildpackOptions {
  readonly store: Store;
  readonly destination: PackageDestination;
  readonly client?: ClientOptions;
  readonly onPull?: PullOptions["onEvent"];
}

export interface PackagedBuildpack {
  readonly digest: string;
  readonly id: string;
  readonly version: string;
  /** Every buildpack in the package, the packaged one first. */
  readonly buildpacks: ReadonlyArray<{ id: string; version: string }>;
}

export async function packageBuildpack(
  configFile: string,
  options: PackageBuildpackOptions,
): Promise<PackagedBuildpack> {
  const text = await readConfigFile(configFile, "package.toml");
  const config = parsePackageConfig(text, configFile);
  const baseDir = dirname(configFile);
  const context = {
    store: options.store,
    ...(options.client ? { client: options.client } : {}),
    ...(options.onPull ? { onPull: options.onPull } : {}),
  };
  const located = await locateBuildpacks(config.buildpack, baseDir, context);
  const main = located[0] as BuildpackSource;
  if (located.length > 1)
    throw new CreateConfigError(
      `[buildpack] uri of ${configFile} names a package of ${located.length} buildpacks.`,
      {
        hint: "Point [buildpack] uri at the buildpack's own directory; list packages under [[dependencies]].",
      },
    );
  const all = new Map<string, BuildpackSource>([[buildpackKey(main), main]]);
  for (const uri of config.dependencies)
    for (const bp of await locateBuildpacks(uri, baseDir, context))
      if (!all.has(buildpackKey(bp))) all.set(buildpackKey(bp), bp);
  const buildpacks = [...all.values()];
  checkOrders(buildpacks);

  const layers = new Map<string, AuthoredLayer>();
  for (const bp of buildpacks) layers.set(buildpackKey(bp), await archiveLayer(buildpackLayerEntries(bp)));
  const release = await options.store.lease();
  try {
    const composed = await composeImage(options.store.layout, {
      layers: [...layers.values()],
      platform: { os: config.os, architecture: hostPlatform().architecture },
      config: {
        Labels: {
          [BuildpackageLabel.metadata]: JSON.stringify({
            id: main.id,
            version: main.version,
            ...(main.name ? { name: main.name } : {}),
            ...(main.homepage ? { homepage: main.homepage } : {}),
            ...(main.stacks ? { stacks: main.stacks } : {}),
            ...(main.targets ? { targets: main.targets } : {}),
          }),
          [BuildpackageLabel.layers]: JSON.stringify(layersLabel(buildpacks, layers)),
        },
      },
      createdBy: "locald buildpack package",
    });
    const digest =
      options.destination.kind === "file"
        ? await writeLayoutArchive(
            options.store,
            composed.descriptor,
            options.destination.path,
            options.client,
          )
        : await deliverImage(options.store, composed.descriptor, options.destination, options.client ?? {});
    return {
      digest,
      id: main.id,
      version: main.version,
      buildpacks: buildpacks.map((bp) => ({ id: bp.id, version: bp.version })),
    };
  } finally {
    await release();
  }
}

/** A meta-buildpack whose order names a buildpack the package lacks would fail at detect: refused now. */
function checkOrders(buildpacks: readonly BuildpackSource[]): void {
  const present = new Set(buildpacks.map(buildpackKey));
  for (const bp of buildpacks)
    for (const group of bp.order ?? [])
      for (const member of group.group) {
        const found = member.version
          ? present.has(`${member.id}@${member.version}`)
          : buildpacks.some((other) => other.id === member.id);
        if (!found)
          throw new CreateConfigError(
            `The meta-buildpack ${buildpackKey(bp)} orders ${member.id}${member.version ? `@${member.version}` : ""}, which the package does not hold.`,
            { hint: "Add it under [[dependencies]] in package.toml (its directory, .cnb file or image)." },
          );
      }
}

/** The image as an OCI layout in a plain tar (pack's `.cnb`), written whole or not at all. */
async function writeLayoutArchive(
  store: Store,
  descriptor: Parameters<typeof deliverImage>[1],
  path: string,
  client: ClientOptions | undefined,
): Promise<string> {
  if ((await stat(path).catch(() => undefined))?.isDirectory())
    throw new CreateConfigError(`${path} is a directory; the package would go there as a file.`, {
      hint: "Name the .cnb file to write (for example ./my-buildpack.cnb).",
    });
  const scratch = join(dirname(path), `.${randomBytes(6).toString("hex")}.locald-package`);
  const partial = `${scratch}.cnb`;
  try {
    await mkdir(dirname(path), { recursive: true });
    const digest = await deliverImage(store, descriptor, { kind: "layout", dir: scratch }, client ?? {});
    const tar = await tarLayer(await directoryEntries(scratch, ""));
    const file = await open(partial, "wx", 0o644);
    try {
      await file.writeFile(tar);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(partial, path);
    return digest;
  } finally {
    await removeTree(scratch);
    await rm(partial, { force: true });
  }
}
