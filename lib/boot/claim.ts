// A working directory is one container's at a time.
//
// Its files (the cleanup chain, waiter, pid, hosts, minc-core.sh) are that
// container's: a second minc on the same directory would forget the first
// one's cleanup chain, and leave its network namespace and cgroups behind
// when it ends. So whatever acts for a container holds a shared flock on
// DIR/lock while it may still act there: minc through the boot, its guard
// (libexec/minc-waiter.sh --guard), then the waiter and, with -B, its
// watcher, through the cleanup. A lock goes with the last process that has
// it open, even a SIGKILLed one, so no stale lock is ever left. Another minc
// that wants the directory takes the lock exclusive for a moment (no one
// else holds it), then shared like the others; the container itself never
// has it open.
import { spawnSync } from "node:child_process";
import { openSync, readFileSync, realpathSync } from "node:fs";
import { basename } from "node:path";
import { usageError } from "../core/fail.ts";
import { findInPath } from "../core/run.ts";
import { quote, shown, step } from "../core/trace.ts";
import { workdirPaths } from "./workdir.ts";

/** flock's exit status (-E) when another holds the lock; its other failures mean this file system has no locks. */
const HELD = 75;

/**
 * A claim waits a moment for a container that is ending: its waiter has
 * gone, but its guard or watcher lets go of the lock only a little later.
 * One that boots has a waiter soon, and is refused then.
 */
const GRACE_MS = 2000;
const STEP_MS = 100;

/**
 * Claim a directory that exists already (-t DIR, a container of the store)
 * for this run, before anything in it changes; refuse it, as `what`, while
 * another container uses it. Returns the lock's descriptor, held (shared)
 * until minc execs its waiter: the guard takes it over (see startGuard).
 */
export function claimWorkingDir(dir: string, what: string): number | undefined {
  const file = workdirPaths(dir).lock;
  step(
    `Claim the working directory: refused while another container uses it (its minc, guard and waiter hold ${file}, shared, to the end of its cleanup)`,
  );
  refuseRunning(dir, what);
  if (!findInPath("flock")) {
    step("(there is no flock: only a running waiter is seen)");
    return undefined;
  }
  let fd: number;
  try {
    fd = openSync(file, "a");
  } catch {
    return undefined; // an unwritable directory: the boot says so when it writes there
  }
  shown(`exec 9>> ${quote(file)}`);
  shown(
    `flock -x -w ${GRACE_MS / 1000} 9 && flock -s -n 9   # (no one else holds it, then held shared as its guard and waiter will hold it)`,
  );
  const exclusive = ["-x", "-w", String(STEP_MS / 1000)];
  let status = flock(fd, exclusive);
  for (let waited = STEP_MS; status === HELD && waited < GRACE_MS; waited += STEP_MS) {
    refuseRunning(dir, what); // (the container that holds it is running by now)
    status = flock(fd, exclusive);
  }
  if (status === 0) status = flock(fd, ["-s", "-n"]);
  if (status === HELD) throw usageError(`${what}: in use by another container (starting, or being cleaned up)`);
  if (status !== 0) step("(this file system has no locks: only a running waiter is seen)");
  return fd;
}

function refuseRunning(dir: string, what: string): void {
  const waiter = liveWaiter(dir);
  if (waiter !== undefined) throw usageError(`${what}: in use by a running container (its waiter is PID ${waiter})`);
}

/** flock(1) on our own open file: the lock belongs to the open file, so it stays ours after flock exits. */
function flock(fd: number, mode: string[]): number | null {
  const r = spawnSync("flock", ["-E", String(HELD), ...mode, "3"], { stdio: ["ignore", "ignore", "ignore", fd] });
  return r.status;
}

/**
 * The PID in DIR/waiter, if that process is still the waiter of this
 * directory: a stale file's PID may be another program's by now.
 */
function liveWaiter(dir: string): number | undefined {
  let pid: string;
  let argv: string[];
  try {
    pid = readFileSync(workdirPaths(dir).waiter, "utf8").trim();
    if (!/^\d+$/.test(pid)) return undefined;
    argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return undefined;
  }
  // sh minc-waiter.sh TMPDIR COMMAND...
  return basename(argv[1] ?? "") === "minc-waiter.sh" && samePath(argv[2] ?? "", dir) ? Number(pid) : undefined;
}

function samePath(a: string, b: string): boolean {
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}
