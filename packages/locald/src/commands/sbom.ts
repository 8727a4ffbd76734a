import { join, resolve } from "node:path";
import { downloadSbom } from "@locald/cnb";
import { defaultDataDir, Store } from "@locald/oci";
import type { Command } from "commander";
import { clientOptions } from "../options.js";
import type { CommandContext } from "./image.js";

export function registerSbomCommands(program: Command, context: CommandContext): void {
  const { output } = context;
  const sbom = program
    .command("sbom")
    .description("Software bills of materials of images built with buildpacks");
  sbom
    .command("download")
    .description("Write an image's SBOM layer under <dir>/layers/sbom (from the store, else its registry)")
    .argument("<image>", "image reference")
    .option("-o, --output-dir <dir>", "where to write layers/sbom", ".")
    .action(async (image: string, opts: { outputDir: string }) => {
      const dir = resolve(opts.outputDir);
      const files = await downloadSbom(image, dir, {
        store: await Store.open(),
        client: clientOptions(context.flags(), (line) => output.stderr.write(`${line}\n`)),
        scratchDir: join(defaultDataDir(), "tmp"),
      });
      output.stdout.write(
        `Wrote ${files} SBOM file${files === 1 ? "" : "s"} under ${join(dir, "layers", "sbom")}\n`,
      );
    });
}
