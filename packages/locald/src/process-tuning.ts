import { setFlagsFromString } from "node:v8";
import { collectWithExposedGc } from "@locald/oci";

/**
 * Settings for a process that runs the CLI and so owns its heap; the libraries leave them alone.
 * Measured on a cold `image unpack` of a 300 MiB image, each takes 10–25 MiB off the peak RSS.
 * - undici's HTTP parser is WebAssembly, and V8 recompiles its hot functions with TurboFan on a
 *   background thread, in ~37 MiB of compiler memory that the process keeps afterwards (and CPU
 *   while the pull runs). The baseline (Liftoff) code parses HTTP far faster than a disk writes.
 * - Downloads collect their dead socket buffers early (see `setYoungCollector`).
 */
export function tuneProcess(): void {
  setFlagsFromString("--liftoff-only");
  setFlagsFromString("--expose-gc");
  collectWithExposedGc();
}
