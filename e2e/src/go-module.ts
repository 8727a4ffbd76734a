import { execFile } from "node:child_process";
import { cp, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { requireBinary } from "./util.js";

const run = promisify(execFile);

export interface GoModuleBuild {
  /** The module path, e.g. github.com/buildpacks/pack. */
  readonly module: string;
  /** Without the leading "v". */
  readonly version: string;
  /** The package to build, relative to the module root ("." or "./cmd/limactl"). */
  readonly pkg: string;
  /** The binary's file name under `<scratch>/bin`. */
  readonly binary: string;
  /** `-X` settings, e.g. the version a tool prints. */
  readonly ldflags: string;
}

/**
 * Builds a tool from the Go module proxy into `scratch` (made empty by the caller): `go install`
 * refuses modules with replace directives (pack's), so the module is downloaded, copied
 * somewhere writable and built there. Returns the copied source, for callers that keep parts.
 */
export async function buildGoModule(spec: GoModuleBuild, scratch: string): Promise<{ source: string }> {
  const go = await requireBinary("go");
  const env = { ...process.env, GOFLAGS: "-mod=mod", CGO_ENABLED: "0" };
  const { stdout } = await run(go, ["mod", "download", "-json", `${spec.module}@v${spec.version}`], {
    cwd: scratch,
    env,
    maxBuffer: 4 * 1024 * 1024,
  });
  const module = (JSON.parse(stdout) as { Dir?: string }).Dir;
  if (module === undefined) throw new Error(`go mod download named no directory: ${stdout}`);
  const source = join(scratch, "src");
  await cp(module, source, { recursive: true });
  await run("chmod", ["-R", "u+w", source]);
  await mkdir(join(scratch, "bin"));
  await run(
    go,
    [
      "build",
      "-trimpath",
      "-ldflags",
      `-s -w ${spec.ldflags}`,
      "-o",
      join(scratch, "bin", spec.binary),
      spec.pkg,
    ],
    { cwd: source, env, maxBuffer: 16 * 1024 * 1024 },
  );
  return { source };
}
