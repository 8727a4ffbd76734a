import { OciError } from "@locald/oci";

/** A builder that cannot be used: not found, no lifecycle, an unreadable `/cnb`. */
export class BuilderError extends OciError {
  readonly code = "BUILDER";
}

/** The lifecycle and locald share no Platform API (or the builder's buildpacks need a newer one). */
export class ApiMismatchError extends OciError {
  readonly code = "API_MISMATCH";
}

/** Nothing detected the app (lifecycle exit 20/21). */
export class DetectError extends OciError {
  readonly code = "DETECT";
}

/** A phase of the lifecycle failed: a buildpack (51), or the lifecycle itself. */
export class BuildError extends OciError {
  readonly code = "BUILD";
}

/** Invalid build input: an environment variable name, a missing app directory, a bad option. */
export class BuildConfigError extends OciError {
  readonly code = "BUILD_CONFIG";
}

/** A builder.toml or package.toml that cannot be made into an image: bad keys, missing parts. */
export class CreateConfigError extends OciError {
  readonly code = "CREATE_CONFIG";
}
