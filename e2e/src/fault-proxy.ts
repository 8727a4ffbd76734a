import {
  createServer,
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { setTimeout as delay } from "node:timers/promises";

export type FaultKind =
  | "reset"
  | "status"
  | "retry-after"
  | "truncate"
  | "flip"
  | "trickle"
  | "redirect"
  | "html"
  | "ignore-range";

export interface FaultMatch {
  /** Case-insensitive; omit to match any method. Note GET faults do not match HEAD. */
  method?: string;
  /** Tested against the request's path including the query string; a string is compiled as a RegExp. */
  path?: RegExp | string;
  /** How many matching requests the fault applies to. Default 1; `Infinity` for all. */
  times?: number;
}

export type FaultSpec =
  /**
   * Sends the headers and part of the body (default half), then destroys the socket without ending
   * the response. With `rst: true` it sends a TCP RST instead of a FIN; the kernel may then discard
   * bytes still in flight, so the client can receive fewer than `afterBytes`.
   */
  | { kind: "reset"; afterBytes?: number; afterFraction?: number; rst?: boolean }
  /** Answers without contacting the upstream. */
  | { kind: "status"; status: number; body?: string; headers?: Record<string, string> }
  /** Answers 429 (or `status`) with `Retry-After: seconds`, without contacting the upstream. */
  | { kind: "retry-after"; seconds: number; status?: number }
  /** Full Content-Length, part of the body, then a clean FIN. Default: half the body. */
  | { kind: "truncate"; afterBytes?: number; afterFraction?: number }
  /** Inverts one byte of the body; default is the middle byte. */
  | { kind: "flip"; offset?: number }
  | { kind: "trickle"; bytesPerSecond: number }
  /** 307 (or `status`) to the same path and query on another origin, e.g. an origin recorder. */
  | { kind: "redirect"; to: string; status?: number }
  /** 200 (or `status`) with an HTML page, the way a captive portal or misconfigured CDN answers. */
  | { kind: "html"; status?: number; body?: string }
  /** Drops the Range header on the way upstream, as a registry or CDN without Range support: 200, whole body. */
  | { kind: "ignore-range" };

export type Fault = FaultMatch & FaultSpec;

/** Live view of an installed fault, so tests can assert it actually fired. */
export interface ActiveFault {
  readonly fault: Fault;
  /** Matching requests still to be faulted. */
  readonly remaining: number;
  /** Requests this fault has been applied to. */
  readonly hits: number;
}

export interface RecordedRequest {
  method: string;
  /** Path plus query string, as received. */
  path: string;
  headers: IncomingHttpHeaders;
  /** Whether an Authorization header arrived (its value is in `headers`). */
  authorization: boolean;
  range?: string;
  /** The fault applied to this request, if any. */
  fault?: FaultKind;
  /** Status sent to the client (0 if the connection failed before headers). */
  status: number;
  /** Body bytes handed to the client's connection so far (live while the response is sent). */
  bytes: number;
}

export interface ProxyOptions {
  /** Upstream base URL (origin only), e.g. `http://127.0.0.1:5000`. */
  target: string;
  /** Extra CA for an https upstream. */
  ca?: string;
  /** Headers added to every upstream request, e.g. credentials the client correctly withheld. */
  upstreamHeaders?: Record<string, string>;
  /**
   * Hostname used in `url`; the socket always binds 127.0.0.1. `localhost` gives a different
   * origin string for clients that compare hostnames rather than ports.
   */
  hostname?: "127.0.0.1" | "localhost";
}

export interface RecordingProxy {
  url: string;
  host: string;
  requests: RecordedRequest[];
  stop(): Promise<void>;
}

export interface FaultProxy extends RecordingProxy {
  addFault(fault: Fault): ActiveFault;
  clearFaults(): void;
}

/** RFC 9110 hop-by-hop headers plus Host, which we set for the upstream ourselves. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
]);

function forwardableHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  }
  return out;
}

function readAll(stream: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => resolve(Buffer.concat(chunks)));
    stream.on("error", reject);
  });
}

function cutoff(length: number, afterBytes: number | undefined, afterFraction: number | undefined): number {
  const n = afterBytes ?? Math.floor(length * (afterFraction ?? 0.5));
  return Math.max(0, Math.min(length, n));
}

/** Resolves once everything written so far has been handed to the kernel. */
function flushed(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) resolve();
    else socket.write(Buffer.alloc(0), () => resolve());
  });
}

/** Counts the body bytes a response writes into `record.bytes`, however it writes them. */
function countBody(res: ServerResponse, record: RecordedRequest): void {
  const count = (chunk: unknown) => {
    if (typeof chunk === "string") record.bytes += Buffer.byteLength(chunk);
    else if (chunk instanceof Uint8Array) record.bytes += chunk.length;
  };
  const write = res.write;
  const end = res.end;
  res.write = function (this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
    count(chunk);
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof res.write;
  res.end = function (this: ServerResponse, chunk?: unknown, ...rest: unknown[]) {
    if (typeof chunk !== "function") count(chunk);
    return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, ...rest);
  } as typeof res.end;
}

