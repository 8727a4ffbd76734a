import type { Builder } from "../builder.js";
import { builderIsolation } from "./builder-isolation.js";
import { hostIsolation } from "./host-isolation.js";
import { DEFAULT_PATH, type Isolation, type IsolationMode } from "./isolation.js";

const MODES: Readonly<Record<Isolation, IsolationMode>> = { builder: builderIsolation, host: hostIsolation };

/** The mode that implements `isolation`. */
export function isolationMode(isolation: Isolation): IsolationMode {
  return MODES[isolation];
}

/**
 * The phases' environment: the mode's own, a plain PATH where it has none, the Platform API,
 * HOME=/tmp (the one place every sandbox can write), and no colour when `colour` is false.
 */
export function phaseEnvironment(
  builder: Builder,
  isolation: Isolation,
  platformApi: string,
  colour = true,
): string[] {
  const own = isolationMode(isolation).environment(builder);
  return [
    ...(own.some((pair) => pair.startsWith("PATH=")) ? [] : [`PATH=${DEFAULT_PATH}`]),
    ...own,
    `CNB_PLATFORM_API=${platformApi}`,
    "HOME=/tmp",
    ...(colour ? [] : ["CNB_NO_COLOR=true"]),
  ];
}
