import { extname, resolve } from "node:path";
import { type PackageDestination, packageBuildpack } from "@locald/cnb";
import { formatReference, parseReference, Store } from "@locald/oci";
import { type Command, Option } from "commander";
import { clientOptions } from "../options.js";
import { ProgressRenderer } from "../ui.js";
import { UsageError } from "../usage.js";
import type { CommandContext } from "./image.js";

export function registerBuildpackCommands(program: Command, context: CommandContext): void {
  const { output } = context;
  const buildpack = program.command("buildpack").description("Package buildpacks");
  buildpack
    .command("package")
    .description(
      "Package a buildpack (with a meta-buildpack's dependencies) from a package.toml: an image in the store or a registry, or a .cnb file",
    )
    .argument("<name>", "image name, or the .cnb file's path with --format file")
    .requiredOption("-c, --config <file>", "the package.toml to read")
    .addOption(
      new Option("--format <format>", "image (default) or file (a .cnb)")
        .choices(["image", "file"])
        .default("image"),
    )
    .option("--publish", "push the package to the registry of <name> instead of the store")
    .option("-q, --quiet", "print only the digest")
    .action(
      async (
        name: string,
        opts: { config: string; format: "image" | "file"; publish?: boolean; quiet?: boolean },
      ) => {
        if (opts.publish && opts.format === "file")
          throw new UsageError("--publish is for images, not --format file.");
        let destination: PackageDestination;
        let shown: string;
        if (opts.format === "file") {
          shown = resolve(extname(name) === ".cnb" ? name : `${name}.cnb`);
          destination = { kind: "file", path: shown };
        } else {
          shown = formatReference(parseReference(name));
          destination = opts.publish
            ? { kind: "registry", reference: shown }
            : { kind: "store", name: shown };
        }
        const renderer = opts.quiet ? undefined : new ProgressRenderer(output.stderr, "Pulling");
        const packaged = await packageBuildpack(opts.config, {
          store: await Store.open(),
          destination,
          client: clientOptions(context.flags(), (line) => output.stderr.write(`${line}\n`)),
          ...(renderer ? { onPull: renderer.onEvent } : {}),
        });
        renderer?.finish();
        if (opts.quiet) return void output.stdout.write(`${packaged.digest}\n`);
        output.stdout.write(
          [
            `${opts.format === "file" ? "Wrote" : opts.publish ? "Published" : "Created"} ${shown}`,
            `Digest:     ${packaged.digest}`,
            `Buildpacks: ${packaged.buildpacks.map((bp) => `${bp.id}@${bp.version}`).join(", ")}`,
            "",
          ].join("\n"),
        );
      },
    );
}
