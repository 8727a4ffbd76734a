import { homedir } from "node:os";
import { resolve } from "node:path";
import { defaultDataDir } from "@locald/oci";
import type { Command } from "commander";
import { loadConfig } from "../config.js";
import {
  type LimaContext,
  type VmConfigInput,
  vmConfigYaml,
  vmRemove,
  vmStart,
  vmStatus,
  vmStop,
} from "../host/index.js";
import type { CommandContext } from "./image.js";

/** Put in by the bundler from package.json, as for `--version` in main.ts. */
declare const __LOCALD_VERSION__: string | undefined;
/** The version the VM installs: the same locald as the one forwarding, so both sides agree. */
export const LOCALD_VERSION = typeof __LOCALD_VERSION__ === "string" ? __LOCALD_VERSION__ : "0.0.0-unbundled";

/** What the VM config is made of for the project in `dir`: its locald.toml's `[host]` and ports. */
export async function vmConfigInput(dir: string, arch: string = process.arch): Promise<VmConfigInput> {
  const loaded = await loadConfig(dir);
  const root = loaded?.dir ?? resolve(dir);
  // Which limactl drives the VM is no part of the VM's config.
  const { limactl: _limactl, ...host } = loaded?.config.host ?? {};
  const ports = Object.values(loaded?.config.services ?? {})
    .map((s) => s.port)
    .filter((p): p is number => p !== undefined);
  return {
    hostArch: arch,
    projectDirs: [root],
    ports,
    home: homedir(),
    localdVersion: LOCALD_VERSION,
    settings: { ...host, ...(host.mounts ? { mounts: host.mounts.map((m) => resolve(root, m)) } : {}) },
  };
}

/**
 * The Lima context for `dir`: our LOCALD_HOME, the config to create the VM from, and the
 * `[host] limactl` of its locald.toml (read only when LOCALD_LIMACTL does not already decide).
 */
export function limaContext(dir: string): LimaContext {
  return {
    home: defaultDataDir(),
    log: (line) => process.stderr.write(`${line}\n`),
    configYaml: async () => vmConfigYaml(await vmConfigInput(dir)),
    limactl: async () => {
      const loaded = await loadConfig(dir);
      const path = loaded?.config.host?.limactl;
      if (loaded === undefined || path === undefined) return undefined;
      return { path: resolve(loaded.dir, path), from: `[host] limactl in ${loaded.file}` };
    },
  };
}

export function registerVmCommands(program: Command, context: CommandContext): void {
  const { output } = context;
  const vm = program
    .command("vm")
    .description("The Linux VM builds run in on macOS (Lima): config, start, stop, status, rm");
  vm.command("config")
    .description("Print the Lima VM config for the project here (works on any host, for review)")
    .argument("[path]", "the project directory", ".")
    .option("--arch <arch>", "the Mac's architecture: arm64 or x64 (default: this machine's)")
    .action(async (path: string, opts: { arch?: string }) => {
      output.stdout.write(vmConfigYaml(await vmConfigInput(path, opts.arch ?? process.arch)));
    });
  vm.command("start")
    .description("Create the VM if needed and start it")
    .argument("[path]", "the project directory whose config creates it", ".")
    .action(async (path: string) => {
      await vmStart(limaContext(path));
      output.stdout.write("The locald VM is running.\n");
    });
  vm.command("stop")
    .description("Stop the VM")
    .action(async () => {
      await vmStop(limaContext("."));
    });
  vm.command("status")
    .description("Print the VM's state: Running, Stopped or absent")
    .action(async () => {
      output.stdout.write(`${await vmStatus(limaContext("."))}\n`);
    });
  vm.command("rm")
    .description("Delete the VM and its disk (the next command creates it again)")
    .action(async () => {
      await vmRemove(limaContext("."));
    });
}
