import { AuthenticationError, RegistryError, UnsafeRedirectError } from "../errors.js";
import { type Challenge, type CredentialProvider, type Credentials, parseChallenge } from "./auth.js";
import type { HttpMethod, RegistryRequest, RegistryResponse, SizeLimits, TransportEvent } from "./http.js";
import { drain, readBody } from "./http.js";
import { type RetryPolicy, withRetries } from "./retry.js";

/** Hosts that may be reached over plain HTTP without being marked insecure. */
export const LOOPBACK = /^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?$/;

interface CachedToken {
  token: string;
  expiresAt: number;
}

export interface AuthorizerOptions {
  credentials: CredentialProvider;
  insecure: ReadonlySet<string>;
  limits: SizeLimits;
  retry: RetryPolicy;
  onEvent: (event: TransportEvent) => void;
  /** One HTTP exchange, no policy: token servers are asked directly, never through redirects. */
  send: (
    url: URL,
    method: HttpMethod,
    headers: Record<string, string>,
    body: RegistryRequest["body"],
  ) => Promise<RegistryResponse>;
}

/**
 * The `Authorization` header a registry wants: its challenge learnt from a 401, then basic
 * credentials, a saved registry token, or a bearer token from its token server, cached per scope
 * set until shortly before it expires.
 */
export class Authorizer {
  private readonly credentials: CredentialProvider;
  private readonly insecure: ReadonlySet<string>;
  private readonly limits: SizeLimits;
  private readonly retry: RetryPolicy;
  private readonly onEvent: (event: TransportEvent) => void;
  private readonly send: AuthorizerOptions["send"];
  private readonly challenges = new Map<string, Challenge | null>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly credentialCache = new Map<string, Promise<Credentials | undefined>>();

  constructor(options: AuthorizerOptions) {
    this.credentials = options.credentials;
    this.insecure = options.insecure;
    this.limits = options.limits;
    this.retry = options.retry;
    this.onEvent = options.onEvent;
    this.send = options.send;
  }

  async rememberChallenge(registry: string, response: RegistryResponse): Promise<void> {
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

  async authorizationFor(
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
      response = await withRetries(this.retry, realm.origin, () =>
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
      response = await withRetries(this.retry, realm.origin, () => this.send(url, "GET", headers, undefined));
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
}
