export { zstdDecoders } from "./archive.js";
export { applyLayers, chainId, LayerApplication } from "./layers.js";
export { isHostRoot } from "./privilege.js";
export { readFileInRoot, resolveInRoot } from "./rootfs.js";
export { defaultRootfsCacheDir, pruneRootfsCache } from "./rootfs-cache.js";
export {
  type DirectoryListing,
  listDirectory,
  type TreeEntry,
  type TreeEntryKind,
  walkTree,
} from "./tree-walk.js";
export * from "./unpack.js";
