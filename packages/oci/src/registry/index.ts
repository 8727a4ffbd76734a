export * from "./auth.js";
export * from "./client.js";
export { collectWithExposedGc, setYoungCollector } from "./heap.js";
export {
  bodyChunks,
  DEFAULT_LIMITS,
  drain,
  type HttpMethod,
  type RegistryRequest,
  type RegistryResponse,
  readBody,
  type SizeLimits,
  type TransportEvent,
} from "./http.js";
export * from "./registry.js";
export { parseRetryAfter } from "./retry.js";
export * from "./transport.js";
