import { dockerConfigCredentials } from "./auth.js";
import { RegistryClient } from "./registry.js";
import { Transport, type TransportOptions } from "./transport.js";

/** Options shared by the high-level calls: how to reach registries. */
export interface ClientOptions extends TransportOptions {
  /** A client to reuse (its token cache and connections); other transport options are then ignored. */
  client?: RegistryClient;
}

/**
 * A registry client for one high-level call, with docker's credentials by default. Returns
 * whether the caller owns it (and must close its transport).
 */
export function clientFor(options: ClientOptions): { client: RegistryClient; owned: boolean } {
  if (options.client !== undefined) return { client: options.client, owned: false };
  const transport = new Transport({ credentials: dockerConfigCredentials(), ...options });
  return { client: new RegistryClient(transport), owned: true };
}
