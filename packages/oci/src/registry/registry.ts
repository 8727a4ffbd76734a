import type { Readable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import { type Digest, digestOf, parseDigest, verifyBytes } from "../digest.js";
import {
  DigestMismatchError,
  InvalidManifestError,
  NetworkError,
  OciError,
  SizeLimitError,
} from "../errors.js";
import { type Descriptor, type ManifestDocument, parseManifestDocument } from "../manifest.js";
import { MANIFEST_ACCEPT } from "../media-types.js";
import { formatReference, manifestIdentifier, type Reference, repositoryName } from "../reference.js";
import { bodyChunks, drain, type RegistryResponse, readBody } from "./http.js";
import type { Transport } from "./transport.js";

export interface FetchedManifest {
  readonly descriptor: Descriptor;
  readonly bytes: Buffer;
  readonly document: ManifestDocument;
}

export interface UploadOptions {
  /** Repository on the same registry to mount the blob from instead of uploading it. */
  mountFrom?: string;
  /** Upload in PATCH chunks of this size instead of one PUT. */
  chunkSize?: number;
}

/** A blob's bytes from `start` on: the offset asked for, or 0 when the registry sent it whole. */
export interface BlobRead {
  readonly start: number;
  readonly chunks: AsyncIterable<Buffer>;
}

/** Whether a response to `Range: bytes=<offset>-` is exactly the rest of the blob from `offset`. */
function continuesAt(response: RegistryResponse, offset: number, size: number): boolean {
  if (response.status !== 206) return false;
  const match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers["content-range"]?.trim() ?? "");
  if (match === null) return false;
  const [first, last, total] = [Number(match[1]), Number(match[2]), match[3]];
  return first === offset && last >= first && last < size && (total === "*" || Number(total) === size);
}

const pullScope = (repository: string) => `repository:${repository}:pull`;
const pushScope = (repository: string) => `repository:${repository}:pull,push`;

/** Attempts to resume a blob download after the connection broke. */
const RESUME_ATTEMPTS = 5;

function contentTypeOf(value: string | undefined): string | undefined {
  return value?.split(";")[0]?.trim();
}

/** The distribution API (`/v2/…`) for one registry host at a time; all HTTP policy is the transport's. */
export class RegistryClient {
  constructor(readonly transport: Transport) {}

  /** Checks that the registry answers and that our credentials (if any) are accepted. */
  async ping(registry: string): Promise<void> {
    const response = await this.transport.request(registry, {
      method: "GET",
      path: "/v2/",
      expect: [200],
      what: `The registry ${registry}`,
    });
    await drain(response.body);
  }

  /** Resolves a reference to a descriptor with one HEAD; undefined when the registry lacks it. */
  async headManifest(ref: Reference): Promise<Descriptor | undefined> {
    const what = `The manifest of ${formatReference(ref)}`;
    const response = await this.transport.request(ref.registry, {
      method: "HEAD",
      path: `/v2/${ref.repository}/manifests/${manifestIdentifier(ref)}`,
      headers: { accept: MANIFEST_ACCEPT },
      scopes: [pullScope(ref.repository)],
      expect: [200, 404],
      what,
    });
    await drain(response.body);
    if (response.status === 404) return undefined;
    const header = response.headers["docker-content-digest"];
    const mediaType = contentTypeOf(response.headers["content-type"]);
    const size = Number(response.headers["content-length"]);
    if (header === undefined || mediaType === undefined || !Number.isSafeInteger(size)) return undefined;
    const digest = parseDigest(header);
    if (ref.digest !== undefined && digest !== ref.digest) {
      throw new DigestMismatchError(
        `${what}: the registry reports digest ${digest} for a request by digest ${ref.digest}.`,
      );
    }
    return { mediaType, digest, size };
  }

  /**
   * Fetches a manifest or index, verifies it against the requested digest (or the registry's
   * `Docker-Content-Digest` for a tag), caps its size, and validates it.
   */
  async getManifest(ref: Reference, expected?: Descriptor): Promise<FetchedManifest> {
    const what = `The manifest of ${formatReference(ref)}`;
    const identifier = expected?.digest ?? manifestIdentifier(ref);
    const response = await this.transport.request(ref.registry, {
      method: "GET",
      path: `/v2/${ref.repository}/manifests/${identifier}`,
      headers: { accept: expected?.mediaType ?? MANIFEST_ACCEPT },
      scopes: [pullScope(ref.repository)],
      expect: [200],
      what,
    });
    const limit =
      expected === undefined
        ? this.transport.limits.manifest
        : Math.min(expected.size, this.transport.limits.manifest);
    const bytes = await readBody(response.body, limit, what);
    const digestWanted = expected?.digest ?? ref.digest;
    let digest: Digest;
    if (digestWanted !== undefined) {
      digest = parseDigest(digestWanted);
      verifyBytes(bytes, digest, expected?.size, what);
    } else {
      digest = digestOf(bytes);
      const header = response.headers["docker-content-digest"];
      if (header !== undefined) {
        const claimed = parseDigest(header);
        verifyBytes(bytes, claimed, undefined, what);
        digest = claimed;
      }
    }
    const contentType = contentTypeOf(response.headers["content-type"]);
    const document = parseManifestDocument(bytes, expected?.mediaType ?? contentType, what);
    return { descriptor: { mediaType: document.mediaType, digest, size: bytes.length }, bytes, document };
  }

