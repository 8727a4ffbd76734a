export * from "./cli.js";
export * from "./cnb-fixtures.js";
export * from "./debian.js";
export * from "./fault-proxy.js";
export * from "./fixtures.js";
export * from "./image-factory.js";
export * from "./kpack.js";
export * from "./lima.js";
export * from "./pack.js";
export * from "./pki.js";
export * from "./registry.js";
export * from "./token-server.js";
export * from "./tree.js";
export {
  callerIn,
  findFreePort,
  makeTempDir,
  type RunResult,
  removeDir,
  requireBinary,
  runBinary,
  TailBuffer,
  TEST_CALLERS,
  TEST_USER,
  type TestCaller,
  terminateChild,
  unprivilegedUser,
  waitForExit,
} from "./util.js";
