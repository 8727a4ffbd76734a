/**
 * Node reads each socket into a new 64 KiB buffer, and V8 frees dead buffers only when it next
 * collects its young generation, which it forces only once some 32 MiB of them wait. A download
 * at hundreds of MB/s thus keeps 30–45 MiB of dead buffers, and the process keeps the pages.
 * Only the process that owns the heap may start collections (it needs `--expose-gc`), so it hands
 * one in here: downloads then run it after every few MiB they read. (The unpack thread's file reads
 * and decompression gained nothing measurable from the same.)
 */
const COLLECT_EVERY = 8 * 1024 * 1024;

let collect: (() => void) | undefined;
let sinceCollection = 0;

/** `collector` collects the young generation (e.g. `() => gc({ type: "minor" })`); undefined stops it. */
export function setYoungCollector(collector: (() => void) | undefined): void {
  collect = collector;
  sinceCollection = 0;
}

/** Counts bytes read into buffers that die soon after; collects when enough are dead. */
export function shortLivedBytes(bytes: number): void {
  if (collect === undefined) return;
  sinceCollection += bytes;
  if (sinceCollection < COLLECT_EVERY) return;
  sinceCollection = 0;
  collect();
}
