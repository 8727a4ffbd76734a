import { spawn } from "node:child_process";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { CredentialsError } from "../errors.js";
import { DOCKER_HUB } from "../reference.js";

/**
 * Credentials for one registry. A registry token is sent as-is (Bearer); an identity token
 * is an OAuth2 refresh token exchanged at the token realm.
 */
export interface Credentials {
  readonly username?: string;
  readonly password?: string;
  readonly identityToken?: string;
  readonly registryToken?: string;
}

/** Looks up credentials for a registry host (`127.0.0.1:5000`, `docker.io`). */
export type CredentialProvider = (registry: string) => Promise<Credentials | undefined>;

export const anonymous: CredentialProvider = async () => undefined;

export function staticCredentials(byRegistry: Record<string, Credentials>): CredentialProvider {
  return async (registry) => byRegistry[registry];
}

/** A parsed `WWW-Authenticate` challenge. */
export interface Challenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/** An RFC 9110 token: what a scheme and a parameter name are made of. */
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const SCHEME = new RegExp(`^\\s*(${TOKEN})\\s*(.*)$`, "s");
const PARAM = new RegExp(`(${TOKEN})\\s*=\\s*(?:"((?:[^"\\\\]|\\\\.)*)"|([^\\s,]*))[\\s,]*`, "y");

/**
 * Parses `Bearer realm="…",service="…",scope="a,b"` (quoted values may contain commas). Empty
 * list elements (`a=1, ,b=2`) are skipped, as RFC 9110 asks of a recipient.
 */
export function parseChallenge(header: string): Challenge | undefined {
  const match = SCHEME.exec(header);
  if (match === null) return undefined;
  const params = new Map<string, string>();
  const rest = match[2] ?? "";
  PARAM.lastIndex = /^[\s,]*/.exec(rest)?.[0].length ?? 0;
  for (let m = PARAM.exec(rest); m !== null && m[0].length > 0; m = PARAM.exec(rest)) {
    const key = (m[1] ?? "").toLowerCase();
    params.set(key, m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : (m[3] ?? ""));
  }
  // fromEntries defines own properties: a `__proto__` parameter stays a parameter.
  return { scheme: (match[1] ?? "").toLowerCase(), params: Object.fromEntries(params) };
}

/** The shape of docker's `config.json` that we read and write; other keys are preserved. */
interface DockerConfigFile {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }
  >;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [key: string]: unknown;
}

const DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/";

export function dockerConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.DOCKER_CONFIG ?? join(env.HOME ?? homedir(), ".docker");
}

/** The key docker uses for a registry in `auths` and what it passes to credential helpers. */
export function dockerConfigKey(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_CONFIG_KEY : registry;
}

/** `https://host:port/v1/` → `host:port`, so keys written by any client match. */
function normaliseConfigKey(key: string): string {
  const stripped = key.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "");
  return stripped === "index.docker.io" || stripped === "registry-1.docker.io" ? DOCKER_HUB : stripped;
}

async function readDockerConfig(path: string): Promise<DockerConfigFile> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new CredentialsError(`Cannot read ${path}: ${(error as Error).message}.`);
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
      throw new Error("not an object");
    return parsed as DockerConfigFile;
  } catch {
    throw new CredentialsError(`${path} is not valid JSON.`, {
      hint: "Fix or remove the file, then log in again.",
    });
  }
}

