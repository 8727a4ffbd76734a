import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { describe, type TestContext, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import {
  AuthenticationError,
  NotFoundError,
  RegistryError,
  SizeLimitError,
  UnsafeRedirectError,
} from "../src/errors.js";
import { staticCredentials } from "../src/registry/auth.js";
import {
  DEFAULT_LIMITS,
  describeNetworkError,
  drain,
  parseRetryAfter,
  readBody,
  Transport,
  type TransportEvent,
  type TransportOptions,
} from "../src/registry/index.js";

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  host: string | undefined;
}

type Handler = (req: IncomingMessage, res: ServerResponse, seen: Seen[]) => void;

interface TestServer {
  port: number;
  /** `host:port` as a registry name. */
  host: string;
  seen: Seen[];
}

async function startServer(t: TestContext, handler: Handler, hostname = "127.0.0.1"): Promise<TestServer> {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    seen.push({
      method: req.method ?? "",
      url: req.url ?? "",
      authorization: req.headers.authorization,
      host: req.headers.host,
    });
    handler(req, res, seen);
  });
  await new Promise<void>((resolve) => server.listen(0, hostname, resolve));
  const { port } = server.address() as AddressInfo;
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { port, host: `${hostname}:${port}`, seen };
}

function newTransport(t: TestContext, options: TransportOptions = {}): Transport {
  const transport = new Transport({ retryBaseDelayMs: 1, ...options });
  t.after(() => transport.close());
  return transport;
}

function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
}

/** Requests that are not the plain-HTTP probe's TLS garbage (those never reach the handler). */
function requestsTo(seen: Seen[], path: string): Seen[] {
  return seen.filter((s) => s.url.split("?")[0] === path);
}

describe("describeNetworkError", () => {
  const coded = (message: string, code: string, cause?: unknown) =>
    Object.assign(new Error(message, cause === undefined ? {} : { cause }), { code });

  test("a socket's errno, in words with its code", () => {
    assert.equal(
      describeNetworkError(coded("connect ECONNREFUSED 127.0.0.1:9", "ECONNREFUSED")),
      "nothing is listening there (connection refused) [ECONNREFUSED]",
    );
  });

  test("fetch's reason is found in its cause, however deep", async () => {
    // A real fetch failure: a loopback port that was just closed (fetch refuses port 9 itself).
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const failure = await fetch(`http://127.0.0.1:${port}/`).then(
      () => undefined,
      (error: unknown) => error,
    );
    assert.ok(failure instanceof Error);
    assert.equal(failure.message, "fetch failed");
    assert.match(describeNetworkError(failure), /connection refused\) \[ECONNREFUSED\]$/);
    const deep = new TypeError("fetch failed", {
      cause: new Error("outer", { cause: coded("x", "UND_ERR_SOCKET") }),
    });
    assert.equal(describeNetworkError(deep), "the connection was cut [UND_ERR_SOCKET]");
    const tls = new TypeError("fetch failed", { cause: coded("self-signed", "DEPTH_ZERO_SELF_SIGNED_CERT") });
    assert.equal(
      describeNetworkError(tls),
      "the server's TLS certificate is not trusted [DEPTH_ZERO_SELF_SIGNED_CERT]",
    );
  });

  test("an unknown code keeps the error's own words; no code at all, the deepest message", () => {
    assert.equal(describeNetworkError(coded("odd", "EWEIRD")), "EWEIRD: odd");
    assert.equal(
      describeNetworkError(new TypeError("fetch failed", { cause: new Error("bad header") })),
      "bad header",
    );
    assert.equal(describeNetworkError("plain"), "plain");
  });
});

