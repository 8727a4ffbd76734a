export { StoreRegistry } from "./store-registry.js";
