import { exitStatus } from "@locald/oci";
import type { Command } from "commander";
import { CONFIG_FILE, ISOLATION_HELP, loadConfig } from "../config.js";
import { clientOptions } from "../options.js";
import { assignPorts, prepareServices, selectServices } from "../services.js";
import { lineSplitter, Supervisor, startOrder } from "../supervisor.js";
import { useColour } from "../ui.js";
import { UsageError } from "../usage.js";
import type { CommandContext } from "./image.js";

const COLOURS = [36, 33, 32, 35, 34, 91, 96, 93];

export function registerUpCommand(program: Command, context: CommandContext): void {
  const { output } = context;
  program
    .command("up")
    .description(
      `Build and start the services of ./${CONFIG_FILE} (and what they depend on); Ctrl-C stops them`,
    )
    .argument("[service...]", "services to start (default: all)")
    .option("--timeout <seconds>", "grace period between SIGTERM and SIGKILL when stopping", "10")
    .option("--isolation <builder|host>", ISOLATION_HELP)
    .action(async (names: string[], opts: { timeout: string; isolation?: string }) => {
      const timeout = Number(opts.timeout);
      if (!Number.isFinite(timeout) || timeout < 0)
        throw new UsageError(`--timeout must be seconds (≥ 0), not "${opts.timeout}".`);
      const loaded = await loadConfig(".");
      if (loaded === undefined)
        throw new UsageError(
          `No ${CONFIG_FILE} in ${process.cwd()}: locald up starts the services it defines. A minimal one, ` +
            `which builds the app in this directory and runs it:\n\n[project]\nbuilder = "<builder image>"\n\n` +
            `[services.web.build]\npath = "."\n\nAn image runs as [services.db] image = "postgres:16".`,
        );
      const selected = selectServices(loaded, names);
      const width = Math.max(...selected.map((name) => name.length), "locald".length);
      const colour = useColour(output.stdout);
      const prefix = (name: string) => {
        const index = Object.keys(loaded.config.services ?? {}).indexOf(name);
        const label = `${name.padEnd(width)} |`;
        return colour && index >= 0 ? `\x1b[${COLOURS[index % COLOURS.length]}m${label}\x1b[0m` : label;
      };
      const note = (name: string, message: string) =>
        output.stdout.write(
          `${prefix(name)} ${colour ? `\x1b[2m${message}\x1b[0m` : `[locald] ${message}`}\n`,
        );

      const ports = await assignPorts(loaded, selected);
      const flags = context.flags();
      const order = startOrder(
        selected.map((name) => ({ name, dependsOn: loaded.config.services?.[name]?.depends_on ?? [] })),
      ).map((service) => service.name);
      const prepareLines = new Map<string, ReturnType<typeof lineSplitter>>();
      const services = await prepareServices(loaded, order, ports, {
        isolation: opts.isolation,
        client: clientOptions(flags, (line) => output.stderr.write(`${line}\n`)),
        logLevel: flags.verbose || process.env.LOCALD_DEBUG === "1" ? "debug" : "info",
        onPrepareOutput: (name, chunk) => {
          let lines = prepareLines.get(name);
          if (lines === undefined) {
            lines = lineSplitter((line) => output.stderr.write(`${prefix(name)} ${line}\n`));
            prepareLines.set(name, lines);
          }
          lines.write(chunk);
        },
      });

      const supervisor = new Supervisor(services, {
        log: (name, line) => output.stdout.write(`${prefix(name)} ${line}\n`),
        note,
        stopTimeoutMs: timeout * 1000,
      });
      let stopSignal: NodeJS.Signals | undefined;
      let stopRequested: () => void = () => undefined;
      const requested = new Promise<void>((resolve) => {
        stopRequested = resolve;
      });
      const onSignal = (signal: NodeJS.Signals) => {
        if (stopSignal === undefined) {
          stopSignal = signal;
          note("locald", `${signal}: stopping every service (Ctrl-C again to kill them)`);
          stopRequested();
        } else {
          note("locald", `${signal} again: killing every service`);
          supervisor.kill();
        }
      };
      for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, onSignal);
      try {
        await Promise.race([supervisor.up(), requested]);
        if (stopSignal === undefined)
          note("locald", `up: ${order.map((name) => `${name} on ${ports.get(name)}`).join(", ")}`);
        await requested;
      } finally {
        await supervisor.down();
        for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.off(signal, onSignal);
      }
      note("locald", "every service stopped");
      context.exitCode = exitStatus(null, stopSignal ?? "SIGTERM");
    });
}
