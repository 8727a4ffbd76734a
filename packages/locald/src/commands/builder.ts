import { join } from "node:path";
import { createBuilder, fetchBuilder, ISOLATION_GUARANTEES } from "@locald/cnb";
import { defaultDataDir, formatReference, type ImageDestination, parseReference, Store } from "@locald/oci";
import { type Command, Option } from "commander";
import { chooseIsolation, loadConfig } from "../config.js";
import { clientOptions } from "../options.js";
import { ProgressRenderer } from "../ui.js";
import type { CommandContext } from "./image.js";

export function registerBuilderCommands(program: Command, context: CommandContext): void {
  const { output } = context;
  const builder = program.command("builder").description("Create and inspect CNB builder images");
  builder
    .command("create")
    .description(
      "Create a builder image from a builder.toml (pack's format): into the store, a layout or a registry",
    )
    .argument("<ref>", "name of the builder image, e.g. registry.example.com/team/builder:1")
    .requiredOption("-c, --config <file>", "the builder.toml to read")
    .addOption(
      new Option("--publish", "push the builder to the registry of <ref> instead of the store").conflicts(
        "layout",
      ),
    )
    .option("--layout <dir>", "write the builder into this OCI layout directory instead of the store")
    .option("--platform <os/arch[/variant]>", "the build image's platform (default: this machine's)")
    .option("-q, --quiet", "print only the digest")
    .action(
      async (
        ref: string,
        opts: { config: string; publish?: boolean; layout?: string; platform?: string; quiet?: boolean },
      ) => {
        const name = formatReference(parseReference(ref));
        const destination: ImageDestination = opts.publish
          ? { kind: "registry", reference: name }
          : opts.layout
            ? { kind: "layout", dir: opts.layout, name: parseReference(ref).tag ?? "latest" }
            : { kind: "store", name };
        const renderer = opts.quiet ? undefined : new ProgressRenderer(output.stderr, "Pulling");
        const created = await createBuilder(opts.config, {
          store: await Store.open(),
          destination,
          client: clientOptions(context.flags(), (line) => output.stderr.write(`${line}\n`)),
          ...(opts.platform ? { platform: opts.platform } : {}),
          ...(renderer ? { onPull: renderer.onEvent } : {}),
        });
        renderer?.finish();
        if (opts.quiet) return void output.stdout.write(`${created.digest}\n`);
        const where = opts.publish ? "Published" : opts.layout ? `Written to ${opts.layout}:` : "Created";
        output.stdout.write(
          [
            `${where} ${name}`,
            `Digest:     ${created.digest}`,
            `Lifecycle:  ${created.lifecycleVersion}`,
            `Buildpacks: ${created.buildpacks.map((bp) => `${bp.id}@${bp.version}`).join(", ")}`,
            `Run images: ${created.runImages.join(", ")}`,
            "",
          ].join("\n"),
        );
      },
    );
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
