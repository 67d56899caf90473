// Shared by the tests: the built programs, the busybox rootfs fixture, waits
// that fail with what they saw, and the check that a test's containers left
// nothing behind on the host.
//
// A test file looks only at what it made itself, so that the suite passes
// beside other containers on the machine (a user's, another test file's):
// every minc it starts makes its working directory in a runtime directory
// of this test process's own (XDG_RUNTIME_DIR), and what a container makes
// outside it (cages, network namespaces, veths, leases, rules) is named
// after that working directory, whose names this process records as they
// appear.
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess, type SpawnOptions, type SpawnSyncReturns } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  watch,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { constants } from "node:os";
import { createSocket } from "node:dgram";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { vethName } from "../lib/net/dens.ts";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const MINC = `${REPO}/bin/minc`;
const CACHE = `${REPO}/test/.cache`;

/** How long a wait for an event may take before the test fails: generous, for a slow or busy machine. */
export const PATIENCE = 60_000;

let rootfsPath: string | undefined;

/** The busybox rootfs, built once by samples/scripts/busybox-rootfs.sh. */
export function rootfs(): string {
  if (!rootfsPath) {
    const r = spawnSync(`${REPO}/samples/scripts/busybox-rootfs.sh`, [`${CACHE}/rootfs`], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`fixture failed: ${r.stderr}`);
    rootfsPath = r.stdout.trim();
  }
  return rootfsPath;
}

// ---- this test process's own runtime directory, and the names made in it ----

/** Where the working directories of this test file's containers go (their XDG_RUNTIME_DIR). */
export const RUNDIR = mkdtempSync("/run/minc-tests-");
process.env.XDG_RUNTIME_DIR = RUNDIR;
process.on("exit", () => {
  try {
    rmdirSync(RUNDIR); // (only when empty: what a failed test left stays to be seen)
  } catch {
    // not empty
  }
});

const WORKDIR_NAME = /^minc\d+-\w+$/;
const seen = new Set<string>();
const barriers = new Map<string, () => void>();
const watcher = watch(RUNDIR, (_event, name) => {
  if (!name) return;
  if (WORKDIR_NAME.test(name)) seen.add(name);
  barriers.get(name)?.();
});
watcher.unref();
let barrierCount = 0;

/**
 * The working directories ever made in RUNDIR. A file made and removed
 * there is a barrier: its event comes after those of everything made
 * before it, so once it is seen, so are they.
 */
export async function madeNames(): Promise<string[]> {
  for (const name of readdirSync(RUNDIR)) if (WORKDIR_NAME.test(name)) seen.add(name);
  const barrier = `.barrier${barrierCount++}`;
  const passed = new Promise<void>((res) => barriers.set(barrier, res));
  writeFileSync(`${RUNDIR}/${barrier}`, "");
  rmSync(`${RUNDIR}/${barrier}`);
  await bounded(passed, 10_000, () => `the event of ${RUNDIR}/${barrier}`);
  barriers.delete(barrier);
  return [...seen];
}

export interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run minc to its end (stdin closed unless given). */
export function minc(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Run {
  const r: SpawnSyncReturns<string> = spawnSync(MINC, args, {
    encoding: "utf8",
    input: opts.input ?? "",
    env: opts.env ?? cleanEnv(),
    timeout: opts.timeout ?? PATIENCE,
  });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** The environment for minc in tests: this test file's RUNDIR, no MINC_DEBUG. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, XDG_RUNTIME_DIR: RUNDIR, ...extra };
  delete env.MINC_DEBUG;
  return env;
}

/** The working directories of this test file's containers that are still there. */
export function runtimeDirs(): string[] {
  return readdirSync(RUNDIR)
    .filter((n) => WORKDIR_NAME.test(n))
    .map((n) => `${RUNDIR}/${n}`);
}

/** The host's mounts under this test file's working directories. */
export function containerMounts(): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.includes(`${RUNDIR}/`));
}

/** What this test file's containers left in its runtime directory: working dirs and mounts. */
export function leftovers(): string[] {
  return [...runtimeDirs(), ...containerMounts()];
}

