import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { PassThrough, pipeline, type Readable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import { rootCertificates } from "node:tls";
import {
  AuthenticationError,
  NetworkError,
  NotFoundError,
  OciError,
  RegistryError,
  SizeLimitError,
  UnsafeRedirectError,
} from "../errors.js";
import { registryApiHost } from "../reference.js";
import {
  anonymous,
  type Challenge,
  type CredentialProvider,
  type Credentials,
  parseChallenge,
} from "./auth.js";
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

export interface TransportOptions {
  credentials?: CredentialProvider;
  /** Hosts (`host[:port]`) to reach over plain HTTP or HTTPS without verification. */
  insecureRegistries?: readonly string[];
  /** Extra PEM certificates to trust besides the system roots. */
  caCertificates?: readonly (string | Buffer)[];
  /** Attempts after the first, for network errors, 5xx and 429. */
  retries?: number;
  retryBaseDelayMs?: number;
  /** Longest `Retry-After` we honour; longer asks are failed rather than waited out. */
  maxRetryAfterSeconds?: number;
  limits?: Partial<SizeLimits>;
  userAgent?: string;
  /** Milliseconds without body data before a download is treated as stalled. */
  bodyTimeoutMs?: number;
  onTransportEvent?: (event: TransportEvent) => void;
}

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

const LOOPBACK = /^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?$/;
const RETRYABLE_STATUS = new Set([500, 502, 503, 504]);
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 10;

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(", ") : value;
}

function flattenHeaders(
  headers: Record<string, string | string[] | undefined>,
): Record<string, string | undefined> {
  const flat: Record<string, string | undefined> = {};
  for (const [key, value] of Object.entries(headers)) flat[key.toLowerCase()] = headerValue(value);
  return flat;
}

/** Errors after which the same request may succeed. */
function isTransientNetworkError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code ?? "";
  return /^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN|ENETUNREACH|EHOSTUNREACH)$/.test(code);
}

function isTlsProtocolMismatch(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code ?? "";
  return (
    code === "ERR_SSL_WRONG_VERSION_NUMBER" ||
    code === "EPROTO" ||
    /wrong version number|packet length too long/i.test(String((error as Error)?.message))
  );
}

function describeNetworkError(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  return e.code ? `${e.code}: ${e.message}` : String(e?.message ?? error);
}

/** Parses `Retry-After` (seconds or HTTP date) into milliseconds. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  // Only an IMF-fixdate (e.g. "Wed, 21 Oct 2015 07:28:00 GMT"); Date.parse reads "-5" as a year.
  if (!/^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(trimmed)) return undefined;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

interface CachedToken {
  token: string;
  expiresAt: number;
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

/**
 * The one place for HTTP policy: scheme choice, trust, authentication challenges and token
 * caching, redirects (credentials never cross origins, no HTTPS→HTTP), retries with backoff
 * and `Retry-After`, and caps on buffered bodies.
 */
export class Transport {
  readonly limits: SizeLimits;
  private readonly credentials: CredentialProvider;
  private readonly insecure: ReadonlySet<string>;
  private readonly plainAgent: HttpAgent;
  private readonly verifiedAgent: HttpsAgent;
  private readonly unverifiedAgent: HttpsAgent;
  private readonly idleTimeoutMs: number;
  private readonly retries: number;
  private readonly retryBaseDelayMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly userAgent: string;
  private readonly onEvent: (event: TransportEvent) => void;
  private readonly origins = new Map<string, Promise<string>>();
  private readonly challenges = new Map<string, Challenge | null>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly credentialCache = new Map<string, Promise<Credentials | undefined>>();

  constructor(options: TransportOptions = {}) {
    this.credentials = options.credentials ?? anonymous;
    this.insecure = new Set(options.insecureRegistries ?? []);
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.retries = options.retries ?? 4;
    this.retryBaseDelayMs = options.retryBaseDelayMs ?? 250;
    this.maxRetryAfterMs = (options.maxRetryAfterSeconds ?? 60) * 1000;
    this.userAgent = options.userAgent ?? "locald/0.1";
    this.onEvent = options.onTransportEvent ?? (() => {});
    const ca =
      options.caCertificates && options.caCertificates.length > 0
        ? [...rootCertificates, ...options.caCertificates.map(String)]
        : undefined;
    this.idleTimeoutMs = options.bodyTimeoutMs ?? 60_000;
    const pool = { keepAlive: true, maxSockets: 16 };
    this.plainAgent = new HttpAgent(pool);
    this.verifiedAgent = new HttpsAgent({ ...pool, ...(ca ? { ca } : {}) });
    this.unverifiedAgent = new HttpsAgent({ ...pool, rejectUnauthorized: false });
  }

