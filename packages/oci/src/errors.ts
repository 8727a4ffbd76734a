/**
 * Every failure the library can report, one class per family, each with a stable `code`
 * so the CLI can render it and tests can assert it. Messages are one paragraph: what failed,
 * why, and what to do. They never contain credentials.
 */
export abstract class OciError extends Error {
  abstract readonly code: string;
  /** A hint on what to do next, rendered after the message by the CLI. */
  readonly hint: string | undefined;

  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.hint = options.hint;
  }
}

/** An image reference that cannot be parsed. */
export class InvalidReferenceError extends OciError {
  readonly code = "INVALID_REFERENCE";
}

/** A digest string that is not `algorithm:hex` of a supported algorithm. */
export class InvalidDigestError extends OciError {
  readonly code = "INVALID_DIGEST";
}

/** Content whose digest or size differs from what its descriptor promised. */
export class DigestMismatchError extends OciError {
  readonly code = "DIGEST_MISMATCH";
}

/** A body larger than its declared size or larger than a safety cap. */
export class SizeLimitError extends OciError {
  readonly code = "SIZE_LIMIT";
}

/** A manifest, index or config that is not valid JSON of the kind it claims to be. */
export class InvalidManifestError extends OciError {
  readonly code = "INVALID_MANIFEST";
}

/** No entry of an index matches the requested platform. */
export class PlatformNotFoundError extends OciError {
  readonly code = "PLATFORM_NOT_FOUND";
}

/** The registry has no such repository, tag, manifest or blob. */
export class NotFoundError extends OciError {
  readonly code = "NOT_FOUND";
}

/** The registry refused our credentials (401) or the action (403). */
export class AuthenticationError extends OciError {
  readonly code = "UNAUTHORIZED";
}

/** Reading credentials from docker's config or a credential helper failed. */
export class CredentialsError extends OciError {
  readonly code = "CREDENTIALS";
}

/** The registry answered with an unexpected status or an error document. */
export class RegistryError extends OciError {
  readonly code = "REGISTRY";
  constructor(
    message: string,
    readonly status: number,
    options: { hint?: string; cause?: unknown } = {},
  ) {
    super(message, options);
  }
}

/** The network failed (connection refused, reset, TLS, timeout) after all retries. */
export class NetworkError extends OciError {
  readonly code = "NETWORK";
}

/**
 * A container's command that cannot be run: missing (exit status 127) or not executable (126),
 * the statuses docker and a shell give.
 */
export class ExecutableError extends OciError {
  readonly code = "EXECUTABLE";
  constructor(
    message: string,
    readonly exitStatus: 126 | 127,
    options: { hint?: string; cause?: unknown } = {},
  ) {
    super(message, options);
  }
}

/** The disk filled up while writing (ENOSPC, or a quota); what was written is removed. */
export class DiskFullError extends OciError {
  readonly code = "DISK_FULL";
}

/** A redirect or realm we refuse to follow for safety (downgrade, bad scheme). */
export class UnsafeRedirectError extends OciError {
  readonly code = "UNSAFE_REDIRECT";
}

/** The local store is missing content or is locked/corrupt. */
export class StoreError extends OciError {
  readonly code = "STORE";
}

/** An OCI image layout directory that cannot be read or written. */
export class LayoutError extends OciError {
  readonly code = "LAYOUT";
}

/** A layer entry that would escape or replace the root filesystem it is applied to. */
export class UnsafeLayerError extends OciError {
  readonly code = "UNSAFE_LAYER";
}

/** A layer that is not a valid changeset: a corrupt archive, a hardlink to nothing, a bad whiteout. */
export class InvalidLayerError extends OciError {
  readonly code = "INVALID_LAYER";
}

/** Applying a layer failed on the host filesystem (permissions, space). */
export class UnpackError extends OciError {
  readonly code = "UNPACK";
}

/** Container settings that cannot be honoured: an unknown user, a bad volume, no command. */
export class ContainerConfigError extends OciError {
  readonly code = "CONTAINER_CONFIG";
}

/** The container runtime (runc) is missing or failed to start. */
export class RuntimeError extends OciError {
  readonly code = "RUNTIME";
}

/** A container that does not exist, or is not in the state the operation needs (running, stopped). */
export class ContainerStateError extends OciError {
  readonly code = "CONTAINER_STATE";
}

/** The usual filesystem refusals in words, for messages that must not show a raw errno. */
const ERRNO_REASONS: Readonly<Record<string, string>> = {
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "the filesystem is read-only",
  ENOTDIR: "a part of the path is a file, not a directory",
  ENOSPC: "the disk is full",
  EDQUOT: "the disk quota is used up",
  EMFILE: "too many open files",
};

/** What a Node errno `code` means, in words; undefined for one without a plain wording. */
export function errnoReason(code: string | undefined): string | undefined {
  return code === undefined ? undefined : ERRNO_REASONS[code];
}
