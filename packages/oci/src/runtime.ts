import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { access, chmod, constants, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ClientOptions } from "./client.js";
import { parseImageConfig } from "./config.js";
import { ContainerConfigError, RuntimeError } from "./errors.js";
import { parseManifestDocument } from "./manifest.js";
import { type ContainerOptions, runtimeSpec } from "./runtime-spec.js";
import { defaultDataDir, defaultStoreDir, Store } from "./store.js";
import { defaultRootfsCacheDir, type UnpackOptions, unpackImage } from "./unpack.js";

/**
 * Runs images with runc (the Debian package), foreground, stdio passed through: the first cut
 * of `locald container run`. Each container gets a bundle under `$LOCALD_HOME/containers`.
 */

export interface RunOptions extends ContainerOptions, Pick<UnpackOptions, "platform" | "onEvent"> {
  /** How the image is pulled when it is not in the store (credentials, trust, retries). */
  client?: ClientOptions;
  /** Container name (default: a random id). */
  name?: string;
  /**
   * Remove the bundle when the container exits (default true: until `container ls/rm` exist,
   * nothing else would ever clean it up).
   */
  remove?: boolean;
  /** Keep stdin attached (`-i`). */
  interactive?: boolean;
  store?: Store;
  /** `$LOCALD_HOME` (default from the environment). */
  home?: string;
  /** The runc binary (default: `runc` on PATH). */
  runc?: string;
}

export interface RunResult {
  readonly name: string;
  /** The process's exit code, 128 + signal number when a signal ended it. */
  readonly exitCode: number;
}

async function findRunc(preferred: string | undefined): Promise<string> {
  const candidates = preferred
    ? [preferred]
    : (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").map((dir) => join(dir, "runc"));
  for (const path of preferred ? candidates : [...candidates, "/usr/sbin/runc"]) {
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      // try the next one
    }
  }
  throw new RuntimeError(
    `Cannot run containers: the runc program was not found${preferred ? ` at ${preferred}` : ""}.`,
    {
      hint: "Install it (Debian/Ubuntu: apt-get install runc; Fedora: dnf install runc) and try again.",
    },
  );
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };

/**
 * Pulls and unpacks `reference` (through the store and the unpack cache), writes the runtime
 * spec and runs it with runc in the foreground. Rootless when not running as root.
 */
export async function runContainer(reference: string, options: RunOptions = {}): Promise<RunResult> {
  const runc = await findRunc(options.runc);
  const home = options.home ?? defaultDataDir();
  const name = options.name ?? `locald-${randomBytes(6).toString("hex")}`;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(name))
    throw new ContainerConfigError(`Invalid container name "${name}".`, {
      hint: "Use letters, digits, '.', '_' and '-', starting with a letter or digit.",
    });
  const bundle = join(home, "containers", name);
  const state = join(home, "runc");
  await mkdir(join(home, "containers"), { recursive: true, mode: 0o700 });
  try {
    await mkdir(bundle, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST")
      throw new ContainerConfigError(`A container named "${name}" already exists.`, {
        hint: "Pick another --name, or remove the old one.",
      });
    throw error;
  }
  try {
    // With an explicit home everything lives under it; else store and cache are the defaults
    // that `image pull` and `image unpack` use too.
    const store =
      options.store ?? (await Store.open(options.home ? join(options.home, "store") : defaultStoreDir()));
    const unpacked = await unpackImage(reference, join(bundle, "rootfs"), {
      ...options.client,
      store,
      cacheDir: options.home ? join(options.home, "cache", "rootfs") : defaultRootfsCacheDir(),
      ...(options.platform ? { platform: options.platform } : {}),
      ...(options.onEvent ? { onEvent: options.onEvent } : {}),
    });
    // The bundle directory (0700) keeps others out; inside it "/" must be enterable by any
    // container user, as in every image.
    await chmod(join(bundle, "rootfs"), 0o755);
    const manifest = parseManifestDocument(
      await store.layout.readBlob(unpacked.descriptor, 4 * 1024 * 1024),
      unpacked.descriptor.mediaType,
      reference,
    );
    if (manifest.kind !== "manifest") throw new ContainerConfigError(`${reference} is not a single image.`);
    const config = parseImageConfig(
      await store.layout.readBlob(manifest.manifest.config, 64 * 1024 * 1024),
      `The config of ${reference}`,
    );
    const uid = process.geteuid?.() ?? 0;
    const spec = runtimeSpec(config.config ?? {}, join(bundle, "rootfs"), {
      ...options,
      ...(uid !== 0 && options.rootless === undefined
        ? { rootless: { uid, gid: process.getegid?.() ?? uid } }
        : {}),
    });
    await writeFile(join(bundle, "config.json"), JSON.stringify(spec, null, 2));
    await mkdir(state, { recursive: true, mode: 0o700 });
    const exitCode = await new Promise<number>((resolve, reject) => {
      const child = spawn(runc, ["--root", state, "run", "--bundle", bundle, name], {
        stdio: [options.interactive || options.tty ? "inherit" : "ignore", "inherit", "inherit"],
      });
      // runc forwards signals to the container; this process only waits for it.
      const forward = (signal: NodeJS.Signals) => child.kill(signal);
      process.on("SIGINT", forward);
      process.on("SIGTERM", forward);
      child.on("error", (error) => reject(new RuntimeError(`Cannot start runc: ${error.message}.`)));
      child.on("close", (code, signal) => {
        process.off("SIGINT", forward);
        process.off("SIGTERM", forward);
        resolve(code ?? 128 + (SIGNALS[signal ?? ""] ?? 0));
      });
    });
    return { name, exitCode };
  } finally {
    if (options.remove !== false) await rm(bundle, { recursive: true, force: true }).catch(() => undefined);
  }
}
