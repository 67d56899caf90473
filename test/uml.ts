// Runs a shell script inside a user-mode Linux (UML) guest, so that code that
// needs a real cgroup v2 hierarchy can be tested on a host that only has
// cgroup v1 (the guest boots with cgroup_no_v1=all and mounts cgroup2).
//
// The guest's root is the host's `/` through hostfs, mounted read-only: it
// runs the host's programs (/usr/local/bin/node, bin/, libexec/, a test
// rootfs) directly. Its init (written per run into a fresh temp dir) mounts
// proc, sysfs, devtmpfs, devpts, cgroup2 at /sys/fs/cgroup, tmpfs at
// /var/run (the guest's scratch space) and /dev/shm (not /tmp: the host's
// /tmp may hold the checkout under test), loads overlayfs (a module in Debian's UML kernel),
// then runs the script with /bin/sh. The script's stdout+stderr and exit
// status come back through the temp dir, which the guest mounts read-write
// with hostfs at the same path; the guest then powers itself off (sysrq o).
// A run that outlives its timeout is killed with its whole process group
// (UML's own session: killing linux.uml alone leaves its helpers running).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  accessSync,
  chmodSync,
  constants,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";

export const UML_KERNEL = "/usr/bin/linux.uml";
const UML_MODULES = "/usr/lib/uml/modules";

export interface UmlOptions {
  /** Kill the guest after this long (default 120 s). */
  timeoutMs?: number;
  /**
   * Start the timeout's clock only when the script's output first holds
   * this text, so that the guest's boot, however slow, does not count; a
   * guest that has not printed it after the default timeout is killed then.
   */
  timeoutFrom?: string;
  /** Extra kernel command-line arguments, appended to the defaults. */
  kernelArgs?: string[];
  /** Guest memory in MB (default 512: Node 24 alone needs about 45 MB RSS). */
  memMB?: number;
}

export interface UmlResult {
  /** The script's exit status (128+N if a signal killed it); null if the guest never reported one (timeout, crash). */
  status: number | null;
  /** The script's stdout and stderr, interleaved. */
  output: string;
  /** The guest console: kernel messages, init's own messages, UML's stderr. */
  console: string;
  /** True if the harness killed the guest at the timeout. */
  timedOut: boolean;
  /** Wall time from spawn to the guest's exit. */
  ms: number;
  /** The run's shared dir (removed by now); its basename is the guest's umid=. */
  dir: string;
}

function isWritableDir(path: string): boolean {
  try {
    if (!statSync(path).isDirectory()) return false;
    accessSync(path, constants.W_OK | constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Why the UML guest cannot run on this machine, or undefined if it can. */
export function umlUnavailable(): string | undefined {
  if (process.platform !== "linux" || process.arch !== "x64")
    return `needs an x86_64 Linux host (this is ${process.platform}/${process.arch})`;
  try {
    accessSync(UML_KERNEL, constants.X_OK);
  } catch {
    return `needs ${UML_KERNEL} (apt-get install user-mode-linux)`;
  }
  // UML keeps guest memory in an unlinked file in $TMPDIR, else /dev/shm, else /tmp.
  const memDirs = [process.env.TMPDIR, "/dev/shm", "/tmp"].filter((d): d is string => !!d);
  if (!memDirs.some(isWritableDir)) return `needs a writable ${memDirs.join(" or ")} for the UML guest's memory file`;
  if (!isWritableDir(workBase())) return `needs a writable ${workBase()} for the guest's shared dir`;
  const v = spawnSync(UML_KERNEL, ["--version"], {
    encoding: "utf8",
    timeout: 10_000,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (v.error || v.status !== 0)
    return `${UML_KERNEL} --version fails: ${v.error?.message ?? (v.stderr || v.stdout).trim()}`;
  return undefined;
}

/** Where the per-run shared dirs go: a host path the guest can see through its hostfs root before /dev, /proc, /sys are mounted over. */
function workBase(): string {
  const t = tmpdir();
  return /^\/(dev|proc|sys)(\/|$)/.test(t) ? "/tmp" : t;
}

function shQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The guest's PID 1 (test/uml-init.sh, with its @SHARE@ and @UML_MODULES@). It never exits (a dying init panics UML, which dumps core): it powers off. */
function initScript(share: string): string {
  const fill: Record<string, string> = { SHARE: shQuote(share), UML_MODULES };
  return readFileSync(new URL("./uml-init.sh", import.meta.url), "utf8").replace(
    /@(SHARE|UML_MODULES)@/g,
    (_, name: string) => fill[name],
  );
}

// Runs still alive if this process exits early: kill them, remove their dirs.
const live = new Map<number, string>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const [pgid, dir] of live) {
      killGroup(pgid);
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, "SIGKILL");
  } catch {
    // ESRCH: the group is gone already.
  }
}

/** Processes (not zombies) whose process group is pgid. */
function groupMembers(pgid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue;
    }
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(f[2]) === pgid && f[0] !== "Z" && f[0] !== "X") pids.push(Number(name));
  }
  return pids;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const DEFAULT_TIMEOUT_MS = 120_000;
