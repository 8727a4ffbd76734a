export * from "./containers.js";
export * from "./runners.js";
export * from "./runtime.js";
export * from "./runtime-spec.js";
