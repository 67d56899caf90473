// Signal dispositions as a shell would leave them.
//
// Node catches SIGINT and SIGTERM (to restore the terminal, then re-raise)
// and ignores SIGPIPE and SIGXFSZ; a background job of sh may start us with
// SIGQUIT ignored. Neither suits the boot: as PID 1 of the new namespaces
// minc-core would "handle" a TERM and then drop it (so it resets INT and
// TERM), and an ignored signal stays ignored across execve into the user's
// command (so every program resets QUIT, and exec() PIPE and XFSZ). Adding
// and removing a listener leaves the default action (SIG_DFL).
// Once per process: a backend run in this Node finds them reset, and each
// reset catches the signal for a moment (and would lose one then).
const done = new Set<string>();

export function resetSignals(signals: readonly NodeJS.Signals[]): void {
  const noop = (): void => {};
  signals = signals.filter((sig) => !done.has(sig));
  for (const sig of signals) done.add(sig);
  for (const sig of signals) {
    process.on(sig, noop);
    process.off(sig, noop);
  }
}

/**
 * Hold these signals while a program does synchronous work it must not
 * leave half done: Node records them, and tells which came (the first)
 * once the event loop has had a turn (await a setImmediate first).
 */
export function holdSignals(signals: readonly NodeJS.Signals[]): () => NodeJS.Signals | undefined {
  let first: NodeJS.Signals | undefined;
  for (const sig of signals)
    process.on(sig, () => {
      first ??= sig;
    });
  return () => first;
}

/**
 * Give the held signals their default action back, at once after the last
 * look at them, well before an exec: one that came later would be caught
 * by Node, told at the next event loop turn, and so lost with the exec.
 * From here a signal ends this process, and the guard cleans up after it.
 * Node still loses a signal that comes between the event loop turn's look
 * for signals and this call: measured, a window of about half a millisecond
 * at the end of phase 3, where it was about two milliseconds (to the exec)
 * before this call was made.
 */
export function releaseSignals(signals: readonly NodeJS.Signals[]): void {
  for (const sig of signals) process.removeAllListeners(sig);
}

/**
 * Let the signals that came during synchronous work act now: Node tells its
 * listeners of them only at the next turn of its event loop.
 */
export function signalsDelivered(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Sleep without an event loop turn (for a synchronous program polling a file or a pipe). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
