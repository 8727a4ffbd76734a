export * from "./copy.js";
export * from "./layout.js";
export * from "./store.js";
