// @locald/cnb: drives the official CNB lifecycle natively (see README.md).
export * from "./build.js";
export * from "./builder.js";
export * from "./create/index.js";
export * from "./errors.js";
export * from "./launcher.js";
export * from "./lifecycle.js";
export * from "./platform.js";
export * from "./project-descriptor.js";
export * from "./rebase.js";
export * from "./remote/index.js";
export * from "./sandbox/index.js";
export * from "./sbom.js";
