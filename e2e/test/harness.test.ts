import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer, get as httpGet, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { Agent, fetch as undiciFetch } from "undici";
import {
  basicAuthHeader,
  decodeJwt,
  requireBinary,
  startFaultProxy,
  startOriginRecorder,
  startRegistry,
  type TestRegistry,
} from "../src/index.js";

function sha256(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** Parses `Bearer realm="…",service="…",scope="…"`; good enough for distribution's own output. */
function parseChallenge(header: string | null): Record<string, string> {
  assert.ok(header, "expected a WWW-Authenticate header");
  const params: Record<string, string> = {};
  for (const m of header.matchAll(/(\w+)="([^"]*)"/g)) {
    if (m[1] !== undefined && m[2] !== undefined) params[m[1]] = m[2];
  }
  return params;
}

/** Monolithic-by-PUT blob upload: POST to open a session, PUT the bytes with the digest. */
async function uploadBlob(
  baseUrl: string,
  repo: string,
  data: Buffer,
  authorization?: string,
): Promise<{ post: Response; put?: Response; location?: string }> {
  const headers: Record<string, string> = authorization ? { authorization } : {};
  const post = await fetch(`${baseUrl}/v2/${repo}/blobs/uploads/`, { method: "POST", headers });
  await post.arrayBuffer();
  if (post.status !== 202) return { post };
  const location = post.headers.get("location");
  assert.ok(location, "upload POST must return a Location");
  const putUrl = new URL(location, baseUrl);
  putUrl.searchParams.set("digest", sha256(data));
  const put = await fetch(putUrl, {
    method: "PUT",
    headers: { ...headers, "content-type": "application/octet-stream" },
    body: data,
  });
  await put.arrayBuffer();
  return { post, put, location };
}

async function fetchToken(
  registry: TestRegistry,
  scopes: string[],
  authorization?: string,
): Promise<Response> {
  const ts = registry.tokenServer;
  assert.ok(ts);
  const url = new URL(ts.realm);
  url.searchParams.set("service", ts.service);
  for (const s of scopes) url.searchParams.append("scope", s);
  return fetch(url, { headers: authorization ? { authorization } : {} });
}

async function bearer(registry: TestRegistry, scopes: string[], user = "alice"): Promise<string> {
  const res = await fetchToken(registry, scopes, basicAuthHeader(user, registry.users[user] ?? ""));
  assert.equal(res.status, 200);
  const body = (await res.json()) as { token: string; access_token: string };
  assert.equal(body.token, body.access_token);
  return `Bearer ${body.token}`;
}