  async putManifest(ref: Reference, bytes: Buffer, mediaType: string): Promise<Digest> {
    const digest = digestOf(bytes);
    const response = await this.transport.request(ref.registry, {
      method: "PUT",
      path: `/v2/${ref.repository}/manifests/${ref.tag ?? digest}`,
      headers: { "content-type": mediaType },
      body: bytes,
      scopes: [pushScope(ref.repository)],
      expect: [200, 201, 202],
      what: `Pushing the manifest of ${formatReference(ref)}`,
    });
    await drain(response.body);
    const header = response.headers["docker-content-digest"];
    if (header !== undefined && header !== digest) {
      throw new DigestMismatchError(
        `The registry stored the manifest of ${formatReference(ref)} as ${header}, not ${digest}.`,
      );
    }
    return digest;
  }

  async headBlob(ref: Reference, digest: Digest): Promise<number | undefined> {
    const response = await this.transport.request(ref.registry, {
      method: "HEAD",
      path: `/v2/${ref.repository}/blobs/${digest}`,
      scopes: [pullScope(ref.repository)],
      expect: [200, 404],
      what: `Blob ${digest} in ${repositoryName(ref)}`,
    });
    await drain(response.body);
    if (response.status === 404) return undefined;
    const size = Number(response.headers["content-length"]);
    return Number.isSafeInteger(size) ? size : -1;
  }

  /**
   * Streams a blob's bytes in order from the start. The caller verifies the digest; this only
   * guarantees the size bound.
   */
  async *blobChunks(
    ref: Reference,
    descriptor: Descriptor,
    onRequest?: (range: string | undefined) => void,
  ): AsyncGenerator<Buffer> {
    yield* (await this.readBlob(ref, descriptor, 0, onRequest)).chunks;
  }

  /**
   * A blob's bytes from `offset` on (what an interrupted download kept), asked for with a Range
   * request. A registry that ignores Range (200), cannot serve it (416) or answers another range
   * than asked gives the whole blob instead, and `start` says 0: the caller starts over rather
   * than trusting a body it cannot line up. A connection that breaks later is resumed the same
   * way; only a 206 whose Content-Range starts where we stopped continues it, otherwise the full
   * body is fetched again and the bytes already delivered are skipped. The caller verifies the
   * digest; this only guarantees the size bound.
   */
  async readBlob(
    ref: Reference,
    descriptor: Descriptor,
    offset = 0,
    onRequest?: (range: string | undefined) => void,
  ): Promise<BlobRead> {
    const digest = parseDigest(descriptor.digest);
    const what = `Blob ${digest} of ${repositoryName(ref)}`;
    const from = offset > 0 && offset < descriptor.size ? offset : 0;
    let response = await this.getBlob(ref, digest, from, what, onRequest);
    let start = from;
    if (from > 0 && !continuesAt(response, from, descriptor.size)) {
      start = 0;
      if (response.status !== 200) {
        await drain(response.body);
        response = await this.getBlob(ref, digest, 0, what, onRequest);
      }
    }
    return { start, chunks: this.blobBody(ref, descriptor, response, start, what, onRequest) };
  }

  private getBlob(
    ref: Reference,
    digest: Digest,
    from: number,
    what: string,
    onRequest: ((range: string | undefined) => void) | undefined,
  ): Promise<RegistryResponse> {
    const range = from > 0 ? `bytes=${from}-` : undefined;
    onRequest?.(range);
    return this.transport.request(ref.registry, {
      method: "GET",
      path: `/v2/${ref.repository}/blobs/${digest}`,
      headers: range === undefined ? {} : { range },
      scopes: [pullScope(ref.repository)],
      expect: range === undefined ? [200, 206] : [200, 206, 416],
      what,
    });
  }

  private async *blobBody(
    ref: Reference,
    descriptor: Descriptor,
    first: RegistryResponse,
    start: number,
    what: string,
    onRequest: ((range: string | undefined) => void) | undefined,
  ): AsyncGenerator<Buffer> {
    const digest = parseDigest(descriptor.digest);
    let response: RegistryResponse | undefined = first;
    let delivered = start;
    let failures = 0;
    let useRange = true;
    for (;;) {
      let skip = 0;
      if (response === undefined) {
        response = await this.getBlob(ref, digest, useRange ? delivered : 0, what, onRequest);
        if (useRange && !continuesAt(response, delivered, descriptor.size)) {
          if (response.status !== 200) {
            await drain(response.body);
            useRange = false;
            response = undefined;
            continue;
          }
          skip = delivered;
        } else if (!useRange) {
          skip = delivered;
        }
      }
      const body = response.body;
      try {
        for await (const raw of bodyChunks(body)) {
          let chunk = raw;
          if (skip > 0) {
            const dropped = Math.min(skip, chunk.length);
            skip -= dropped;
            chunk = chunk.subarray(dropped);
            if (chunk.length === 0) continue;
          }
          if (delivered + chunk.length > descriptor.size) {
            body.destroy();
            throw new SizeLimitError(
              `${what} is larger than its descriptor's ${descriptor.size} bytes; refusing the extra data.`,
            );
          }
          delivered += chunk.length;
          yield chunk;
        }
        // A body that ended cleanly is complete as far as HTTP knows; if it is short or wrong
        // (an error page), the digest check reports it rather than us fetching it forever.
        return;
      } catch (error) {
        if (error instanceof OciError) throw error;
        failures++;
        if (failures > RESUME_ATTEMPTS) {
          throw new NetworkError(
            `${what}: the download failed after ${delivered} of ${descriptor.size} bytes (${(error as Error).message}).`,
            {
              hint: "Check your network and try again; the pull resumes where it can.",
              cause: error,
            },
          );
        }
        body.destroy();
        response = undefined;
        await delay(Math.min(100 * 2 ** failures, 2000));
      }
    }
  }