/** Everything this test file's containers left on the host: working dirs, mounts, cages, and what they had of the network. */
export async function allLeftovers(): Promise<string[]> {
  const names = await madeNames();
  return [...leftovers(), ...cages(names), ...netLeftovers(names.map(netnsOf))];
}

/** The network namespace (and dens id) of a working directory minc made: minc<PID>. */
export function netnsOf(workdir: string): string {
  return /(minc\d+)-/.exec(workdir)?.[1] ?? workdir;
}

/** Is this program in PATH? */
export function hasTool(tool: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;
}

/** Why this machine cannot run the container tests, or undefined if it can. */
export function cannotBoot(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root";
  for (const tool of ["unshare", "mount", "capsh"]) {
    if (!hasTool(tool)) return `needs ${tool}`;
  }
  return undefined;
}

/** A pause that is not a wait for readiness (pacing, a poll's interval). */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The promise's value, or a failure naming what did not come within `ms`. */
export async function bounded<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`gave up after ${ms} ms waiting for ${what()}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Wait until cond() holds (polled), up to `ms`; else fail, saying what was
 * awaited and what `saw()` shows then.
 */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  opts: { ms?: number; saw?: () => string } = {},
): Promise<void> {
  const ms = opts.ms ?? PATIENCE;
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline)
      assert.fail(`gave up after ${ms} ms waiting for ${what}${opts.saw ? `; saw: ${opts.saw()}` : ""}`);
    await sleep(25);
  }
}

/**
 * What check() still finds once it finds nothing or `ms` has passed: a
 * container's cleanup may end a moment after minc does (a signal in the
 * first milliseconds of minc's waiter leaves it to minc's guard, which runs
 * it just after minc has exited). Assert the result is empty.
 */
export async function settled(check: () => string[] | Promise<string[]>, ms = PATIENCE): Promise<string[]> {
  const deadline = Date.now() + ms;
  let found = await check();
  while (found.length > 0 && Date.now() < deadline) {
    await sleep(25);
    found = await check();
  }
  return found;
}

/** A program started in the background, its output collected. */
export interface Started {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Wait until stdout (or stderr) matches; fail with both if it does not in time. */
  printed(pattern: RegExp | string, opts?: { ms?: number; stream?: "stdout" | "stderr" }): Promise<void>;
  /** Its exit: status, or 128+N for a signal N; fails when it does not end in time. */
  exit(ms?: number): Promise<number>;
}

export function start(cmd: string, args: string[], opts: SpawnOptions = {}): Started {
  const child = spawn(cmd, args, { env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"], ...opts });
  let out = "";
  let err = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    err += d;
  });
  const ended = new Promise<number>((res) =>
    child.on("exit", (code, sig) => res(code ?? 128 + (sig ? signalNumber(sig) : 0))),
  );
  const closed = new Promise<void>((res) => child.on("close", () => res()));
  const name = `${cmd.split("/").pop()} ${args.join(" ")}`;
  const saw = (): string => `stdout ${JSON.stringify(out)}, stderr ${JSON.stringify(err)}`;
  let exited = false;
  void ended.then(() => {
    exited = true;
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    printed: (pattern, o = {}) => {
      const text = (): string => (o.stream === "stderr" ? err : out);
      const matches = (): boolean => (typeof pattern === "string" ? text().includes(pattern) : pattern.test(text()));
      return waitFor(
        `${name} to print ${pattern}`,
        () => {
          if (matches()) return true;
          if (exited) assert.fail(`${name} ended without printing ${pattern}: ${saw()}`);
          return false;
        },
        { ms: o.ms, saw },
      );
    },
    exit: async (ms = PATIENCE) => {
      const status = await bounded(ended, ms, () => `${name} to end (${saw()})`);
      await bounded(closed, ms, () => `${name}'s output to close`);
      return status;
    },
  };
}

function signalNumber(sig: NodeJS.Signals): number {
  return constants.signals[sig] ?? 0;
}

/**
 * Wait for a working directory's container to be over: its lock free (held
 * by minc, its guard and its waiter to the end of the cleanup), or the
 * directory gone.
 */