  private get agents(): (HttpAgent | HttpsAgent)[] {
    return [this.plainAgent, this.verifiedAgent, this.unverifiedAgent];
  }

  private destroyed = false;

  /** Closes the pooled connections; call it once no request or body is in flight. */
  async close(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const agent of this.agents) agent.destroy();
  }

  /** Aborts every request in flight (their callers see a network error) and closes. */
  async destroy(): Promise<void> {
    await this.close();
  }

  private agentFor(url: URL): HttpAgent | HttpsAgent {
    if (url.protocol === "http:") return this.plainAgent;
    return this.insecure.has(url.host) ? this.unverifiedAgent : this.verifiedAgent;
  }

  /**
   * The base URL for a registry. HTTPS always, except for loopback and user-marked insecure
   * hosts, where HTTPS is tried first and plain HTTP used when the server does not speak TLS.
   */
  origin(registry: string): Promise<string> {
    let origin = this.origins.get(registry);
    if (origin === undefined) {
      origin = this.probeOrigin(registry);
      this.origins.set(registry, origin);
      origin.catch(() => this.origins.delete(registry));
    }
    return origin;
  }

  private async probeOrigin(registry: string): Promise<string> {
    const host = registryApiHost(registry);
    const https = `https://${host}`;
    if (!LOOPBACK.test(host) && !this.insecure.has(host)) return https;
    try {
      await this.ping(registry, https);
      this.onEvent({ type: "scheme", registry, scheme: "https" });
      return https;
    } catch (error) {
      if (!isTlsProtocolMismatch(error)) throw error;
    }
    const http = `http://${host}`;
    await this.ping(registry, http);
    this.onEvent({ type: "scheme", registry, scheme: "http" });
    return http;
  }

  /** `GET /v2/` once per registry: proves the scheme and learns the auth challenge up front. */
  private async ping(registry: string, origin: string): Promise<void> {
    const url = new URL(`${origin}/v2/`);
    const response = await this.withRetries(url.toString(), () => this.send(url, "GET", {}, undefined));
    await this.rememberChallenge(registry, response);
    await drain(response.body);
  }

  private async rememberChallenge(registry: string, response: RegistryResponse): Promise<void> {
    if (response.status !== 401) return;
    const header = response.headers["www-authenticate"];
    const challenge = header === undefined ? undefined : parseChallenge(header);
    if (challenge === undefined) {
      this.challenges.set(registry, null);
      return;
    }
    // The scope and error of one response describe that request only; keep realm and service.
    const { scope: _scope, error: _error, ...params } = challenge.params;
    this.challenges.set(registry, { scheme: challenge.scheme, params });
  }

  private credentialsFor(registry: string): Promise<Credentials | undefined> {
    let cached = this.credentialCache.get(registry);
    if (cached === undefined) {
      cached = this.credentials(registry);
      this.credentialCache.set(registry, cached);
    }
    return cached;
  }

  /**
   * One HTTP exchange, no policy. Node's own HTTP client rather than undici: undici 7 throws an
   * uncatchable assertion when a server closes the connection while a body it is delivering is
   * paused under backpressure (nodejs/undici#5360, fixed only in undici 8, which needs Node 22),
   * and a slow consumer over a `Connection: close` response is the everyday case of a pull.
   */
  private send(
    url: URL,
    method: HttpMethod,
    headers: Record<string, string>,
    body: RegistryRequest["body"],
  ): Promise<RegistryResponse> {
    if (this.destroyed) return Promise.reject(new NetworkError(`${url.origin}: the client is closed.`));
    return new Promise((resolve, reject) => {
      const request = (url.protocol === "https:" ? httpsRequest : httpRequest)(url, {
        method,
        headers: { "user-agent": this.userAgent, ...headers },
        agent: this.agentFor(url),
      });
      let response: IncomingMessage | undefined;
      request.on("error", (error) => {
        if (response === undefined) reject(error);
        else response.destroy(error);
      });
      // Socket inactivity: before the response a silent server, after it a stalled body. A body
      // its consumer has not read yet is waiting on us, not on the network, so it never times out.
      request.setTimeout(this.idleTimeoutMs);
      request.on("timeout", () => {
        if (response !== undefined && response.readableLength > 0) {
          request.setTimeout(this.idleTimeoutMs);
          return;
        }
        const stalled = Object.assign(
          new Error(`no data from ${url.host} for ${this.idleTimeoutMs / 1000} s`),
          { code: "ETIMEDOUT" },
        );
        request.destroy(stalled);
      });
      request.on("response", (message) => {
        response = message;
        resolve({
          status: message.statusCode ?? 0,
          headers: flattenHeaders(message.headers),
          body: message,
          url: url.toString(),
        });
      });
      if (body === undefined) request.end();
      else if (Buffer.isBuffer(body)) request.end(body);
      // An upload refused early (401, 413) answers before the body is sent; the response says it.
      else pipeline(body(), request, () => {});
    });
  }

  /** Retries network errors, 5xx and 429 with exponential backoff, honouring `Retry-After`. */
  private async withRetries(
    what: string,
    attempt: () => Promise<RegistryResponse>,
  ): Promise<RegistryResponse> {
    for (let n = 0; ; n++) {
      let reason: string;
      let waitMs: number | undefined;
      try {
        const response = await attempt();
        if (response.status !== 429 && !RETRYABLE_STATUS.has(response.status)) return response;
        if (n >= this.retries) return response;
        reason = `HTTP ${response.status}`;
        waitMs = parseRetryAfter(response.headers["retry-after"]);
        if (waitMs !== undefined && waitMs > this.maxRetryAfterMs) return response;
        await drain(response.body);
      } catch (error) {
        if (!isTransientNetworkError(error) || n >= this.retries) {
          if (error instanceof OciError) throw error;
          if (isTlsProtocolMismatch(error)) throw error;
          throw new NetworkError(`Cannot reach ${what}: ${describeNetworkError(error)}.`, {
            hint: "Check the registry address and your network; plain-HTTP registries other than localhost must be marked insecure.",
            cause: error,
          });
        }
        reason = describeNetworkError(error);
      }
      const delayMs = waitMs ?? Math.min(this.retryBaseDelayMs * 2 ** n, 10_000) * (0.5 + Math.random() / 2);
      this.onEvent({ type: "retry", url: what, attempt: n + 1, delayMs, reason });
      await delay(delayMs);
    }
  }

  /** Sends a request, following redirects safely: no credentials cross origins, no downgrade. */
  private async sendFollowing(
    start: URL,
    registryOrigin: string,
    request: RegistryRequest,
    authorization: string | undefined,
  ): Promise<RegistryResponse> {
    let url = start;
    let method = request.method;
    let body = request.body;
    for (let hops = 0; ; hops++) {
      const headers = { ...request.headers };
      if (authorization !== undefined && url.origin === registryOrigin) headers.authorization = authorization;
      const response = await this.send(url, method, headers, body);
      const location = response.headers.location;
      if (!REDIRECT_STATUS.has(response.status) || location === undefined) return response;
      await drain(response.body);
      if (hops >= MAX_REDIRECTS)
        throw new RegistryError(`${request.what}: too many redirects.`, response.status);
      const next = new URL(location, url);
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new UnsafeRedirectError(`${request.what}: refusing a redirect to a ${next.protocol} URL.`);
      }
      if (url.protocol === "https:" && next.protocol === "http:") {
        throw new UnsafeRedirectError(
          `${request.what}: refusing a redirect from HTTPS to plain HTTP (${next.host}).`,
          {
            hint: "The registry tried to downgrade the connection; report it to the registry operator.",
          },
        );
      }
      this.onEvent({
        type: "redirect",
        from: url.origin,
        to: next.origin,
        authorizationDropped: authorization !== undefined && next.origin !== registryOrigin,
      });
      if (
        response.status === 303 ||
        ((response.status === 301 || response.status === 302) && method === "POST")
      ) {
        method = "GET";
        body = undefined;
      }
      url = next;
    }
  }

  private async authorizationFor(
    registry: string,
    scopes: readonly string[],
    forceRefresh: boolean,
  ): Promise<string | undefined> {
    const challenge = this.challenges.get(registry);
    if (challenge === undefined || challenge === null) return undefined;
    if (challenge.scheme === "basic") {
      const credentials = await this.credentialsFor(registry);
      if (credentials?.username === undefined || credentials.password === undefined) return undefined;
      return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
    }
    if (challenge.scheme === "bearer") {
      const credentials = await this.credentialsFor(registry);
      if (credentials?.registryToken !== undefined) return `Bearer ${credentials.registryToken}`;
      return `Bearer ${await this.token(registry, challenge, scopes, credentials, forceRefresh)}`;
    }
    return undefined;
  }

  private async token(
    registry: string,
    challenge: Challenge,
    scopes: readonly string[],
    credentials: Credentials | undefined,
    forceRefresh: boolean,
  ): Promise<string> {
    const allScopes = [...new Set(scopes)].sort();
    const key = `${registry}\n${allScopes.join(" ")}`;
    const cached = this.tokens.get(key);
    if (!forceRefresh && cached !== undefined && cached.expiresAt > Date.now()) return cached.token;
    const realm = this.checkRealm(registry, challenge.params.realm);
    this.onEvent({ type: "token", registry, scopes: allScopes });
    const service = challenge.params.service;
    let response: RegistryResponse;
    if (credentials?.identityToken !== undefined) {
      const form = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: credentials.identityToken,
        client_id: "locald",
      });
      if (service !== undefined) form.set("service", service);
      if (allScopes.length > 0) form.set("scope", allScopes.join(" "));
      response = await this.withRetries(realm.origin, () =>
        this.send(
          realm,
          "POST",
          { "content-type": "application/x-www-form-urlencoded" },
          Buffer.from(form.toString()),
        ),
      );
    } else {
      const url = new URL(realm);
      if (service !== undefined) url.searchParams.set("service", service);
      for (const scope of allScopes) url.searchParams.append("scope", scope);
      const headers: Record<string, string> = {};
      if (credentials?.username !== undefined && credentials.password !== undefined) {
        headers.authorization = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
      }
      response = await this.withRetries(realm.origin, () => this.send(url, "GET", headers, undefined));
    }
    if (response.status === 401 || response.status === 403) {
      await drain(response.body);
      throw new AuthenticationError(
        credentials === undefined
          ? `The registry ${registry} requires authentication and no credentials are saved for it.`
          : `The registry ${registry} rejected the saved credentials (token server answered ${response.status}).`,
        { hint: `Run: locald login ${registry} -u <user> --password-stdin` },
      );
    }
    if (response.status !== 200) {
      await drain(response.body);
      throw new RegistryError(
        `The token server for ${registry} answered HTTP ${response.status}.`,
        response.status,
      );
    }
    const bytes = await readBody(response.body, this.limits.token, `The token from ${realm.origin}`);
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      parsed = JSON.parse(bytes.toString("utf8")) as typeof parsed;
    } catch {
      throw new RegistryError(`The token server for ${registry} did not answer JSON.`, response.status);
    }
    const token =
      typeof parsed.token === "string" && parsed.token !== "" ? parsed.token : parsed.access_token;
    if (typeof token !== "string" || token === "")
      throw new RegistryError(`The token server for ${registry} answered without a token.`, response.status);
    // Tokens are refreshed a little early so a request never races the expiry.
    const lifetime = typeof parsed.expires_in === "number" && parsed.expires_in > 0 ? parsed.expires_in : 60;
    const issued =
      typeof parsed.issued_at === "string" && !Number.isNaN(Date.parse(parsed.issued_at))
        ? Math.min(Date.parse(parsed.issued_at), Date.now())
        : Date.now();
    this.tokens.set(key, {
      token,
      expiresAt: issued + lifetime * 1000 - Math.min(10_000, (lifetime * 1000) / 4),
    });
    return token;
  }

  /** A token realm must be HTTP(S), carry no credentials and not downgrade an HTTPS registry (SSRF defence). */
  private checkRealm(registry: string, realm: string | undefined): URL {
    if (realm === undefined)
      throw new RegistryError(
        `The registry ${registry} asked for a token without saying where to get it.`,
        401,
      );
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new UnsafeRedirectError(`The registry ${registry} gave an invalid token realm.`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:")
      throw new UnsafeRedirectError(
        `The registry ${registry} gave a token realm with scheme ${url.protocol}; refusing it.`,
      );
    if (url.username !== "" || url.password !== "")
      throw new UnsafeRedirectError(
        `The registry ${registry} gave a token realm with embedded credentials; refusing it.`,
      );
    if (
      url.protocol === "http:" &&
      !LOOPBACK.test(url.host) &&
      !this.insecure.has(url.host) &&
      !this.insecure.has(registry)
    ) {
      throw new UnsafeRedirectError(
        `The registry ${registry} sends credentials to a plain-HTTP token realm (${url.host}); refusing it.`,
        {
          hint: "Mark the registry insecure only if you trust the network path to it.",
        },
      );
    }
    return url;
  }

  /**
   * Sends a request to a registry with every policy applied, and turns unexpected statuses into
   * typed errors. The caller owns the returned body and must consume or drain it.
   */
  async request(registry: string, request: RegistryRequest): Promise<RegistryResponse> {
    const origin = await this.origin(registry);
    const url = new URL(request.path, origin);
    if (!/^https?:$/.test(url.protocol))
      throw new UnsafeRedirectError(`${request.what}: refusing a ${url.protocol} URL.`);
    const scopes = request.scopes ?? [];
    let authorization = await this.authorizationFor(registry, scopes, false);
    let learned = false;
    let refreshed = false;
    for (;;) {
      const sentAuthorization = authorization;
      const response = await this.withRetries(url.toString(), () =>
        this.sendFollowing(url, origin, request, sentAuthorization),
      );
      // A request sent without credentials learns the challenge once; one whose credentials
      // were refused (an expired or revoked token) gets exactly one fresh token.
      const retry = response.status === 401 && (sentAuthorization === undefined ? !learned : !refreshed);
      if (retry) {
        if (sentAuthorization === undefined) learned = true;
        else refreshed = true;
        await this.rememberChallenge(registry, response);
        await drain(response.body);
        authorization = await this.authorizationFor(registry, scopes, sentAuthorization !== undefined);
        if (authorization !== undefined) continue;
        throw new AuthenticationError(
          `${request.what}: the registry ${registry} requires authentication and no credentials are saved for it.`,
          { hint: `Run: locald login ${registry} -u <user> --password-stdin` },
        );
      }
      if (request.expect.includes(response.status)) return response;
      throw await this.errorFor(registry, request, response, sentAuthorization !== undefined);
    }
  }

  private async errorFor(
    registry: string,
    request: RegistryRequest,
    response: RegistryResponse,
    authenticated: boolean,
  ): Promise<OciError> {
    let detail = "";
    if (request.method !== "HEAD") {
      try {
        const bytes = await readBody(response.body, this.limits.error, "error body");
        const parsed = JSON.parse(bytes.toString("utf8")) as {
          errors?: { code?: string; message?: string }[];
        };
        detail = (parsed.errors ?? [])
          .map((e) => [e.code, e.message].filter(Boolean).join(": "))
          .filter((s) => s !== "")
          .join("; ");
      } catch {
        // not a registry error document; the status says enough
      }
    } else {
      await drain(response.body);
    }
    const suffix = detail === "" ? "" : ` (${detail})`;
    switch (response.status) {
      case 401:
        return new AuthenticationError(
          authenticated
            ? `${request.what}: the registry ${registry} rejected the credentials${suffix}.`
            : `${request.what}: the registry ${registry} requires authentication${suffix}.`,
          {
            hint: `Check the user name and password, then run: locald login ${registry} -u <user> --password-stdin`,
          },
        );
      case 403:
        return new AuthenticationError(`${request.what}: access denied by ${registry}${suffix}.`, {
          hint: "Your account may lack permission for this repository or action.",
        });
      case 404:
        return new NotFoundError(`${request.what} was not found on ${registry}${suffix}.`, {
          hint: "Check the repository name and tag; private images also need a login.",
        });
      case 429:
        return new RegistryError(
          `${request.what}: ${registry} is rate-limiting requests (HTTP 429)${suffix}.`,
          429,
          { hint: "Wait and try again later." },
        );
      default:
        return new RegistryError(
          `${request.what}: ${registry} answered HTTP ${response.status}${suffix}.`,
          response.status,
          {
            hint: response.status >= 500 ? "The registry is failing; try again later." : undefined,
          },
        );
    }
  }
}
