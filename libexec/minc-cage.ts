// minc-cage: the container's cage of cgroups (resource limits).
//
//   minc-cage --prepare PID
//
// Makes the cgroups that the MINC_* limits ask for (MINC_MEM_LIMIT,
// MINC_MEM_SWAP, MINC_MEM_KMEM, MINC_CPU_SHARES, MINC_CPU_QUOTA,
// MINC_PID_MAX), writes the limits, and prints the command that removes
// them (PID is the caller's, as in MINCS, and must be our parent's). The
// removal is put in the cleanup chain ($MINC_TMPDIR/cleanup) before anything
// is made.
//
// The container steps into its cage at the very end of the boot, when
// minc-leash moves itself in right before it becomes the user's command
// (MINCS moved minc-exec in before unshare). The Node backends of the boot
// (some 40 MB and 10 threads each) must not count against the container's
// limits: --pid-max 5 would keep Node from even starting its threads.
import { existsSync, readFileSync, rmdirSync } from "node:fs";
import { MincError, usageError, warn } from "../lib/core/fail.ts";
import {
  anyLimit,
  cagesOf,
  checkCagesFree,
  containerId,
  controllersFor,
  findHierarchy,
  limitsOf,
  v1Settings,
  v2Settings,
  writeCgroup,
  type Controller,
  type Hierarchy,
  type Limits,
  type Setting,
} from "../lib/cgroups/cage.ts";
import { onExit } from "../lib/boot/cleanup.ts";
import { mkdirs } from "../lib/core/run.ts";
import { readSettings, type Settings } from "../lib/core/settings.ts";
import { phase, quoteAll, step } from "../lib/core/trace.ts";

// The settings, from the environment main() is given.
let settings: Settings;

/** Write one cgroup file; the kernel's refusal is the user's bad input. */
/** v2: a controller works in a cgroup only if every parent enables it for its children. */
function enableControllers(root: string, needed: Controller[]): void {
  step(`Let the cgroups below ${root} and ${root}/mincs use ${needed.join(", ")}`);
  mkdirs(`${root}/mincs`);
  const want = needed.map((c) => `+${c}`).join(" ");
  for (const dir of [root, `${root}/mincs`]) {
    const on = readFileSync(`${dir}/cgroup.subtree_control`, "utf8").trim().split(/\s+/);
    if (needed.some((c) => !on.includes(c))) writeCgroup(`${dir}/cgroup.subtree_control`, want);
  }
}

function settingsFor(h: Hierarchy, limits: Limits): Setting[] {
  if (h.version === 1) return v1Settings(limits);
  if (limits.memKmem !== undefined)
    warn("--mem-kmem: cgroup v2 has no separate kernel memory limit (memory.max counts it); not set");
  return v2Settings(limits);
}

function cageOf(h: Hierarchy, cages: string[], c: Controller): string {
  return h.version === 2 ? cages[0] : cages.find((d) => d.startsWith(`${h.roots[c]}/`))!;
}

function writeLimits(h: Hierarchy, cages: string[], settings: Setting[]): void {
  for (const s of settings) {
    const file = `${cageOf(h, cages, s.controller)}/${s.file}`;
    if (!existsSync(file)) {
      if (s.file === "memory.kmem.limit_in_bytes") {
        warn("--mem-kmem: this kernel has no kernel memory limit; not set");
        continue;
      }
      throw usageError(
        `${file} does not exist: this kernel cannot set that limit${s.file.includes("memsw") ? " (no swap accounting: boot with swapaccount=1)" : ""}`,
      );
    }
    writeCgroup(file, s.value);
  }
}

/** Undo a half-made cage before reporting why it failed. */
function removeCages(cages: string[]): void {
  for (const cage of [...cages].reverse()) {
    try {
      rmdirSync(cage);
    } catch {
      /* not made, or not empty: the cleanup chain retries */
    }
  }
}

function prepare(): void {
  phase(2);
  const limits = limitsOf(settings);
  if (!anyLimit(limits)) return;
  const needed = controllersFor(limits);
  const hierarchy = findHierarchy(needed);
  step(`Use ${hierarchy.reason}`);
  const cages = cagesOf(hierarchy, needed, containerId(settings));
  checkCagesFree(cages); // (before its removal is registered: another's cage is not ours to remove)
  const cleanup = `cleanup_cages ${quoteAll(cages)}`;
  step("Register the cage's removal before making it");
  if (settings.MINC_TMPDIR) onExit(settings.MINC_TMPDIR, cleanup);
  try {
    if (hierarchy.version === 2) enableControllers(hierarchy.root, needed);
    step("Make the cage and write the limits");
    mkdirs(...cages);
    writeLimits(hierarchy, cages, settingsFor(hierarchy, limits));
  } catch (e) {
    removeCages(cages);
    throw e;
  }
  process.stdout.write(`${cleanup}\n`);
}

/**
 * minc runs us through setpriv --pdeathsig KILL, which ties us to it only
 * after the fork: a minc SIGKILLed in between leaves us to another parent,
 * and a cage made then would outlive the cleanup that minc's guard runs.
 */
function checkCaller(pid: number): void {
  if (process.ppid !== pid) throw new MincError(`the caller (PID ${pid}) is not our parent any more: no cage made`);
}

export function main(args: string[], env: NodeJS.ProcessEnv): number {
  settings = readSettings(env);
  const [cmd, pid] = args;
  if (cmd !== "--prepare" || !/^\d+$/.test(pid ?? "")) throw new MincError("usage: minc-cage --prepare PID", 2);
  checkCaller(Number(pid));
  prepare();
  return 0;
}
