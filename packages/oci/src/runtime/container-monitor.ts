import { monitorContainer } from "./runtime.js";

/**
 * The detached container's waiter, started by `runContainer({ detach: true })`:
 * `node container-monitor.js <home> <runc> <name>`.
 */
const [home, runc, name] = process.argv.slice(2);
if (home === undefined || runc === undefined || name === undefined) {
  process.stderr.write("usage: container-monitor.js <home> <runc> <name>\n");
  process.exit(2);
}
monitorContainer(home, runc, name).catch((error: unknown) => {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(1);
});
