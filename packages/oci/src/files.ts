import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, open, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Digest } from "./digest.js";
import { DigestVerifier } from "./digest.js";

/**
 * The one place where files become visible: always written to a temp file beside the target
 * (same filesystem, so rename is atomic) and renamed into place only when complete and valid.
 */
export function tempName(dir: string): string {
  return join(dir, `${process.pid}-${randomBytes(6).toString("hex")}.tmp`);
}

/**
 * Flushes a finished temp file before it is renamed into place: blobs found present are trusted
 * without re-hashing, so after a crash a named blob must never be a zero-filled one.
 */
async function syncFile(path: string): Promise<void> {
  const handle = await open(path, "r+");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temp = tempName(dirname(path));
  try {
    await writeFile(temp, data, { mode });
    await syncFile(temp);
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

export type VerifiedWriteProgress = (bytes: number) => void;

/**
 * Streams chunks to `tempDir`, verifying digest and size as they arrive, and renames the file
 * to `path` only when every byte checked out. A failure leaves nothing behind.
 */
export async function writeVerified(
  path: string,
  tempDir: string,
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  expected: { digest: Digest; size: number },
  what: string,
  onProgress?: VerifiedWriteProgress,
): Promise<void> {
  await mkdir(tempDir, { recursive: true });
  await mkdir(dirname(path), { recursive: true });
  const temp = tempName(tempDir);
  const verifier = new DigestVerifier(expected.digest, expected.size, what);
  try {
    await pipeline(
      chunks,
      new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          try {
            verifier.update(chunk);
          } catch (error) {
            callback(error as Error);
            return;
          }
          onProgress?.(verifier.bytes);
          callback(null, chunk);
        },
      }),
      createWriteStream(temp, { mode: 0o644 }),
    );
    verifier.finish();
    await syncFile(temp);
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}
