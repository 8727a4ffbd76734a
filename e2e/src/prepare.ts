/**
 * Makes what the end-to-end test files share, once, before they run two at a time: every fixture
 * in the fixture cache (the Debian images, the lifecycles and their release tarballs, pack, kpack's
 * checker, limactl) and the unprivileged test user. Each file would otherwise make what it lacks
 * itself, and two files making the same fixture at once race for its final name. Already-made
 * fixtures cost a `stat` each, so this is instant on a machine that has them.
 *
 * Usage: node e2e/dist/src/prepare.js
 */
import { LIFECYCLE, lifecycleReleaseTarball, PREVIOUS_LIFECYCLE } from "./cnb-fixtures.js";
import { debianBuildImageLayer, debianMinbaseLayer, fixtureCacheDir } from "./debian.js";
import { kpackChecker } from "./kpack.js";
import { limactlBuild } from "./lima.js";
import { packBinary } from "./pack.js";
import { unprivilegedUser } from "./util.js";

const steps: [string, () => Promise<unknown>][] = [
  ["the Debian minbase run image layer", debianMinbaseLayer],
  ["the sample build image layer", debianBuildImageLayer],
  [`lifecycle ${LIFECYCLE.version}`, () => lifecycleReleaseTarball(LIFECYCLE)],
  [`lifecycle ${PREVIOUS_LIFECYCLE.version}`, () => lifecycleReleaseTarball(PREVIOUS_LIFECYCLE)],
  ["pack", packBinary],
  ["kpack's checker", kpackChecker],
  ["limactl", limactlBuild],
  ["the unprivileged test user", unprivilegedUser],
];

process.stderr.write(`e2e fixtures in ${fixtureCacheDir()}\n`);
for (const [what, make] of steps) {
  const started = Date.now();
  try {
    await make();
  } catch (error) {
    process.stderr.write(`e2e prepare: ${what}: ${(error as Error).message}\n`);
    process.exit(1);
  }
  process.stderr.write(`e2e prepare: ${what} ready (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
}
