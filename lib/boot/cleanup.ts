// The cleanup chain of a running container: $MINC_TMPDIR/cleanup.
//
// Each backend that makes something outside the container (a cgroup, a
// network namespace, an sshfs mount) adds the command that undoes it here,
// before making it, so that no end of the container can miss it; minc's own
// trap (remove the working directory) is the first line. minc's waiter
// (libexec/minc-waiter.sh) runs the lines last first when the container
// ends, like the shell MINCS's growing TRAPCMD; its common part
// (minc-waiter-common.sh) defines the helpers they may call (cleanup_cages).
// Before the waiter is in charge, minc-exec or the guard runs them
// (minc-waiter.sh --cleanup, --guard).
import { appendFileSync } from "node:fs";
import { printfLines } from "../core/run.ts";
import { quote, shown } from "../core/trace.ts";
import { workdirPaths } from "./workdir.ts";

export function onExit(tmpdir: string, command: string): void {
  const file = workdirPaths(tmpdir).cleanup;
  const line = `${command}\n`;
  shown(`${printfLines(line)} >> ${quote(file)}`);
  appendFileSync(file, line);
}
