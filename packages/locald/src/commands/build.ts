import { readFile } from "node:fs/promises";
import { basename, resolve } from "node:path";
import { build } from "@locald/cnb";
import { envFileLines } from "@locald/oci";
import type { Command } from "commander";
import { clientOptions } from "../options.js";
import { UsageError } from "../usage.js";
import type { CommandContext } from "./image.js";

const collect = (value: string, previous: string[]) => [...previous, value];

/** The default image name: the app directory's name, as a valid repository name. */
function defaultName(app: string): string {
  const name = basename(resolve(app))
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[^a-z0-9]+/, "");
  return name === "" ? "app" : name;
}

function creationTime(value: string): Date {
  if (value === "now") return new Date();
  if (/^\d+$/.test(value)) return new Date(Number(value) * 1000);
  throw new UsageError(`--creation-time must be "now" or seconds since the epoch, not "${value}".`);
}

export function registerBuildCommand(program: Command, context: CommandContext): void {
  const { output } = context;
  program
    .command("build")
    .description("Build an app into an OCI image with Cloud Native Buildpacks (the official lifecycle)")
    .argument("[path]", "the app's directory", ".")
    .option("-B, --builder <ref>", "builder image (e.g. paketobuildpacks/builder-jammy-base)")
    .option("-t, --tag <name>", "image name (default: the directory's name)")
    .option("--layout <dir>", "write the image to this OCI layout directory instead of the store")
    .option("--publish", "push the image to the registry its name (-t) names, instead of the store")
    .option(
      "-e, --env <K=V>",
      "build-time environment variable for buildpacks (K alone: take it from here)",
      collect,
      [],
    )
    .option("--env-file <file>", "read build-time environment variables from a file", collect, [])
    .option("--run-image <ref>", "run image instead of the builder's")
    .option("--clear-cache", "start without the cache of previous builds")
    .option("--creation-time <now|seconds>", "the image's created time (default: 1980, reproducible)")
    .action(
      async (
        path: string,
        opts: {
          builder?: string;
          tag?: string;
          layout?: string;
          publish?: boolean;
          env: string[];
          envFile: string[];
          runImage?: string;
          clearCache?: boolean;
          creationTime?: string;
        },
      ) => {
        const builder = opts.builder ?? process.env.LOCALD_BUILDER;
        if (builder === undefined)
          throw new UsageError("No builder: pass --builder <image> (or set LOCALD_BUILDER).");
        if (opts.publish && opts.layout) throw new UsageError("--publish and --layout exclude each other.");
        if (opts.publish && opts.tag === undefined)
          throw new UsageError(
            "--publish needs the image's name with -t (for example -t registry.example.com/team/app:1).",
          );
        const name = opts.tag ?? defaultName(path);
        const fileLines = (await Promise.all(opts.envFile.map((file) => readFile(file, "utf8")))).flatMap(
          envFileLines,
        );
        const flags = context.flags();
        const result = await build(path, {
          builder,
          output: opts.publish
            ? { kind: "registry", name }
            : opts.layout
              ? { kind: "layout", dir: opts.layout, name }
              : { kind: "store", name },
          env: [...fileLines, ...opts.env],
          ...(opts.runImage ? { runImage: opts.runImage } : {}),
          ...(opts.clearCache ? { clearCache: true } : {}),
          ...(opts.creationTime ? { creationTime: creationTime(opts.creationTime) } : {}),
          client: clientOptions(flags, (line) => output.stderr.write(`${line}\n`)),
          logLevel: flags.verbose || process.env.LOCALD_DEBUG === "1" ? "debug" : "info",
          onOutput: (chunk) => output.stderr.write(chunk),
        });
        const where = result.layout
          ? `OCI layout ${result.layout}`
          : opts.publish
            ? "its registry"
            : "the local store";
        output.stdout.write(`Successfully built ${result.image} (${result.digest}) into ${where}\n`);
      },
    );
}
