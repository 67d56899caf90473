// minc-hunt: follow one container with ftrace.
//
//   MINC_PID=PID MINC_FTRACE=SCRIPT minc-hunt
//
// Finds tracefs (mounted at /sys/kernel/tracing, or under debugfs; if
// neither is, it mounts tracefs in the container's own mount namespace, out
// of the host's sight), limits the events to PID (the container's PID 1, as
// the host numbers it) and everything it forks, then runs the user's SCRIPT
// with sh in the tracing directory to choose the events and start tracing.
// minc-leash runs it last, right before it becomes the user's command, so
// the trace starts with the command. Tracing is the kernel's global state:
// it stays as SCRIPT left it, for the user to read `trace` afterwards.
import { existsSync, writeFileSync } from "node:fs";
import { usageError, warn } from "../lib/core/fail.ts";
import { mounts } from "../lib/core/mounts.ts";
import { mount, run } from "../lib/core/run.ts";
import { readSettings, type Settings } from "../lib/core/settings.ts";
import { phase, quote, shown, step } from "../lib/core/trace.ts";

// The settings, from the environment main() is given.
let settings: Settings;

function mountsOf(type: string): string[] {
  return mounts()
    .filter((m) => m.type === type)
    .map((m) => m.point);
}

function tracingDir(): string {
  const tracefs = mountsOf("tracefs")[0];
  if (tracefs) return tracefs;
  const debugfs = mountsOf("debugfs")[0];
  if (debugfs && existsSync(`${debugfs}/tracing/set_event_pid`)) return `${debugfs}/tracing`;
  step("No tracefs mounted: mount one in this (private) mount namespace");
  mount("-t", "tracefs", "nodev", "/sys/kernel/tracing");
  return "/sys/kernel/tracing";
}

/** Write a tracing file; the kernel's refusal is returned, for the caller to judge. */
function write(file: string, value: string): string | undefined {
  shown(`echo ${quote(value)} > ${quote(file)}`);
  try {
    writeFileSync(file, `${value}\n`);
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  }
}

export function main(_args: string[], env: NodeJS.ProcessEnv): number {
  settings = readSettings(env);
  phase(5);
  const pid = settings.MINC_PID;
  const script = settings.MINC_FTRACE;
  if (!/^\d+$/.test(pid)) throw usageError("MINC_PID is not a PID");
  if (!script || !existsSync(script)) throw usageError(`MINC_FTRACE ${script || "(unset)"} is not a file`);
  if (settings.MINC_NOPRIV) throw usageError("--ftrace: an unprivileged container cannot control ftrace");
  const dir = tracingDir();
  step(`Trace only the container: events of PID ${pid} and of all it forks`);
  const refused = write(`${dir}/set_event_pid`, pid) ?? write(`${dir}/options/event-fork`, "1");
  if (refused) throw usageError(`--ftrace: the kernel refused the event pid filter in ${dir} (${refused})`);
  step("Function tracing too, where the kernel allows a pid filter for it");
  const noFunctions = write(`${dir}/set_ftrace_pid`, pid);
  if (noFunctions)
    warn(`--ftrace: this kernel refuses a pid filter for function tracing (${noFunctions}); going on with events only`);
  step("Run the user's ftrace script in the tracing directory");
  run(["sh", "-c", 'cd "$0" && . "$1"', dir, script]);
  return 0;
}
