import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  createCertificateAuthority,
  createLeafCertificate,
  createSigningCertificate,
  type SigningAlgorithm,
} from "./pki.js";
import { startTokenServer, type TokenServer } from "./token-server.js";
import {
  findFreePort,
  makeTempDir,
  removeDir,
  requireBinary,
  runBinary,
  TailBuffer,
  terminateChild,
  trackChild,
} from "./util.js";

export type RegistryFlavour = "anonymous" | "basic" | "token" | "tls";
export type RegistryAuth = "none" | "basic" | "token";

export interface StartRegistryOptions {
  flavour: RegistryFlavour;
  /** user → password for basic/token auth. Default `{ alice: "wonderland" }`. */
  users?: Record<string, string>;
  /** Only for the `tls` flavour, which otherwise has no auth. */
  auth?: RegistryAuth;
  /** Token auth: `auth.token.service`, also the token's `aud`. */
  service?: string;
  /** Token auth: let anonymous callers obtain pull tokens. */
  anonymousPull?: boolean;
  /** Token auth: per-user cap on repository actions; see TokenServerOptions.access. */
  access?: (user: string, repository: string) => string[];
  /** Token auth: token lifetime in seconds (default 300). */
  expiresIn?: number;
  /** Token auth: shift of iat/nbf/exp, to produce tokens the registry already considers expired. */
  clockSkewSeconds?: number;
  /** Token auth: whether the token server answers OAuth2 `POST /token` (default true). */
  oauth?: boolean;
  signingAlgorithm?: SigningAlgorithm;
  /** TLS: SANs added to `IP:127.0.0.1` and `DNS:localhost`. */
  extraSans?: string[];
  /** Hard limit on how long the registry may take to start listening. Default 15 s. */
  startupTimeoutMs?: number;
}

export interface TestRegistry {
  /** `127.0.0.1:PORT`, as it appears in image references. */
  host: string;
  /** `http://127.0.0.1:PORT` or `https://…` for the tls flavour. */
  url: string;
  flavour: RegistryFlavour;
  auth: RegistryAuth;
  /** CA that signed the TLS server cert; only for the tls flavour. */
  caFile?: string;
  caPem?: string;
  users: Record<string, string>;
  tokenServer?: TokenServer;
  dataDir: string;
  configFile: string;
  /** Tail of the registry's combined stdout/stderr, for diagnostics. */
  logs(): string;
  stop(): Promise<void>;
}

const DEFAULT_USERS: Readonly<Record<string, string>> = { alice: "wonderland" };
const DEFAULT_SERVICE = "locald-e2e-registry";
const PORT_ATTEMPTS = 3;

export function basicAuthHeader(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}

/** JSON strings are valid YAML double-quoted scalars, which spares us a YAML dependency. */
function q(value: string): string {
  return JSON.stringify(value);
}

interface AuthConfig {
  yaml: string[];
}

interface TlsMaterial {
  certFile: string;
  keyFile: string;
  caFile: string;
  caPem: string;
}

