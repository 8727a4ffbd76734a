export * from "./kpack-apply.js";
export * from "./kpack-errors.js";
export * from "./kpack-handoff.js";
export * from "./kpack-resources.js";
export * from "./kpack-source.js";
export * from "./kpack-types.js";
export * from "./kpack-yaml.js";
