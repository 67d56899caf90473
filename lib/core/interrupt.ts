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
//
// polecat and minc-trapper work the same way, with one exception while their
// traced command runs: a Ctrl-C at the terminal, which reaches the whole
// process group (the container too), ends the command's test run, and what
// it used is packed; an INT sent to the program alone still interrupts it
// (spareGroupInterrupts).
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { existsSync } from "node:fs";
import { constants } from "node:os";
import { MincError } from "./fail.ts";
import { removeTree } from "./run.ts";
import { releaseSignals } from "./signals.ts";
import { progname, step, toStderr } from "./trace.ts";

const SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** How a child gets the signal: child.kill, unless a caller knows better (lib/boot/container.ts). */
export type PassOn = (sig: NodeJS.Signals, child: ChildProcess) => void;

interface Undo {
  stages: Set<string>;
  /** What else an interruption undoes, last made first (a VM's network: lib/ermine/ermine.ts). */
  actions?: Set<() => void>;
  children: Map<ChildProcess, PassOn>;
  caught?: NodeJS.Signals;
  /** While set: tells whether an INT reached the whole process group (see spareGroupInterrupts). */
  sentinel?: GroupSentinel;
}
// (One for the process: minc-farm runs in marten's Node, and both use it.)
let state: Undo | undefined;
const undo = (): Undo => {
  if (!state) {
    state = { stages: new Set(), children: new Map() };
    for (const sig of SIGNALS) process.on(sig, () => interrupted(sig));
  }
  return state;
};

/**
 * From here INT, TERM and HUP interrupt this program as above, rather than
 * end it at once (Node's default): call it before making anything an
 * interruption must undo whose name is known only once it is made.
 */
export function catchInterrupts(): void {
  undo();
}

/** This staging directory goes if the program is interrupted (gone or moved into the store by then: nothing to undo). */
export function removeOnInterrupt(stage: string): void {
  undo().stages.add(stage);
}

/**
 * Run undo if the program is interrupted (after its children ended, before
 * the staging directories go): for what was made outside them. The returned
 * function takes it back, once it is undone the ordinary way.
 */
export function undoOnInterrupt(action: () => void): () => void {
  const u = undo();
  const actions = (u.actions ??= new Set());
  actions.add(action);
  return () => {
    actions.delete(action);
  };
}

/** This child gets the signal that interrupts the program, which waits for it to end. */
export function stopOnInterrupt(child: ChildProcess, passOn: PassOn = (sig) => child.kill(sig)): void {
  const u = undo();
  u.children.set(child, passOn);
  const ended = (): void => {
    if (!u.children.delete(child)) return;
    if (u.caught && u.children.size === 0) leave(u);
  };
  child.once("close", ended);
  child.once("error", ended); // (never started: no close may follow)
  if (u.caught) passOn(u.caught, child);
}

function interrupted(sig: NodeJS.Signals): void {
  const u = undo();
  if (u.caught) return;
  if (sig === "SIGINT" && u.sentinel) {
    // (Another signal may interrupt meanwhile: then this one is too late, above.)
    void u.sentinel.reachedGroup(sig).then((spared) => {
      if (!spared) interrupt(u, sig);
    });
    return;
  }
  interrupt(u, sig);
}

function interrupt(u: Undo, sig: NodeJS.Signals): void {
  if (u.caught) return;
  u.caught = sig;
  for (const [child, passOn] of u.children) passOn(sig, child);
  if (u.children.size === 0) leave(u);
}

function leave(u: Undo): void {
  const sig = u.caught!;
  for (const action of [...(u.actions ?? [])].reverse()) {
    try {
      action();
    } catch (e) {
      toStderr(`${progname()}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
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
    toStderr(`${progname()}: interrupted by ${sig}; nothing kept`);
  }
  // End by the signal itself, as without a handler, so that a shell running us sees it.
  releaseSignals(SIGNALS);
  process.kill(process.pid, sig);
  process.exit(128 + constants.signals[sig]);
}

/**
 * Until the returned function is called, an INT that reached our whole
 * process group (Ctrl-C at the terminal, kill -INT -PGID) interrupts
 * nothing: the children have it too and act on it themselves (minc's
 * waiter passes it to the container, whose command ends: the end of a
 * traced test run). An INT sent to this program alone (kill -INT PID) is
 * told apart (within a second) and interrupts it as TERM would.
 */
export function spareGroupInterrupts(): () => void {
  const u = undo();
  const sentinel = new GroupSentinel();
  u.sentinel = sentinel;
  return () => {
    if (u.sentinel === sentinel) u.sentinel = undefined;
    sentinel.stop();
  };
}

/** How long an INT of the whole group may take to end the sentinel, however busy the host. */
const SENTINEL_GRACE_MS = 1000;

/**
 * Node cannot tell who sent a signal; a sentinel can tell whether it reached
 * our whole process group: a child in the group, which the signal ends (a
 * spawned child has every signal's default action). cat, reading a pipe
 * from us, so that it ends when we do, even by SIGKILL.
 */
class GroupSentinel {
  private child!: ChildProcess;
  private ended!: Promise<NodeJS.Signals | null>;

  constructor() {
    this.start();
  }

  private start(): void {
    const child = spawn("cat", [], { stdio: ["pipe", "ignore", "ignore"] });
    this.child = child;
    this.ended = new Promise((resolve) => {
      child.once("exit", (_code, signal) => resolve(signal));
      child.once("error", () => resolve(null)); // (no cat: every INT counts as ours alone)
    });
  }

  /** Did sig reach the whole group? Then a new sentinel stands for the next one. */
  async reachedGroup(sig: NodeJS.Signals): Promise<boolean> {
    const child = this.child;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), SENTINEL_GRACE_MS);
    });
    const by = await Promise.race([this.ended, late]);
    clearTimeout(timer);
    if (by !== sig) return false;
    if (this.child === child) this.start(); // (once for two quick Ctrl-Cs)
    return true;
  }

  stop(): void {
    this.child.stdin?.end();
    this.child.kill();
  }
}

/**
 * Run a program to its end without blocking this Node, so that a signal
 * acts meanwhile: should this program be interrupted, the program gets the
 * signal too, and ends first (stopOnInterrupt). Its exit status, 128+N if
 * signal N ended it. (The caller shows it in the trace: as it runs to its
 * end before anything else, its line is that of a command in the foreground.)
 */
export function runStoppable(argv: readonly string[], options: SpawnOptions = {}, passOn?: PassOn): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: "inherit", ...options });
    stopOnInterrupt(child, passOn);
    child.once("error", (e) => reject(new MincError(`cannot run ${argv[0]}: ${e.message}`)));
    child.once("close", (code, signal) => resolve(signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1)));
  });
}
