import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  chooseHostProvider,
  commandOf,
  HostProviderError,
  isWslKernel,
  runsOnHost,
  translateArgument,
  windowsDriveOf,
  windowsToWsl,
  wslDriveWarning,
  wslInvocation,
  wslToWindows,
} from "../src/host/index.js";
import { UsageError } from "../src/usage.js";

const isProviderError = (error: unknown) =>
  error instanceof HostProviderError && error.code === "HOST_PROVIDER";

describe("choosing the host provider", () => {
  test("from the OS: Linux and WSL run here, macOS in Lima, Windows through WSL", () => {
    assert.equal(chooseHostProvider({ platform: "linux" }), "linux");
    assert.equal(
      chooseHostProvider({ platform: "linux", kernelRelease: "5.15.167.4-microsoft-standard-WSL2" }),
      "linux",
    );
    assert.equal(chooseHostProvider({ platform: "darwin" }), "lima");
    assert.equal(chooseHostProvider({ platform: "win32" }), "wsl");
    assert.throws(() => chooseHostProvider({ platform: "freebsd" }), isProviderError);
  });

  test("the flag over the environment over the OS; a wrong name is refused", () => {
    assert.equal(chooseHostProvider({ platform: "darwin", env: "linux" }), "linux");
    assert.equal(chooseHostProvider({ platform: "darwin", env: "linux", flag: "LIMA" }), "lima");
    assert.equal(chooseHostProvider({ platform: "linux", env: "" }), "linux");
    assert.throws(
      () => chooseHostProvider({ platform: "linux", flag: "docker" }),
      (error: unknown) => error instanceof UsageError && /--host-provider must be one of/.test(error.message),
    );
    assert.throws(
      () => chooseHostProvider({ platform: "linux", env: "qemu" }),
      (error: unknown) => error instanceof UsageError && /LOCALD_HOST_PROVIDER/.test(error.message),
    );
  });

  test("WSL kernels, as /proc/sys/kernel/osrelease and /proc/version say", () => {
    assert.equal(isWslKernel("5.15.167.4-microsoft-standard-WSL2"), true);
    assert.equal(isWslKernel("4.4.0-19041-Microsoft"), true); // WSL1
    assert.equal(
      isWslKernel("Linux version 6.6.36.6-microsoft-standard-WSL2 (root@f1c2) (gcc (GCC) 11.2.0) #1 SMP"),
      true,
    );
    assert.equal(isWslKernel("6.12.48+deb13-amd64"), false);
    assert.equal(isWslKernel(undefined), false);
  });

  test("an app dir on a Windows drive under WSL is warned about, once", () => {
    assert.equal(windowsDriveOf("/mnt/c/Users/me/app"), "c");
    assert.equal(windowsDriveOf("/mnt/D"), "d");
    assert.equal(windowsDriveOf("/mnt/wsl/x"), undefined);
    assert.equal(windowsDriveOf("/home/me/app"), undefined);
    assert.equal(wslDriveWarning("6.12.48+deb13-amd64", "/mnt/c/app"), undefined);
    assert.equal(wslDriveWarning("5.15-microsoft-standard-WSL2", "/home/me/app"), undefined);
    assert.match(
      wslDriveWarning("5.15-microsoft-standard-WSL2", "/mnt/c/My App") ?? "",
      /Windows drive C:.*slower/,
    );
    assert.equal(wslDriveWarning("5.15-microsoft-standard-WSL2", "/mnt/c/My App"), undefined);
  });

  test("which command lines need Linux", () => {
    assert.equal(commandOf(["--insecure-registry", "r:5000", "--verbose", "build", "."]), "build");
    assert.equal(commandOf(["--host-provider", "lima", "up"]), "up");
    assert.equal(runsOnHost(["vm", "start"]), true);
    assert.equal(runsOnHost([]), true);
    assert.equal(runsOnHost(["--version"]), true);
    assert.equal(runsOnHost(["build", "--help"]), true);
    assert.equal(runsOnHost(["build", "."]), false);
    assert.equal(runsOnHost(["--host-provider=wsl", "container", "run", "img"]), false);
  });
});

