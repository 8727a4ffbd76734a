import { readFile } from "node:fs/promises";
import { envFileLines, parseVolume, runContainer } from "@locald/oci";
import type { Command } from "commander";
import { clientOptions } from "../options.js";
import { ProgressRenderer } from "../ui.js";
import type { CommandContext } from "./image.js";

const collect = (value: string, previous: string[]) => [...previous, value];

export function registerContainerCommands(program: Command, context: CommandContext): void {
  const container = program
    .command("container")
    .description("Run images as containers (runc)")
    .enablePositionalOptions();
  container
    .command("run")
    .description("Run a command in a new container from an image (pulled and unpacked if needed)")
    .argument("<ref>", "image reference")
    .argument("[command...]", "command and arguments (replace the image's Cmd)")
    .option("-e, --env <K=V>", "set an environment variable (K alone: take it from here)", collect, [])
    .option("--env-file <file>", "read environment variables from a file", collect, [])
    .option("-v, --volume <host:ctr[:ro]>", "bind-mount a host directory", collect, [])
    .option("-w, --workdir <dir>", "working directory inside the container")
    .option("-u, --user <user[:group]>", "user (name or uid) and group inside the container")
    .option("--entrypoint <cmd>", "replace the image's entrypoint (drops its Cmd)")
    .option("--name <name>", "container name")
    .option("--hostname <name>", "container host name")
    .option("-i, --interactive", "keep stdin attached")
    .option("-t, --tty", "allocate a terminal")
    .option("--rm", "remove the container when it exits (containers are always removed for now)")
    .option("--platform <os/arch[/variant]>", "platform to run from a multi-platform image")
    .passThroughOptions()
    .action(
      async (
        ref: string,
        command: string[],
        opts: {
          env: string[];
          envFile: string[];
          volume: string[];
          workdir?: string;
          user?: string;
          entrypoint?: string;
          name?: string;
          hostname?: string;
          interactive?: boolean;
          tty?: boolean;
          platform?: string;
        },
      ) => {
        const envFileText = await Promise.all(opts.envFile.map((file) => readFile(file, "utf8")));
        const renderer = new ProgressRenderer(context.output.stderr, "Pulling");
        const result = await runContainer(ref, {
          client: clientOptions(context.flags(), (line) => context.output.stderr.write(`${line}\n`)),
          command,
          env: opts.env,
          envFileLines: envFileText.flatMap(envFileLines),
          volumes: opts.volume.map(parseVolume),
          ...(opts.workdir ? { workdir: opts.workdir } : {}),
          ...(opts.user ? { user: opts.user } : {}),
          ...(opts.entrypoint !== undefined ? { entrypoint: opts.entrypoint } : {}),
          ...(opts.name ? { name: opts.name } : {}),
          ...(opts.hostname ? { hostname: opts.hostname } : {}),
          ...(opts.platform ? { platform: opts.platform } : {}),
          ...(process.env.LOCALD_RUNC ? { runc: process.env.LOCALD_RUNC } : {}),
          interactive: opts.interactive === true,
          tty: opts.tty === true,
          onEvent: (event) => {
            if (
              event.type === "blob-start" ||
              event.type === "blob-progress" ||
              event.type === "blob-done" ||
              event.type === "resolved"
            )
              renderer.onEvent(event);
          },
        });
        renderer.finish();
        context.exitCode = result.exitCode;
      },
    );
}
