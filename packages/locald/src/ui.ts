import type { UnpackEvent } from "@locald/oci";
import { errnoReason, OciError } from "@locald/oci";

export interface Output {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

export const processOutput: Output = { stdout: process.stdout, stderr: process.stderr };

export const useColour = (stream: { isTTY?: boolean }) =>
  stream.isTTY === true && !process.env.NO_COLOR && process.env.TERM !== "dumb";

export function formatBytes(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)}${units[unit]}`;
}

const short = (digest: string) => digest.replace(/^sha\d+:/, "").slice(0, 12);

/**
 * Renders copy progress like docker: one line per blob, redrawn in place on a terminal, and
 * plain start/finish lines otherwise (logs, CI). Quiet and JSON modes print nothing here.
 */
export class ProgressRenderer {
  private readonly lines: string[] = [];
  private readonly state = new Map<string, { line: number; text: string }>();
  private readonly tty: boolean;
  private drawn = 0;
  private lastDraw = 0;

  constructor(
    private readonly stream: NodeJS.WritableStream & { isTTY?: boolean },
    private readonly verb: "Pulling" | "Pushing",
  ) {
    this.tty = stream.isTTY === true;
  }

  readonly onEvent = (event: UnpackEvent): void => {
    switch (event.type) {
      case "resolved":
        this.plain(`${this.verb} ${event.source}${event.platform ? ` (${event.platform})` : ""}`);
        break;
      case "up-to-date":
        this.plain(`Image is up to date (${event.digest})`);
        break;
      case "blob-start":
        this.set(
          event.digest,
          event.cached ? "Already exists" : `Waiting (${formatBytes(event.size)})`,
          !event.cached,
        );
        break;
      case "blob-progress": {
        if (!this.tty) return;
        const verb = this.verb === "Pulling" ? "Downloading" : "Uploading";
        this.set(event.digest, `${verb} ${formatBytes(event.bytes)}/${formatBytes(event.size)}`, false);
        break;
      }
      case "blob-wait":
        this.set(
          event.digest,
          event.owner === process.pid
            ? "Waiting for another pull in this process"
            : `Waiting for another pull (process ${event.owner})`,
          true,
        );
        break;
      case "blob-done":
        if (!event.cached)
          this.set(event.digest, this.verb === "Pulling" ? "Download complete" : "Pushed", true);
        break;
      case "unpack-layer":
        this.set(event.digest, "Extracted", true);
        break;
      case "unpack-cached":
        this.plain(`Unpacked root found in the cache (${short(event.chainId)}): copying it`);
        break;
      case "manifest":
      case "plan":
        break;
    }
  };

  private plain(text: string): void {
    if (this.tty) this.redraw(true);
    this.stream.write(`${text}\n`);
    if (this.tty) {
      this.lines.length = 0;
      this.state.clear();
      this.drawn = 0;
    }
  }

  private set(digest: string, status: string, important: boolean): void {
    const text = `${short(digest)}: ${status}`;
    if (!this.tty) {
      if (important) this.stream.write(`${text}\n`);
      return;
    }
    const known = this.state.get(digest);
    if (known === undefined) {
      this.state.set(digest, { line: this.lines.length, text });
      this.lines.push(text);
    } else {
      this.lines[known.line] = text;
    }
    this.redraw(important);
  }

  /** Redraws at most ~10 times a second, always for important changes. */
  private redraw(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    let out = this.drawn > 0 ? `\x1b[${this.drawn}A` : "";
    for (const line of this.lines) out += `\x1b[2K${line}\n`;
    this.drawn = this.lines.length;
    this.stream.write(out);
  }

  finish(): void {
    if (this.tty) this.redraw(true);
  }
}

/** One paragraph: what failed and why, then what to do. Never a stack trace unless asked. */
export function renderError(error: unknown, output: Output, verbose: boolean): void {
  const red = useColour(output.stderr) ? (s: string) => `\x1b[31m${s}\x1b[0m` : (s: string) => s;
  if (error instanceof OciError) {
    output.stderr.write(`${red("Error:")} ${error.message}\n`);
    if (error.hint) output.stderr.write(`${error.hint}\n`);
    if (verbose)
      output.stderr.write(
        `[${error.code}]${error.cause ? ` cause: ${String((error.cause as Error).message ?? error.cause)}` : ""}\n`,
      );
    return;
  }
  const system = systemError(error);
  if (system !== undefined) {
    output.stderr.write(`${red("Error:")} ${system.message}\n${system.hint}\n`);
    if (verbose && error instanceof Error && error.stack) output.stderr.write(`${error.stack}\n`);
    return;
  }
  const message = error instanceof Error ? error.message : String(error);
  output.stderr.write(`${red("Error:")} ${message}\n`);
  if (verbose && error instanceof Error && error.stack) output.stderr.write(`${error.stack}\n`);
  else output.stderr.write("This is unexpected; run again with --verbose for details and report it.\n");
}

/** What to do about the usual filesystem refusals (their wording is `errnoReason`'s). */
const SYSTEM_ERROR_HINTS: Readonly<Record<string, string>> = {
  EACCES: "Check the owner and mode of that path, or set LOCALD_HOME to a directory you own.",
  EPERM: "Check the owner and mode of that path, or set LOCALD_HOME to a directory you own.",
  EROFS: "Set LOCALD_HOME to a directory on a writable filesystem.",
  ENOTDIR: "Move that file away, or set LOCALD_HOME to a directory.",
  ENOSPC: "Free some disk space (locald image prune removes unused images) and try again.",
  EDQUOT: "Free some space (locald image prune removes unused images) and try again.",
  EMFILE: "Raise the open-file limit (ulimit -n) and try again.",
};

/** A filesystem error Node raised with its errno code and path, said in words. */
function systemError(error: unknown): { message: string; hint: string } | undefined {
  if (!(error instanceof Error)) return undefined;
  const { code, path, syscall } = error as NodeJS.ErrnoException;
  const why = errnoReason(code);
  const hint = code === undefined ? undefined : SYSTEM_ERROR_HINTS[code];
  if (why === undefined || hint === undefined || path === undefined) return undefined;
  const action = syscall === undefined ? "use" : (SYSCALL_WORDS[syscall] ?? "use");
  return { message: `Cannot ${action} ${path}: ${why}.`, hint };
}

const SYSCALL_WORDS: Readonly<Record<string, string>> = {
  mkdir: "create the directory",
  open: "open",
  write: "write",
  rename: "rename",
  unlink: "remove",
  rmdir: "remove",
  scandir: "read the directory",
  stat: "look at",
  lstat: "look at",
  access: "reach",
  copyfile: "copy",
  symlink: "create the link",
};
