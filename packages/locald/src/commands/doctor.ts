import { checkHost, checkRegistry, type HostCheck, InvalidReferenceError, parseReference } from "@locald/oci";
import type { Command } from "commander";
import { clientOptions } from "../options.js";
import { type Output, useColour } from "../ui.js";
import { UsageError } from "../usage.js";
import type { CommandContext } from "./image.js";

function render(checks: readonly HostCheck[], output: Output): void {
  const colour = useColour(output.stdout);
  const paint = { ok: "\x1b[32m", warn: "\x1b[33m", fail: "\x1b[31m" } as const;
  const width = Math.max(...checks.map((c) => c.check.length));
  for (const c of checks) {
    const status = c.status.padEnd(4);
    const line = `${colour ? `${paint[c.status]}${status}\x1b[0m` : status}  ${c.check.padEnd(width)}  ${c.detail}`;
    output.stdout.write(`${line}\n`);
    if (c.fix !== undefined) output.stdout.write(`${" ".repeat(width + 8)}fix: ${c.fix}\n`);
  }
}

export function registerDoctorCommand(program: Command, context: CommandContext): void {
  const { output } = context;
  program
    .command("doctor")
    .description("Check this machine for what locald needs: each line ok, warn or fail, with the fix")
    .option("--registry <ref>", "also check that this image's registry answers and serves it")
    .option("--json", "print the checks as a JSON array of {check, status, detail, fix}")
    .action(async (opts: { registry?: string; json?: boolean }) => {
      if (opts.registry !== undefined)
        try {
          parseReference(opts.registry);
        } catch (error) {
          if (error instanceof InvalidReferenceError) throw new UsageError(`--registry: ${error.message}`);
          throw error;
        }
      const checks = await checkHost();
      if (opts.registry !== undefined)
        checks.push(
          await checkRegistry(
            opts.registry,
            clientOptions(context.flags(), (line) => output.stderr.write(`${line}\n`)),
          ),
        );
      if (opts.json)
        output.stdout.write(
          `${JSON.stringify(
            checks.map(({ check, status, detail, fix }) => ({ check, status, detail, fix: fix ?? null })),
            null,
            2,
          )}\n`,
        );
      else render(checks, output);
      if (checks.some((c) => c.status === "fail")) context.exitCode = 1;
    });
}
