import { OciError } from "@locald/oci";

/** Options that would make a kpack resource its webhook refuses: caught before anything is sent. */
export class KpackConfigError extends OciError {
  readonly code = "KPACK_CONFIG";
}

/** kubectl is not on PATH, so nothing can be applied to a cluster. */
export class KubectlMissingError extends OciError {
  readonly code = "KUBECTL_MISSING";
}

/** kubectl ran and failed (apply refused, no cluster, no permission), or its output is unreadable. */
export class KubectlError extends OciError {
  readonly code = "KUBECTL";
}

/** The kpack Build ran and failed, or did not finish in time. */
export class KpackBuildError extends OciError {
  readonly code = "KPACK_BUILD";
}
