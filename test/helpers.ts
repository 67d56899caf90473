// Shared by the tests: the built programs, the busybox rootfs fixture, and
// the check that a container left nothing behind on the host.
import assert from "node:assert/strict";
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const MINC = `${REPO}/bin/minc`;
const CACHE = `${REPO}/test/.cache`;

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
    timeout: opts.timeout ?? 30_000,
  });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** The environment for minc in tests: no XDG_RUNTIME_DIR, so /var/run is used. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.XDG_RUNTIME_DIR;
  delete env.MINC_DEBUG;
  return env;
}

export function runtimeDirs(): string[] {
  return readdirSync("/var/run").filter((n) => /^minc\d+-/.test(n)).map((n) => `/var/run/${n}`);
}

export function containerMounts(): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => /\/minc\d+-/.test(l));
}

function hostState(): string[] {
  return [...runtimeDirs(), ...containerMounts()];
}

// What was there before the tests (another user's containers) is not ours.
const before = new Set(hostState());

/** What the tests' containers left on the host: working dirs and mounts. */
export function leftovers(): string[] {
  return hostState().filter((x) => !before.has(x));
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

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * What check() still finds after up to `ms`: a signal in the first
 * milliseconds of minc's waiter (before its traps are set) leaves the
 * cleanup to minc's guard, which runs it just after minc has exited.
 */
export async function settled(check: () => string[], ms = 2000): Promise<string[]> {
  let found = check();
  for (let t = 0; found.length > 0 && t < ms; t += 25) {
    await sleep(25);
    found = check();
  }
  return found;
}

/** Whether cond() came true within `ms` (polled). */
export async function until(cond: () => boolean, ms: number): Promise<boolean> {
  for (let t = 0; t < ms; t += 25) {
    if (cond()) return true;
    await sleep(25);
  }
  return cond();
}

function shOut(cmd: string): string {
  return spawnSync("sh", ["-c", cmd], { encoding: "utf8" }).stdout ?? "";
}

/** What a container may leave in the host's network: netns, veths, leases, tagged rules. */
export function netLeftovers(): string[] {
  return [
    ...shOut("ip netns list").split("\n").filter((l) => /^minc\d+/.test(l)),
    ...shOut("ip -o link").split("\n").filter((l) => /mincv/.test(l)),
    ...(existsSync("/var/run/minc.lease") ? readFileSync("/var/run/minc.lease", "utf8").split("\n").filter((l) => / minc\d+ /.test(l)) : []),
    ...shOut("iptables-save 2>/dev/null").split("\n").filter((l) => /minc:minc\d+/.test(l)),
  ];
}

/** The containers' cgroups ("cages") under the v1 hierarchies. */
export function cages(): string[] {
  return ["memory", "cpu", "pids"].flatMap((c) => {
    const dir = `/sys/fs/cgroup/${c}/mincs`;
    return existsSync(dir) ? readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => `${dir}/${d.name}`) : [];
  });
}

/** Start minc (OPTIONS: the busybox rootfs), wait until its container runs, send a signal, return exit status and output. */
export async function signalled(command: string[], signal: NodeJS.Signals, options: string[] = ["-r", rootfs()]): Promise<{ status: number | null; stdout: string }> {
  const before = new Set(runtimeDirs());
  const child = spawn(MINC, [...options, ...command], { env: cleanEnv(), stdio: ["ignore", "pipe", "inherit"] });
  let stdout = "";
  child.stdout.on("data", (d) => { stdout += d; });
  const exited = new Promise<number | null>((res) => child.on("exit", (code, sig) => res(code ?? (sig ? -1 : null))));
  // Running means: the pid file exists and the command printed "ready".
  for (let t = 0; t < 5000; t += 20) {
    const dir = runtimeDirs().find((d) => !before.has(d));
    if (dir && stdout.includes("ready")) break;
    await sleep(20);
  }
  child.kill(signal);
  const status = await Promise.race([exited, sleep(5000).then(() => "timeout" as const)]);
  if (status === "timeout") { child.kill("SIGKILL"); assert.fail(`minc did not end after ${signal}`); }
  await sleep(50);
  return { status, stdout };
}