function decodeAuthField(auth: string, key: string): { username: string; password: string } {
  const decoded = Buffer.from(auth, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon === -1)
    throw new CredentialsError(`The saved login for ${key} in docker's config.json is malformed.`, {
      hint: `Run: locald login ${key}`,
    });
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

interface HelperOutput {
  Username?: string;
  Secret?: string;
}

/** Runs `docker-credential-<name> <action>` with the given stdin. */
async function runCredentialHelper(
  name: string,
  action: "get" | "store" | "erase",
  input: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  if (!/^[A-Za-z0-9._-]+$/.test(name))
    throw new CredentialsError(`"${name}" is not a valid credential helper name.`);
  const program = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    const child = spawn(program, [action], { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => err.push(chunk));
    child.on("error", (error: NodeJS.ErrnoException) => {
      reject(
        new CredentialsError(
          `Cannot run the credential helper ${program}: ${error.code === "ENOENT" ? "it is not on PATH" : error.message}.`,
          {
            hint: `Install ${program}, or remove it from credsStore/credHelpers in ${dockerConfigDir()}/config.json.`,
          },
        ),
      );
    });
    child.on("close", (code) =>
      resolve({
        code: code ?? 1,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      }),
    );
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}

async function helperGet(name: string, registry: string): Promise<Credentials | undefined> {
  const result = await runCredentialHelper(name, "get", dockerConfigKey(registry));
  if (result.code !== 0) {
    if (/not found/i.test(result.stdout + result.stderr)) return undefined;
    throw new CredentialsError(
      `The credential helper docker-credential-${name} failed for ${registry} (exit ${result.code}).`,
    );
  }
  let parsed: HelperOutput;
  try {
    parsed = JSON.parse(result.stdout) as HelperOutput;
  } catch {
    throw new CredentialsError(
      `The credential helper docker-credential-${name} printed something that is not JSON.`,
    );
  }
  if (parsed.Secret === undefined || parsed.Secret === "") return undefined;
  if (parsed.Username === "<token>") return { identityToken: parsed.Secret };
  return { username: parsed.Username ?? "", password: parsed.Secret };
}

/**
 * Credentials as docker finds them: `credHelpers[registry]`, then `credsStore`, then `auths`
 * in `$DOCKER_CONFIG/config.json`, so users logged in with docker are logged in here too.
 */
export function dockerConfigCredentials(options: { configDir?: string } = {}): CredentialProvider {
  return async (registry) => {
    const dir = options.configDir ?? dockerConfigDir();
    const config = await readDockerConfig(join(dir, "config.json"));
    const helper = Object.entries(config.credHelpers ?? {}).find(
      ([key]) => normaliseConfigKey(key) === registry,
    )?.[1];
    if (helper !== undefined) return helperGet(helper, registry);
    const entry = Object.entries(config.auths ?? {}).find(([key]) => normaliseConfigKey(key) === registry);
    if (config.credsStore !== undefined && config.credsStore !== "") {
      const stored = await helperGet(config.credsStore, registry);
      if (stored !== undefined) return stored;
    }
    if (entry === undefined) return undefined;
    const [key, value] = entry;
    if (value.registrytoken) return { registryToken: value.registrytoken };
    if (value.identitytoken)
      return { identityToken: value.identitytoken, ...(value.username ? { username: value.username } : {}) };
    if (value.auth) return decodeAuthField(value.auth, key);
    if (value.username !== undefined && value.password !== undefined)
      return { username: value.username, password: value.password };
    return undefined;
  };
}

/** The `credHelpers` entry for a registry, matched after normalising keys as reading does. */
function helperFor(config: DockerConfigFile, registry: string): string | undefined {
  return Object.entries(config.credHelpers ?? {}).find(([k]) => normaliseConfigKey(k) === registry)?.[1];
}

async function writeDockerConfig(path: string, config: DockerConfigFile): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, `${JSON.stringify(config, null, "\t")}\n`, { mode: 0o600 });
  await rename(temp, path);
}

/**
 * Saves credentials the way `docker login` does: into the configured credential helper when
 * there is one, else base64 in `auths`. Returns where they went, for the user.
 */
export async function saveDockerCredentials(
  registry: string,
  credentials: { username: string; password: string },
  options: { configDir?: string } = {},
): Promise<string> {
  const path = join(options.configDir ?? dockerConfigDir(), "config.json");
  const config = await readDockerConfig(path);
  const key = dockerConfigKey(registry);
  const helper = helperFor(config, registry) ?? config.credsStore;
  if (helper !== undefined && helper !== "") {
    const result = await runCredentialHelper(
      helper,
      "store",
      JSON.stringify({ ServerURL: key, Username: credentials.username, Secret: credentials.password }),
    );
    if (result.code !== 0)
      throw new CredentialsError(
        `The credential helper docker-credential-${helper} could not store the login for ${registry} (exit ${result.code}).`,
      );
    const auths = { ...(config.auths ?? {}) };
    auths[key] = {};
    await writeDockerConfig(path, { ...config, auths });
    return `docker-credential-${helper}`;
  }
  const auths = Object.fromEntries(
    Object.entries(config.auths ?? {}).filter(([k]) => normaliseConfigKey(k) !== registry),
  );
  auths[key] = { auth: Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64") };
  await writeDockerConfig(path, { ...config, auths });
  return path;
}

/** Removes a saved login; returns false when there was none. */
export async function removeDockerCredentials(
  registry: string,
  options: { configDir?: string } = {},
): Promise<boolean> {
  const path = join(options.configDir ?? dockerConfigDir(), "config.json");
  const config = await readDockerConfig(path);
  const key = dockerConfigKey(registry);
  const entries = Object.entries(config.auths ?? {});
  const kept = entries.filter(([k]) => normaliseConfigKey(k) !== registry);
  let removed = kept.length !== entries.length;
  const helper = helperFor(config, registry) ?? config.credsStore;
  if (helper !== undefined && helper !== "") {
    const result = await runCredentialHelper(helper, "erase", key);
    if (result.code === 0) removed = true;
  }
  if (kept.length !== entries.length)
    await writeDockerConfig(path, { ...config, auths: Object.fromEntries(kept) });
  return removed;
}
