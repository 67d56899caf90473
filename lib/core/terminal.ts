// The user's terminal, as a container or a virtual machine is given it.
import { readlinkSync } from "node:fs";

/** The terminal the user runs minc on, if any of stdin, stdout or stderr is one. */
export function userTerminal(): string | undefined {
  for (const fd of [0, 1, 2]) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (/^\/dev\/(pts\/\d+|tty\w*|console)$/.test(target)) return target;
    } catch {
      // closed
    }
  }
  return undefined;
}
