import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import {
  ContainerConfigError,
  type ContainerRecord,
  ContainerStateError,
  Containers,
  defaultDataDir,
  findRunc,
  parseVolume,
  runContainer,
} from "@locald/oci";
import { type Command, InvalidArgumentError } from "commander";
import { clientOptions, readEnvFiles } from "../options.js";
import { ProgressRenderer } from "../ui.js";
import type { CommandContext } from "./image.js";

const collect = (value: string, previous: string[]) => [...previous, value];

function seconds(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0) throw new InvalidArgumentError("expected seconds (≥ 0).");
  return parsed;
}

/** runc is looked up lazily: `ls` and `logs` work without it. */
async function containers(): Promise<Containers> {
  const runc = await findRunc().catch(() => "runc");
  return new Containers(defaultDataDir(), runc);
}

function ago(iso: string | undefined): string {
  if (iso === undefined) return "?";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} seconds ago`;
  if (s < 3600) return `${Math.round(s / 60)} minutes ago`;
  if (s < 86400) return `${Math.round(s / 3600)} hours ago`;
  return `${Math.round(s / 86400)} days ago`;
}

function statusText(record: ContainerRecord): string {
  if (record.status === "running") return "Up";
  if (record.status === "created") return "Created";
  return `Exited (${record.exitCode ?? "unknown"}) ${ago(record.finished)}`;
}

export function registerContainerCommands(program: Command, context: CommandContext): void {
  const { output } = context;
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
    .option("-d, --detach", "run in the background and print the container's name")
    .option("-i, --interactive", "keep stdin attached")
    .option("-t, --tty", "allocate a terminal")
    .option("--rm", "remove the container when it exits")
    .option(
      "--pull <when>",
      "missing (default): use the stored image if there is one; always: ask the registry",
    )
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
          detach?: boolean;
          interactive?: boolean;
          tty?: boolean;
          rm?: boolean;
          pull?: string;
          platform?: string;
        },
      ) => {
        if (opts.pull !== undefined && opts.pull !== "missing" && opts.pull !== "always")
          throw new ContainerConfigError(`--pull must be "missing" or "always", not "${opts.pull}".`);
        if (opts.detach && (opts.tty || opts.interactive))
          throw new ContainerConfigError(
            "-d cannot be combined with -t or -i: a detached container has no terminal.",
          );
        const envFileText = await readEnvFiles(opts.envFile);
        const renderer = new ProgressRenderer(output.stderr, "Pulling");
        const result = await runContainer(ref, {
          client: clientOptions(context.flags(), (line) => output.stderr.write(`${line}\n`)),
          command,
          env: opts.env,
          envFileLines: envFileText,
          volumes: opts.volume.map(parseVolume),
          ...(opts.workdir ? { workdir: opts.workdir } : {}),
          ...(opts.user ? { user: opts.user } : {}),
          ...(opts.entrypoint !== undefined ? { entrypoint: opts.entrypoint } : {}),
          ...(opts.name ? { name: opts.name } : {}),
          ...(opts.hostname ? { hostname: opts.hostname } : {}),
          ...(opts.platform ? { platform: opts.platform } : {}),
          ...(opts.pull ? { pull: opts.pull as "missing" | "always" } : {}),
          remove: opts.rm === true,
          detach: opts.detach === true,
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
        if (opts.detach) output.stdout.write(`${result.name}\n`);
        else context.exitCode = result.exitCode;
      },
    );

  container
    .command("ls")
    .alias("ps")
    .description("List containers (running ones; -a for all)")
    .option("-a, --all", "include containers that have exited")
    .option("-q, --quiet", "print only names")
    .option("--json", "print as JSON")
    .action(async (opts: { all?: boolean; quiet?: boolean; json?: boolean }) => {
      const records = (await (await containers()).list()).filter((r) => opts.all || r.status === "running");
      if (opts.json) return void output.stdout.write(`${JSON.stringify(records, null, 2)}\n`);
      if (opts.quiet) return void output.stdout.write(records.map((r) => `${r.name}\n`).join(""));
      const rows = [
        ["NAME", "IMAGE", "COMMAND", "CREATED", "STATUS"],
        ...records.map((r) => [
          r.name,
          r.image,
          JSON.stringify(r.command.join(" ")),
          ago(r.created),
          statusText(r),
        ]),
      ];
      const widths = rows[0]?.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? "").length))) ?? [];
      for (const row of rows)
        output.stdout.write(
          `${row
            .map((cell, i) => cell.padEnd(widths[i] ?? 0))
            .join("  ")
            .trimEnd()}\n`,
        );
    });

  container
    .command("stop")
    .description("Stop running containers: SIGTERM, then SIGKILL after the grace period")
    .argument("<names...>", "container names")
    .option("-t, --time <seconds>", "grace period before SIGKILL", seconds, 10)
    .action(async (names: string[], opts: { time: number }) => {
      const store = await containers();
      for (const name of names) {
        await store.stop(name, { timeoutMs: opts.time * 1000 });
        output.stdout.write(`${name}\n`);
      }
    });

  container
    .command("rm")
    .alias("remove")
    .description("Remove containers (their root filesystem changes and logs)")
    .argument("<names...>", "container names")
    .option("-f, --force", "stop running containers first (SIGKILL)")
    .action(async (names: string[], opts: { force?: boolean }) => {
      const store = await containers();
      for (const name of names) {
        await store.remove(name, { force: opts.force === true });
        output.stdout.write(`${name}\n`);
      }
    });

  container
    .command("logs")
    .description("Print the output of a detached container")
    .argument("<name>", "container name")
    .action(async (name: string) => {
      const store = await containers();
      const record = await store.get(name);
      const path = store.logPath(name);
      if (!record.detached || (await stat(path).catch(() => undefined)) === undefined)
        throw new ContainerStateError(`Container "${name}" has no log: it ran attached to a terminal.`, {
          hint: "Logs are kept for containers started with -d.",
        });
      await new Promise<void>((resolve, reject) => {
        const stream = createReadStream(path);
        stream.on("error", reject);
        stream.on("end", resolve);
        stream.on("data", (chunk) => output.stdout.write(chunk));
      });
    });
}