  /** Uploads a blob unless the repository already has it; mounts across repositories when possible. */
  async uploadBlob(
    ref: Reference,
    descriptor: Descriptor,
    open: () => Readable,
    options: UploadOptions = {},
  ): Promise<"exists" | "mounted" | "uploaded"> {
    const digest = parseDigest(descriptor.digest);
    if ((await this.headBlob(ref, digest)) !== undefined) return "exists";
    const what = `Uploading blob ${digest} to ${repositoryName(ref)}`;
    const scopes = [pushScope(ref.repository), ...(options.mountFrom ? [pullScope(options.mountFrom)] : [])];
    const start = new URLSearchParams();
    if (options.mountFrom !== undefined && options.mountFrom !== ref.repository) {
      start.set("mount", digest);
      start.set("from", options.mountFrom);
    }
    const query = start.toString();
    const started = await this.transport.request(ref.registry, {
      method: "POST",
      path: `/v2/${ref.repository}/blobs/uploads/${query === "" ? "" : `?${query}`}`,
      scopes,
      expect: [201, 202],
      what,
    });
    await drain(started.body);
    if (started.status === 201) return "mounted";
    let location = this.location(started, what);

    if (options.chunkSize !== undefined && options.chunkSize > 0) {
      let offset = 0;
      for await (const chunk of chunked(open(), options.chunkSize)) {
        const response = await this.transport.request(ref.registry, {
          method: "PATCH",
          path: location,
          headers: {
            "content-type": "application/octet-stream",
            "content-range": `${offset}-${offset + chunk.length - 1}`,
            "content-length": String(chunk.length),
          },
          body: chunk,
          scopes,
          expect: [202, 204],
          what,
        });
        await drain(response.body);
        offset += chunk.length;
        location = this.location(response, what);
      }
      const finish = await this.transport.request(ref.registry, {
        method: "PUT",
        path: withQuery(location, "digest", digest),
        headers: { "content-length": "0" },
        scopes,
        expect: [201, 204],
        what,
      });
      await drain(finish.body);
      return "uploaded";
    }

    const response = await this.transport.request(ref.registry, {
      method: "PUT",
      path: withQuery(location, "digest", digest),
      headers: { "content-type": "application/octet-stream", "content-length": String(descriptor.size) },
      body: open,
      scopes,
      expect: [201, 204],
      what,
    });
    await drain(response.body);
    return "uploaded";
  }

  private location(
    response: { headers: Record<string, string | undefined>; url: string },
    what: string,
  ): string {
    const location = response.headers.location;
    if (location === undefined)
      throw new InvalidManifestError(`${what}: the registry did not say where to upload.`);
    return new URL(location, response.url).toString();
  }

  /** All tags of a repository, following `Link` pagination. */
  async listTags(ref: Reference): Promise<string[]> {
    const tags: string[] = [];
    let path: string | undefined = `/v2/${ref.repository}/tags/list?n=1000`;
    for (let pages = 0; path !== undefined && pages < 1000; pages++) {
      const response = await this.transport.request(ref.registry, {
        method: "GET",
        path,
        scopes: [pullScope(ref.repository)],
        expect: [200],
        what: `The tags of ${repositoryName(ref)}`,
      });
      const body = await readBody(
        response.body,
        this.transport.limits.manifest,
        `The tag list of ${repositoryName(ref)}`,
      );
      const parsed = JSON.parse(body.toString("utf8")) as { tags?: string[] | null };
      tags.push(...(parsed.tags ?? []));
      const link = /<([^>]+)>\s*;\s*rel="?next"?/.exec(response.headers.link ?? "");
      path = link?.[1];
    }
    return tags;
  }
}

function withQuery(location: string, key: string, value: string): string {
  const url = new URL(location);
  url.searchParams.set(key, value);
  return url.toString();
}

/** Re-slices a stream into chunks of exactly `size` bytes (the last may be shorter). */
async function* chunked(stream: Readable, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    pending.push(chunk);
    pendingBytes += chunk.length;
    while (pendingBytes >= size) {
      const all = Buffer.concat(pending);
      yield all.subarray(0, size);
      pending = [all.subarray(size)];
      pendingBytes = all.length - size;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending);
}
