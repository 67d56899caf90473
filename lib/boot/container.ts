// A whole container run to its end by a program other than minc (polecat's
// install stage, minc-trapper's traced run): the settings come from the
// caller's environment, as the shell MINCS exported them. minc-exec does
// phases 2 and 3 and becomes minc's waiter, which holds the cleanup chain
// (cgroups, network) as it does for minc.
//
// It runs without blocking the caller's Node, so that a signal acts while
// the container runs: the caller is interrupted (lib/core/interrupt.ts; it must
// catchInterrupts() first), and the container gets the signal.
import { readFileSync, realpathSync } from "node:fs";
import { runStoppable, type PassOn } from "../core/interrupt.ts";
import { backend } from "../core/libexec.ts";
import { settingsEnv, type Settings } from "../core/settings.ts";
import { quote, quoteAll, shown } from "../core/trace.ts";
import { workdirPaths } from "./workdir.ts";

/**
 * The command's exit status (128+N if a signal ended it). settings are
 * MINC_* values for this container on top of the caller's environment; the
 * trace line names them, and MINC_TMPDIR, so that pasted it does the same.
 */
export function runContainer(
  tmpdir: string,
  command: readonly string[],
  settings: Partial<Settings> = {},
): Promise<number> {
  const argv = [backend("minc-exec"), ...command];
  const given = settingsEnv({ MINC_TMPDIR: tmpdir, ...settings });
  shown([...Object.entries(given).map(([k, v]) => `${k}=${quote(v)}`), quoteAll(argv)].join(" "));
  const tracer = settings.MINC_DEBUG_PREFIX?.[0];
  return runStoppable(
    argv,
    { env: { ...process.env, ...given } },
    tracer ? passOnPastTracer(tmpdir, tracer) : undefined,
  );
}

/**
 * minc-exec, which becomes minc's waiter, passes a signal on to the
 * container's init, or stops a boot under way (minc-waiter.sh relay). But
 * a tracer in front of the command (MINC_DEBUG_PREFIX: minc-trapper's
 * strace -o) is the init once booted, and ignores INT, TERM and HUP, which
 * it leaves to the command it traces: then the command gets the signal.
 */
function passOnPastTracer(tmpdir: string, tracer: string): PassOn {
  return (sig, waiter) => {
    const command = tracedCommand(tmpdir, tracer);
    if (command === undefined) return void waiter.kill(sig);
    try {
      process.kill(command, sig);
    } catch {
      // gone meanwhile: the container ends anyway
    }
  };
}

/** The tracer's child, once the container's init (its PID in TMPDIR/pid) is the tracer. */
function tracedCommand(tmpdir: string, tracer: string): number | undefined {
  try {
    const init = readFileSync(workdirPaths(tmpdir).pid, "utf8").trim();
    if (realpathSync(`/proc/${init}/exe`) !== realpathSync(tracer)) return undefined; // still booting
    const [child] = readFileSync(`/proc/${init}/task/${init}/children`, "utf8").trim().split(" ");
    return child ? Number(child) : undefined;
  } catch {
    return undefined; // not booted yet, or gone
  }
}
