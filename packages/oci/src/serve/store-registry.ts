import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rm, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { isDigest, parseDigest } from "../digest.js";
import type { Descriptor } from "../manifest.js";
import type { OciLayout } from "../store/layout.js";

/**
 * The store's blobs as an OCI distribution registry on loopback, for one program that speaks
 * only registries (the CNB lifecycle during a build): it reads the images it is shown and
 * pushes into the store, without the layout's decompress-and-hash round trips. Scoped on
 * purpose: random credentials, only manifests it was shown or that were pushed to it, every
 * pushed blob verified against its digest before it is named, nothing deleted.
 */

/** Manifests are small; anything larger is not one. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;

interface Upload {
  readonly file: string;
  readonly hash: ReturnType<typeof createHash>;
  size: number;
  /** Requests of one session arrive one after another; a second at once is refused. */
  busy: boolean;
}

export class StoreRegistry {
  readonly username = "locald";
  readonly password = randomBytes(24).toString("base64url");
  private readonly manifests = new Map<string, Descriptor>();
  private readonly tags = new Map<string, Descriptor>();
  private readonly uploads = new Map<string, Upload>();

  private constructor(
    private readonly layout: OciLayout,
    private readonly server: Server,
    /** `127.0.0.1:PORT`. */
    readonly host: string,
  ) {}

