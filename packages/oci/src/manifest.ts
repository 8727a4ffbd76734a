import { type Static, type TSchema, Type } from "@sinclair/typebox";
import { Errors } from "@sinclair/typebox/errors";
import { Check } from "@sinclair/typebox/value";
import { type Digest, parseDigest } from "./digest.js";
import { InvalidManifestError, OciError } from "./errors.js";
import { isIndexMediaType, isManifestMediaType, MediaType } from "./media-types.js";

const Annotations = Type.Record(Type.String(), Type.String());

export const PlatformSchema = Type.Object({
  architecture: Type.String(),
  os: Type.String(),
  variant: Type.Optional(Type.String()),
  "os.version": Type.Optional(Type.String()),
  "os.features": Type.Optional(Type.Array(Type.String())),
  features: Type.Optional(Type.Array(Type.String())),
});

export const DescriptorSchema = Type.Object({
  mediaType: Type.String({ minLength: 1 }),
  digest: Type.String(),
  size: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  urls: Type.Optional(Type.Array(Type.String())),
  annotations: Type.Optional(Annotations),
  platform: Type.Optional(PlatformSchema),
  artifactType: Type.Optional(Type.String()),
  data: Type.Optional(Type.String()),
});

export const ImageManifestSchema = Type.Object({
  schemaVersion: Type.Literal(2),
  mediaType: Type.Optional(Type.String()),
  artifactType: Type.Optional(Type.String()),
  config: DescriptorSchema,
  layers: Type.Array(DescriptorSchema),
  subject: Type.Optional(DescriptorSchema),
  annotations: Type.Optional(Annotations),
});

export const ImageIndexSchema = Type.Object({
  schemaVersion: Type.Literal(2),
  mediaType: Type.Optional(Type.String()),
  artifactType: Type.Optional(Type.String()),
  manifests: Type.Array(DescriptorSchema),
  subject: Type.Optional(DescriptorSchema),
  annotations: Type.Optional(Annotations),
});

export type Platform = Static<typeof PlatformSchema>;
export type Descriptor = Static<typeof DescriptorSchema>;
export type ImageManifest = Static<typeof ImageManifestSchema>;
export type ImageIndex = Static<typeof ImageIndexSchema>;

export type ManifestDocument =
  | { readonly kind: "index"; readonly mediaType: string; readonly index: ImageIndex }
  | { readonly kind: "manifest"; readonly mediaType: string; readonly manifest: ImageManifest };

/**
 * A checker for `schema` that reports the first few problems as readable text. Interpreted, not
 * compiled: the documents are small, and compiling each schema cost more at start-up (a CLI
 * command checks a handful of documents) than checking them interpreted costs in a whole pull.
 */
export function schemaChecker<T extends TSchema>(schema: T): (value: unknown) => string[] {
  return (value) => {
    if (Check(schema, value)) return [];
    return [...Errors(schema, value)].slice(0, 3).map((e) => `${e.path || "/"}: ${e.message}`);
  };
}

const checkManifest = schemaChecker(ImageManifestSchema);
/** Schema check of an image index, compiled once and shared (layouts read index.json with it). */
export const checkIndex = schemaChecker(ImageIndexSchema);

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Every descriptor's digest must be valid before anything uses it in a URL or path. */
function checkDescriptorDigests(descriptors: readonly Descriptor[], what: string): void {
  for (const descriptor of descriptors) {
    try {
      parseDigest(descriptor.digest);
    } catch (error) {
      if (error instanceof OciError) throw new InvalidManifestError(`${what}: ${error.message}`);
      throw error;
    }
  }
}

/**
 * Parses a manifest or index and validates it against its schema. The declared media type
 * (from the registry's Content-Type or the parent descriptor) must agree with the body, and a
 * document may not be both an index and a manifest (CVE-2021-41190).
 */
export function parseManifestDocument(
  bytes: Uint8Array,
  declaredMediaType: string | undefined,
  what: string,
): ManifestDocument {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch {
    throw new InvalidManifestError(`${what} is not valid JSON.`, {
      hint: "The registry may have served an error page instead of the manifest.",
    });
  }
  if (!isObject(value)) throw new InvalidManifestError(`${what} is not a JSON object.`);
  if ("manifests" in value && ("layers" in value || "config" in value)) {
    throw new InvalidManifestError(
      `${what} has both "manifests" and "layers"/"config"; refusing an ambiguous document.`,
    );
  }
  const bodyType = typeof value.mediaType === "string" ? value.mediaType : undefined;
  const declared =
    declaredMediaType === undefined ||
    declaredMediaType === "" ||
    declaredMediaType.startsWith("application/json")
      ? undefined
      : declaredMediaType.split(";")[0]?.trim();
  if (
    bodyType === MediaType.DockerManifestSchema1 ||
    bodyType === MediaType.DockerManifestSchema1Signed ||
    declared === MediaType.DockerManifestSchema1 ||
    declared === MediaType.DockerManifestSchema1Signed ||
    value.schemaVersion === 1
  ) {
    throw new InvalidManifestError(`${what} uses Docker schema 1, which is deprecated and not supported.`, {
      hint: "Re-push the image with a current client so it has a schema 2 or OCI manifest.",
    });
  }
  if (bodyType !== undefined && declared !== undefined && bodyType !== declared) {
    throw new InvalidManifestError(`${what} declares media type ${bodyType} but was served as ${declared}.`);
  }
  const mediaType =
    bodyType ?? declared ?? ("manifests" in value ? MediaType.OciIndex : MediaType.OciManifest);

  if (isIndexMediaType(mediaType)) {
    if (!("manifests" in value))
      throw new InvalidManifestError(`${what} is typed ${mediaType} but has no "manifests".`);
    const problems = checkIndex(value);
    if (problems.length > 0)
      throw new InvalidManifestError(`${what} is not a valid image index (${problems.join("; ")}).`);
    const index = value as ImageIndex;
    checkDescriptorDigests(index.manifests, what);
    return { kind: "index", mediaType, index };
  }
  if (isManifestMediaType(mediaType)) {
    if (!("layers" in value))
      throw new InvalidManifestError(`${what} is typed ${mediaType} but has no "layers".`);
    const problems = checkManifest(value);
    if (problems.length > 0)
      throw new InvalidManifestError(`${what} is not a valid image manifest (${problems.join("; ")}).`);
    const manifest = value as ImageManifest;
    checkDescriptorDigests([manifest.config, ...manifest.layers], what);
    return { kind: "manifest", mediaType, manifest };
  }
  throw new InvalidManifestError(
    `${what} has media type ${mediaType}, which is not an image manifest or index.`,
  );
}

/** All descriptors a manifest references (config first, then layers in order). */
export function manifestBlobs(manifest: ImageManifest): Descriptor[] {
  return [manifest.config, ...manifest.layers];
}

export function descriptorDigest(descriptor: Descriptor): Digest {
  return parseDigest(descriptor.digest);
}
