export * from "./builder-config.js";
export * from "./builder-image.js";
export * from "./buildpack-source.js";
export * from "./lifecycle-source.js";
