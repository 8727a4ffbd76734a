export * from "./archive-entries.js";
export * from "./directory-entries.js";
export * from "./image-composer.js";
export * from "./layer-archive.js";
export * from "./layer-entry.js";