function renderConfig(port: number, dataDir: string, auth: AuthConfig, tls: TlsMaterial | undefined): string {
  const lines = [
    "version: 0.1",
    "log:",
    // info is the quietest level that still prints "listening on", which is our readiness event.
    "  level: info",
    "  formatter: text",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${q(dataDir)}`,
    "  delete:",
    "    enabled: true",
    "  maintenance:",
    "    uploadpurging:",
    "      enabled: false",
    "http:",
    `  addr: ${q(`127.0.0.1:${port}`)}`,
    // A fixed secret per instance; otherwise the registry warns and generates one anyway.
    `  secret: ${q(randomBytes(16).toString("hex"))}`,
  ];
  if (tls) {
    lines.push("  tls:", `    certificate: ${q(tls.certFile)}`, `    key: ${q(tls.keyFile)}`);
  }
  lines.push(...auth.yaml);
  return `${lines.join("\n")}\n`;
}

/** Strips REGISTRY_* so a developer's shell cannot silently override the generated config. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("REGISTRY_") && !k.startsWith("OTEL_")) env[k] = v;
  }
  return env;
}

class PortInUseError extends Error {}

async function spawnAndAwaitListening(
  binary: string,
  configFile: string,
  port: number,
  timeoutMs: number,
): Promise<{ child: ChildProcess; logs: TailBuffer }> {
  const logs = new TailBuffer();
  const child = spawn(binary, ["serve", configFile], {
    stdio: ["ignore", "pipe", "pipe"],
    env: childEnv(),
  });
  trackChild(child);
  const readyMarker = `listening on 127.0.0.1:${port}`;

  try {
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const finish = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const onData = (chunk: Buffer): void => {
        logs.append(chunk.toString("utf8"));
        if (logs.toString().includes(readyMarker)) finish();
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", onData);
      child.once("error", (err) => finish(new Error(`could not start docker-registry: ${err.message}`)));
      child.once("exit", (code, signal) => {
        const text = logs.toString();
        if (text.includes("address already in use")) {
          finish(new PortInUseError(`port ${port} was taken before the registry could bind it`));
          return;
        }
        finish(
          new Error(
            `docker-registry exited during startup (code ${code}, signal ${signal}).\n--- registry output ---\n${text}`,
          ),
        );
      });
      const timer = setTimeout(() => {
        finish(
          new Error(
            `docker-registry did not report "${readyMarker}" within ${timeoutMs} ms.\n--- registry output ---\n${logs.toString()}`,
          ),
        );
      }, timeoutMs);
    });
  } catch (err) {
    await terminateChild(child, 2_000);
    throw err;
  }
  return { child, logs };
}

async function writeHtpasswd(file: string, users: Record<string, string>): Promise<void> {
  const lines: string[] = [];
  for (const [user, password] of Object.entries(users)) {
    if (user.includes(":")) throw new Error(`htpasswd user names cannot contain ':' (got ${q(user)})`);
    // Distribution 2.8 only accepts bcrypt entries, hence -B.
    const { stdout } = await runBinary("htpasswd", ["-Bbn", user, password]);
    lines.push(stdout.trim());
  }
  await writeFile(file, `${lines.join("\n")}\n`, { mode: 0o600 });
}

export async function startRegistry(options: StartRegistryOptions): Promise<TestRegistry> {
  const flavour = options.flavour;
  const auth: RegistryAuth =
    flavour === "anonymous" ? "none" : flavour === "tls" ? (options.auth ?? "none") : flavour;
  if (flavour !== "tls" && options.auth !== undefined && options.auth !== auth) {
    throw new Error(`option auth=${options.auth} conflicts with flavour ${flavour}`);
  }
  const useTls = flavour === "tls";
  const users = auth === "none" ? {} : { ...(options.users ?? DEFAULT_USERS) };

  // Fail on missing tools before creating anything that would need cleaning up.
  const binary = await requireBinary("docker-registry");
  if (auth === "basic") await requireBinary("htpasswd");
  if (useTls || auth === "token") await requireBinary("openssl");

  const workDir = await makeTempDir("registry");
  let tokenServer: TokenServer | undefined;
  try {
    const dataDir = join(workDir, "data");
    const pkiDir = join(workDir, "pki");
    await mkdir(dataDir);
    await mkdir(pkiDir);

    const authConfig: AuthConfig = { yaml: [] };
    if (auth === "basic") {
      const htpasswdFile = join(workDir, "htpasswd");
      await writeHtpasswd(htpasswdFile, users);
      authConfig.yaml.push(
        "auth:",
        "  htpasswd:",
        `    realm: ${q("locald-e2e")}`,
        `    path: ${q(htpasswdFile)}`,
      );
    } else if (auth === "token") {
      const signer = await createSigningCertificate(pkiDir, {
        algorithm: options.signingAlgorithm ?? "RS256",
      });
      const service = options.service ?? DEFAULT_SERVICE;
      tokenServer = await startTokenServer({
        service,
        signer,
        users,
        anonymousPull: options.anonymousPull ?? false,
        ...(options.access ? { access: options.access } : {}),
        ...(options.expiresIn !== undefined ? { expiresIn: options.expiresIn } : {}),
        ...(options.clockSkewSeconds !== undefined ? { clockSkewSeconds: options.clockSkewSeconds } : {}),
        ...(options.oauth !== undefined ? { oauth: options.oauth } : {}),
      });
      authConfig.yaml.push(
        "auth:",
        "  token:",
        `    realm: ${q(tokenServer.realm)}`,
        `    service: ${q(service)}`,
        `    issuer: ${q(tokenServer.issuer)}`,
        `    rootcertbundle: ${q(signer.certFile)}`,
      );
    }

    let tls: TlsMaterial | undefined;
    if (useTls) {
      const ca = await createCertificateAuthority(pkiDir);
      const leaf = await createLeafCertificate(ca, pkiDir, { extraSans: options.extraSans ?? [] });
      tls = { certFile: leaf.certFile, keyFile: leaf.keyFile, caFile: ca.certFile, caPem: ca.certPem };
    }

    const configFile = join(workDir, "config.yml");
    const timeoutMs = options.startupTimeoutMs ?? 15_000;
    let started: { child: ChildProcess; logs: TailBuffer } | undefined;
    let port = 0;
    for (let attempt = 1; started === undefined; attempt++) {
      port = await findFreePort();
      await writeFile(configFile, renderConfig(port, dataDir, authConfig, tls));
      try {
        started = await spawnAndAwaitListening(binary, configFile, port, timeoutMs);
      } catch (err) {
        if (!(err instanceof PortInUseError) || attempt >= PORT_ATTEMPTS) throw err;
      }
    }

    const { child, logs } = started;
    const host = `127.0.0.1:${port}`;
    const ownedTokenServer = tokenServer;
    let stopping: Promise<void> | undefined;
    const registry: TestRegistry = {
      host,
      url: `${useTls ? "https" : "http"}://${host}`,
      flavour,
      auth,
      users,
      dataDir,
      configFile,
      logs: () => logs.toString(),
      stop() {
        stopping ??= (async () => {
          await terminateChild(child);
          await ownedTokenServer?.stop();
          await removeDir(workDir);
        })();
        return stopping;
      },
    };
    if (tls) {
      registry.caFile = tls.caFile;
      registry.caPem = tls.caPem;
    }
    if (tokenServer) registry.tokenServer = tokenServer;
    return registry;
  } catch (err) {
    await tokenServer?.stop();
    await removeDir(workDir);
    throw err;
  }
}

/** Runs `fn` against a fresh registry and always stops it, even when `fn` throws. */
export async function withRegistry<T>(
  options: StartRegistryOptions,
  fn: (registry: TestRegistry) => Promise<T>,
): Promise<T> {
  const registry = await startRegistry(options);
  try {
    return await fn(registry);
  } finally {
    await registry.stop();
  }
}
