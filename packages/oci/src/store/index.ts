export * from "./copy.js";
export { type DownloadEvents, partialName } from "./downloads.js";
export * from "./layout.js";
export * from "./store.js";