async function startUpstream(): Promise<{ url: string; server: Server; blob: Buffer }> {
  const blob = Buffer.alloc(64 * 1024);
  for (let i = 0; i < blob.length; i++) blob[i] = (i * 31 + 7) & 0xff;
  const server = createServer((req, res) => {
    if (req.url === "/blob") {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": blob.length });
      res.end(blob);
    } else if (req.url === "/upload") {
      const { port } = server.address() as AddressInfo;
      res.writeHead(202, { location: `http://127.0.0.1:${port}/upload/session?x=1`, "content-length": 0 });
      res.end();
    } else {
      res.writeHead(404, { "content-length": 0 });
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, server, blob };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** Raw node:http so we see exactly how many bytes arrived and how the connection ended. */
function rawGet(
  url: string,
): Promise<{ status: number; contentLength: number; received: number; error?: string }> {
  return new Promise((resolve) => {
    const req = httpGet(url, { agent: false }, (res) => {
      let received = 0;
      let error: string | undefined;
      res.on("data", (c: Buffer) => {
        received += c.length;
      });
      res.on("error", (e) => {
        error = (e as NodeJS.ErrnoException).code ?? e.message;
      });
      res.on("close", () => {
        const result = {
          status: res.statusCode ?? 0,
          contentLength: Number(res.headers["content-length"]),
          received,
        };
        resolve(error === undefined ? result : { ...result, error });
      });
    });
    req.on("error", (e) => resolve({ status: 0, contentLength: 0, received: 0, error: e.message }));
  });
}

test("requireBinary names the Debian package to install", async () => {
  await assert.rejects(requireBinary("definitely-not-a-real-binary-xyz"), /apt-get install/);
  assert.match(await requireBinary("openssl"), /openssl$/);
});

test("anonymous registry serves /v2/ and accepts pushes; stop() cleans up", async (t) => {
  const registry = await startRegistry({ flavour: "anonymous" });
  t.after(() => registry.stop());
  assert.match(registry.host, /^127\.0\.0\.1:\d+$/);
  assert.equal(registry.url, `http://${registry.host}`);

  const ping = await fetch(`${registry.url}/v2/`);
  assert.equal(ping.status, 200);
  assert.equal(ping.headers.get("docker-distribution-api-version"), "registry/2.0");

  const data = Buffer.from("hello anonymous registry");
  const { put } = await uploadBlob(registry.url, "test/anon", data);
  assert.equal(put?.status, 201);
  const head = await fetch(`${registry.url}/v2/test/anon/blobs/${sha256(data)}`, { method: "HEAD" });
  assert.equal(head.status, 200);

  assert.ok(existsSync(registry.dataDir));
  await registry.stop();
  assert.equal(existsSync(registry.dataDir), false);
  await assert.rejects(fetch(`${registry.url}/v2/`));
});

test("basic registry: 401 without or with wrong credentials, 200 with them", async (t) => {
  const registry = await startRegistry({ flavour: "basic" });
  t.after(() => registry.stop());
  assert.deepEqual(registry.users, { alice: "wonderland" });

  const anon = await fetch(`${registry.url}/v2/`);
  assert.equal(anon.status, 401);
  assert.match(anon.headers.get("www-authenticate") ?? "", /^Basic realm=/);

  const wrong = await fetch(`${registry.url}/v2/`, {
    headers: { authorization: basicAuthHeader("alice", "nope") },
  });
  assert.equal(wrong.status, 401);

  const ok = await fetch(`${registry.url}/v2/`, {
    headers: { authorization: basicAuthHeader("alice", "wonderland") },
  });
  assert.equal(ok.status, 200);
});

test("token registry: challenge, token fetch, scoped push and pull", async (t) => {
  const registry = await startRegistry({ flavour: "token", users: { alice: "wonderland", bob: "builder" } });
  t.after(() => registry.stop());
  const ts = registry.tokenServer;
  assert.ok(ts);

  const anon = await fetch(`${registry.url}/v2/`);
  assert.equal(anon.status, 401);
  const challenge = parseChallenge(anon.headers.get("www-authenticate"));
  assert.match(anon.headers.get("www-authenticate") ?? "", /^Bearer /);
  assert.equal(challenge.realm, ts.realm);
  assert.equal(challenge.service, ts.service);

  // Without anonymousPull the token server refuses anonymous and bad credentials alike.
  assert.equal((await fetchToken(registry, ["repository:test/app:pull"])).status, 401);
  assert.equal(
    (await fetchToken(registry, ["repository:test/app:pull"], basicAuthHeader("alice", "wrong"))).status,
    401,
  );

  const pingToken = await bearer(registry, []);
  assert.equal((await fetch(`${registry.url}/v2/`, { headers: { authorization: pingToken } })).status, 200);

  const data = Buffer.from("pushed with a token");
  const pullOnly = await bearer(registry, ["repository:test/app:pull"]);
  const denied = await uploadBlob(registry.url, "test/app", data, pullOnly);
  assert.equal(denied.post.status, 401);
  assert.match(denied.post.headers.get("www-authenticate") ?? "", /insufficient_scope/);
  assert.match(
    parseChallenge(denied.post.headers.get("www-authenticate")).scope ?? "",
    /repository:test\/app:.*push/,
  );

  const pushToken = await bearer(registry, ["repository:test/app:pull,push"]);
  const pushed = await uploadBlob(registry.url, "test/app", data, pushToken);
  assert.equal(pushed.post.status, 202);
  assert.equal(pushed.put?.status, 201);

  const blob = await fetch(`${registry.url}/v2/test/app/blobs/${sha256(data)}`, {
    headers: { authorization: pullOnly },
  });
  assert.equal(blob.status, 200);
  assert.deepEqual(Buffer.from(await blob.arrayBuffer()), data);

  const { header, claims } = decodeJwt(pushToken.slice("Bearer ".length));
  assert.equal(header.alg, "RS256");
  assert.ok(Array.isArray(header.x5c));
  assert.equal(claims.aud, ts.service);
  assert.equal(claims.sub, "alice");
  assert.deepEqual(claims.access, [{ type: "repository", name: "test/app", actions: ["pull", "push"] }]);

  const pushLog = ts.requests.find((r) => r.scopes.includes("repository:test/app:pull,push"));
  assert.ok(pushLog);
  assert.equal(pushLog.user, "alice");
  assert.equal(pushLog.authorizationScheme, "basic");
  assert.equal(pushLog.status, 200);
  assert.equal(ts.requests.filter((r) => r.status === 401).length, 2);
  assert.ok(
    !JSON.stringify(ts.requests).includes("wonderland"),
    "the token log must never contain passwords",
  );
});

test("token registry: per-user access, OAuth2 password/refresh grants, 2.8 expiry leeway", async (t) => {
  const registry = await startRegistry({
    flavour: "token",
    users: { alice: "wonderland", bob: "builder" },
    access: (user) => (user === "alice" ? ["*"] : ["pull"]),
  });
  t.after(() => registry.stop());
  const ts = registry.tokenServer;
  assert.ok(ts);

  const bobToken = decodeJwt((await bearer(registry, ["repository:x/y:pull,push"], "bob")).slice(7));
  assert.deepEqual(bobToken.claims.access[0]?.actions, ["pull"]);

  const form = (fields: Record<string, string>) =>
    fetch(ts.realm, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(fields).toString(),
    });
  const pw = await form({
    grant_type: "password",
    username: "alice",
    password: "wonderland",
    service: ts.service,
    client_id: "harness",
    scope: "repository:a/b:pull repository:c/d:push",
  });
  assert.equal(pw.status, 200);
  const pwBody = (await pw.json()) as { access_token: string; refresh_token?: string; expires_in: number };
  assert.ok(pwBody.refresh_token);
  assert.equal(pwBody.expires_in, 300);
  assert.equal(decodeJwt(pwBody.access_token).claims.access.length, 2);

  const refreshed = await form({
    grant_type: "refresh_token",
    refresh_token: pwBody.refresh_token,
    service: ts.service,
    client_id: "harness",
  });
  assert.equal(refreshed.status, 200);
  const refreshedBody = (await refreshed.json()) as { access_token: string; refresh_token?: string };
  assert.equal(refreshedBody.refresh_token, undefined, "no new refresh token without access_type=offline");
  const ping = await fetch(`${registry.url}/v2/`, {
    headers: { authorization: `Bearer ${refreshedBody.access_token}` },
  });
  assert.equal(ping.status, 200);

  assert.equal((await form({ grant_type: "password", username: "alice", password: "x" })).status, 401);
  ts.revokeRefreshTokens();
  assert.equal(
    (await form({ grant_type: "refresh_token", refresh_token: pwBody.refresh_token })).status,
    401,
  );
  const logged = ts.requests.filter((r) => r.grantType !== undefined);
  assert.equal(logged.length, 4);
  assert.equal(logged[0]?.params.password?.[0], "<redacted>");
  assert.equal(logged[1]?.params.refresh_token?.[0], "<redacted>");

  // Distribution 2.8 accepts tokens up to 60 s past exp; only beyond that is a token refused.
  const v2 = (token: string) =>
    fetch(`${registry.url}/v2/`, { headers: { authorization: `Bearer ${token}` } });
  const withinLeeway = ts.issueToken({ subject: "alice", expiresIn: 1, clockSkewSeconds: -30 });
  assert.equal((await v2(withinLeeway)).status, 200);
  ts.expiresIn = 1;
  ts.clockSkewSeconds = -120;
  const expired = (await bearer(registry, [])).slice(7);
  const rejected = await v2(expired);
  assert.equal(rejected.status, 401);
  assert.match(rejected.headers.get("www-authenticate") ?? "", /invalid_token/);
  ts.clockSkewSeconds = 0;
  ts.expiresIn = 300;

  assert.equal((await v2(ts.issueToken({ audience: "someone-else" }))).status, 401);
  assert.equal((await v2(ts.issueToken({ issuer: "someone-else" }))).status, 401);
});

test("token registry with anonymous pull and ES256 tokens", async (t) => {
  const registry = await startRegistry({ flavour: "token", anonymousPull: true, signingAlgorithm: "ES256" });
  t.after(() => registry.stop());
  const res = await fetchToken(registry, ["repository:lib/thing:pull,push"]);
  assert.equal(res.status, 200);
  const { token } = (await res.json()) as { token: string };
  const { header, claims } = decodeJwt(token);
  assert.equal(header.alg, "ES256");
  assert.equal(claims.sub, "");
  assert.deepEqual(claims.access, [{ type: "repository", name: "lib/thing", actions: ["pull"] }]);

  const missing = await fetch(`${registry.url}/v2/lib/thing/blobs/${sha256(Buffer.from("nothing"))}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(missing.status, 404, "authorised for pull, so the registry gets as far as not finding it");
  const push = await uploadBlob(registry.url, "lib/thing", Buffer.from("x"), `Bearer ${token}`);
  assert.equal(push.post.status, 401);
  assert.equal(registry.tokenServer?.requests[0]?.authorizationPresent, false);
});

test("tls registry with basic auth: trusted CA succeeds, untrusted fails", async (t) => {
  const registry = await startRegistry({ flavour: "tls", auth: "basic" });
  t.after(() => registry.stop());
  assert.match(registry.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  assert.ok(registry.caPem && registry.caFile);

  const trusted = new Agent({ connect: { ca: registry.caPem } });
  t.after(() => trusted.close());
  const anon = await undiciFetch(`${registry.url}/v2/`, { dispatcher: trusted });
  assert.equal(anon.status, 401);
  await anon.arrayBuffer();
  const ok = await undiciFetch(`${registry.url}/v2/`, {
    dispatcher: trusted,
    headers: { authorization: basicAuthHeader("alice", "wonderland") },
  });
  assert.equal(ok.status, 200);
  await ok.arrayBuffer();

  const untrusted = new Agent();
  t.after(() => untrusted.close());
  await assert.rejects(undiciFetch(`${registry.url}/v2/`, { dispatcher: untrusted }));
});

test("fault proxy: passthrough, status, 429, reset, truncate, flip, html, trickle, redirect", async (t) => {
  const upstream = await startUpstream();
  t.after(() => closeServer(upstream.server));
  const recorder = await startOriginRecorder({ target: upstream.url });
  t.after(() => recorder.stop());
  const proxy = await startFaultProxy({ target: upstream.url });
  t.after(() => proxy.stop());
  const blobUrl = `${proxy.url}/blob`;

  const plain = await fetch(blobUrl);
  assert.deepEqual(Buffer.from(await plain.arrayBuffer()), upstream.blob);

  const upload = await fetch(`${proxy.url}/upload`, { method: "POST" });
  assert.equal(upload.status, 202);
  assert.equal(upload.headers.get("location"), `${proxy.url}/upload/session?x=1`);

  const twice = proxy.addFault({ kind: "status", status: 503, method: "GET", path: /^\/blob$/, times: 2 });
  assert.equal((await fetch(blobUrl)).status, 503);
  assert.equal((await fetch(blobUrl, { method: "HEAD" })).status, 200, "GET faults do not match HEAD");
  assert.equal((await fetch(blobUrl)).status, 503);
  assert.equal((await fetch(blobUrl)).status, 200);
  assert.equal(twice.hits, 2);
  assert.equal(twice.remaining, 0);

  proxy.addFault({ kind: "retry-after", seconds: 7 });
  const limited = await fetch(blobUrl);
  assert.equal(limited.status, 429);
  assert.equal(limited.headers.get("retry-after"), "7");

  proxy.addFault({ kind: "reset", afterBytes: 1000 });
  const reset = await rawGet(blobUrl);
  assert.equal(reset.status, 200);
  assert.equal(reset.contentLength, upstream.blob.length);
  assert.equal(reset.received, 1000);
  assert.ok(reset.error, "the client must see the connection fail");

  proxy.addFault({ kind: "reset", afterBytes: 1000, rst: true });
  const rst = await rawGet(blobUrl);
  assert.ok(rst.received <= 1000, `received ${rst.received} bytes before the RST`);
  assert.ok(rst.error);

  proxy.addFault({ kind: "reset", afterFraction: 0.25 });
  await assert.rejects(fetch(blobUrl).then((r) => r.arrayBuffer()));

  proxy.addFault({ kind: "truncate", afterFraction: 0.5 });
  const truncated = await rawGet(blobUrl);
  assert.equal(truncated.contentLength, upstream.blob.length);
  assert.equal(truncated.received, upstream.blob.length / 2);

  proxy.addFault({ kind: "flip", offset: 10 });
  const flipped = Buffer.from(await (await fetch(blobUrl)).arrayBuffer());
  assert.equal(flipped.length, upstream.blob.length);
  assert.notDeepEqual(flipped, upstream.blob);
  assert.equal(flipped[10], (upstream.blob[10] ?? 0) ^ 0xff);
  assert.deepEqual(flipped.subarray(11), upstream.blob.subarray(11));

  proxy.addFault({ kind: "html" });
  const html = await fetch(blobUrl);
  assert.equal(html.status, 200);
  assert.match(html.headers.get("content-type") ?? "", /^text\/html/);
  assert.match(await html.text(), /<html>/);

  proxy.addFault({ kind: "trickle", bytesPerSecond: 200_000 });
  const started = performance.now();
  const slow = Buffer.from(await (await fetch(blobUrl)).arrayBuffer());
  assert.deepEqual(slow, upstream.blob);
  assert.ok(performance.now() - started >= 250, "64 KiB at 200 KB/s takes at least ~300 ms");

  proxy.addFault({ kind: "redirect", to: recorder.url, path: "^/blob" });
  const manual = await fetch(`${blobUrl}?a=1`, { redirect: "manual" });
  assert.equal(manual.status, 307);
  assert.equal(manual.headers.get("location"), `${recorder.url}/blob?a=1`);
  proxy.addFault({ kind: "redirect", to: recorder.url, path: "^/blob" });
  const followed = await fetch(blobUrl, { headers: { authorization: "Bearer secret-token" } });
  assert.deepEqual(Buffer.from(await followed.arrayBuffer()), upstream.blob);
  const arrived = recorder.requests.at(-1);
  assert.equal(arrived?.path, "/blob");
  assert.equal(arrived?.authorization, false, "fetch must drop Authorization on a cross-origin redirect");
  assert.equal(proxy.requests.at(-1)?.authorization, true);

  const faulted = proxy.requests.filter((r) => r.fault !== undefined).map((r) => r.fault);
  assert.deepEqual(faulted, [
    "status",
    "status",
    "retry-after",
    "reset",
    "reset",
    "reset",
    "truncate",
    "flip",
    "html",
    "trickle",
    "redirect",
    "redirect",
  ]);
});

test("fault proxy in front of a real registry: uploads stay on the proxy, resumable after a reset", async (t) => {
  const registry = await startRegistry({ flavour: "anonymous" });
  t.after(() => registry.stop());
  const proxy = await startFaultProxy({ target: registry.url });
  t.after(() => proxy.stop());

  const data = Buffer.alloc(200_000, 0x5a);
  const { put, location } = await uploadBlob(proxy.url, "via/proxy", data);
  assert.equal(put?.status, 201);
  assert.ok(location?.startsWith(`${proxy.url}/v2/via/proxy/blobs/uploads/`), location);
  assert.ok(proxy.requests.some((r) => r.method === "PUT"));

  const blobPath = `/v2/via/proxy/blobs/${sha256(data)}`;
  proxy.addFault({ kind: "reset", method: "GET", path: blobPath, afterBytes: 50_000 });
  const partial = await rawGet(`${proxy.url}${blobPath}`);
  assert.ok(partial.error);
  assert.equal(partial.received, 50_000);
  const rest = await fetch(`${proxy.url}${blobPath}`, { headers: { range: `bytes=${partial.received}-` } });
  assert.equal(rest.status, 206);
  assert.equal((await rest.arrayBuffer()).byteLength, data.length - partial.received);
  assert.equal(proxy.requests.at(-1)?.range, `bytes=${partial.received}-`);
});
