import { createPrivateKey, type KeyObject, randomBytes, sign } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { SigningCertificate } from "./pki.js";

/** One entry of the `access` claim, as distribution's `ResourceActions` expects it. */
export interface ResourceAccess {
  type: string;
  /** Only set for scopes like `repository(plugin):name:pull`. */
  class?: string;
  name: string;
  actions: string[];
}

export interface TokenClaims {
  iss: string;
  sub: string;
  /**
   * Deliberately a string: distribution 2.8 unmarshals `aud` into a Go `string`, so the RFC 7519
   * array form makes the whole token "malformed".
   */
  aud: string;
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  access: ResourceAccess[];
}

export interface TokenServerOptions {
  /** Used as `aud` when a request names no service; must match the registry's `auth.token.service`. */
  service: string;
  issuer?: string;
  signer: SigningCertificate;
  /** user → password. */
  users?: Record<string, string>;
  /** Anonymous callers get `pull` on repositories; without this they get 401. */
  anonymousPull?: boolean;
  /** Caps what a user may do on a repository; `*` allows everything. Default: whatever was requested. */
  access?: (user: string, repository: string) => string[];
  /** Token lifetime in seconds, reported as `expires_in` and used for `exp`. Default 300. */
  expiresIn?: number;
  /**
   * Shifts iat/nbf/exp by this many seconds. Distribution grants 60 s of leeway on exp and nbf, so a
   * short `expiresIn` alone does not make the registry reject a token soon; a negative skew does.
   */
  clockSkewSeconds?: number;
  /** When false, `POST /token` answers 404 so clients must fall back to GET. Default true. */
  oauth?: boolean;
}

export type AuthorizationScheme = "none" | "basic" | "bearer" | "other";

export interface TokenRequestLogEntry {
  method: string;
  path: string;
  /** Query parameters (GET) or form fields (POST); `password` and `refresh_token` are redacted. */
  params: Record<string, string[]>;
  grantType?: string;
  service?: string;
  clientId?: string;
  /** Requested scope strings, one per scope. */
  scopes: string[];
  /** The authenticated user, if any. */
  user?: string;
  authorizationPresent: boolean;
  authorizationScheme: AuthorizationScheme;
  status: number;
  granted: ResourceAccess[];
  refreshTokenIssued: boolean;
}

export interface TokenServer {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** The URL to configure as the registry's realm. */
  realm: string;
  service: string;
  issuer: string;
  requests: TokenRequestLogEntry[];
  /** Mutable so a test can shorten lifetimes mid-run. */
  expiresIn: number;
  clockSkewSeconds: number;
  /** How many of the next issued tokens are already expired for the registry while claiming a normal lifetime. */
  staleTokensNext: number;
  /** Mints a token directly, bypassing authentication, for tests of edge cases (expired, wrong audience…). */
  issueToken(options: IssueTokenOptions): string;
  /** Forgets all refresh tokens, so identity tokens held by clients stop working. */
  revokeRefreshTokens(): void;
  stop(): Promise<void>;
}

export interface IssueTokenOptions {
  subject?: string;
  access?: ResourceAccess[];
  audience?: string;
  issuer?: string;
  expiresIn?: number;
  clockSkewSeconds?: number;
}

interface TokenResponseBody {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
  scope?: string;
  refresh_token?: string;
}

export function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

/** Decodes without verifying: tests use it to inspect what we (or a client) actually sent. */
export function decodeJwt(token: string): { header: Record<string, unknown>; claims: TokenClaims } {
  const [h, c] = token.split(".");
  if (h === undefined || c === undefined) throw new Error("not a JWT");
  return {
    header: JSON.parse(Buffer.from(h, "base64url").toString("utf8")) as Record<string, unknown>,
    claims: JSON.parse(Buffer.from(c, "base64url").toString("utf8")) as TokenClaims,
  };
}

export function signJwt(claims: TokenClaims, signer: SigningCertificate, key?: KeyObject): string {
  const privateKey = key ?? createPrivateKey(signer.keyPem);
  const header = { typ: "JWT", alg: signer.algorithm, x5c: [signer.certDerBase64] };
  const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  // JWS ES256 wants the raw r||s pair (libtrust checks the length), not node's default DER encoding.
  const signature =
    signer.algorithm === "ES256"
      ? sign("sha256", Buffer.from(signingInput), { key: privateKey, dsaEncoding: "ieee-p1363" })
      : sign("sha256", Buffer.from(signingInput), privateKey);
  return `${signingInput}.${base64url(signature)}`;
}

/**
 * `repository:name:actions`, where the name may itself hold colons only in theory (a port in a
 * registry-qualified name), so type is up to the first colon and actions after the last.
 */
