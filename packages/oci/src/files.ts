import { randomBytes } from "node:crypto";
import { constants, createWriteStream, writevSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { mkdir, open, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Digest } from "./digest.js";
import { DigestVerifier } from "./digest.js";
import { DigestMismatchError, SizeLimitError } from "./errors.js";

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

/** A finished temp file made `path`: flushed, then renamed into place (same filesystem). */
export async function publishFile(temp: string, path: string): Promise<void> {
  await syncFile(temp);
  await rename(temp, path);
}

export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temp = tempName(dirname(path));
  try {
    await writeFile(temp, data, { mode });
    await publishFile(temp, path);
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
    await publishFile(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/** Bytes of a blob from `start` on: the offset asked for, or 0 when the source sent it whole. */
export interface ResumedRead {
  readonly start: number;
  readonly chunks: AsyncIterable<Uint8Array>;
}

/** Where a resumable download reads the blob from; `offset` is how much the partial file holds. */
export type ResumableSource = (offset: number) => Promise<ResumedRead>;

/**
 * Like {@link writeVerified}, but through `partial`, a file that outlives this process: a download
 * that is interrupted (Ctrl-C, a kill, a broken network) leaves what it wrote there, and the next
 * call continues after it instead of starting over. Node cannot save a hash's state, so the kept
 * prefix is read and hashed again first; it is trusted for nothing but being cheaper than the
 * network: the whole blob is checked against its digest before `path` appears, and a blob that
 * fails (a corrupted prefix, say) takes its partial file with it, so the next attempt starts over.
 */
export async function writeResumable(
  path: string,
  partial: string,
  source: ResumableSource,
  expected: { digest: Digest; size: number },
  what: string,
  onProgress?: VerifiedWriteProgress,
): Promise<void> {
  await mkdir(dirname(partial), { recursive: true });
  await mkdir(dirname(path), { recursive: true });
  const flags = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW;
  const handle = await open(partial, flags, 0o644).catch(async (error: NodeJS.ErrnoException) => {
    // A symlink where the partial file belongs is no download of ours: it goes, never followed.
    if (error.code !== "ELOOP") throw error;
    await rm(partial, { force: true });
    return open(partial, flags | constants.O_EXCL, 0o644);
  });
  let verifier = new DigestVerifier(expected.digest, expected.size, what);
  let closed = false;
  try {
    let kept = (await handle.stat()).size;
    if (kept > expected.size) {
      await handle.truncate(0);
      kept = 0;
    }
    if (kept > 0) await hashPrefix(handle, kept, verifier, onProgress);
    if (kept < expected.size) {
      const read = await source(kept);
      if (read.start !== kept) {
        // Anything but the continuation asked for is the whole blob again: start over cleanly.
        await handle.truncate(0);
        verifier = new DigestVerifier(expected.digest, expected.size, what);
        kept = 0;
      }
      await pipeline(read.chunks, verifiedSink(handle, kept, verifier, onProgress));
    }
    verifier.finish();
    await handle.sync();
    closed = true;
    await handle.close();
    await rename(partial, path);
  } catch (error) {
    if (!closed) await handle.close().catch(() => {});
    // Bytes that failed the check are worth nothing to the next attempt, and on a full disk the
    // space matters more; a broken connection's are the next attempt's head start.
    const code = (error as NodeJS.ErrnoException).code;
    if (
      error instanceof DigestMismatchError ||
      error instanceof SizeLimitError ||
      code === "ENOSPC" ||
      code === "EDQUOT"
    )
      await rm(partial, { force: true });
    throw error;
  }
}

/** Bytes a download gathers before one writev. */
const WRITE_BATCH = 1024 * 1024;
/** Below Linux's IOV_MAX (1024) buffers per writev. */
const WRITE_BATCH_BUFFERS = 512;

/**
 * A download's sink: hashes each chunk as it comes, gathers chunks and writes them at increasing
 * positions with one synchronous writev per MiB, through a handle the caller keeps. Synchronous
 * on purpose: profiled on 2 cores (bench/RESULTS.md), handing each ~64 KiB write to libuv's
 * thread pool cost a futex wake-up and a context switch apiece (some 20,000 for 300 MiB) —
 * more than the copy into the page cache, which is all a write here does before the fsync.
 */
function verifiedSink(
  handle: FileHandle,
  start: number,
  verifier: DigestVerifier,
  onProgress: VerifiedWriteProgress | undefined,
): Writable {
  let position = start;
  let batch: Buffer[] = [];
  let batchBytes = 0;
  const flush = (): void => {
    let pending = batch;
    batch = [];
    batchBytes = 0;
    while (pending.length > 0) {
      const written = writevSync(handle.fd, pending, position);
      position += written;
      pending = unwritten(pending, written);
    }
  };
  return new Writable({
    highWaterMark: WRITE_BATCH,
    write(chunk: Buffer, _encoding, callback) {
      try {
        verifier.update(chunk);
        batch.push(chunk);
        batchBytes += chunk.length;
        if (batchBytes >= WRITE_BATCH || batch.length >= WRITE_BATCH_BUFFERS) flush();
      } catch (error) {
        callback(error as Error);
        return;
      }
      onProgress?.(verifier.bytes);
      callback();
    },
    final(callback) {
      try {
        flush();
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
    // A broken connection: what arrived is the next attempt's head start, so it goes down too.
    destroy(error, callback) {
      try {
        if (batch.length > 0) flush();
      } catch {
        // the error that ended the download is the one to report
      }
      callback(error);
    },
  });
}

/** What is left of `buffers` after the first `written` bytes went out (a short write). */
function unwritten(buffers: Buffer[], written: number): Buffer[] {
  let skip = written;
  const rest: Buffer[] = [];
  for (const buffer of buffers) {
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
    skip = 0;
  }
  return rest;
}

async function hashPrefix(
  handle: FileHandle,
  length: number,
  verifier: DigestVerifier,
  onProgress: VerifiedWriteProgress | undefined,
): Promise<void> {
  const buffer = Buffer.allocUnsafe(Math.min(length, 1024 * 1024));
  let position = 0;
  while (position < length) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, length - position), position);
    if (bytesRead === 0) break;
    verifier.update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
  onProgress?.(verifier.bytes);
}