describe("parseRetryAfter", () => {
  test("seconds", () => {
    assert.equal(parseRetryAfter("1"), 1000);
    assert.equal(parseRetryAfter(" 30 "), 30_000);
    assert.equal(parseRetryAfter("0"), 0);
  });

  test("an HTTP date, relative to now", () => {
    const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
    assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:05 GMT", now), 5000);
    assert.equal(parseRetryAfter(new Date(now + 90_000).toUTCString(), now), 90_000);
  });

  test("a date in the past is zero", () => {
    const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
    assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:00:00 GMT", now), 0);
  });

  test("absent or garbage is undefined", () => {
    assert.equal(parseRetryAfter(undefined), undefined);
    assert.equal(parseRetryAfter("soon"), undefined);
    assert.equal(parseRetryAfter(""), undefined);
  });

  test("malformed values that V8's lenient Date.parse accepts are undefined too", () => {
    for (const value of ["-5", "1.5", "abc 1"]) assert.equal(parseRetryAfter(value), undefined, value);
  });
});

describe("readBody and drain", () => {
  test("reads a body within the limit", async () => {
    const body = await readBody(Readable.from([Buffer.from("ab"), Buffer.from("cd")]), 4, "doc");
    assert.equal(body.toString(), "abcd");
  });

  test("a body over the limit is a SizeLimitError and the stream is destroyed", async () => {
    let produced = 0;
    const stream = Readable.from(
      (function* () {
        for (let i = 0; i < 1000; i++) {
          produced++;
          yield Buffer.alloc(10);
        }
      })(),
    );
    await assert.rejects(readBody(stream, 25, "the manifest M"), (error: unknown) => {
      assert.ok(error instanceof SizeLimitError);
      assert.equal(error.code, "SIZE_LIMIT");
      assert.match(error.message, /the manifest M is larger than the 25-byte limit/);
      return true;
    });
    assert.ok(stream.destroyed);
    assert.ok(produced < 1000, `stopped early after ${produced} chunks`);
  });

  test("drain consumes a body and swallows its errors", async () => {
    const ok = Readable.from([Buffer.from("x")]);
    await drain(ok);
    assert.ok(ok.readableEnded);
    const failing = new Readable({
      read() {
        this.destroy(new Error("boom"));
      },
    });
    await assert.doesNotReject(drain(failing));
  });

  test("default limits", () => {
    assert.equal(DEFAULT_LIMITS.manifest, 4 * 1024 * 1024);
    assert.ok(DEFAULT_LIMITS.token > 0 && DEFAULT_LIMITS.error > 0);
  });
});