/** Drops g/y, whose lastIndex state would make `test()` skip every other matching request. */
function statelessRegExp(pattern: RegExp | string): RegExp {
  return typeof pattern === "string"
    ? new RegExp(pattern)
    : new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ""));
}

interface InstalledFault {
  fault: Fault;
  pattern: RegExp | undefined;
  remaining: number;
  hits: number;
}

async function startProxy(options: ProxyOptions, faultsEnabled: boolean): Promise<FaultProxy> {
  const target = new URL(options.target);
  if (target.pathname !== "/" || target.search !== "") {
    throw new Error(`proxy target must be an origin without path, got ${options.target}`);
  }
  const upstreamOrigin = target.origin;
  const isHttps = target.protocol === "https:";
  // Our own agent so stop() can drop pooled upstream sockets instead of leaving them to the global one.
  const agent = isHttps
    ? new HttpsAgent({ keepAlive: true, ...(options.ca ? { ca: options.ca } : {}) })
    : new HttpAgent({ keepAlive: true });
  const requests: RecordedRequest[] = [];
  const faults: InstalledFault[] = [];
  let ownOrigin = "";

  function takeFault(method: string, path: string): Fault | undefined {
    for (const f of faults) {
      if (f.remaining <= 0) continue;
      if (f.fault.method !== undefined && f.fault.method.toUpperCase() !== method) continue;
      if (f.pattern !== undefined && !f.pattern.test(path)) continue;
      f.remaining--;
      f.hits++;
      return f.fault;
    }
    return undefined;
  }

  function rewriteLocation(value: string): string {
    // Upload URLs from the registry are absolute and name the upstream; clients must stay on the proxy.
    try {
      const loc = new URL(value);
      if (loc.origin === upstreamOrigin) return `${ownOrigin}${loc.pathname}${loc.search}${loc.hash}`;
    } catch {
      // relative Location: already resolves against the proxy
    }
    return value;
  }

  function responseHeaders(upstream: IncomingMessage): OutgoingHttpHeaders {
    const out = forwardableHeaders(upstream.headers);
    for (const name of ["location", "content-location"]) {
      const v = out[name];
      if (typeof v === "string") out[name] = rewriteLocation(v);
    }
    return out;
  }

  function forward(req: IncomingMessage, res: ServerResponse, fault?: Fault): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const headers = forwardableHeaders(req.headers);
      if (fault?.kind === "ignore-range") delete headers.range;
      headers.host = target.host;
      Object.assign(headers, options.upstreamHeaders ?? {});
      const upstreamReq = (isHttps ? httpsRequest : httpRequest)(
        {
          protocol: target.protocol,
          hostname: target.hostname,
          port: target.port,
          method: req.method,
          path: req.url,
          headers,
          agent,
        },
        resolve,
      );
      upstreamReq.on("error", reject);
      res.on("close", () => {
        if (!res.writableFinished) upstreamReq.destroy();
      });
      req.pipe(upstreamReq);
    });
  }

  function answerLocally(
    req: IncomingMessage,
    res: ServerResponse,
    record: RecordedRequest,
    status: number,
    headers: Record<string, string>,
    body: string,
  ): void {
    // The client may still be sending an upload body; it has to be consumed for the reply to land.
    req.resume();
    record.status = status;
    res.writeHead(status, { ...headers, "content-length": Buffer.byteLength(body) });
    res.end(body);
  }

  async function applyBodyFault(
    fault: Fault,
    upstream: IncomingMessage,
    res: ServerResponse,
    record: RecordedRequest,
  ): Promise<void> {
    // Buffering lets us send an exact Content-Length even when the upstream answered chunked.
    const body = await readAll(upstream);
    const headers = responseHeaders(upstream);
    headers["content-length"] = body.length;
    const status = upstream.statusCode ?? 502;
    record.status = status;
    const socket = res.socket;

    switch (fault.kind) {
      case "reset": {
        const n = cutoff(body.length, fault.afterBytes, fault.afterFraction);
        res.writeHead(status, headers);
        res.flushHeaders();
        if (n > 0) res.write(body.subarray(0, n));
        if (socket) {
          await flushed(socket);
          if (fault.rst) socket.resetAndDestroy();
          else socket.destroy();
        }
        return;
      }
      case "truncate": {
        const n = cutoff(body.length, fault.afterBytes, fault.afterFraction);
        headers.connection = "close";
        res.writeHead(status, headers);
        res.flushHeaders();
        if (n > 0) res.write(body.subarray(0, n));
        // A FIN after the partial body: the client sees a clean close, just too early.
        socket?.end();
        return;
      }
      case "flip": {
        const copy = Buffer.from(body);
        const offset = fault.offset ?? Math.floor(copy.length / 2);
        if (offset < copy.length) copy[offset] = (copy[offset] ?? 0) ^ 0xff;
        res.writeHead(status, headers);
        res.end(copy);
        return;
      }
      case "trickle": {
        const tickMs = 50;
        const slice = Math.max(1, Math.floor((fault.bytesPerSecond * tickMs) / 1000));
        res.writeHead(status, headers);
        res.flushHeaders();
        for (let off = 0; off < body.length; off += slice) {
          if (res.destroyed) return;
          res.write(body.subarray(off, off + slice));
          if (off + slice < body.length) await delay(tickMs);
        }
        res.end();
        return;
      }
      default:
        throw new Error(`not a body fault: ${fault.kind}`);
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? "GET").toUpperCase();
    const path = req.url ?? "/";
    const record: RecordedRequest = {
      method,
      path,
      headers: { ...req.headers },
      authorization: req.headers.authorization !== undefined,
      status: 0,
      bytes: 0,
    };
    if (req.headers.range !== undefined) record.range = req.headers.range;
    requests.push(record);
    countBody(res, record);

    const fault = faultsEnabled ? takeFault(method, path) : undefined;
    if (fault) record.fault = fault.kind;

    switch (fault?.kind) {
      case "status":
        answerLocally(
          req,
          res,
          record,
          fault.status,
          { "content-type": "application/json", ...(fault.headers ?? {}) },
          fault.body ??
            JSON.stringify({
              errors: [{ code: "UNKNOWN", message: `injected fault: status ${fault.status}` }],
            }),
        );
        return;
      case "retry-after":
        answerLocally(
          req,
          res,
          record,
          fault.status ?? 429,
          { "content-type": "application/json", "retry-after": String(fault.seconds) },
          JSON.stringify({ errors: [{ code: "TOOMANYREQUESTS", message: "injected fault: slow down" }] }),
        );
        return;
      case "redirect":
        answerLocally(
          req,
          res,
          record,
          fault.status ?? 307,
          { location: `${fault.to.replace(/\/+$/, "")}${path}`, "content-type": "text/plain" },
          "",
        );
        return;
      case "html":
        answerLocally(
          req,
          res,
          record,
          fault.status ?? 200,
          { "content-type": "text/html; charset=utf-8" },
          fault.body ??
            "<!DOCTYPE html>\n<html><head><title>Error</title></head><body><h1>Something went wrong</h1></body></html>\n",
        );
        return;
      default:
        break;
    }

    let upstream: IncomingMessage;
    try {
      upstream = await forward(req, res, fault);
    } catch (err) {
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      const message = `fault proxy: upstream ${upstreamOrigin} failed: ${String(err)}`;
      record.status = 502;
      res.writeHead(502, { "content-type": "text/plain", "content-length": Buffer.byteLength(message) });
      res.end(message);
      return;
    }

    if (fault !== undefined && fault.kind !== "ignore-range") {
      await applyBodyFault(fault, upstream, res, record);
      return;
    }

    record.status = upstream.statusCode ?? 502;
    res.writeHead(record.status, responseHeaders(upstream));
    upstream.pipe(res);
    upstream.on("error", () => res.destroy());
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      // Mid-response failures can only be reported by tearing the connection down.
      res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = `${options.hostname ?? "127.0.0.1"}:${port}`;
  ownOrigin = `http://${host}`;

  let stopping: Promise<void> | undefined;
  return {
    url: ownOrigin,
    host,
    requests,
    addFault(fault: Fault): ActiveFault {
      const installed: InstalledFault = {
        fault,
        pattern: fault.path === undefined ? undefined : statelessRegExp(fault.path),
        remaining: fault.times ?? 1,
        hits: 0,
      };
      faults.push(installed);
      return {
        fault,
        get remaining() {
          return installed.remaining;
        },
        get hits() {
          return installed.hits;
        },
      };
    },
    clearFaults() {
      faults.length = 0;
    },
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      });
      return stopping;
    },
  };
}

/** A reverse proxy to `target` that can inject faults; every request is recorded. */
export function startFaultProxy(options: ProxyOptions): Promise<FaultProxy> {
  return startProxy(options, true);
}

/**
 * A plain recording reverse proxy on its own port: the "other origin" a redirect fault points at,
 * so tests can assert which headers (Authorization!) a client carried across the redirect.
 */
export async function startOriginRecorder(options: ProxyOptions): Promise<RecordingProxy> {
  const { url, host, requests, stop } = await startProxy(options, false);
  return { url, host, requests, stop };
}
