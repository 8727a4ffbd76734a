export * from "./auth.js";
export * from "./client.js";
export { collectWithExposedGc, setYoungCollector } from "./heap.js";
export * from "./registry.js";
export * from "./transport.js";
