import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parse } from "yaml";
import { parseConfig } from "../src/config.js";
import {
  DEFAULT_CPUS,
  DEFAULT_MEMORY,
  defaults,
  type LimaVmConfig,
  limaArch,
  limaYaml,
  VmConfigError,
  type VmConfigInput,
  validate,
  vmConfigYaml,
} from "../src/host/index.js";

const INPUT: VmConfigInput = {
  hostArch: "arm64",
  projectDirs: ["/Users/me/src/app/"],
  ports: [8080, 3000, 8080],
  home: "/Users/me",
  localdVersion: "0.1.0",
};

const invalid = (pattern: RegExp) => (error: unknown) =>
  error instanceof VmConfigError && error.code === "VM_CONFIG" && pattern.test(error.message);

describe("the Lima VM config", () => {
  test("defaults: vz, the host's arch, the project mounted at the same path, $HOME not", () => {
    const config = defaults(INPUT);
    assert.equal(config.vmType, "vz");
    assert.equal(config.arch, "aarch64");
    assert.equal(config.cpus, DEFAULT_CPUS);
    assert.equal(config.memory, DEFAULT_MEMORY);
    assert.deepEqual(config.mounts, [
      { location: "/Users/me/src/app", mountPoint: "/Users/me/src/app", writable: true },
    ]);
    assert.deepEqual(
      config.portForwards.map((p) => [p.guestPort, p.hostPort, p.hostIP]),
      [
        [3000, 3000, "127.0.0.1"],
        [8080, 8080, "127.0.0.1"],
      ],
    );
    assert.ok(config.images.every((i) => i.arch === "aarch64" && i.digest?.startsWith("sha512:")));
    assert.deepEqual(config.containerd, { system: false, user: false });
    const script = config.provision[0]?.script ?? "";
    for (const word of ["runc", "bubblewrap", "uidmap", "node@22", "locald@$want", 'want="0.1.0"'])
      assert.ok(script.includes(word), word);
    assert.equal(defaults({ ...INPUT, hostArch: "x64" }).arch, "x86_64");
    assert.throws(() => limaArch("ia32"), VmConfigError);
  });

  test("[host] overrides: size, more mounts, $HOME when asked", () => {
    const config = defaults({
      ...INPUT,
      settings: { cpus: 8, memory: "12GiB", disk: "100GiB", mounts: ["/Volumes/data"], mount_home: true },
    });
    assert.deepEqual([config.cpus, config.memory, config.disk], [8, "12GiB", "100GiB"]);
    assert.deepEqual(
      config.mounts.map((m) => m.location),
      ["/Users/me/src/app", "/Volumes/data", "/Users/me"],
    );
    validate(config, { home: INPUT.home, mountHome: true });
  });

  test("validate() reports every problem at once", () => {
    const bad: LimaVmConfig = {
      ...defaults(INPUT),
      cpus: 0,
      memory: "lots",
      mounts: [
        { location: "/Users/me", mountPoint: "/Users/me", writable: true },
        { location: "/Users", mountPoint: "/Users", writable: true },
        { location: "rel", mountPoint: "/usr/local", writable: true },
        { location: "/x", mountPoint: "/x", writable: true },
        { location: "/x", mountPoint: "/x", writable: true },
      ],
      portForwards: [
        { guestPort: 70000, hostPort: 80, hostIP: "127.0.0.1" },
        { guestPort: 81, hostPort: 80, hostIP: "127.0.0.1" },
      ],
    };
    assert.throws(
      () => validate(bad, { home: "/Users/me/" }),
      invalid(
        /cpus must be.*memory must be.*\/Users\/me is or holds your home directory.*\/Users is or holds your home directory.*absolute path.*\/usr\/local is a system path.*\/x is mounted twice.*port 70000.*host port 80 is forwarded twice/,
      ),
    );
  });

  test("YAML through the library: what is parsed back is the value, odd paths included", () => {
    const input = { ...INPUT, projectDirs: ["/Users/me/it's: a #project"] };
    const text = vmConfigYaml(input);
    assert.deepEqual(parse(text), JSON.parse(JSON.stringify(defaults(input))));
    assert.equal(limaYaml(defaults(input)), text);
    assert.match(text, /^vmType: vz$/m);
  });

  test("[host] in locald.toml is checked by the schema", () => {
    const config = parseConfig(
      '[host]\ncpus = 6\nmemory = "6GiB"\nmount_home = false\nmounts = ["../data"]\n',
      "/p/locald.toml",
    );
    assert.deepEqual({ ...config.host }, { cpus: 6, memory: "6GiB", mount_home: false, mounts: ["../data"] });
    assert.throws(() => parseConfig("[host]\ncpus = 0\n", "/p/locald.toml"), /cpus/);
    assert.throws(() => parseConfig('[host]\nmemory = "lots"\n', "/p/locald.toml"), /memory/);
    assert.throws(() => parseConfig("[host]\nqemu = true\n", "/p/locald.toml"), /qemu/);
  });
});
