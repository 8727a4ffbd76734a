import { setTimeout as delay } from "node:timers/promises";
import { NetworkError, OciError } from "../errors.js";
import { drain, type RegistryResponse, type TransportEvent } from "./http.js";

export interface RetryPolicy {
  /** Attempts after the first. */
  retries: number;
  retryBaseDelayMs: number;
  /** Longest `Retry-After` honoured; a longer ask returns the response instead of waiting. */
  maxRetryAfterMs: number;
  onEvent: (event: TransportEvent) => void;
}

const RETRYABLE_STATUS = new Set([500, 502, 503, 504]);

/** Errors after which the same request may succeed. */
function isTransientNetworkError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code ?? "";
  return /^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN|ENETUNREACH|EHOSTUNREACH)$/.test(code);
}

/** HTTPS spoken to a server that answers plain HTTP (the error itself, or the cause of ours). */
export function isTlsProtocolMismatch(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code ?? "";
  return (
    code === "ERR_SSL_WRONG_VERSION_NUMBER" ||
    code === "EPROTO" ||
    /wrong version number|packet length too long/i.test(String((error as Error)?.message)) ||
    (error instanceof NetworkError && isTlsProtocolMismatch(error.cause))
  );
}

/** `host[:port]` of a URL, for messages; the text itself when it is none. */
function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** The usual network failures in words (the errno stays, in brackets, for searching). */
const NETWORK_REASONS: Readonly<Record<string, string>> = {
  ENOTFOUND: "the host name does not resolve",
  EAI_AGAIN: "the host name could not be resolved just now",
  ECONNREFUSED: "nothing is listening there (connection refused)",
  ECONNRESET: "the connection was reset",
  ETIMEDOUT: "the connection timed out",
  EHOSTUNREACH: "there is no route to the host",
  ENETUNREACH: "the network is unreachable",
  EPIPE: "the connection was closed while sending",
  // fetch (undici) and TLS say these in codes of their own.
  UND_ERR_CONNECT_TIMEOUT: "the connection timed out",
  UND_ERR_HEADERS_TIMEOUT: "the server did not answer in time",
  UND_ERR_BODY_TIMEOUT: "the server stopped sending",
  UND_ERR_SOCKET: "the connection was cut",
  CERT_HAS_EXPIRED: "the server's TLS certificate has expired",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "the server's TLS certificate is not trusted",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "the server's TLS certificate is not trusted",
  SELF_SIGNED_CERT_IN_CHAIN: "the server's TLS certificate is not trusted",
  DEPTH_ZERO_SELF_SIGNED_CERT: "the server's TLS certificate is not trusted",
  ERR_TLS_CERT_ALTNAME_INVALID: "the server's TLS certificate is for another name",
};

/**
 * A network failure in words, with its code: the one description for every HTTP client here.
 * Follows `cause`, where fetch keeps the reason (its own message is only "fetch failed").
 */
export function describeNetworkError(error: unknown): string {
  const chain: NodeJS.ErrnoException[] = [];
  for (let e: unknown = error; e instanceof Error && chain.length < 5; e = e.cause) chain.push(e);
  const coded = chain.filter(
    (e): e is NodeJS.ErrnoException & { code: string } => typeof e.code === "string",
  );
  const known = coded.find((e) => NETWORK_REASONS[e.code] !== undefined);
  if (known !== undefined) return `${NETWORK_REASONS[known.code]} [${known.code}]`;
  const first = coded[0];
  if (first !== undefined) return `${first.code}: ${first.message}`;
  return chain.at(-1)?.message ?? String(error);
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

/** Retries network errors, 5xx and 429 with exponential backoff, honouring `Retry-After`. */
export async function withRetries(
  policy: RetryPolicy,
  what: string,
  attempt: () => Promise<RegistryResponse>,
): Promise<RegistryResponse> {
  for (let n = 0; ; n++) {
    let reason: string;
    let waitMs: number | undefined;
    try {
      const response = await attempt();
      if (response.status !== 429 && !RETRYABLE_STATUS.has(response.status)) return response;
      if (n >= policy.retries) return response;
      reason = `HTTP ${response.status}`;
      waitMs = parseRetryAfter(response.headers["retry-after"]);
      if (waitMs !== undefined && waitMs > policy.maxRetryAfterMs) return response;
      await drain(response.body);
    } catch (error) {
      if (!isTransientNetworkError(error) || n >= policy.retries) {
        if (error instanceof OciError) throw error;
        if (isTlsProtocolMismatch(error)) {
          const host = hostOf(what);
          throw new NetworkError(`${host} speaks plain HTTP, not HTTPS.`, {
            hint: `If you trust that registry, pass --insecure-registry ${host} (the insecureRegistries option of the library).`,
            cause: error,
          });
        }
        throw new NetworkError(`Cannot reach ${what}: ${describeNetworkError(error)}.`, {
          hint: "Check the registry address and your network; plain-HTTP registries other than localhost must be marked insecure.",
          cause: error,
        });
      }
      reason = describeNetworkError(error);
    }
    const delayMs = waitMs ?? Math.min(policy.retryBaseDelayMs * 2 ** n, 10_000) * (0.5 + Math.random() / 2);
    policy.onEvent({ type: "retry", url: what, attempt: n + 1, delayMs, reason });
    await delay(delayMs);
  }
}