/** How long the processes of a guest SIGKILLed may take to be gone (a busy machine). */
const REAP_MS = 30_000;

/** "PID (comm) state" of each process, for a failure. */
function described(pids: number[]): string {
  return pids.map((pid) => readOr(`/proc/${pid}/stat`, `${pid} (gone)`).split(" ").slice(0, 3).join(" ")).join(", ");
}

/** Kill whatever is left of the guest's process group and wait until it is gone. */
async function reap(pgid: number): Promise<void> {
  const deadline = Date.now() + REAP_MS;
  for (;;) {
    const members = groupMembers(pgid);
    if (members.length === 0) return;
    if (Date.now() > deadline)
      throw new Error(`UML processes of group ${pgid} survive SIGKILL for ${REAP_MS} ms: ${described(members)}`);
    killGroup(pgid);
    await sleep(25); // (a poll's interval)
  }
}

function readOr(path: string, dflt: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return dflt;
  }
}

/** The kernel command line for a run whose shared dir is dir. */
export function umlArgs(dir: string, opts: UmlOptions = {}): string[] {
  return [
    `mem=${opts.memMB ?? 512}M`,
    "root=/dev/root",
    "rootfstype=hostfs",
    "rootflags=/",
    "ro",
    `init=${dir}/init`,
    `umid=${basename(dir)}`,
    `uml_dir=${dir}`,
    "con=null",
    "con0=null,fd:1",
    "ssl=null",
    "cgroup_no_v1=all",
    "quiet",
    ...(opts.kernelArgs ?? []),
  ];
}

// Kills the guest's process group and removes its dir should this process
// die before it could (SIGKILL, a test runner's SIGTERM): it waits on a pipe
// from us, and EOF without "done" means we are gone.
// (dash's kill takes neither -s KILL nor --: kill -9 -PGID.)
const WATCHDOG = `read -r x; [ "$x" = done ] && exit; kill -9 "-$1"; sleep 1; kill -9 "-$1" 2>/dev/null; rm -rf -- "$2"`;

/**
 * Boot a UML guest, run script in it with /bin/sh, power it off. Never
 * leaves a UML process or the temp dir behind, also on timeout or error.
 */