describe("WSL path translation", () => {
  const distro = { distro: "Debian" };

  test("drive paths, either slash, spaces kept", () => {
    assert.equal(windowsToWsl("C:\\Users\\me\\My Projects\\app", distro), "/mnt/c/Users/me/My Projects/app");
    assert.equal(windowsToWsl("d:/src/app/", distro), "/mnt/d/src/app");
    assert.equal(windowsToWsl("C:\\", distro), "/mnt/c");
    assert.equal(windowsToWsl("C:", distro), "/mnt/c");
    assert.equal(windowsToWsl("relative\\dir", distro), undefined);
    assert.equal(windowsToWsl("/home/me", distro), undefined);
  });

  test("UNC paths into the distribution: \\\\wsl$ and \\\\wsl.localhost", () => {
    assert.equal(windowsToWsl("\\\\wsl$\\Debian\\home\\me\\my app", distro), "/home/me/my app");
    assert.equal(windowsToWsl("\\\\wsl.localhost\\Debian\\home\\me", distro), "/home/me");
    assert.equal(windowsToWsl("\\\\WSL.LOCALHOST\\debian", distro), "/");
    assert.equal(windowsToWsl("//wsl$/Debian/srv/x", distro), "/srv/x");
    assert.equal(windowsToWsl("\\\\wsl$\\Ubuntu-24.04\\home\\me", {}), "/home/me");
    assert.throws(() => windowsToWsl("\\\\wsl$\\Ubuntu\\home\\me", distro), /distribution Ubuntu.*Debian/);
    assert.equal(windowsToWsl("\\\\fileserver\\share\\app", distro), undefined);
  });

  test("and back", () => {
    assert.equal(
      wslToWindows("/mnt/c/Users/me/My Projects", { distro: "Debian" }),
      "C:\\Users\\me\\My Projects",
    );
    assert.equal(
      wslToWindows("/home/me/app", { distro: "Debian" }),
      "\\\\wsl.localhost\\Debian\\home\\me\\app",
    );
    assert.equal(wslToWindows("/", { distro: "Debian" }), "\\\\wsl.localhost\\Debian\\");
    assert.throws(() => wslToWindows("relative", { distro: "Debian" }), isProviderError);
  });

  test("arguments: whole paths and --flag=path; image names, ports and a lone letter are left alone", () => {
    assert.equal(translateArgument("C:\\work\\app one", distro), "/mnt/c/work/app one");
    assert.equal(translateArgument("--env-file=C:\\work\\.env", distro), "--env-file=/mnt/c/work/.env");
    assert.equal(
      translateArgument("--ca-cert=\\\\wsl$\\Debian\\etc\\ca.pem", distro),
      "--ca-cert=/etc/ca.pem",
    );
    for (const arg of ["registry.local:5000/app:1", "8080:80", "a:b", "-p", "build", "A=C:\\x"])
      assert.equal(translateArgument(arg, distro), arg);
  });

  test("the wsl.exe call", () => {
    assert.deepEqual(
      wslInvocation(["build", "C:\\Users\\me\\app", "-t", "app"], { cwd: "C:\\Users\\me", distro: "Debian" }),
      {
        file: "wsl.exe",
        args: [
          "-d",
          "Debian",
          "--cd",
          "/mnt/c/Users/me",
          "--",
          "locald",
          "build",
          "/mnt/c/Users/me/app",
          "-t",
          "app",
        ],
      },
    );
    assert.deepEqual(wslInvocation(["up"], { cwd: "\\\\wsl.localhost\\Debian\\home\\me\\app" }).args, [
      "--cd",
      "/home/me/app",
      "--",
      "locald",
      "up",
    ]);
  });
});
