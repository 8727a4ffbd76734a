import type { BindMount, ClientOptions, SharedRoot, Store } from "@locald/oci";
import type { Builder } from "../builder.js";
import { BuildConfigError } from "../errors.js";

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export const ISOLATIONS = ["builder", "host"] as const;
export type Isolation = (typeof ISOLATIONS)[number];

/** What each isolation promises, for help texts and `builder inspect`. */
export const ISOLATION_GUARANTEES: Readonly<Record<Isolation, string>> = {
  builder:
    "buildpacks run in the builder image's own OS (its build base), read-only, as its build user; the host shows only its resolv.conf and hosts",
  host: "buildpacks run over this machine's OS (/usr, /etc, the library dirs, read-only), as the builder's build user; no home, /root, /var, /opt or other data",
};

/** `isolation` checked (for library callers that pass a string from elsewhere); default builder. */
export function isolationOf(isolation: string | undefined): Isolation {
  if (isolation === undefined) return "builder";
  if ((ISOLATIONS as readonly string[]).includes(isolation)) return isolation as Isolation;
  throw new BuildConfigError(`Isolation "${isolation}" is not one locald has: "builder" or "host".`);
}

/** Where a builder's root filesystem is unpacked from and to. */
export interface RootSource {
  store: Store;
  /** The unpack cache. */
  cacheDir: string;
  client?: ClientOptions;
}

/** What differs between the isolations; everything else about a sandboxed phase is the same. */
export interface IsolationMode {
  readonly name: Isolation;
  /** The `/` its phases see. */
  root(builder: Builder, source: RootSource): Promise<SharedRoot | "host">;
  /**
   * The sandbox keeps the caller's ids (root over the host, which chowns for the build user);
   * otherwise the caller is mapped to the build user in a user namespace.
   */
  privileged(): boolean;
  /** The phases' own environment, before the platform's. */
  environment(builder: Builder): string[];
  /** What it binds besides the build's own directories (the builder's `/cnb` over the host). */
  mounts(builder: Builder): BindMount[];
}
