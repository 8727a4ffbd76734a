import { isAbsolute, normalize } from "node:path";
import { OciError } from "@locald/oci";
import { stringify } from "yaml";

/**
 * The Lima VM locald runs Linux commands in on macOS, as data: `defaults()` fills every field in
 * one place, `validate()` checks the whole value in another, `limaYaml()` only serialises it —
 * never YAML by string concatenation, so a path with a quote or a colon cannot break the file.
 * Field names are Lima's own (`limactl validate` is the reference; the e2e suite runs it).
 */

export class VmConfigError extends OciError {
  readonly code = "VM_CONFIG";
}

export type LimaArch = "aarch64" | "x86_64";

export interface LimaImage {
  location: string;
  arch: LimaArch;
  /** Lima checks the download against it; pinned from Lima's own Debian 12 template. */
  digest?: string;
}

export interface LimaMount {
  location: string;
  /** Where it appears in the VM: the same path, so paths on the command line mean the same thing. */
  mountPoint: string;
  writable: boolean;
}

export interface LimaProvision {
  mode: "system";
  script: string;
}

export interface LimaPortForward {
  guestPort: number;
  hostPort: number;
  /** Loopback only: a dev server is not published to the network by accident. */
  hostIP: string;
}

export interface LimaVmConfig {
  /** Apple's Virtualization.framework: no QEMU to install, virtiofs mounts. */
  vmType: "vz";
  arch: LimaArch;
  cpus: number;
  memory: string;
  disk: string;
  images: LimaImage[];
  mountType: "virtiofs";
  mounts: LimaMount[];
  /** Lima's bundled containerd is not ours to run: locald brings runc and bubblewrap. */
  containerd: { system: boolean; user: boolean };
  provision: LimaProvision[];
  portForwards: LimaPortForward[];
}

/** `[host]` in locald.toml: the VM's size and what of the Mac it sees. */
export interface HostSettings {
  cpus?: number;
  memory?: string;
  disk?: string;
  /** Extra directories to mount (writable, same path). */
  mounts?: string[];
  /** Mount $HOME too (default false: a build sees the project, not your documents and keys). */
  mount_home?: boolean;
}

export interface VmConfigInput {
  /** `process.arch` of the Mac: vz runs only the host's own architecture. */
  hostArch: string;
  /** The project directories (absolute), mounted writable at the same path. */
  projectDirs: readonly string[];
  /** Ports services listen on (`[services.*] port`, `-p`), forwarded to the Mac's loopback. */
  ports?: readonly number[];
  home: string;
  /** The locald version the VM installs: the same as the one forwarding. */
  localdVersion: string;
  settings?: HostSettings;
}

export const DEFAULT_CPUS = 4;
export const DEFAULT_MEMORY = "4GiB";
export const DEFAULT_DISK = "60GiB";

/**
 * Debian 12 cloud images with the digests Lima v1.2's own template pins (templates/_images/
 * debian-12.yaml): Lima verifies the download against them.
 */
const IMAGES: readonly LimaImage[] = [
  {
    location:
      "https://cloud.debian.org/images/cloud/bookworm/20251112-2294/debian-12-genericcloud-arm64-20251112-2294.qcow2",
    arch: "aarch64",
    digest:
      "sha512:1b7086f0cae5ca855e15f18de8dabf3980db87ffccc1b8f3045e0803cb2f0979928b83cdc3761bf46ed557f859c3bc3298c2f53751f3e49ea7a08f2585a7e546",
  },
  {
    location:
      "https://cloud.debian.org/images/cloud/bookworm/20251112-2294/debian-12-genericcloud-amd64-20251112-2294.qcow2",
    arch: "x86_64",
    digest:
      "sha512:650a0c89c906707134b8b418004d42ea57556fbbe255e9071fbb78537704085328765d1a396bca1b5cca4540f4f12cadfff53b87f978a9b982e6e59356ddfdde",
  },
];

export function limaArch(nodeArch: string): LimaArch {
  if (nodeArch === "arm64") return "aarch64";
  if (nodeArch === "x64") return "x86_64";
  throw new VmConfigError(
    `A Lima VM with vmType vz runs the host's architecture; ${nodeArch} is not one Lima supports.`,
  );
}

/**
 * Installs what locald needs in the VM, idempotently (Lima runs it on every boot): runc,
 * bubblewrap and uidmap from Debian; Node.js 22 and locald of the same version from npm —
 * Debian 12's own nodejs (18) is older than locald's engines.
 */
function provisionScript(localdVersion: string): string {
  return [
    "#!/bin/bash",
    "set -eux -o pipefail",
    `want=${JSON.stringify(localdVersion)}`,
    'if command -v locald >/dev/null && [ "$(locald --version)" = "$want" ]; then exit 0; fi',
    "export DEBIAN_FRONTEND=noninteractive",
    "apt-get update",
    "apt-get install -y --no-install-recommends ca-certificates runc bubblewrap uidmap nodejs npm",
    "npm install -g --no-fund --no-audit node@22",
    'npm install -g --no-fund --no-audit "locald@$want"',
    "",
  ].join("\n");
}

