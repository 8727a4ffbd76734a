import { execFile } from "node:child_process";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { fixtureCacheDir } from "./debian.js";
import { requireBinary } from "./util.js";

/**
 * kpack's own validation, as a program: e2e/go/kpack-check decodes YAML strictly into kpack's
 * v1alpha2 types and runs their webhook Validate. kpack's CRDs carry no schema, so without a
 * cluster this is the only judge of what locald writes that is not our own reading of kpack.
 */

const run = promisify(execFile);

/** The kpack release the checker is built against (pinned in e2e/go/kpack-check/go.mod). */
export const KPACK_VERSION = "0.16.1";

const MODULE = fileURLToPath(new URL("../../go/kpack-check/", import.meta.url));

let building: Promise<string> | undefined;

/**
 * The checker binary, built once per machine with `go build` from the committed go.sum into
 * the fixture cache (about four minutes cold on two busy cores, a stat afterwards). No Go, or no
 * module from the proxy, is an error: the tests that need it fail rather than skip.
 */
export function kpackChecker(): Promise<string> {
  building ??= (async () => {
    const dir = join(fixtureCacheDir(), `kpack-check-${KPACK_VERSION}`);
    const binary = join(dir, "kpack-check");
    if ((await stat(binary).catch(() => undefined))?.isFile()) return binary;
    const go = await requireBinary("go");
    const partial = `${dir}.${process.pid}.partial`;
    await mkdir(partial, { recursive: true });
    try {
      await run(go, ["build", "-trimpath", "-o", join(partial, "kpack-check"), "."], {
        cwd: MODULE,
        env: { ...process.env, CGO_ENABLED: "0", GOFLAGS: "-mod=readonly -buildvcs=false" },
        maxBuffer: 16 * 1024 * 1024,
      });
    } catch (error) {
      await rm(partial, { recursive: true, force: true });
      const stderr = (error as { stderr?: string }).stderr?.trim() ?? "";
      throw new Error(`Cannot build the kpack ${KPACK_VERSION} checker with go: ${stderr || error}`);
    }
    await rm(dir, { recursive: true, force: true });
    await rename(partial, dir);
    return binary;
  })();
  return building;
}

/** What kpack's validation says of a YAML stream: ok, or its complaints. */
export async function checkKpack(yaml: string): Promise<{ ok: boolean; output: string }> {
  const checker = await kpackChecker();
  return new Promise((resolve, reject) => {
    const child = execFile(checker, [], { encoding: "utf8", timeout: 60_000 }, (error, stdout, stderr) => {
      if (error && typeof error.code !== "number") reject(error);
      else resolve({ ok: error === null, output: `${stdout}${stderr}` });
    });
    child.stdin?.on("error", () => {});
    child.stdin?.end(yaml);
  });
}
