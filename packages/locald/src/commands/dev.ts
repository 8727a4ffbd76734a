import { build, prepareEnvironment } from "@locald/cnb";
import type { Command } from "commander";
import { chooseBuilder, chooseIsolation, ISOLATION_HELP, loadConfig, nameOf } from "../config.js";
import { devcontainerConfig, launchEnvironment, writeDevcontainer } from "../devcontainer.js";
import { clientOptions } from "../options.js";
import { useColour } from "../ui.js";
import { UsageError } from "../usage.js";
import type { CommandContext } from "./image.js";

const collect = (value: string, previous: string[]) => [...previous, value];

interface DevFlags {
  builder?: string;
  env: string[];
  rebuild?: boolean;
  isolation?: string;
}

/** `[path] -- cmd…`: the words before `--` (at most one, the app dir) and the command after it. */
function splitAtDashes(raw: readonly string[], verb: string): { path: string; command: string[] } {
  const start = raw.indexOf(verb);
  const words = raw.slice(start + 1);
  const dashes = words.indexOf("--");
  const before = (dashes < 0 ? words : words.slice(0, dashes)).filter((w, i, all) => {
    // Drop options and their values; what is left is the path.
    if (w.startsWith("-")) return false;
    const previous = all[i - 1];
    return !["-B", "--builder", "-e", "--env", "--isolation"].includes(previous ?? "");
  });
  if (before.length > 1)
    throw new UsageError(`Only one app directory, then -- and the command (got ${before.join(" ")}).`);
  return { path: before[0] ?? ".", command: dashes < 0 ? [] : words.slice(dashes + 1) };
}

/** The builder and the isolation: the flags, else locald.toml's [project], else the environment. */
async function builderFor(flags: { builder?: string; isolation?: string }) {
  const loaded = await loadConfig(".");
  return {
    builder: chooseBuilder(loaded, [flags.builder]),
    isolation: chooseIsolation(loaded, flags.isolation),
  };
}

export function registerDevCommands(program: Command, context: CommandContext): void {
  const { output } = context;
  const environment = async (path: string, flags: DevFlags) => {
    const global = context.flags();
    return prepareEnvironment(path, {
      ...(await builderFor(flags)),
      env: flags.env,
      ...(flags.rebuild ? { rebuild: true } : {}),
      client: clientOptions(global, (line) => output.stderr.write(`${line}\n`)),
      logLevel: global.verbose || process.env.LOCALD_DEBUG === "1" ? "debug" : "info",
      onOutput: (chunk) => output.stderr.write(chunk),
      colour: useColour(output.stderr),
    });
  };
  const withDevOptions = (command: Command) =>
    command
      .option(
        "-B, --builder <ref>",
        "builder image (default: [project] builder of locald.toml, or LOCALD_BUILDER)",
      )
      .option("-e, --env <K=V>", "build-time environment variable for buildpacks", collect, [])
      .option("--rebuild", "run detect and build even if no dependency manifest changed")
      .option("--isolation <builder|host>", ISOLATION_HELP);

  withDevOptions(
    program
      .command("exec")
      .description(
        "Run a command in the app's buildpack environment (detect + build first when inputs changed)",
      )
      .argument("[path-and-command...]", "[path] -- command and arguments"),
  ).action(async (_words: string[], flags: DevFlags) => {
    const { path, command } = splitAtDashes(context.argv, "exec");
    if (command.length === 0)
      throw new UsageError("Give the command after --: locald exec [path] -- <command…>");
    const env = await environment(path, flags);
    context.exitCode = await env.run(command);
  });

  withDevOptions(
    program
      .command("shell")
      .description("Start a shell in the app's buildpack environment (the app directory is live)")
      .argument("[path]", "the app's directory", "."),
  ).action(async (path: string, flags: DevFlags) => {
    const env = await environment(path, flags);
    output.stderr.write(`locald: shell in ${env.app} (buildpack environment; exit to leave)\n`);
    context.exitCode = await env.run(["bash", "--noprofile", "--norc", "-i"], {
      terminal: true,
      env: ["PS1=(locald) \\w\\$ "],
    });
  });
}

interface DevcontainerFlags {
  builder?: string;
  isolation?: string;
  env: string[];
  tag?: string;
  publish?: boolean;
  port: string;
  force?: boolean;
}

export function registerDevcontainerCommand(program: Command, context: CommandContext): void {
  const { output } = context;
  program
    .command("devcontainer")
    .description(
      "Build the app's image and write .devcontainer/devcontainer.json for editors (VS Code, devcontainers CLI)",
    )
    .argument("[path]", "the app's directory", ".")
    .option(
      "-B, --builder <ref>",
      "builder image (default: [project] builder of locald.toml, or LOCALD_BUILDER)",
    )
    .option("-e, --env <K=V>", "build-time environment variable for buildpacks", collect, [])
    .option("-t, --tag <name>", "image name (default: the directory's name)")
    .option("--publish", "push the image to the registry -t names, where the editor's Docker can pull it")
    .option("--port <port>", "the app's PORT in the container, forwarded by the editor", "8080")
    .option("--force", "replace an existing .devcontainer/devcontainer.json")
    .option("--isolation <builder|host>", ISOLATION_HELP)
    .action(async (path: string, flags: DevcontainerFlags) => {
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw new UsageError(`--port must be a TCP port (1-65535), not "${flags.port}".`);
      if (flags.publish && flags.tag === undefined)
        throw new UsageError(
          "--publish needs the image's name with -t (for example -t registry.example.com/team/app).",
        );
      const global = context.flags();
      const client = clientOptions(global, (line) => output.stderr.write(`${line}\n`));
      const result = await build(path, {
        ...(await builderFor(flags)),
        output: flags.publish
          ? { kind: "registry", name: flags.tag as string }
          : { kind: "store", name: flags.tag ?? nameOf(path) },
        env: flags.env,
        client,
        logLevel: global.verbose || process.env.LOCALD_DEBUG === "1" ? "debug" : "info",
        onOutput: (chunk) => output.stderr.write(chunk),
        colour: useColour(output.stderr),
      });
      const env = await launchEnvironment(result.image, { client });
      const file = await writeDevcontainer(
        path,
        devcontainerConfig({ app: path, image: result.image, env, port }),
        flags.force === true,
      );
      output.stdout.write(`Wrote ${file} (image ${result.image}, ${Object.keys(env).length} variables)\n`);
      if (!flags.publish)
        output.stderr.write(
          `The image is in locald's store: push it where your editor's Docker can pull it (locald image push ${result.image} <registry>/<name>), or rerun with -t <registry>/<name> --publish.\n`,
        );
    });
}