export async function runInUml(script: string, opts: UmlOptions = {}): Promise<UmlResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const dir = mkdtempSync(join(workBase(), "uml-"));
  let pgid: number | undefined;
  let watchdog: ChildProcess | undefined;
  installExitHook();
  try {
    writeFileSync(`${dir}/init`, initScript(dir));
    chmodSync(`${dir}/init`, 0o755);
    writeFileSync(`${dir}/script.sh`, script);
    const start = Date.now();
    // UML calls setsid(): its helper threads and the host processes of guest
    // tasks share its session and group, and outlive a SIGKILL of UML alone.
    // detached makes the group from the start (UML's own setsid then fails).
    const child = spawn(UML_KERNEL, umlArgs(dir, opts), {
      cwd: dir, // a core dump would land here and go with the dir
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const chunks: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => chunks.push(b));
    child.stderr.on("data", (b: Buffer) => chunks.push(b));
    const exited = new Promise<void>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", () => resolve());
    });
    const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
    if (child.pid === undefined) await exited; // spawn failed: throws
    pgid = child.pid!;
    live.set(pgid, dir);
    watchdog = spawn("/bin/sh", ["-c", WATCHDOG, "uml-watchdog", String(pgid), dir], {
      detached: true, // not in our group: a ^C to us must not kill it first
      stdio: ["pipe", "ignore", "ignore"],
    });
    watchdog.on("error", () => {}); // best effort
    let timedOut = false;
    const kill = (): void => {
      timedOut = true;
      killGroup(pgid!);
    };
    let timer: NodeJS.Timeout | undefined;
    let watch: NodeJS.Timeout | undefined;
    const from = opts.timeoutFrom;
    if (from === undefined) timer = setTimeout(kill, timeoutMs);
    else {
      // The script's output reaches the host file as it is written (hostfs writes through).
      const bootDeadline = start + DEFAULT_TIMEOUT_MS;
      watch = setInterval(() => {
        if (readOr(`${dir}/output`, "").includes(from)) {
          clearInterval(watch);
          timer = setTimeout(kill, timeoutMs);
        } else if (Date.now() > bootDeadline) {
          clearInterval(watch);
          kill();
        }
      }, 25);
    }
    try {
      await exited;
    } finally {
      clearInterval(watch);
      clearTimeout(timer);
    }
    const ms = Date.now() - start;
    await reap(pgid);
    // Pipes close once the group is gone; should one be held elsewhere, the console says so.
    let closeTimer: NodeJS.Timeout | undefined;
    const isClosed = await Promise.race([
      closed.then(() => true),
      new Promise<boolean>((r) => (closeTimer = setTimeout(() => r(false), REAP_MS))),
    ]);
    clearTimeout(closeTimer);
    if (!isClosed)
      chunks.push(
        Buffer.from(`\n(uml.ts: UML's stdout and stderr still open ${REAP_MS} ms after its group is gone)\n`),
      );
    const statusText = readOr(`${dir}/status`, "").trim();
    return {
      status: /^\d+$/.test(statusText) ? Number(statusText) : null,
      output: readOr(`${dir}/output`, ""),
      console: Buffer.concat(chunks).toString("utf8"),
      timedOut,
      ms,
      dir,
    };
  } finally {
    if (pgid !== undefined) {
      await reap(pgid).catch(() => {});
      live.delete(pgid);
    }
    if (watchdog) await stopWatchdog(watchdog);
    rmSync(dir, { recursive: true, force: true });
    // biome-ignore lint/correctness/noUnsafeFinally: a VM's directory that cannot be removed fails the run, whatever it returned
    if (existsSync(dir)) throw new Error(`cannot remove ${dir}`);
  }
}

async function stopWatchdog(w: ChildProcess): Promise<void> {
  if (w.exitCode !== null || w.signalCode !== null || w.pid === undefined) return;
  const gone = new Promise<void>((r) => w.once("exit", () => r()));
  w.stdin?.end("done\n");
  let t: NodeJS.Timeout | undefined;
  await Promise.race([gone, new Promise<void>((r) => (t = setTimeout(r, 2000)))]);
  clearTimeout(t);
  if (w.exitCode === null && w.signalCode === null) w.kill("SIGKILL");
}

/** "key: value" lines of the guest script's output. */
export function fields(output: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of output.split("\n")) {
    const i = line.indexOf(": ");
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 2));
  }
  return m;
}
