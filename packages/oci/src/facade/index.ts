export * from "./pull.js";
export * from "./push.js";
