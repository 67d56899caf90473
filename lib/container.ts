// A whole container run to its end by a program other than minc (polecat's
// install stage, minc-trapper's traced run): the settings come from the
// caller's environment, as the shell MINCS exported them. minc-exec does
// phases 2 and 3 and becomes minc's waiter, which holds the cleanup chain
// (cgroups, network) as it does for minc.
import { spawnSync } from "node:child_process";
import { constants } from "node:os";
import { MincError } from "./fail.ts";
import { backend } from "./libexec.ts";
import { holdSignals } from "./signals.ts";
import { quoteAll, shown } from "./trace.ts";

/** The command's exit status (128+N if a signal ended it). */
export function runContainer(tmpdir: string, command: readonly string[], env: NodeJS.ProcessEnv): number {
  const argv = [backend("minc-exec"), ...command];
  shown(quoteAll(argv));
  const r = spawnSync(argv[0], argv.slice(1), { stdio: "inherit", env: { ...env, MINC_TMPDIR: tmpdir } });
  if (r.error) throw new MincError(`cannot run a container: ${r.error.message}`);
  if (r.signal) return 128 + (constants.signals[r.signal] ?? 0);
  return r.status ?? 1;
}

/** Signals that stop the container (Ctrl-C reaches its processes too) must not stop us before we clean up. */
export function outliveInterrupts(): void {
  holdSignals(["SIGINT", "SIGTERM", "SIGHUP"]);
}