  /** Listens on a random loopback port until `stop`. */
  static async start(layout: OciLayout): Promise<StoreRegistry> {
    let registry: StoreRegistry | undefined;
    const server = createServer((request, response) => {
      registry?.handle(request, response).catch((error: Error) => {
        if (!response.headersSent) fail(response, 500, "UNKNOWN", error.message);
        else response.destroy();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    registry = new StoreRegistry(layout, server, `127.0.0.1:${port}`);
    return registry;
  }

  /** `repository:tag` answers with `manifest` (whose blob is in the store). */
  show(repository: string, tag: string, manifest: Descriptor): void {
    this.tags.set(`${repository}:${tag}`, manifest);
    this.manifests.set(manifest.digest, manifest);
  }

  /** What was pushed (or shown) as `repository:tag`. */
  tagged(repository: string, tag: string): Descriptor | undefined {
    return this.tags.get(`${repository}:${tag}`);
  }

  /** Closes the listener and drops what unfinished uploads left. */
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const upload of this.uploads.values()) await rm(upload.file, { force: true });
    this.uploads.clear();
  }

  private authorized(request: IncomingMessage): boolean {
    const header = request.headers.authorization ?? "";
    if (!header.startsWith("Basic ")) return false;
    const given = Buffer.from(header.slice(6), "base64");
    const expected = Buffer.from(`${this.username}:${this.password}`);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    response.setHeader("Docker-Distribution-API-Version", "registry/2.0");
    if (!this.authorized(request)) {
      request.resume();
      response.setHeader("WWW-Authenticate", 'Basic realm="locald"');
      return fail(response, 401, "UNAUTHORIZED", "authentication required");
    }
    const url = new URL(request.url ?? "/", "http://registry");
    const path = url.pathname;
    const method = request.method ?? "GET";
    if (path === "/v2/" || path === "/v2") {
      request.resume();
      return send(response, 200, "{}", "application/json");
    }
    const upload = /^\/v2\/(.+)\/blobs\/uploads\/([\w-]*)$/.exec(path);
    if (upload !== null && NAME.test(upload[1] as string))
      return this.handleUpload(method, upload[1] as string, upload[2] as string, url, request, response);
    const match = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    if (match === null || !NAME.test(match[1] as string)) {
      request.resume();
      return fail(response, 404, "NAME_UNKNOWN", "no such repository");
    }
    const [, repository, kind, reference] = match as unknown as [string, string, string, string];
    if (kind === "manifests") {
      if (method === "PUT") return this.putManifest(repository, reference, request, response);
      request.resume();
      if (method !== "GET" && method !== "HEAD") return fail(response, 405, "UNSUPPORTED", "not here");
      const descriptor = isDigest(reference)
        ? this.manifests.get(reference)
        : this.tags.get(`${repository}:${reference}`);
      if (descriptor === undefined) return fail(response, 404, "MANIFEST_UNKNOWN", "manifest unknown");
      return this.sendBlob(descriptor.digest, descriptor.mediaType, method, response);
    }
    request.resume();
    if ((method !== "GET" && method !== "HEAD") || !isDigest(reference))
      return fail(response, method === "GET" || method === "HEAD" ? 400 : 405, "UNSUPPORTED", "not here");
    return this.sendBlob(reference, "application/octet-stream", method, response);
  }

  private async blobSize(digest: string): Promise<number | undefined> {
    const info = await stat(this.layout.blobPath(parseDigest(digest))).catch(() => undefined);
    return info?.isFile() ? info.size : undefined;
  }

  private async sendBlob(
    digest: string,
    mediaType: string,
    method: string,
    response: ServerResponse,
  ): Promise<void> {
    const path = this.layout.blobPath(parseDigest(digest));
    const size = await this.blobSize(digest);
    if (size === undefined) return fail(response, 404, "BLOB_UNKNOWN", "blob unknown");
    response.writeHead(200, {
      "Content-Type": mediaType,
      "Content-Length": String(size),
      "Docker-Content-Digest": digest,
    });
    if (method === "HEAD") return void response.end();
    await new Promise<void>((resolve, reject) => {
      const stream = createReadStream(path);
      stream.once("error", reject);
      response.once("close", resolve);
      stream.pipe(response);
    });
  }

  private async putManifest(
    repository: string,
    reference: string,
    request: IncomingMessage,
    response: ServerResponse,
  ): Promise<void> {
    if (!isDigest(reference) && !TAG.test(reference)) {
      request.resume();
      return fail(response, 400, "TAG_INVALID", "invalid tag");
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of request as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_MANIFEST_BYTES) return fail(response, 413, "SIZE_INVALID", "manifest too large");
      chunks.push(chunk);
    }
    const bytes = Buffer.concat(chunks);
    const mediaType = (request.headers["content-type"] ?? "").split(";")[0]?.trim() ?? "";
    let parsed: { mediaType?: unknown };
    try {
      parsed = JSON.parse(bytes.toString("utf8")) as { mediaType?: unknown };
    } catch {
      return fail(response, 400, "MANIFEST_INVALID", "not JSON");
    }
    const type = mediaType || (typeof parsed.mediaType === "string" ? parsed.mediaType : "");
    const descriptor = await this.layout.writeBytes(bytes, type);
    if (isDigest(reference) && reference !== descriptor.digest)
      return fail(response, 400, "DIGEST_INVALID", "digest does not match the manifest");
    this.manifests.set(descriptor.digest, descriptor);
    if (!isDigest(reference)) this.tags.set(`${repository}:${reference}`, descriptor);
    response.writeHead(201, {
      Location: `/v2/${repository}/manifests/${descriptor.digest}`,
      "Docker-Content-Digest": descriptor.digest,
      "Content-Length": "0",
    });
    response.end();
  }

  private async handleUpload(
    method: string,
    repository: string,
    id: string,
    url: URL,
    request: IncomingMessage,
    response: ServerResponse,
  ): Promise<void> {
    if (method === "POST" && id === "") {
      const mount = url.searchParams.get("mount");
      if (mount !== null && isDigest(mount) && (await this.blobSize(mount)) !== undefined) {
        request.resume();
        return created(response, repository, mount);
      }
      const session = randomUUID();
      const file = await this.layout.createTempFile();
      this.uploads.set(session, { file, hash: createHash("sha256"), size: 0, busy: false });
      const digest = url.searchParams.get("digest");
      if (digest !== null) return this.finish(repository, session, digest, request, response);
      request.resume();
      return accepted(response, repository, session, 0);
    }
    const session = this.uploads.get(id);
    if (session === undefined || session.busy) {
      request.resume();
      return fail(response, 404, "BLOB_UPLOAD_UNKNOWN", "upload unknown");
    }
    if (method === "DELETE") {
      request.resume();
      this.uploads.delete(id);
      await rm(session.file, { force: true });
      response.writeHead(204);
      return void response.end();
    }
    if (method === "PATCH") {
      await this.append(session, request);
      return accepted(response, repository, id, session.size);
    }
    if (method === "PUT")
      return this.finish(repository, id, url.searchParams.get("digest"), request, response);
    if (method === "GET") {
      request.resume();
      return accepted(response, repository, id, session.size, 204);
    }
    request.resume();
    return fail(response, 405, "UNSUPPORTED", "not here");
  }

  private async append(session: Upload, request: IncomingMessage): Promise<void> {
    session.busy = true;
    const handle = await open(session.file, "a");
    try {
      for await (const chunk of request as AsyncIterable<Buffer>) {
        session.hash.update(chunk);
        session.size += chunk.length;
        await handle.write(chunk);
      }
    } finally {
      await handle.close();
      session.busy = false;
    }
  }

  /** The last bytes of an upload, then its digest checked and the blob named by it. */
  private async finish(
    repository: string,
    id: string,
    digest: string | null,
    request: IncomingMessage,
    response: ServerResponse,
  ): Promise<void> {
    const session = this.uploads.get(id) as Upload;
    await this.append(session, request);
    this.uploads.delete(id);
    try {
      const actual = `sha256:${session.hash.digest("hex")}`;
      if (digest === null || !isDigest(digest) || digest !== actual)
        return fail(response, 400, "DIGEST_INVALID", `the upload's digest is ${actual}`);
      await this.layout.adoptBlob(session.file, parseDigest(actual));
      return created(response, repository, actual);
    } finally {
      await rm(session.file, { force: true });
    }
  }
}

function send(response: ServerResponse, status: number, body: string, type: string): void {
  response.writeHead(status, { "Content-Type": type, "Content-Length": String(Buffer.byteLength(body)) });
  response.end(body);
}

function fail(response: ServerResponse, status: number, code: string, message: string): void {
  send(response, status, JSON.stringify({ errors: [{ code, message }] }), "application/json");
}

function created(response: ServerResponse, repository: string, digest: string): void {
  response.writeHead(201, {
    Location: `/v2/${repository}/blobs/${digest}`,
    "Docker-Content-Digest": digest,
    "Content-Length": "0",
  });
  response.end();
}

function accepted(
  response: ServerResponse,
  repository: string,
  id: string,
  size: number,
  status = 202,
): void {
  response.writeHead(status, {
    Location: `/v2/${repository}/blobs/uploads/${id}`,
    Range: `0-${Math.max(0, size - 1)}`,
    "Docker-Upload-UUID": id,
    "Content-Length": "0",
  });
  response.end();
}
