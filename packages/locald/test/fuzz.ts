/**
 * The budget of the property-based fuzz tests (`*.fuzz.test.ts`), as in
 * packages/oci/test/fuzz.ts (tests of one package do not import another's): a fixed seed and a
 * small number of runs in the unit run, LOCALD_FUZZ_RUNS and LOCALD_FUZZ_SEED for a long search.
 */
import type { Parameters } from "fast-check";

const FIXED_SEED = 1906;

export function budget<T>(runs: number, share = 1): Parameters<T> {
  const long = Number(process.env.LOCALD_FUZZ_RUNS ?? "");
  const seed = Number(process.env.LOCALD_FUZZ_SEED ?? "");
  return {
    numRuns: Number.isInteger(long) && long > 0 ? Math.max(1, Math.round(long * share)) : runs,
    seed: process.env.LOCALD_FUZZ_SEED && Number.isInteger(seed) ? seed : FIXED_SEED,
  };
}
