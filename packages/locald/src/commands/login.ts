import {
  clientFor,
  parseReference,
  removeDockerCredentials,
  saveDockerCredentials,
  staticCredentials,
} from "@locald/oci";
import type { Command } from "commander";
import { clientOptions } from "../options.js";
import { UsageError } from "../usage.js";
import type { CommandContext } from "./image.js";

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}

/** `docker login` accepts `https://host/` and `host/repo` too; we keep only the registry. */
function registryOf(value: string): string {
  const stripped = value.replace(/^[a-z]+:\/\//i, "").replace(/\/+$/, "");
  return parseReference(`${stripped.includes("/") ? stripped.split("/")[0] : stripped}/x`).registry;
}

export function registerLoginCommands(program: Command, context: CommandContext): void {
  const { output } = context;
  program
    .command("login")
    .description("Log in to a registry; saved in docker's config.json so docker and locald share it")
    .argument("<registry>", "registry host, e.g. ghcr.io or 127.0.0.1:5000")
    .requiredOption("-u, --username <user>", "user name")
    .option("--password-stdin", "read the password from standard input")
    .action(async (registryText: string, opts: { username: string; passwordStdin?: boolean }) => {
      if (!opts.passwordStdin)
        throw new UsageError(
          "Pass the password on standard input with --password-stdin (it must not appear in your shell history).",
        );
      const password = await readStdin();
      if (password === "") throw new UsageError("The password read from standard input is empty.");
      const registry = registryOf(registryText);
      const credentials = { username: opts.username, password };
      // Check the credentials before saving them, as docker login does.
      const { client, owned } = clientFor({
        ...clientOptions(context.flags(), (l) => output.stderr.write(`${l}\n`)),
        credentials: staticCredentials({ [registry]: credentials }),
      });
      try {
        await client.ping(registry);
      } finally {
        if (owned) await client.transport.close();
      }
      const where = await saveDockerCredentials(registry, credentials);
      output.stdout.write(`Login Succeeded (saved in ${where})\n`);
    });

  program
    .command("logout")
    .description("Remove a saved registry login")
    .argument("<registry>", "registry host")
    .action(async (registryText: string) => {
      const registry = registryOf(registryText);
      const removed = await removeDockerCredentials(registry);
      output.stdout.write(
        removed ? `Removed login credentials for ${registry}\n` : `Not logged in to ${registry}\n`,
      );
    });
}
