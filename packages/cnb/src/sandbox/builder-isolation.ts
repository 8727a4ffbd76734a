import { type Builder, builderRootfs } from "../builder.js";
import type { IsolationMode, RootSource } from "./isolation.js";

/**
 * The default: the builder image's own root filesystem is `/`, read-only, shared by every build
 * from the unpack cache; nothing of the host is shown but its resolv.conf and hosts. Every phase
 * runs as the build user, the caller (root or not) mapped to it in a user namespace, with the
 * image's environment (PATH and the rest, as pack's build container has them).
 */
export const builderIsolation: IsolationMode = {
  name: "builder",
  root: async (builder: Builder, { store, cacheDir, client }: RootSource) => ({
    shared: await builderRootfs(builder, { store, cacheDir, ...(client ? { client } : {}) }),
  }),
  privileged: () => false,
  environment: (builder: Builder) => builder.env.filter((pair) => !/^(HOME|CNB_PLATFORM_API)=/.test(pair)),
  // Its /cnb is the builder's own, in the root.
  mounts: () => [],
};