export function parseScope(scope: string): ResourceAccess | undefined {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first <= 0 || last === first) return undefined;
  const rawType = scope.slice(0, first);
  const name = scope.slice(first + 1, last);
  const actions = scope
    .slice(last + 1)
    .split(",")
    .filter((a) => a.length > 0);
  const classMatch = /^([a-z0-9]+)\(([a-z0-9]+)\)$/.exec(rawType);
  if (classMatch?.[1] !== undefined && classMatch[2] !== undefined) {
    return { type: classMatch[1], class: classMatch[2], name, actions };
  }
  return { type: rawType, name, actions };
}

function splitScopes(values: readonly string[]): string[] {
  return values.flatMap((v) => v.split(" ")).filter((s) => s.length > 0);
}

function paramsToRecord(params: URLSearchParams): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [k, v] of params) {
    const redacted = k === "password" || k === "refresh_token" ? "<redacted>" : v;
    const values = out[k] ?? [];
    values.push(redacted);
    out[k] = values;
  }
  return out;
}

function readBody(req: IncomingMessage, limit = 64 * 1024): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error("request body too large"));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

/** Merges repeated scopes on the same resource, as a client may send `pull` and `push` separately. */
function mergeRequested(scopes: readonly string[]): ResourceAccess[] {
  const byKey = new Map<string, ResourceAccess>();
  for (const scope of scopes) {
    const parsed = parseScope(scope);
    if (parsed === undefined) continue;
    const key = `${parsed.type}\u0000${parsed.class ?? ""}\u0000${parsed.name}`;
    const existing = byKey.get(key);
    if (existing === undefined) byKey.set(key, { ...parsed, actions: [...new Set(parsed.actions)] });
    else existing.actions = [...new Set([...existing.actions, ...parsed.actions])];
  }
  return [...byKey.values()];
}

