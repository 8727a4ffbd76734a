import { isHostRoot } from "@locald/oci";
import type { IsolationMode } from "./isolation.js";

/**
 * Opt-in: the host's OS (its programs, libraries and /etc, read-only; nobody's data), for builders
 * with no OS of their own. As root the sandbox keeps root (analyze/restore/export chown for the
 * build user) and detect/build drop to the build user with the host's setpriv; anyone else is
 * mapped to the build user. The image's environment is for its own OS: the phases get a plain PATH.
 */
export const hostIsolation: IsolationMode = {
  name: "host",
  root: async () => "host",
  privileged: () => isHostRoot(),
  environment: () => [],
  mounts: (builder) => [{ source: builder.cnbDir, destination: "/cnb", readonly: true }],
};
