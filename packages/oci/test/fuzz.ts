/**
 * The budget of the property-based fuzz tests (`*.fuzz.test.ts`). The unit run gets a small
 * fixed number of runs from a fixed seed, so it is quick and the same on every machine;
 * `scripts/fuzz.sh` sets LOCALD_FUZZ_RUNS (and a random LOCALD_FUZZ_SEED) for a long search.
 * A failure prints its seed and path: set both variables to replay it.
 */
import type { Parameters } from "fast-check";

/** Any fixed value will do; changing it changes which inputs the unit run tries. */
const FIXED_SEED = 1906;

/**
 * fast-check parameters for one property: `runs` in the unit run, else LOCALD_FUZZ_RUNS times
 * `share` (below 1 for a property whose every run is costly, such as a whole unpack).
 */
export function budget<T>(runs: number, share = 1): Parameters<T> {
  const long = Number(process.env.LOCALD_FUZZ_RUNS ?? "");
  const seed = Number(process.env.LOCALD_FUZZ_SEED ?? "");
  return {
    numRuns: Number.isInteger(long) && long > 0 ? Math.max(1, Math.round(long * share)) : runs,
    seed: process.env.LOCALD_FUZZ_SEED && Number.isInteger(seed) ? seed : FIXED_SEED,
  };
}
