import { join } from "node:path";
import { fetchBuilder, ISOLATION_GUARANTEES } from "@locald/cnb";
import { defaultDataDir, Store } from "@locald/oci";
import type { Command } from "commander";
import { chooseIsolation, loadConfig } from "../config.js";
import { clientOptions } from "../options.js";
import type { CommandContext } from "./image.js";

export function registerBuilderCommands(program: Command, context: CommandContext): void {
  const { output } = context;
  const builder = program.command("builder").description("Inspect CNB builder images");
  builder
    .command("inspect")
    .description("Show a builder's lifecycle, APIs, buildpacks, detection order and run images")
    .argument("<ref>", "builder image reference")
    .option("--json", "print as JSON")
    .action(async (ref: string, opts: { json?: boolean }) => {
      const found = await fetchBuilder(ref, {
        store: await Store.open(),
        cacheDir: join(defaultDataDir(), "cache", "builders"),
        client: clientOptions(context.flags(), (line) => output.stderr.write(`${line}\n`)),
      });
      const isolation = chooseIsolation(await loadConfig("."), undefined);
      if (opts.json) return void output.stdout.write(`${JSON.stringify({ ...found, isolation }, null, 2)}\n`);
      const lines = [
        `Builder:        ${found.reference}`,
        `Digest:         ${found.digest}`,
        `Lifecycle:      ${found.lifecycleVersion}`,
        `Platform APIs:  ${found.platformApis.join(", ") || "-"}`,
        `Buildpack APIs: ${found.buildpackApis.join(", ") || "-"}`,
        `Build user:     ${found.uid}:${found.gid}`,
        `Run images:     ${found.runImages.join(", ") || "-"}`,
        `Isolation:      ${isolation}: ${ISOLATION_GUARANTEES[isolation]}`,
        "Buildpacks:",
        ...found.buildpacks.map((bp) => `  ${bp.id}@${bp.version}`),
        "Detection order:",
        ...found.order.map(
          (entry, index) =>
            `  Group #${index + 1}: ${entry.group
              .map((bp) => `${bp.id}${bp.version ? `@${bp.version}` : ""}${bp.optional ? " (optional)" : ""}`)
              .join(", ")}`,
        ),
      ];
      output.stdout.write(`${lines.join("\n")}\n`);
    });
}
