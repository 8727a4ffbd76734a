import { ExecutableError } from "@locald/oci";
import { Command, CommanderError } from "commander";
import { registerBuildCommand } from "./commands/build.js";
import { registerBuilderCommands } from "./commands/builder.js";
import { registerBuildpackCommands } from "./commands/buildpack.js";
import { registerContainerCommands } from "./commands/container.js";
import { registerDevCommands, registerDevcontainerCommand } from "./commands/dev.js";
import { registerDoctorCommand } from "./commands/doctor.js";
import { type CommandContext, registerImageCommands } from "./commands/image.js";
import { registerLoginCommands } from "./commands/login.js";
import { registerRebaseCommand } from "./commands/rebase.js";
import { registerSbomCommands } from "./commands/sbom.js";
import { registerUpCommand } from "./commands/up.js";
import { limaContext, registerVmCommands } from "./commands/vm.js";
import { hostProvider, runsOnHost } from "./host/index.js";
import type { GlobalFlags } from "./options.js";
import { type Output, processOutput, renderError } from "./ui.js";
import { UsageError } from "./usage.js";

export { tuneProcess } from "./process-tuning.js";

/** Put in by the bundler from package.json; the unbundled build (unit tests) has none. */
declare const __LOCALD_VERSION__: string | undefined;
const VERSION = typeof __LOCALD_VERSION__ === "string" ? __LOCALD_VERSION__ : "0.0.0-unbundled";

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Runs the CLI and returns the exit code: 0 ok, 1 failure, 2 usage error. */
export async function main(argv: readonly string[], output: Output = processOutput): Promise<number> {
  const program = new Command("locald")
    .description(
      "Build OCI images and dev environments with Cloud Native Buildpacks, and run images — no Docker daemon.",
    )
    .version(VERSION)
    .option("--verbose", "print details of what happens (also LOCALD_DEBUG=1)")
    .option(
      "--insecure-registry <host>",
      "reach this registry over plain HTTP or unverified HTTPS (repeatable)",
      collect,
    )
    .option("--ca-cert <file>", "trust this PEM CA certificate for registries (repeatable)", collect)
    .option(
      "--host-provider <name>",
      "where Linux commands run: linux (here), lima (a VM on macOS), wsl (WSL2 on Windows); also LOCALD_HOST_PROVIDER",
    )
    .exitOverride()
    // `container run IMAGE cmd --flag`: options after the image belong to the command.
    .enablePositionalOptions()
    .configureOutput({
      writeOut: (s) => output.stdout.write(s),
      writeErr: (s) => output.stderr.write(s),
    })
    .showSuggestionAfterError(true);

  const context: CommandContext = { output, argv, flags: () => program.opts<GlobalFlags>() };
  registerBuildCommand(program, context);
  registerBuilderCommands(program, context);
  registerBuildpackCommands(program, context);
  registerDevCommands(program, context);
  registerDevcontainerCommand(program, context);
  registerDoctorCommand(program, context);
  registerImageCommands(program, context);
  registerLoginCommands(program, context);
  registerRebaseCommand(program, context);
  registerSbomCommands(program, context);
  registerContainerCommands(program, context);
  registerUpCommand(program, context);
  registerVmCommands(program, context);
  for (const command of program.commands) {
    command.exitOverride();
    for (const sub of command.commands) sub.exitOverride();
  }

  try {
    // Off Linux, a command that needs Linux runs as a whole in the VM (same args, cwd, stdio),
    // and its exit status is ours; on Linux (WSL included) nothing changes.
    if (!runsOnHost(argv)) {
      const host = hostProvider(argv, { lima: limaContext(".") });
      if (host.forward !== undefined) return await host.forward(argv);
      if (host.warning !== undefined) output.stderr.write(`${host.warning}\n`);
    }
    await program.parseAsync([...argv], { from: "user" });
    return context.exitCode ?? 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (
        error.code === "commander.helpDisplayed" ||
        error.code === "commander.version" ||
        error.code === "commander.help"
      )
        return 0;
      return error.exitCode === 0 ? 0 : 2;
    }
    if (error instanceof UsageError) {
      output.stderr.write(`Error: ${error.message}\n`);
      return 2;
    }
    const verbose = program.opts<GlobalFlags>().verbose === true || process.env.LOCALD_DEBUG === "1";
    renderError(error, output, verbose);
    // A command the container cannot run exits as a shell would (127, 126), like docker.
    return error instanceof ExecutableError ? error.exitStatus : 1;
  }
}