export async function ended(dir: string, ms = PATIENCE): Promise<void> {
  await waitFor(
    `the container of ${dir} to end`,
    () => {
      if (!existsSync(dir)) return true;
      if (!existsSync(`${dir}/lock`)) return !existsSync(`${dir}/pid`) && !existsSync(`${dir}/waiter`);
      return spawnSync("flock", ["-xn", `${dir}/lock`, "true"]).status === 0;
    },
    { ms, saw: () => (existsSync(dir) ? `${dir}: ${readdirSync(dir).join(" ")}` : "") },
  );
}

/** A TCP (or UDP) port free on 127.0.0.1 now. */
export function freePort(proto: "tcp" | "udp" = "tcp"): Promise<number> {
  return new Promise((res, rej) => {
    if (proto === "udp") {
      const s = createSocket("udp4");
      s.on("error", rej);
      s.bind(0, "127.0.0.1", () => {
        const { port } = s.address();
        s.close(() => res(port));
      });
      return;
    }
    const s = createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

function shOut(cmd: string): string {
  return spawnSync("sh", ["-c", cmd], { encoding: "utf8" }).stdout ?? "";
}

/** What containers of these network namespaces (minc<PID>) have in the host's network: netns, veths, leases, tagged rules. */
export function netLeftovers(netnses: string[]): string[] {
  const ours = new Set(netnses);
  if (ours.size === 0) return [];
  const veths = new Set(netnses.map(vethName));
  const lease = existsSync("/var/run/minc.lease") ? readFileSync("/var/run/minc.lease", "utf8").split("\n") : [];
  return [
    ...shOut("ip netns list")
      .split("\n")
      .filter((l) => ours.has(l.split(" ")[0])),
    ...shOut("ip -o link")
      .split("\n")
      .filter((l) => veths.has(/^\d+: ([^:@]+)/.exec(l)?.[1] ?? "")),
    ...lease.filter((l) => l.split(" ").some((w) => ours.has(w))),
    ...shOut("iptables-save 2>/dev/null")
      .split("\n")
      .filter((l) => [...l.matchAll(/minc:([\w-]+)/g)].some((m) => ours.has(m[1]))),
  ];
}

/** The cgroups ("cages") under the v1 hierarchies named after these working directories (all, without names). */
export function cages(names?: string[]): string[] {
  const wanted = names && new Set(names.map((n) => n.split("/").pop()));
  return ["memory", "cpu", "pids"].flatMap((c) => {
    const dir = `/sys/fs/cgroup/${c}/mincs`;
    if (!existsSync(dir)) return [];
    return readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory() && (!wanted || wanted.has(d.name)))
      .map((d) => `${dir}/${d.name}`);
  });
}

/** Start minc (OPTIONS: the busybox rootfs), wait until its command printed "ready", send a signal, return exit status and output. */
export async function signalled(
  command: string[],
  signal: NodeJS.Signals,
  options: string[] = ["-r", rootfs()],
): Promise<{ status: number; stdout: string }> {
  const run = start(MINC, [...options, ...command], { stdio: ["ignore", "pipe", "pipe"] });
  await run.printed("ready");
  run.child.kill(signal);
  const status = await run.exit();
  return { status, stdout: run.stdout() };
}

/**
 * Run a shell script in an overlay of an image's layers, STACK as
 * minc-farm imagestack prints it (TOP:...:BOTTOM), mounted in a private
 * mount namespace; its upper and work dirs go in a new directory in SCRATCH.
 * Returns what the script printed.
 */
export function inOverlayOf(stack: string, script: string, scratch: string): string {
  const d = mkdtempSync(`${scratch}/ov-`);
  for (const s of ["upper", "work", "mnt"]) mkdirSync(`${d}/${s}`);
  const mountThen = `mount -t overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" overlay "$2/mnt" && cd "$2/mnt" && ${script}`;
  const r = spawnSync("unshare", ["-m", "sh", "-c", mountThen, "sh", stack, d], { encoding: "utf8" });
  assert.equal(r.status, 0, `overlay: ${r.stderr}`);
  return r.stdout;
}
