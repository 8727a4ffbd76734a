import { PassThrough, pipeline, type Readable } from "node:stream";
import { SizeLimitError } from "../errors.js";
import { shortLivedBytes } from "./heap.js";

/** Caps on bodies we buffer in memory; blobs are streamed and bounded by their descriptor instead. */
export interface SizeLimits {
  manifest: number;
  config: number;
  token: number;
  error: number;
}

export const DEFAULT_LIMITS: SizeLimits = {
  manifest: 4 * 1024 * 1024,
  config: 8 * 1024 * 1024,
  token: 1024 * 1024,
  error: 64 * 1024,
};

export type TransportEvent =
  | { type: "retry"; url: string; attempt: number; delayMs: number; reason: string }
  | { type: "redirect"; from: string; to: string; authorizationDropped: boolean }
  | { type: "scheme"; registry: string; scheme: "http" | "https" }
  | { type: "token"; registry: string; scopes: readonly string[] };

export type HttpMethod = "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE";

export interface RegistryRequest {
  method: HttpMethod;
  /** A path under the registry (`/v2/…`) or an absolute URL the registry gave us (upload location). */
  path: string;
  headers?: Record<string, string>;
  /** A buffer, or a factory so that retries and redirects can send the body again. */
  body?: Buffer | (() => Readable);
  /** Token scopes, e.g. `repository:library/ubuntu:pull`. */
  scopes?: readonly string[];
  /** Statuses that are not errors for this call (others are turned into typed errors). */
  expect: readonly number[];
  /** Short description for messages, e.g. "manifest 127.0.0.1:5000/app:1". */
  what: string;
}

export interface RegistryResponse {
  status: number;
  headers: Record<string, string | undefined>;
  body: Readable;
  url: string;
}

/** Reads a whole body, failing as soon as it passes `limit` bytes. */
export async function readBody(body: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      body.destroy();
      throw new SizeLimitError(`${what} is larger than the ${limit}-byte limit; refusing to read it.`, {
        hint: "If this is expected, raise the limit in the client options.",
      });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * A response body to iterate chunk by chunk. A Readable's async iterator hands out everything it
 * has buffered as one new Buffer, and a body buffers what the socket delivered before
 * backpressure paused it: read directly, a download slower to write than to receive allocates
 * and copies that much per step. Through a shallow buffer the chunks stay about as they arrived.
 */
export async function* bodyChunks(body: Readable): AsyncGenerator<Buffer> {
  // Errors reach the iterator through the PassThrough; the callback has nothing to add.
  const shallow = pipeline(body, new PassThrough({ highWaterMark: 64 * 1024 }), () => {});
  for await (const chunk of shallow as AsyncIterable<Buffer>) {
    shortLivedBytes(chunk.length);
    yield chunk;
  }
}

/** Discards the rest of a body so the connection can be reused. */
export async function drain(body: Readable): Promise<void> {
  try {
    for await (const _ of body) {
      // discard
    }
  } catch {
    // a body we are throwing away may fail; nothing depends on it
  }
}
