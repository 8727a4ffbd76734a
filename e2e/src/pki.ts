import { randomBytes, X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { makeTempDir, removeDir, runBinary } from "./util.js";

export type KeyAlgorithm = "rsa" | "ec";
export type SigningAlgorithm = "RS256" | "ES256";

export interface CertificateFiles {
  keyFile: string;
  certFile: string;
  keyPem: string;
  certPem: string;
  /** Standard base64 of the DER certificate: the form a JWT `x5c` header carries. */
  certDerBase64: string;
}

export interface CertificateAuthority extends CertificateFiles {
  commonName: string;
}

export interface LeafCertificate extends CertificateFiles {
  commonName: string;
  /** Normalised `TYPE:value` SAN entries, e.g. `IP:127.0.0.1`. */
  subjectAltNames: string[];
}

export interface SigningCertificate extends CertificateFiles {
  commonName: string;
  algorithm: SigningAlgorithm;
}

export interface CreateCaOptions {
  commonName?: string;
  keyAlgorithm?: KeyAlgorithm;
  /** File basename inside `dir`; distinct names let several CAs share a directory. */
  name?: string;
}

export interface CreateLeafOptions {
  commonName?: string;
  /** Added to the default `IP:127.0.0.1` and `DNS:localhost`; bare values are typed as IP or DNS automatically. */
  extraSans?: string[];
  keyAlgorithm?: KeyAlgorithm;
  name?: string;
}

export interface CreateSigningOptions {
  commonName?: string;
  algorithm?: SigningAlgorithm;
  name?: string;
}

/** Short validity keeps leaked test material useless; two days covers suites that span midnight. */
const VALIDITY_DAYS = "2";

function newKeyArgs(algorithm: KeyAlgorithm): string[] {
  return algorithm === "rsa"
    ? ["-newkey", "rsa:2048"]
    : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
}

/**
 * Our own config file, because `-addext` collides with whatever extensions the distro's
 * openssl.cnf already adds and the result would depend on the host.
 */
function opensslConfig(commonName: string, extensions: Record<string, string>): string {
  const ext = Object.entries(extensions)
    .map(([k, v]) => `${k} = ${v}`)
    .join("\n");
  return [
    "[req]",
    "distinguished_name = dn",
    "prompt = no",
    "utf8 = yes",
    "[dn]",
    `CN = ${commonName}`,
    "[ext]",
    ext,
    "",
  ].join("\n");
}

async function loadFiles(keyFile: string, certFile: string): Promise<CertificateFiles> {
  const [keyPem, certPem] = await Promise.all([readFile(keyFile, "utf8"), readFile(certFile, "utf8")]);
  const certDerBase64 = new X509Certificate(certPem).raw.toString("base64");
  return { keyFile, certFile, keyPem, certPem, certDerBase64 };
}

function normaliseSan(entry: string): string {
  if (/^(IP|DNS|URI|email):/i.test(entry)) return entry;
  return isIP(entry) !== 0 ? `IP:${entry}` : `DNS:${entry}`;
}

function randomSerial(): string {
  // The top bit is cleared so the serial stays a positive integer, as RFC 5280 requires.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return `0x${bytes.toString("hex")}`;
}

export async function createCertificateAuthority(
  dir: string,
  options: CreateCaOptions = {},
): Promise<CertificateAuthority> {
  const name = options.name ?? "ca";
  const commonName = options.commonName ?? "locald e2e test CA";
  const cnf = join(dir, `${name}.cnf`);
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  await writeFile(
    cnf,
    opensslConfig(commonName, {
      basicConstraints: "critical,CA:TRUE",
      keyUsage: "critical,keyCertSign,cRLSign",
      subjectKeyIdentifier: "hash",
    }),
  );
  await runBinary("openssl", [
    "req",
    "-x509",
    ...newKeyArgs(options.keyAlgorithm ?? "ec"),
    "-nodes",
    "-sha256",
    "-days",
    VALIDITY_DAYS,
    "-set_serial",
    randomSerial(),
    "-config",
    cnf,
    "-extensions",
    "ext",
    "-keyout",
    keyFile,
    "-out",
    certFile,
  ]);
  return { commonName, ...(await loadFiles(keyFile, certFile)) };
}

export async function createLeafCertificate(
  ca: CertificateAuthority,
  dir: string,
  options: CreateLeafOptions = {},
): Promise<LeafCertificate> {
  const name = options.name ?? "leaf";
  const commonName = options.commonName ?? "127.0.0.1";
  const subjectAltNames = [...new Set(["IP:127.0.0.1", "DNS:localhost", ...(options.extraSans ?? [])])].map(
    normaliseSan,
  );
  const cnf = join(dir, `${name}.cnf`);
  const csrFile = join(dir, `${name}.csr`);
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  await writeFile(
    cnf,
    opensslConfig(commonName, {
      basicConstraints: "critical,CA:FALSE",
      keyUsage: "critical,digitalSignature,keyEncipherment",
      extendedKeyUsage: "serverAuth,clientAuth",
      // Modern TLS stacks (Go included) ignore the CN entirely, so the SANs are what matters.
      subjectAltName: subjectAltNames.join(","),
      subjectKeyIdentifier: "hash",
      authorityKeyIdentifier: "keyid",
    }),
  );
  await runBinary("openssl", [
    "req",
    "-new",
    ...newKeyArgs(options.keyAlgorithm ?? "ec"),
    "-nodes",
    "-config",
    cnf,
    "-keyout",
    keyFile,
    "-out",
    csrFile,
  ]);
  await runBinary("openssl", [
    "x509",
    "-req",
    "-in",
    csrFile,
    "-CA",
    ca.certFile,
    "-CAkey",
    ca.keyFile,
    "-set_serial",
    randomSerial(),
    "-sha256",
    "-days",
    VALIDITY_DAYS,
    "-extfile",
    cnf,
    "-extensions",
    "ext",
    "-out",
    certFile,
  ]);
  return { commonName, subjectAltNames, ...(await loadFiles(keyFile, certFile)) };
}

/**
 * A self-signed key+cert for the token issuer. Distribution verifies the JWT's `x5c` chain against
 * its `rootcertbundle`; putting this very cert in the bundle makes it both leaf and root.
 */
export async function createSigningCertificate(
  dir: string,
  options: CreateSigningOptions = {},
): Promise<SigningCertificate> {
  const name = options.name ?? "token-signer";
  const algorithm = options.algorithm ?? "RS256";
  const commonName = options.commonName ?? "locald e2e token issuer";
  const cnf = join(dir, `${name}.cnf`);
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  await writeFile(
    cnf,
    opensslConfig(commonName, {
      basicConstraints: "critical,CA:TRUE",
      keyUsage: "critical,digitalSignature,keyCertSign",
      subjectKeyIdentifier: "hash",
    }),
  );
  await runBinary("openssl", [
    "req",
    "-x509",
    ...newKeyArgs(algorithm === "RS256" ? "rsa" : "ec"),
    "-nodes",
    "-sha256",
    "-days",
    VALIDITY_DAYS,
    "-set_serial",
    randomSerial(),
    "-config",
    cnf,
    "-extensions",
    "ext",
    "-keyout",
    keyFile,
    "-out",
    certFile,
  ]);
  return { commonName, algorithm, ...(await loadFiles(keyFile, certFile)) };
}

export interface TestPki {
  dir: string;
  ca: CertificateAuthority;
  leaf: LeafCertificate;
  cleanup(): Promise<void>;
}

/** CA plus one loopback server cert in a fresh temp dir that `cleanup()` removes. */
export async function createTestPki(options: { extraSans?: string[] } = {}): Promise<TestPki> {
  const dir = await makeTempDir("pki");
  try {
    const ca = await createCertificateAuthority(dir);
    const leaf = await createLeafCertificate(ca, dir, { extraSans: options.extraSans ?? [] });
    return { dir, ca, leaf, cleanup: () => removeDir(dir) };
  } catch (err) {
    await removeDir(dir);
    throw err;
  }
}
