import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { type ClientOptions, envFileLines, errnoReason, OciError } from "@locald/oci";
import { UsageError } from "./usage.js";

/** Flags every registry-talking command accepts, mirrored by environment variables for CI. */
export interface GlobalFlags {
  insecureRegistry?: string[];
  caCert?: string[];
  verbose?: boolean;
}

class CaCertificateError extends OciError {
  readonly code = "CA_CERT";
}

const list = (value: string | undefined) => (value ?? "").split(/[,\s]+/).filter((s) => s !== "");

export function clientOptions(flags: GlobalFlags, log: (line: string) => void): ClientOptions {
  const insecure = [...(flags.insecureRegistry ?? []), ...list(process.env.LOCALD_INSECURE_REGISTRIES)];
  const caFiles = [...(flags.caCert ?? []), ...list(process.env.LOCALD_CA_CERTS)];
  const caCertificates = caFiles.map((file) => {
    try {
      return readFileSync(file, "utf8");
    } catch (error) {
      throw new CaCertificateError(`Cannot read the CA certificate ${file}: ${(error as Error).message}.`);
    }
  });
  const verbose = flags.verbose === true || process.env.LOCALD_DEBUG === "1";
  return {
    insecureRegistries: insecure,
    caCertificates,
    ...(verbose
      ? {
          onTransportEvent: (event) => {
            if (event.type === "retry")
              log(
                `retrying ${event.url} in ${Math.round(event.delayMs)}ms (attempt ${event.attempt}: ${event.reason})`,
              );
            else if (event.type === "redirect")
              log(
                `redirect ${event.from} → ${event.to}${event.authorizationDropped ? " (credentials not forwarded)" : ""}`,
              );
            else if (event.type === "scheme") log(`${event.registry} speaks ${event.scheme}`);
            else log(`requesting a token for ${event.registry} (${event.scopes.join(" ") || "no scope"})`);
          },
        }
      : {}),
  };
}

/** The `KEY=value` lines of `--env-file` files, in order; a file that cannot be read is a usage error. */
export async function readEnvFiles(files: readonly string[]): Promise<string[]> {
  const lines: string[] = [];
  for (const file of files) {
    try {
      lines.push(...envFileLines(await readFile(file, "utf8")));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const why =
        code === "ENOENT"
          ? "it does not exist"
          : code === "EISDIR"
            ? "it is a directory"
            : (errnoReason(code) ?? (error as Error).message);
      throw new UsageError(`Cannot read the --env-file ${file}: ${why}.`);
    }
  }
  return lines;
}