export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const users = options.users ?? {};
  const issuer = options.issuer ?? "locald-e2e-token-issuer";
  const privateKey = createPrivateKey(options.signer.keyPem);
  const refreshTokens = new Map<string, string>();
  const requests: TokenRequestLogEntry[] = [];
  const oauth = options.oauth ?? true;

  const state = {
    expiresIn: options.expiresIn ?? 300,
    clockSkewSeconds: options.clockSkewSeconds ?? 0,
    staleTokensNext: 0,
  };

  function mint(opts: IssueTokenOptions): { token: string; issuedAt: Date; expiresIn: number } {
    const expiresIn = opts.expiresIn ?? state.expiresIn;
    const skew = opts.clockSkewSeconds ?? state.clockSkewSeconds;
    const issuedAt = new Date(Date.now() + skew * 1000);
    const iat = Math.floor(issuedAt.getTime() / 1000);
    const claims: TokenClaims = {
      iss: opts.issuer ?? issuer,
      sub: opts.subject ?? "",
      aud: opts.audience ?? options.service,
      exp: iat + expiresIn,
      nbf: iat,
      iat,
      jti: randomBytes(12).toString("hex"),
      access: opts.access ?? [],
    };
    return { token: signJwt(claims, options.signer, privateKey), issuedAt, expiresIn };
  }

  function grant(user: string | undefined, requested: readonly ResourceAccess[]): ResourceAccess[] {
    const granted: ResourceAccess[] = [];
    for (const r of requested) {
      let allowed: string[];
      if (user === undefined) {
        allowed = r.type === "repository" && options.anonymousPull ? ["pull"] : [];
      } else if (r.type === "repository" && options.access) {
        allowed = options.access(user, r.name);
      } else {
        allowed = r.actions;
      }
      const actions = allowed.includes("*") ? r.actions : r.actions.filter((a) => allowed.includes(a));
      if (actions.length > 0) granted.push({ ...r, actions });
    }
    return granted;
  }

  function checkPassword(user: string, password: string): boolean {
    return Object.hasOwn(users, user) && users[user] === password;
  }

  function authScheme(header: string | undefined): AuthorizationScheme {
    if (header === undefined || header === "") return "none";
    const scheme = header.split(" ", 1)[0]?.toLowerCase();
    if (scheme === "basic") return "basic";
    if (scheme === "bearer") return "bearer";
    return "other";
  }

  /** undefined = anonymous; null = credentials were sent but are wrong. */
  function basicUser(header: string | undefined): string | undefined | null {
    if (header === undefined || !/^basic /i.test(header)) return undefined;
    const decoded = Buffer.from(header.slice(6).trim(), "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) return null;
    const user = decoded.slice(0, colon);
    return checkPassword(user, decoded.slice(colon + 1)) ? user : null;
  }

  function tokenBody(
    user: string | undefined,
    granted: ResourceAccess[],
    scopes: string[],
    withRefresh: boolean,
  ): TokenResponseBody {
    // A "stale" token claims a normal lifetime but is already past the registry's 60 s leeway,
    // as when the registry's clock runs ahead of the client's: clients must refresh on 401.
    const stale = state.staleTokensNext > 0;
    if (stale) state.staleTokensNext--;
    const minted = mint({
      subject: user ?? "",
      access: granted,
      ...(stale ? { expiresIn: 1, clockSkewSeconds: -120 } : {}),
    });
    const { token } = minted;
    const issuedAt = stale ? new Date() : minted.issuedAt;
    const expiresIn = stale ? state.expiresIn : minted.expiresIn;
    const body: TokenResponseBody = {
      token,
      access_token: token,
      expires_in: expiresIn,
      issued_at: issuedAt.toISOString(),
    };
    if (scopes.length > 0) body.scope = scopes.join(" ");
    if (withRefresh && user !== undefined) {
      const refresh = `rt-${randomBytes(24).toString("hex")}`;
      refreshTokens.set(refresh, user);
      body.refresh_token = refresh;
    }
    return body;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://token.invalid");
    const authorization = req.headers.authorization;
    const entry: TokenRequestLogEntry = {
      method: req.method ?? "",
      path: url.pathname,
      params: {},
      scopes: [],
      authorizationPresent: authorization !== undefined,
      authorizationScheme: authScheme(authorization),
      status: 0,
      granted: [],
      refreshTokenIssued: false,
    };
    requests.push(entry);
    const respond = (status: number, body: unknown, headers?: Record<string, string>): void => {
      entry.status = status;
      sendJson(res, status, body, headers);
    };
    const challenge = { "www-authenticate": `Basic realm="${url.origin}/token"` };

    if (url.pathname !== "/token") {
      respond(404, { error: "not_found" });
      return;
    }

    if (req.method === "GET") {
      entry.params = paramsToRecord(url.searchParams);
      entry.service = url.searchParams.get("service") ?? undefined;
      entry.clientId = url.searchParams.get("client_id") ?? undefined;
      entry.scopes = splitScopes(url.searchParams.getAll("scope"));
      const user = basicUser(authorization);
      if (user === null) {
        respond(401, { errors: [{ code: "UNAUTHORIZED", message: "invalid credentials" }] }, challenge);
        return;
      }
      if (user === undefined && !options.anonymousPull) {
        respond(401, { errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }, challenge);
        return;
      }
      entry.user = user;
      entry.granted = grant(user, mergeRequested(entry.scopes));
      const offline = url.searchParams.get("offline_token") === "true";
      const body = tokenBody(user, entry.granted, entry.scopes, offline);
      entry.refreshTokenIssued = body.refresh_token !== undefined;
      respond(200, body);
      return;
    }

    if (req.method === "POST") {
      const form = new URLSearchParams(await readBody(req));
      entry.params = paramsToRecord(form);
      entry.service = form.get("service") ?? undefined;
      entry.clientId = form.get("client_id") ?? undefined;
      entry.grantType = form.get("grant_type") ?? undefined;
      entry.scopes = splitScopes(form.getAll("scope"));
      if (!oauth) {
        respond(404, { error: "not_found" });
        return;
      }
      let user: string;
      if (entry.grantType === "password") {
        const username = form.get("username") ?? "";
        if (!checkPassword(username, form.get("password") ?? "")) {
          respond(401, { error: "invalid_grant", error_description: "invalid username or password" });
          return;
        }
        user = username;
      } else if (entry.grantType === "refresh_token") {
        const known = refreshTokens.get(form.get("refresh_token") ?? "");
        if (known === undefined) {
          respond(401, { error: "invalid_grant", error_description: "unknown refresh token" });
          return;
        }
        user = known;
      } else {
        respond(400, { error: "unsupported_grant_type" });
        return;
      }
      entry.user = user;
      entry.granted = grant(user, mergeRequested(entry.scopes));
      const withRefresh = entry.grantType === "password" || form.get("access_type") === "offline";
      const body = tokenBody(user, entry.granted, entry.scopes, withRefresh);
      entry.refreshTokenIssued = body.refresh_token !== undefined;
      respond(200, body);
      return;
    }

    respond(405, { error: "method_not_allowed" }, { allow: "GET, POST" });
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: "server_error", message: String(err) });
      else res.destroy();
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
  const url = `http://127.0.0.1:${port}`;

  let stopped: Promise<void> | undefined;
  return {
    url,
    // By name, as real token servers are: the CNB lifecycle from 0.21 (go-containerregistry's
    // realm check) refuses a realm whose host is a loopback or private IP literal.
    realm: `http://localhost:${port}/token`,
    service: options.service,
    issuer,
    requests,
    get expiresIn() {
      return state.expiresIn;
    },
    set expiresIn(v: number) {
      state.expiresIn = v;
    },
    get clockSkewSeconds() {
      return state.clockSkewSeconds;
    },
    set clockSkewSeconds(v: number) {
      state.clockSkewSeconds = v;
    },
    get staleTokensNext() {
      return state.staleTokensNext;
    },
    set staleTokensNext(v: number) {
      state.staleTokensNext = v;
    },
    issueToken: (opts) => mint(opts).token,
    revokeRefreshTokens: () => refreshTokens.clear(),
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return stopped;
    },
  };
}