describe("Transport against an in-process registry", { timeout: 15_000 }, () => {
  test("falls back to plain HTTP for 127.0.0.1 and remembers the origin", async (t) => {
    const server = await startServer(t, (req, res) => {
      if (req.url === "/v2/") return json(res, 200, {});
      json(res, 200, { ok: req.url });
    });
    const events: TransportEvent[] = [];
    const transport = newTransport(t, { onTransportEvent: (e) => events.push(e) });
    assert.equal(await transport.origin(server.host), `http://${server.host}`);
    const response = await transport.request(server.host, {
      method: "GET",
      path: "/v2/a/tags/list",
      expect: [200],
      what: "tags",
    });
    assert.equal(response.status, 200);
    assert.equal(response.url, `http://${server.host}/v2/a/tags/list`);
    assert.deepEqual(JSON.parse((await readBody(response.body, 1024, "x")).toString()), {
      ok: "/v2/a/tags/list",
    });
    assert.deepEqual(
      events.filter((e) => e.type === "scheme"),
      [{ type: "scheme", registry: server.host, scheme: "http" }],
    );
    assert.equal(requestsTo(server.seen, "/v2/").length, 1, "the registry is pinged once");
    assert.equal(response.headers["content-type"], "application/json");
  });

  describe("a server that closes the connection after each response", () => {
    // A body the client has not read yet when the server's FIN arrives: the HTTP client must
    // neither crash (undici 7 did: nodejs/undici#5360) nor lose the end of the body.
    /** Gets a blob that `respond` answers with, once `respond` says the server has sent it. */
    async function sentBlob(
      t: TestContext,
      respond: (res: ServerResponse, sent: () => void) => void,
    ): Promise<Readable> {
      let sent: () => void = () => {};
      const serverSent = new Promise<void>((resolve) => {
        sent = resolve;
      });
      const server = await startServer(t, (req, res) => {
        if (req.url === "/v2/") return json(res, 200, {});
        respond(res, sent);
      });
      const response = await newTransport(t).request(server.host, {
        method: "GET",
        path: "/v2/a/blobs/x",
        expect: [200],
        what: "blob",
      });
      await serverSent;
      return response.body;
    }

    for (const size of [16 * 1024, 64 * 1024, 256 * 1024, 256 * 1024 + 1, 1024 * 1024]) {
      test(`a ${size}-byte body read only after the server closed is whole`, async (t) => {
        const body = Buffer.alloc(size, 7);
        const received = await sentBlob(t, (res, sent) => {
          res.writeHead(200, { "content-length": String(size), connection: "close" });
          res.end(body, sent);
        });
        const read = await readBody(received, size, "blob");
        assert.equal(read.length, size);
        assert.ok(read.equals(body));
      });
    }

    test("a body cut short by the server's FIN is an error, not a short success", async (t) => {
      const size = 256 * 1024;
      const received = await sentBlob(t, (res, sent) => {
        res.writeHead(200, { "content-length": String(size * 2), connection: "close" });
        res.write(Buffer.alloc(size, 7));
        res.socket?.end(sent);
      });
      await assert.rejects(readBody(received, size * 2, "blob"), { code: "ECONNRESET" });
    });

    test("a body that stops arriving times out; one its reader is slow to take does not", async (t) => {
      const size = 1024 * 1024;
      const server = await startServer(t, (req, res) => {
        if (req.url === "/v2/") return json(res, 200, {});
        res.writeHead(200, { "content-length": String(size) });
        // /stall sends half and then nothing, keeping the connection open.
        res.write(Buffer.alloc(size / 2, 7));
        if (req.url !== "/v2/a/stall") res.end(Buffer.alloc(size / 2, 7));
      });
      const transport = newTransport(t, { bodyTimeoutMs: 100 });
      const get = (path: string) =>
        transport.request(server.host, { method: "GET", path, expect: [200], what: path });
      const stalled = await get("/v2/a/stall");
      await assert.rejects(readBody(stalled.body, size, "blob"), { code: "ETIMEDOUT" });
      const slow = await get("/v2/a/whole");
      // The reader's slowness, not a synchronisation: three idle timeouts pass unread.
      await delay(300);
      assert.equal((await readBody(slow.body, size, "blob")).length, size);
    });
  });

  test("503 twice then 200 is retried", async (t) => {
    let failures = 0;
    const server = await startServer(t, (req, res) => {
      if (req.url === "/v2/") return json(res, 200, {});
      if (failures < 2) {
        failures++;
        return json(res, 503, { errors: [{ code: "UNAVAILABLE" }] });
      }
      res.end("done");
    });
    const events: TransportEvent[] = [];
    const transport = newTransport(t, { onTransportEvent: (e) => events.push(e) });
    const response = await transport.request(server.host, {
      method: "GET",
      path: "/v2/a/manifests/1",
      expect: [200],
      what: "manifest",
    });
    assert.equal((await readBody(response.body, 100, "x")).toString(), "done");
    assert.equal(requestsTo(server.seen, "/v2/a/manifests/1").length, 3);
    const retries = events.filter((e) => e.type === "retry");
    assert.deepEqual(
      retries.map((e) => (e.type === "retry" ? [e.attempt, e.reason] : [])),
      [
        [1, "HTTP 503"],
        [2, "HTTP 503"],
      ],
    );
  });

  test("5xx beyond the retry budget is a RegistryError with the status", async (t) => {
    const server = await startServer(t, (req, res) => {
      if (req.url === "/v2/") return json(res, 200, {});
      json(res, 502, { errors: [{ code: "BAD_GATEWAY", message: "upstream down" }] });
    });
    const transport = newTransport(t, { retries: 2 });
    await assert.rejects(
      transport.request(server.host, { method: "GET", path: "/v2/a/blobs/x", expect: [200], what: "blob B" }),
      (error: unknown) => {
        assert.ok(error instanceof RegistryError);
        assert.equal(error.status, 502);
        assert.match(error.message, /blob B: .* answered HTTP 502 \(BAD_GATEWAY: upstream down\)/);
        return true;
      },
    );
    assert.equal(requestsTo(server.seen, "/v2/a/blobs/x").length, 3);
  });

  test("429 with Retry-After: 1 waits about a second, then succeeds", async (t) => {
    let limited = false;
    const server = await startServer(t, (req, res) => {
      if (req.url === "/v2/") return json(res, 200, {});
      if (!limited) {
        limited = true;
        return json(res, 429, { errors: [{ code: "TOOMANYREQUESTS" }] }, { "retry-after": "1" });
      }
      res.end("ok");
    });
    const events: TransportEvent[] = [];
    const transport = newTransport(t, { onTransportEvent: (e) => events.push(e) });
    await transport.origin(server.host);
    const started = performance.now();
    const response = await transport.request(server.host, {
      method: "GET",
      path: "/v2/a/manifests/1",
      expect: [200],
      what: "manifest",
    });
    const elapsed = performance.now() - started;
    assert.equal((await readBody(response.body, 100, "x")).toString(), "ok");
    assert.ok(elapsed >= 950, `waited only ${elapsed} ms`);
    assert.ok(elapsed < 5000, `waited ${elapsed} ms`);
    assert.deepEqual(
      events.filter((e) => e.type === "retry").map((e) => (e.type === "retry" ? e.delayMs : 0)),
      [1000],
    );
  });

  test("a Retry-After beyond the maximum is not waited out", async (t) => {
    const server = await startServer(t, (req, res) => {
      if (req.url === "/v2/") return json(res, 200, {});
      json(
        res,
        429,
        { errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }] },
        { "retry-after": "3600" },
      );
    });
    const transport = newTransport(t);
    const started = performance.now();
    await assert.rejects(
      transport.request(server.host, { method: "GET", path: "/v2/a/manifests/1", expect: [200], what: "m" }),
      (error: unknown) =>
        error instanceof RegistryError && error.status === 429 && /rate-limiting/.test(error.message),
    );
    assert.ok(performance.now() - started < 2000);
    assert.equal(requestsTo(server.seen, "/v2/a/manifests/1").length, 1);
  });

  test("a redirect to another origin drops the Authorization header", async (t) => {
    const blobServer = await startServer(
      t,
      (_req, res) => {
        res.end("blob-bytes");
      },
      "localhost",
    );
    const auth = basic("user", "p@ss:word");
    const registry = await startServer(t, (req, res) => {
      if (req.headers.authorization !== auth) {
        res.writeHead(401, { "www-authenticate": 'Basic realm="x"' });
        return res.end();
      }
      if (req.url === "/v2/") return json(res, 200, {});
      res.writeHead(307, { location: `http://${blobServer.host}/storage/blob?sig=1` });
      res.end();
    });
    const events: TransportEvent[] = [];
    const transport = newTransport(t, {
      credentials: staticCredentials({ [registry.host]: { username: "user", password: "p@ss:word" } }),
      onTransportEvent: (e) => events.push(e),
    });
    const response = await transport.request(registry.host, {
      method: "GET",
      path: "/v2/a/blobs/sha256:abc",
      expect: [200],
      what: "blob",
    });
    assert.equal((await readBody(response.body, 100, "x")).toString(), "blob-bytes");
    assert.equal(response.url, `http://${blobServer.host}/storage/blob?sig=1`);

    const first = requestsTo(registry.seen, "/v2/a/blobs/sha256:abc");
    assert.equal(first.length, 1);
    assert.equal(first[0]?.authorization, auth, "the registry request carried Basic auth");
    assert.equal(blobServer.seen.length, 1);
    assert.equal(blobServer.seen[0]?.authorization, undefined, "no credentials crossed origins");
    assert.equal(blobServer.seen[0]?.url, "/storage/blob?sig=1");
    assert.deepEqual(
      events.filter((e) => e.type === "redirect"),
      [
        {
          type: "redirect",
          from: `http://${registry.host}`,
          to: `http://${blobServer.host}`,
          authorizationDropped: true,
        },
      ],
    );
  });

  test("a same-origin redirect keeps the Authorization header", async (t) => {
    const auth = basic("u", "p");
    const registry = await startServer(t, (req, res) => {
      if (req.headers.authorization !== auth) {
        res.writeHead(401, { "www-authenticate": 'Basic realm="x"' });
        return res.end();
      }
      if (req.url === "/v2/") return json(res, 200, {});
      if (req.url === "/v2/a/blobs/old") {
        res.writeHead(302, { location: "/v2/a/blobs/new" });
        return res.end();
      }
      res.end("moved");
    });
    const transport = newTransport(t, {
      credentials: staticCredentials({ [registry.host]: { username: "u", password: "p" } }),
    });
    const response = await transport.request(registry.host, {
      method: "GET",
      path: "/v2/a/blobs/old",
      expect: [200],
      what: "blob",
    });
    assert.equal((await readBody(response.body, 100, "x")).toString(), "moved");
    assert.equal(requestsTo(registry.seen, "/v2/a/blobs/new")[0]?.authorization, auth);
  });

  test("Basic auth with no saved credentials is an AuthenticationError", async (t) => {
    const registry = await startServer(t, (_req, res) => {
      res.writeHead(401, { "www-authenticate": 'Basic realm="x"' });
      res.end();
    });
    const transport = newTransport(t);
    await assert.rejects(
      transport.request(registry.host, {
        method: "GET",
        path: "/v2/a/manifests/1",
        expect: [200],
        what: "m",
      }),
      (error: unknown) =>
        error instanceof AuthenticationError &&
        error.code === "UNAUTHORIZED" &&
        /no credentials/.test(error.message),
    );
  });

  describe("bearer tokens", () => {
    interface TokenServer {
      server: TestServer;
      tokenRequests: URL[];
      /** Tokens the registry currently accepts. */
      valid: Set<string>;
      /** When set, the registry refuses every token, old or new. */
      control: { refuseAll: boolean };
    }

    async function startBearerRegistry(t: TestContext): Promise<TokenServer> {
      const tokenRequests: URL[] = [];
      const valid = new Set<string>();
      const control = { refuseAll: false };
      let issued = 0;
      let realm = "";
      const server = await startServer(t, (req, res) => {
        const url = new URL(req.url ?? "/", "http://x");
        if (url.pathname === "/token") {
          tokenRequests.push(url);
          const token = `token-${++issued}`;
          valid.add(token);
          return json(res, 200, { token, expires_in: 300 });
        }
        const presented = req.headers.authorization?.replace(/^Bearer /, "");
        if (presented === undefined || !valid.has(presented) || control.refuseAll) {
          res.writeHead(401, {
            "www-authenticate": `Bearer realm="${realm}",service="svc",scope="repository:a/b:pull",error="invalid_token"`,
          });
          return res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED" }] }));
        }
        json(res, 200, { path: url.pathname, token: presented });
      });
      realm = `http://${server.host}/token`;
      return { server, tokenRequests, valid, control };
    }

    const get = (transport: Transport, host: string, path = "/v2/a/b/manifests/1") =>
      transport.request(host, {
        method: "GET",
        path,
        scopes: ["repository:a/b:pull"],
        expect: [200],
        what: "manifest",
      });

    test("fetches a token with scope and service, then reuses it", async (t) => {
      const { server, tokenRequests } = await startBearerRegistry(t);
      const events: TransportEvent[] = [];
      const transport = newTransport(t, { onTransportEvent: (e) => events.push(e) });

      const first = await get(transport, server.host);
      assert.deepEqual(JSON.parse((await readBody(first.body, 1000, "x")).toString()), {
        path: "/v2/a/b/manifests/1",
        token: "token-1",
      });
      assert.equal(tokenRequests.length, 1);
      assert.equal(tokenRequests[0]?.searchParams.get("service"), "svc");
      assert.deepEqual(tokenRequests[0]?.searchParams.getAll("scope"), ["repository:a/b:pull"]);
      assert.equal(
        server.seen.find((s) => s.url.startsWith("/token"))?.authorization,
        undefined,
        "anonymous token request",
      );

      const second = await get(transport, server.host, "/v2/a/b/manifests/2");
      assert.equal(JSON.parse((await readBody(second.body, 1000, "x")).toString()).token, "token-1");
      assert.equal(tokenRequests.length, 1, "the cached token is reused");
      assert.equal(requestsTo(server.seen, "/v2/a/b/manifests/2").length, 1, "no 401 round trip");
      assert.deepEqual(
        events.filter((e) => e.type === "token"),
        [{ type: "token", registry: server.host, scopes: ["repository:a/b:pull"] }],
      );
    });

    test("different scopes get a different token", async (t) => {
      const { server, tokenRequests } = await startBearerRegistry(t);
      const transport = newTransport(t);
      await drain((await get(transport, server.host)).body);
      const push = await transport.request(server.host, {
        method: "GET",
        path: "/v2/a/b/manifests/1",
        scopes: ["repository:a/b:push", "repository:a/b:pull", "repository:a/b:push"],
        expect: [200],
        what: "m",
      });
      await drain(push.body);
      assert.equal(tokenRequests.length, 2);
      assert.deepEqual(tokenRequests[1]?.searchParams.getAll("scope"), [
        "repository:a/b:pull",
        "repository:a/b:push",
      ]);
    });

    test("credentials are sent to the token endpoint as Basic", async (t) => {
      const { server } = await startBearerRegistry(t);
      const transport = newTransport(t, {
        credentials: staticCredentials({ [server.host]: { username: "alice", password: "pw" } }),
      });
      await drain((await get(transport, server.host)).body);
      const tokenRequest = server.seen.find((s) => s.url.startsWith("/token"));
      assert.equal(tokenRequest?.authorization, basic("alice", "pw"));
      const registryRequest = requestsTo(server.seen, "/v2/a/b/manifests/1").at(-1);
      assert.equal(registryRequest?.authorization, "Bearer token-1", "the registry never sees the password");
    });

    test("a 401 with a cached token triggers exactly one refresh", async (t) => {
      const { server, tokenRequests, valid } = await startBearerRegistry(t);
      const transport = newTransport(t);
      await drain((await get(transport, server.host)).body);
      assert.equal(tokenRequests.length, 1);

      valid.clear(); // the registry revokes token-1
      const before = requestsTo(server.seen, "/v2/a/b/manifests/3").length;
      const response = await get(transport, server.host, "/v2/a/b/manifests/3");
      assert.equal(JSON.parse((await readBody(response.body, 1000, "x")).toString()).token, "token-2");
      assert.equal(tokenRequests.length, 2, "one new token");
      const attempts = requestsTo(server.seen, "/v2/a/b/manifests/3").slice(before);
      assert.deepEqual(
        attempts.map((s) => s.authorization),
        ["Bearer token-1", "Bearer token-2"],
      );
      assert.deepEqual(tokenRequests[1]?.searchParams.getAll("scope"), ["repository:a/b:pull"]);

      // The refreshed token is cached in turn.
      await drain((await get(transport, server.host)).body);
      assert.equal(tokenRequests.length, 2);
    });

    test("a registry that keeps refusing gets one refresh, then an AuthenticationError", async (t) => {
      const { server, tokenRequests, control } = await startBearerRegistry(t);
      const transport = newTransport(t);
      await drain((await get(transport, server.host)).body);
      control.refuseAll = true;
      const before = requestsTo(server.seen, "/v2/a/b/manifests/9").length;
      await assert.rejects(get(transport, server.host, "/v2/a/b/manifests/9"), (error: unknown) => {
        assert.ok(error instanceof AuthenticationError);
        assert.match(error.message, /rejected the credentials \(UNAUTHORIZED\)/);
        return true;
      });
      assert.equal(tokenRequests.length, 2, "exactly one refresh");
      assert.equal(requestsTo(server.seen, "/v2/a/b/manifests/9").length - before, 2);
    });
  });

  test("a plain-HTTP token realm on another host is refused before any credentials are sent", async (t) => {
    const registry = await startServer(t, (_req, res) => {
      res.writeHead(401, {
        "www-authenticate": 'Bearer realm="http://auth.example.invalid/token",service="svc"',
      });
      res.end();
    });
    const transport = newTransport(t, {
      credentials: staticCredentials({ [registry.host]: { username: "u", password: "secret" } }),
    });
    await assert.rejects(
      transport.request(registry.host, {
        method: "GET",
        path: "/v2/a/manifests/1",
        expect: [200],
        what: "m",
      }),
      (error: unknown) =>
        error instanceof UnsafeRedirectError &&
        error.code === "UNSAFE_REDIRECT" &&
        /plain-HTTP token realm \(auth\.example\.invalid\)/.test(error.message),
    );
    assert.deepEqual(
      registry.seen.map((s) => s.url),
      ["/v2/"],
      "nothing but the ping was sent",
    );
  });

  test("a token server refusing the request is an AuthenticationError", async (t) => {
    let realm = "";
    const registry = await startServer(t, (req, res) => {
      if (req.url?.startsWith("/token")) {
        res.writeHead(401);
        return res.end();
      }
      res.writeHead(401, { "www-authenticate": `Bearer realm="${realm}",service="svc"` });
      res.end();
    });
    realm = `http://${registry.host}/token`;
    const transport = newTransport(t);
    await assert.rejects(
      transport.request(registry.host, {
        method: "GET",
        path: "/v2/a/manifests/1",
        scopes: ["repository:a:pull"],
        expect: [200],
        what: "m",
      }),
      (error: unknown) =>
        error instanceof AuthenticationError && /no credentials are saved/.test(error.message),
    );
  });

  test("404 with a registry error document is a NotFoundError naming the error code", async (t) => {
    const server = await startServer(t, (req, res) => {
      if (req.url === "/v2/") return json(res, 200, {});
      json(res, 404, {
        errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown", detail: { tag: "nope" } }],
      });
    });
    const transport = newTransport(t);
    await assert.rejects(
      transport.request(server.host, {
        method: "GET",
        path: "/v2/a/manifests/nope",
        expect: [200],
        what: `manifest ${server.host}/a:nope`,
      }),
      (error: unknown) => {
        assert.ok(error instanceof NotFoundError, `got ${error}`);
        assert.equal(error.code, "NOT_FOUND");
        assert.ok(error.message.includes("MANIFEST_UNKNOWN"), error.message);
        assert.ok(error.message.includes(`manifest ${server.host}/a:nope was not found`), error.message);
        return true;
      },
    );
    assert.equal(requestsTo(server.seen, "/v2/a/manifests/nope").length, 1, "404 is not retried");
  });

  test("a 404 listed in expect is returned, not thrown", async (t) => {
    const server = await startServer(t, (req, res) => {
      if (req.url === "/v2/") return json(res, 200, {});
      res.writeHead(404);
      res.end();
    });
    const transport = newTransport(t);
    const response = await transport.request(server.host, {
      method: "HEAD",
      path: "/v2/a/blobs/x",
      expect: [200, 404],
      what: "blob",
    });
    assert.equal(response.status, 404);
    await drain(response.body);
  });

  test("403 is an AuthenticationError about access", async (t) => {
    const server = await startServer(t, (req, res) => {
      if (req.url === "/v2/") return json(res, 200, {});
      json(res, 403, { errors: [{ code: "DENIED", message: "requested access to the resource is denied" }] });
    });
    const transport = newTransport(t);
    await assert.rejects(
      transport.request(server.host, { method: "GET", path: "/v2/a/manifests/1", expect: [200], what: "m" }),
      (error: unknown) =>
        error instanceof AuthenticationError &&
        /access denied/.test(error.message) &&
        /DENIED/.test(error.message),
    );
  });
});
