import { rebase } from "@locald/cnb";
import type { Command } from "commander";
import { chooseBuilder, chooseIsolation, ISOLATION_HELP, loadConfig } from "../config.js";
import { clientOptions } from "../options.js";
import { useColour } from "../ui.js";
import { UsageError } from "../usage.js";
import type { CommandContext } from "./image.js";

export function registerRebaseCommand(program: Command, context: CommandContext): void {
  const { output } = context;
  program
    .command("rebase")
    .description(
      "Put an app image on a newer run image, with the lifecycle's rebaser: its app layers stay as they are",
    )
    .argument("<image>", "the app image (in the store, or in its registry with --publish)")
    .option(
      "--run-image <ref>",
      "the run image to put it on (default: the one it was built on, pulled again)",
    )
    .option("--publish", "rebase the image in its registry, not in the store")
    .option("--layout <dir>", "write the rebased image to this OCI layout directory instead of the store")
    .option("-t, --tag <name>", "store the rebased image under this name (default: the image's own)")
    .option(
      "-B, --builder <ref>",
      "with --publish, the builder whose lifecycle rebases (default: the project's builder)",
    )
    .option("--isolation <builder|host>", ISOLATION_HELP)
    .action(
      async (
        image: string,
        opts: {
          runImage?: string;
          publish?: boolean;
          layout?: string;
          tag?: string;
          builder?: string;
          isolation?: string;
        },
      ) => {
        if (opts.publish && (opts.layout || opts.tag))
          throw new UsageError(
            "--publish rebases the image in its registry: it takes neither --layout nor -t.",
          );
        if (opts.publish && opts.runImage === undefined)
          throw new UsageError(
            "--publish needs --run-image: the image's run image is read from the store, not a registry.",
          );
        const loaded = await loadConfig(".");
        const name = opts.tag ?? image;
        const flags = context.flags();
        const result = await rebase({
          image,
          ...(opts.publish ? { builder: chooseBuilder(loaded, [opts.builder]) } : {}),
          isolation: chooseIsolation(loaded, opts.isolation),
          ...(opts.runImage ? { runImage: opts.runImage } : {}),
          output: opts.publish
            ? { kind: "registry", name: image }
            : opts.layout
              ? { kind: "layout", dir: opts.layout, name }
              : { kind: "store", name },
          colour: useColour(output.stderr),
          client: clientOptions(flags, (line) => output.stderr.write(`${line}\n`)),
          logLevel: flags.verbose ? "debug" : "info",
          onOutput: (chunk) => output.stderr.write(chunk),
        });
        output.stdout.write(`Rebased ${result.image} (${result.digest}) on ${result.runImage}\n`);
      },
    );
}
