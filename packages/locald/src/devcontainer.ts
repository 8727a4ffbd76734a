import { mkdir, writeFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { type ClientOptions, OciError, runContainer } from "@locald/oci";

/**
 * `.devcontainer/devcontainer.json` for editors (VS Code, the devcontainers CLI): the app's built
 * image with the app directory bind-mounted at /workspace, and the environment the lifecycle
 * launcher gives the image's processes — editors start the container with their own command,
 * so the launcher never runs and its environment must be spelled out.
 */

export class DevcontainerError extends OciError {
  readonly code = "DEVCONTAINER";
}

/** Set per process or per shell, not by the buildpacks. */
const NOT_BUILDPACK_ENV = new Set(["HOSTNAME", "HOME", "PWD", "OLDPWD", "SHLVL", "_", "TERM"]);

/** The environment the image's launcher sets up (layers' env, profile.d), as `NAME=value` lines. */
export async function launchEnvironment(
  image: string,
  options: { client?: ClientOptions } = {},
): Promise<Record<string, string>> {
  const chunks: Buffer[] = [];
  const result = await runContainer(image, {
    entrypoint: "/cnb/lifecycle/launcher",
    // NUL-separated: a value may hold newlines.
    command: ["env", "-0"],
    remove: true,
    ...(options.client ? { client: options.client } : {}),
    output: (chunk, stream) => {
      if (stream === "stdout") chunks.push(chunk);
    },
  });
  if (result.exitCode !== 0)
    throw new DevcontainerError(
      `Cannot read the buildpack environment of ${image}: its launcher exited with ${result.exitCode}.`,
      { hint: "Is it an image built with buildpacks (it has /cnb/lifecycle/launcher)?" },
    );
  const env: Record<string, string> = {};
  for (const pair of Buffer.concat(chunks).toString("utf8").split("\0")) {
    const eq = pair.indexOf("=");
    if (eq <= 0 || NOT_BUILDPACK_ENV.has(pair.slice(0, eq))) continue;
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

export interface DevcontainerOptions {
  app: string;
  image: string;
  env: Record<string, string>;
  /** The port the app listens on in the container (its PORT), forwarded by the editor. */
  port: number;
}

/** The devcontainer.json document (devcontainers spec, image-based). */
export function devcontainerConfig(options: DevcontainerOptions): Record<string, unknown> {
  return {
    name: `${basename(resolve(options.app))} (locald)`,
    image: options.image,
    // The app where the buildpacks built it, so the layers' paths and the launcher's cwd hold.
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a devcontainer.json variable, for the editor to fill in.
    workspaceMount: "source=${localWorkspaceFolder},target=/workspace,type=bind",
    workspaceFolder: "/workspace",
    containerEnv: { ...options.env, PORT: String(options.port) },
    forwardPorts: [options.port],
    overrideCommand: true,
  };
}

/** Writes `.devcontainer/devcontainer.json` in the app; an existing one is kept unless `force`. */
export async function writeDevcontainer(
  app: string,
  config: Record<string, unknown>,
  force: boolean,
): Promise<string> {
  const dir = join(resolve(app), ".devcontainer");
  const file = join(dir, "devcontainer.json");
  await mkdir(dir, { recursive: true });
  try {
    await writeFile(file, `${JSON.stringify(config, null, 2)}\n`, { flag: force ? "w" : "wx" });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST")
      throw new DevcontainerError(`${file} exists already; it was left as it is.`, {
        hint: "Pass --force to replace it.",
      });
    throw error;
  }
  return file;
}
