export * from "./auth.js";
export * from "./client.js";
export * from "./config.js";
export * from "./containers.js";
export * from "./copy.js";
export * from "./digest.js";
export * from "./errors.js";
export { collectWithExposedGc, setYoungCollector } from "./heap.js";
export * from "./layout.js";
export * from "./manifest.js";
export * from "./media-types.js";
export * from "./platform.js";
export { isHostRoot } from "./privilege.js";
export * from "./pull.js";
export * from "./push.js";
export * from "./reference.js";
export * from "./registry.js";
export { readFileInRoot, resolveInRoot } from "./rootfs.js";
export * from "./runners.js";
export * from "./runtime.js";
export * from "./runtime-spec.js";
export * from "./store.js";
export * from "./transport.js";
export {
  type DirectoryListing,
  listDirectory,
  type TreeEntry,
  type TreeEntryKind,
  walkTree,
} from "./tree-walk.js";
export * from "./unpack.js";
