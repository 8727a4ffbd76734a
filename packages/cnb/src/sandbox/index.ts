export * from "./isolation.js";
export * from "./lifecycle-sandbox.js";
export { isolationMode, phaseEnvironment } from "./modes.js";
