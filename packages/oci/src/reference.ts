import { type Digest, parseDigest } from "./digest.js";
import { InvalidReferenceError, OciError } from "./errors.js";

/**
 * A fully normalised image reference. `tag` and `digest` may both be present
 * (`repo:tag@sha256:…`); the digest then wins when resolving, as in docker.
 */
export interface Reference {
  /** Registry host with optional port, e.g. `docker.io`, `127.0.0.1:5000`, `[::1]:5000`. */
  readonly registry: string;
  /** Repository path, e.g. `library/ubuntu`. */
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: Digest;
}

export const DOCKER_HUB = "docker.io";
const DOCKER_HUB_API_HOST = "registry-1.docker.io";
const DEFAULT_TAG = "latest";
const MAX_NAME_LENGTH = 255;

const pathComponent = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagPattern = /^\w[\w.-]{0,127}$/;
const hostLabel = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const domainPattern = new RegExp(`^(?:${hostLabel}(?:\\.${hostLabel})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);

function invalid(input: string, why: string): InvalidReferenceError {
  return new InvalidReferenceError(`"${input}" is not a valid image reference: ${why}.`, {
    hint: "Use the form [registry[:port]/]repository[:tag][@sha256:<digest>], for example ubuntu:24.04 or 127.0.0.1:5000/team/app:1.0.",
  });
}

/** True when the first path component names a registry rather than a Docker Hub namespace. */
function looksLikeRegistry(component: string): boolean {
  return (
    component.includes(".") ||
    component.includes(":") ||
    component === "localhost" ||
    component.startsWith("[") ||
    component.toLowerCase() !== component
  );
}

/**
 * Parses and normalises an image reference the way docker does: `ubuntu` →
 * `docker.io/library/ubuntu:latest`. Pure; performs no I/O.
 */
export function parseReference(input: string, options: { defaultTag?: string | null } = {}): Reference {
  if (input.length === 0) throw invalid(input, "it is empty");
  if (/\s/.test(input)) throw invalid(input, "it contains whitespace");

  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at !== -1) {
    try {
      digest = parseDigest(rest.slice(at + 1));
    } catch (error) {
      if (error instanceof OciError) throw invalid(input, error.message.replace(/\.$/, ""));
      throw error;
    }
    rest = rest.slice(0, at);
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const lastColon = rest.lastIndexOf(":");
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!tagPattern.test(tag)) {
      throw invalid(
        input,
        `the tag "${tag}" must be 1–128 letters, digits, "_", "." or "-", not starting with "." or "-"`,
      );
    }
  }

  let registry = DOCKER_HUB;
  let repository = rest;
  const firstSlash = rest.indexOf("/");
  if (firstSlash !== -1 && looksLikeRegistry(rest.slice(0, firstSlash))) {
    registry = rest.slice(0, firstSlash);
    repository = rest.slice(firstSlash + 1);
    if (!domainPattern.test(registry)) throw invalid(input, `"${registry}" is not a valid registry host`);
    const port = /:(\d+)$/.exec(registry)?.[1];
    if (port !== undefined && (Number(port) < 1 || Number(port) > 65535))
      throw invalid(input, `the port ${port} of "${registry}" is not between 1 and 65535`);
    if (registry === "index.docker.io" || registry === DOCKER_HUB_API_HOST) registry = DOCKER_HUB;
  }
  if (repository.length === 0) throw invalid(input, "the repository name is missing");
  for (const component of repository.split("/")) {
    if (!pathComponent.test(component)) {
      const why =
        component.toLowerCase() !== component
          ? "repository names must be lowercase"
          : `"${component}" is not a valid path component (lowercase letters, digits and single separators . _ __ -)`;
      throw invalid(input, why);
    }
  }
  if (registry === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;
  if (registry.length + 1 + repository.length > MAX_NAME_LENGTH) {
    throw invalid(input, `the name is longer than ${MAX_NAME_LENGTH} characters`);
  }

  const defaultTag = options.defaultTag === undefined ? DEFAULT_TAG : options.defaultTag;
  if (tag === undefined && digest === undefined && defaultTag !== null) tag = defaultTag;
  return {
    registry,
    repository,
    ...(tag === undefined ? {} : { tag }),
    ...(digest === undefined ? {} : { digest }),
  };
}

/** `registry/repository` without tag or digest. */
export function repositoryName(ref: Reference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** The canonical string: `registry/repository[:tag][@digest]`. */
export function formatReference(ref: Reference): string {
  return `${repositoryName(ref)}${ref.tag === undefined ? "" : `:${ref.tag}`}${ref.digest === undefined ? "" : `@${ref.digest}`}`;
}

/** What to ask the registry for: the digest when known (immutable), else the tag. */
export function manifestIdentifier(ref: Reference): string {
  const id = ref.digest ?? ref.tag;
  if (id === undefined) throw invalid(formatReference(ref), "it has neither a tag nor a digest");
  return id;
}

/** The host to contact for a registry name (Docker Hub's API lives on another host). */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
}

/** The same repository with another tag/digest. */
export function withIdentifier(ref: Reference, id: { tag?: string; digest?: Digest }): Reference {
  return {
    registry: ref.registry,
    repository: ref.repository,
    ...(id.tag === undefined ? {} : { tag: id.tag }),
    ...(id.digest === undefined ? {} : { digest: id.digest }),
  };
}
