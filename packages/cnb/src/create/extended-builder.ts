import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import {
  type AuthoredLayer,
  archiveLayer,
  type ClientOptions,
  composeImage,
  deliverImage,
  fileEntry,
  formatReference,
  OciError,
  parseReference,
  type Store,
} from "@locald/oci";
import type { Builder } from "../builder.js";
import { BuildConfigError } from "../errors.js";
import { BuilderLabel } from "./builder-image.js";
import { isReference, locateBuildpacks } from "./buildpack-locator.js";
import {
  type BuildpackSource,
  buildpackDir,
  buildpackKey,
  buildpackLayerEntries,
  layersLabel,
} from "./buildpack-source.js";

/**
 * `-b` as pack reads it: an id (`id@version`) of a buildpack the builder has, else a directory,
 * `.tgz` or `.cnb` file, else a buildpack image. Buildpacks from outside the builder are added to
 * it as pack does, in an extended builder: the builder's image plus one layer per added
 * buildpack, kept in the store under a name made of its inputs, so the same `-b` reuses it (and
 * its unpacked root) next time.
 */

export interface ExtendedBuilder {
  /** The store name of the extended builder; undefined when every `-b` named one of the builder's. */
  readonly reference?: string;
  /** The `-b` list as `id@version`, for the order. */
  readonly buildpacks: readonly string[];
}

const EXTENDED_REPOSITORY = "locald.internal/extended-builder";

export async function extendBuilder(
  builder: Builder,
  specs: readonly string[],
  context: { store: Store; client?: ClientOptions; cwd?: string },
): Promise<ExtendedBuilder> {
  const added: BuildpackSource[] = [];
  const order: string[] = [];
  for (const spec of specs) {
    const [id, version] = spec.split("@") as [string, string | undefined];
    const own = builder.buildpacks.find(
      (bp) => bp.id === id && (version === undefined || bp.version === version),
    );
    if (own !== undefined) {
      order.push(buildpackKey(own));
      continue;
    }
    const path = resolve(context.cwd ?? process.cwd(), spec.replace(/^file:\/\//, ""));
    const local = spec.startsWith("docker://") ? undefined : await stat(path).catch(() => undefined);
    if (local === undefined && !spec.startsWith("docker://") && !looksLikeImage(spec))
      throw new BuildConfigError(
        `-b ${spec}: the builder ${builder.reference} has no such buildpack, and there is no such directory or file.`,
        {
          hint: `The builder has: ${builder.buildpacks.map(buildpackKey).join(", ") || "none listed"}; or give a buildpack's directory, .tgz or .cnb file, or image.`,
        },
      );
    const located = await locateBuildpacks(local === undefined ? spec : path, context.cwd ?? process.cwd(), {
      store: context.store,
      ...(context.client ? { client: context.client } : {}),
    }).catch((error: unknown) => {
      // Written like an id (`team/bp`), it may well be a typo of one rather than an image.
      if (local !== undefined || spec.startsWith("docker://") || !(error instanceof OciError)) throw error;
      throw new BuildConfigError(
        `-b ${spec}: the builder ${builder.reference} has no buildpack ${spec}, and it is no buildpack image locald could pull either (${error.message.replace(/\.$/, "")}).`,
        {
          hint: `The builder has: ${builder.buildpacks.map(buildpackKey).join(", ") || "none listed"}; or give a buildpack's directory, .tgz or .cnb file, or image.`,
        },
      );
    });
    order.push(buildpackKey(located[0] as BuildpackSource));
    // A buildpack given by its files replaces the builder's copy of the same id and version (as
    // pack does): a buildpack being written is rebuilt without bumping its version each time.
    for (const bp of located)
      if (!added.some((other) => buildpackKey(other) === buildpackKey(bp))) added.push(bp);
  }
  if (added.length === 0) return { buildpacks: order };

  const layers = new Map<string, AuthoredLayer>();
  for (const bp of added) {
    const replaces = builder.buildpacks.some((other) => buildpackKey(other) === buildpackKey(bp));
    // Over the builder's copy, an opaque whiteout hides its files (a file removed stays removed).
    const hide = replaces ? [fileEntry(`${buildpackDir(bp.id, bp.version)}/.wh..wh..opq`, "")] : [];
    layers.set(buildpackKey(bp), await archiveLayer([...buildpackLayerEntries(bp), ...hide]));
  }
  const stored = await context.store.find(builder.reference);
  if (stored === undefined)
    throw new BuildConfigError(`The builder ${builder.reference} is no longer in the local store.`);
  const release = await context.store.lease();
  try {
    const base = await context.store.readImage(stored.descriptor, builder.reference);
    const container = base.config.config ?? {};
    const labels = container.Labels ?? {};
    const metadata = parseJson(labels[BuilderLabel.metadata]) as
      | { buildpacks?: Array<Record<string, unknown>> }
      | undefined;
    const composed = await composeImage(context.store.layout, {
      base,
      layers: [...layers.values()],
      config: {
        ...container,
        Labels: {
          ...labels,
          [BuilderLabel.metadata]: JSON.stringify({
            ...metadata,
            buildpacks: [
              ...(metadata?.buildpacks ?? []).filter(
                (known) => !added.some((bp) => bp.id === known.id && bp.version === known.version),
              ),
              ...added.map((bp) => ({
                id: bp.id,
                version: bp.version,
                ...(bp.name ? { name: bp.name } : {}),
              })),
            ],
          }),
          [BuilderLabel.buildpackLayers]: JSON.stringify(
            mergeLayers(parseJson(labels[BuilderLabel.buildpackLayers]), layersLabel(added, layers)),
          ),
        },
      },
      createdBy: "locald build -b",
    });
    const tag = createHash("sha256").update(composed.descriptor.digest).digest("hex").slice(0, 20);
    const reference = formatReference(parseReference(`${EXTENDED_REPOSITORY}:${tag}`));
    await deliverImage(context.store, composed.descriptor, { kind: "store", name: reference });
    return { reference, buildpacks: order };
  } finally {
    await release();
  }
}

/** The builder's layers label with the added buildpacks' versions joined in, per id. */
function mergeLayers(
  existing: unknown,
  added: Record<string, Record<string, unknown>>,
): Record<string, unknown> {
  const merged: Record<string, unknown> =
    typeof existing === "object" && existing !== null ? { ...(existing as Record<string, unknown>) } : {};
  for (const [id, versions] of Object.entries(added))
    merged[id] = { ...(merged[id] as Record<string, unknown> | undefined), ...versions };
  return merged;
}

/** A reference with a registry or repository path (`x/y`, `host:5000/x`); a bare word is an id. */
function looksLikeImage(spec: string): boolean {
  return (spec.includes("/") || spec.includes(":")) && isReference(spec);
}

function parseJson(text: string | undefined): unknown {
  try {
    return text === undefined ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}
