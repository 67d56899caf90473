// The --debug trace: what a reader sees of a boot.
//
// Every backend prints, on stderr, the phase it works in, a short comment for
// each step, and each command or file write as a shell line after "+ ", with
// the real values, so that the whole trace can be read top to bottom (or
// pasted into a root shell) to follow one container's boot.
import { writeSync } from "node:fs";
import { basename } from "node:path";

/** The five phases of a boot, as the MINCS talk names them. */
export const PHASES = [
  "",
  "set up the working area",
  "outside resource limits",
  "new namespaces",
  "prepare the new root",
  "dive into it",
] as const;

export function tracing(): boolean {
  return !!process.env.MINC_DEBUG;
}

/** The name this program was started as (minc, minc-core, ...). */
export function progname(): string {
  return basename(process.argv[1] ?? "minc").replace(/\.[cm]?[jt]s$/, "");
}

/**
 * Write a line on stderr. A reader that went away (minc --debug 2>&1 | head)
 * must not stop the boot half way, with nothing left to undo it: the line is
 * dropped, and so is the rest of the trace, here and in the programs started
 * from here on (as a shell's writes fail once SIGPIPE is handled).
 */
export function toStderr(line: string): void {
  try {
    writeSync(2, `${line}\n`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EPIPE") throw e;
    delete process.env.MINC_DEBUG;
  }
}

/** Where the trace goes instead of stderr: the boot written down ahead prints it when it gets there (lib/boot/bootscript.ts). */
export interface TraceAside {
  line(line: string): void;
  /** A phase ends: what it left pending is done before the next one's trace. */
  phaseEnds(): void;
}

let aside: TraceAside | undefined;

/** Send the trace there from now on (undefined: back to stderr). */
export function traceAside(to: TraceAside | undefined): void {
  aside = to;
}

function say(line: string): void {
  if (!tracing()) return;
  if (aside) aside.line(line);
  else toStderr(line);
}

/** Head a phase; each program heads the phases it prints in. */
export function phase(n: 1 | 2 | 3 | 4 | 5): void {
  aside?.phaseEnds(); // written down, the last phase's mounts are made before this one starts
  say(`# ==== ${progname()}: phase ${n}/5: ${PHASES[n]} ====`);
}

/** The comment line before one step. */
export function step(comment: string): void {
  say(`# ${comment}`);
}

/** A command or file write, as the shell line that does the same. */
export function shown(line: string): void {
  say(`+ ${line}`);
}

// (Quoting lives in lib/core/quote.ts, which lib/boot/bootscript.ts uses too.)
export { quote, quoteAll } from "./quote.ts";
