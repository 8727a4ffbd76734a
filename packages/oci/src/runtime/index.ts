export * from "./bubblewrap-runtime.js";
export * from "./containers.js";
export * from "./executable.js";
export * from "./host-checks.js";
export * from "./runc-runtime.js";
export {
  type ContainerRuntime,
  prepareMountPoints,
  type SandboxHandle,
  type SandboxProcess,
  type SharedRoot,
} from "./runners.js";
export * from "./runtime.js";
export * from "./runtime-spec.js";
