import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { pipeline } from "node:stream";
import { rootCertificates } from "node:tls";
import {
  AuthenticationError,
  NetworkError,
  NotFoundError,
  type OciError,
  RegistryError,
  UnsafeRedirectError,
} from "../errors.js";
import { registryApiHost } from "../reference.js";
import { anonymous, type CredentialProvider } from "./auth.js";
import { Authorizer, LOOPBACK } from "./authorization.js";
import type { HttpMethod, RegistryRequest, RegistryResponse, SizeLimits, TransportEvent } from "./http.js";
import { DEFAULT_LIMITS, drain, readBody } from "./http.js";
import { isTlsProtocolMismatch, type RetryPolicy, withRetries } from "./retry.js";

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

/**
 * The one place for HTTP policy: scheme choice, trust, authentication challenges and token
 * caching (`Authorizer`), redirects (credentials never cross origins, no HTTPS→HTTP), retries
 * with backoff and `Retry-After` (`withRetries`), and caps on buffered bodies.
 */
export class Transport {
  readonly limits: SizeLimits;
  private readonly insecure: ReadonlySet<string>;
  private readonly plainAgent: HttpAgent;
  private readonly verifiedAgent: HttpsAgent;
  private readonly unverifiedAgent: HttpsAgent;
  private readonly idleTimeoutMs: number;
  private readonly userAgent: string;
  private readonly onEvent: (event: TransportEvent) => void;
  private readonly origins = new Map<string, Promise<string>>();
  private readonly retry: RetryPolicy;
  private readonly authorizer: Authorizer;

  constructor(options: TransportOptions = {}) {
    this.insecure = new Set(options.insecureRegistries ?? []);
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.userAgent = options.userAgent ?? "locald/0.1";
    this.onEvent = options.onTransportEvent ?? (() => {});
    this.retry = {
      retries: options.retries ?? 4,
      retryBaseDelayMs: options.retryBaseDelayMs ?? 250,
      maxRetryAfterMs: (options.maxRetryAfterSeconds ?? 60) * 1000,
      onEvent: this.onEvent,
    };
    this.authorizer = new Authorizer({
      credentials: options.credentials ?? anonymous,
      insecure: this.insecure,
      limits: this.limits,
      retry: this.retry,
      onEvent: this.onEvent,
      send: (url, method, headers, body) => this.send(url, method, headers, body),
    });
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
    const response = await withRetries(this.retry, url.toString(), () =>
      this.send(url, "GET", {}, undefined),
    );
    await this.authorizer.rememberChallenge(registry, response);
    await drain(response.body);
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
    let authorization = await this.authorizer.authorizationFor(registry, scopes, false);
    let learned = false;
    let refreshed = false;
    for (;;) {
      const sentAuthorization = authorization;
      const response = await withRetries(this.retry, url.toString(), () =>
        this.sendFollowing(url, origin, request, sentAuthorization),
      );
      // A request sent without credentials learns the challenge once; one whose credentials
      // were refused (an expired or revoked token) gets exactly one fresh token.
      const retry = response.status === 401 && (sentAuthorization === undefined ? !learned : !refreshed);
      if (retry) {
        if (sentAuthorization === undefined) learned = true;
        else refreshed = true;
        await this.authorizer.rememberChallenge(registry, response);
        await drain(response.body);
        authorization = await this.authorizer.authorizationFor(
          registry,
          scopes,
          sentAuthorization !== undefined,
        );
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
