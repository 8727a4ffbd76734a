/** A command line that cannot be run as written; exits with status 2 like other CLIs. */
export class UsageError extends Error {
  readonly code = "USAGE";
}