/** The whole config with every field filled: the input's, `[host]`'s, else ours. */
export function defaults(input: VmConfigInput): LimaVmConfig {
  const arch = limaArch(input.hostArch);
  const settings = input.settings ?? {};
  const dirs = [
    ...input.projectDirs,
    ...(settings.mounts ?? []),
    ...(settings.mount_home === true ? [input.home] : []),
  ].map((d) => normalize(d).replace(/(.)\/+$/, "$1"));
  const mounts = [...new Set(dirs)].map((location) => ({ location, mountPoint: location, writable: true }));
  const ports = [...new Set(input.ports ?? [])].sort((a, b) => a - b);
  return {
    vmType: "vz",
    arch,
    cpus: settings.cpus ?? DEFAULT_CPUS,
    memory: settings.memory ?? DEFAULT_MEMORY,
    disk: settings.disk ?? DEFAULT_DISK,
    images: IMAGES.filter((i) => i.arch === arch).map((i) => ({ ...i })),
    mountType: "virtiofs",
    mounts,
    containerd: { system: false, user: false },
    provision: [{ mode: "system", script: provisionScript(input.localdVersion) }],
    portForwards: ports.map((port) => ({ guestPort: port, hostPort: port, hostIP: "127.0.0.1" })),
  };
}

const SIZE = /^[0-9]+(\.[0-9]+)?\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB|K|M|G|T)$/;
/** Lima refuses these as mount points, and mounting over them would hide the VM's own OS. */
const SYSTEM_PATHS = new Set(["/", "/bin", "/dev", "/etc", "/home", "/opt", "/sbin", "/tmp", "/usr", "/var"]);

/** Every problem with `config` at once, or nothing; `home` tells a $HOME mount from a project. */
export function validate(config: LimaVmConfig, options: { home: string; mountHome?: boolean }): void {
  const problems: string[] = [];
  if (config.vmType !== "vz") problems.push(`vmType must be vz, not ${config.vmType}`);
  if (!Number.isInteger(config.cpus) || config.cpus < 1)
    problems.push(`cpus must be a whole number ≥ 1, not ${config.cpus}`);
  if (!SIZE.test(config.memory))
    problems.push(`memory must be a size like "4GiB", not ${JSON.stringify(config.memory)}`);
  if (!SIZE.test(config.disk))
    problems.push(`disk must be a size like "60GiB", not ${JSON.stringify(config.disk)}`);
  if (config.images.length === 0) problems.push(`no VM image for ${config.arch}`);
  for (const image of config.images)
    if (image.arch !== config.arch)
      problems.push(`the image ${image.location} is ${image.arch}, the VM ${config.arch}`);
  const home = normalize(options.home).replace(/(.)\/+$/, "$1");
  const seen = new Set<string>();
  for (const mount of config.mounts) {
    if (!isAbsolute(mount.location)) problems.push(`the mount ${mount.location} must be an absolute path`);
    if (
      SYSTEM_PATHS.has(mount.mountPoint) ||
      [...SYSTEM_PATHS].some(
        (p) => p !== "/" && p !== "/home" && p !== "/tmp" && mount.mountPoint.startsWith(`${p}/`),
      )
    )
      problems.push(`the mount point ${mount.mountPoint} is a system path of the VM`);
    // A parent of $HOME (`/Users`) would expose it as much as $HOME itself.
    const exposesHome = mount.location === home || home.startsWith(`${mount.location.replace(/\/$/, "")}/`);
    if (exposesHome && options.mountHome !== true)
      problems.push(
        `${mount.location} is or holds your home directory; set [host] mount_home = true to mount it`,
      );
    if (seen.has(mount.mountPoint)) problems.push(`${mount.mountPoint} is mounted twice`);
    seen.add(mount.mountPoint);
  }
  const hostPorts = new Set<number>();
  for (const forward of config.portForwards) {
    for (const port of [forward.guestPort, forward.hostPort])
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        problems.push(`port ${port} is not between 1 and 65535`);
    if (hostPorts.has(forward.hostPort)) problems.push(`host port ${forward.hostPort} is forwarded twice`);
    hostPorts.add(forward.hostPort);
  }
  if (problems.length > 0)
    throw new VmConfigError(`The Lima VM config is not valid: ${problems.join("; ")}.`, {
      hint: "Fix [host] in locald.toml (cpus, memory, disk, mounts, mount_home).",
    });
}

/** The config as Lima reads it. */
export function limaYaml(config: LimaVmConfig): string {
  return stringify(config, { lineWidth: 0 });
}

/** defaults, validate, YAML: what `locald vm config` prints and `vm start` hands to limactl. */
export function vmConfigYaml(input: VmConfigInput): string {
  const config = defaults(input);
  validate(config, { home: input.home, mountHome: input.settings?.mount_home === true });
  return limaYaml(config);
}
