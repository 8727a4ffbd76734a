import { InvalidReferenceError, PlatformNotFoundError } from "./errors.js";
import type { Descriptor, ImageIndex, Platform } from "./manifest.js";

export type { Platform } from "./manifest.js";

const archAliases: Record<string, string> = {
  x86_64: "amd64",
  "x86-64": "amd64",
  aarch64: "arm64",
  armhf: "arm",
  armel: "arm",
};
const nodeArch: Record<string, string> = {
  x64: "amd64",
  ia32: "386",
  arm64: "arm64",
  arm: "arm",
  ppc64: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
};

/** Variants that mean "no variant given" for an architecture, so `arm64` ≡ `arm64/v8`. */
const defaultVariant: Record<string, string> = { arm64: "v8", arm: "v7", amd64: "v1" };

/** The platform with aliases resolved and the default variant made explicit. */
export function normalizePlatform(platform: Platform): Platform {
  const architecture = archAliases[platform.architecture] ?? platform.architecture;
  const variant = platform.variant ?? defaultVariant[architecture];
  return { os: platform.os, architecture, ...(variant === undefined ? {} : { variant }) };
}

export function parsePlatform(value: string): Platform {
  const parts = value.split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9._-]+$/i.test(p))) {
    throw new InvalidReferenceError(`"${value}" is not a valid platform.`, {
      hint: "Use os/arch[/variant], for example linux/amd64 or linux/arm64/v8.",
    });
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return {
    os: os.toLowerCase(),
    architecture: architecture.toLowerCase(),
    ...(variant === undefined ? {} : { variant: variant.toLowerCase() }),
  };
}

export function formatPlatform(platform: Platform): string {
  return [platform.os, platform.architecture, platform.variant]
    .filter((p) => p !== undefined && p !== "")
    .join("/");
}

export function hostPlatform(): Platform {
  const architecture = nodeArch[process.arch] ?? process.arch;
  return { os: process.platform === "win32" ? "windows" : process.platform, architecture };
}

/** A platform option as callers give it (`os/arch[/variant]` or parsed); this machine's when absent. */
export function platformOrHost(value: string | Platform | undefined): Platform {
  if (value === undefined) return hostPlatform();
  return typeof value === "string" ? parsePlatform(value) : value;
}

export function platformMatches(candidate: Platform, wanted: Platform): boolean {
  const a = normalizePlatform(candidate);
  const b = normalizePlatform(wanted);
  return a.os === b.os && a.architecture === b.architecture && a.variant === b.variant;
}

/** Attestation manifests in buildx indexes carry `unknown/unknown`; they are never a runnable image. */
function isAttestation(descriptor: Descriptor): boolean {
  return (
    (descriptor.platform?.os === "unknown" && descriptor.platform.architecture === "unknown") ||
    descriptor.annotations?.["vnd.docker.reference.type"] === "attestation-manifest"
  );
}

/** Picks the manifest for a platform from an index, as docker pull does. */
export function selectPlatformManifest(index: ImageIndex, wanted: Platform, what: string): Descriptor {
  const candidates = index.manifests.filter((d) => !isAttestation(d) && d.platform !== undefined);
  const match = candidates.find((d) => d.platform !== undefined && platformMatches(d.platform, wanted));
  if (match !== undefined) return match;
  const available = candidates.map((d) => formatPlatform(d.platform as Platform));
  throw new PlatformNotFoundError(
    `${what} has no image for platform ${formatPlatform(wanted)}; it offers ${available.length > 0 ? available.join(", ") : "no platform-specific images"}.`,
    { hint: available.length > 0 ? `Pass --platform with one of: ${available.join(", ")}.` : undefined },
  );
}
