import { stringify } from "yaml";
import type { KpackResource } from "./kpack-types.js";

/**
 * The resources as one multi-document YAML stream, for `kubectl apply -f -` and `--dry-run`.
 * Keys come out in the order the values were built (apiVersion, kind, metadata, spec), so the
 * same options always print the same bytes.
 */
export function renderKpackYaml(resources: readonly KpackResource[]): string {
  // lineWidth 0: long image references stay on one line instead of being folded.
  return resources.map((resource) => stringify(resource, { lineWidth: 0 })).join("---\n");
}
