export * from "./deliver.js";
export * from "./pull.js";
export * from "./push.js";
