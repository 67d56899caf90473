// An interrupted marten or minc-farm (INT, TERM or HUP) leaves nothing.
//
// Node's default for these signals ends the process at once: no finally
// block runs, a child it runs (cp -a of an import, minc-smuggler of a pull)
// goes on alone, and the staging directory stays in the store with whatever
// was copied or downloaded so far. So the store's work says here what an
// interruption must undo: the staging directories it made, and the
// children it runs asynchronously. On the first signal the children get it
// too, and once they have ended (minc-smuggler removes what it wrote), the
// staging directories that are still there go, and the program ends by the
// same signal.
//
// Node acts on a signal at the next turn of its event loop: a synchronous
// step (spawnSync, a digest) finishes first, so long steps run their
// children asynchronously, and an import lets a signal that came during its
// digest act (signalsDelivered) before the store takes the image.
import type { ChildProcess } from "node:child_process";
import { existsSync, writeSync } from "node:fs";
import { constants } from "node:os";
import { removeTree } from "./run.ts";
import { releaseSignals } from "./signals.ts";
import { progname, step } from "./trace.ts";

const SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

// On globalThis: minc-farm runs in marten's Node, from another bundle.
interface Undo {
  stages: Set<string>;
  children: Set<ChildProcess>;
  caught?: NodeJS.Signals;
}
const KEY = Symbol.for("mincs.interrupt");
const undo = (): Undo => {
  const g = globalThis as { [KEY]?: Undo };
  if (!g[KEY]) {
    g[KEY] = { stages: new Set(), children: new Set() };
    for (const sig of SIGNALS) process.on(sig, () => interrupted(sig));
  }
  return g[KEY];
};

/** This staging directory goes if the program is interrupted (gone or moved into the store by then: nothing to undo). */
export function removeOnInterrupt(stage: string): void {
  undo().stages.add(stage);
}

/** This child gets the signal that interrupts the program, which waits for it to end. */
export function stopOnInterrupt(child: ChildProcess): void {
  const u = undo();
  u.children.add(child);
  const ended = (): void => {
    if (!u.children.delete(child)) return;
    if (u.caught && u.children.size === 0) leave(u);
  };
  child.once("close", ended);
  child.once("error", ended); // (never started: no close may follow)
  if (u.caught) child.kill(u.caught);
}

function interrupted(sig: NodeJS.Signals): void {
  const u = undo();
  if (u.caught) return;
  u.caught = sig;
  for (const child of u.children) child.kill(sig);
  if (u.children.size === 0) leave(u);
}

function leave(u: Undo): void {
  const sig = u.caught!;
  const left = [...u.stages].filter((stage) => existsSync(stage));
  if (left.length > 0) {
    step(`Interrupted by ${sig}: remove the staging directories`);
    for (const stage of left) {
      try {
        removeTree(stage);
      } catch {
        // rm said why; the next import or pull removes it
      }
    }
    writeSync(2, `${progname()}: interrupted by ${sig}; nothing kept\n`);
  }
  // End by the signal itself, as without a handler, so that a shell running us sees it.
  releaseSignals(SIGNALS);
  process.kill(process.pid, sig);
  process.exit(128 + constants.signals[sig]);
}
