export * from "./auth.js";
export * from "./client.js";
export { setYoungCollector } from "./heap.js";
export * from "./http.js";
export * from "./registry.js";
export { describeNetworkError, parseRetryAfter } from "./retry.js";
export * from "./transport.js";
