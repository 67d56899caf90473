// The cage: cgroups that limit what a container may use.
//
// MINCS wrote its limits into cgroup v1 hierarchies. Current distributions
// run cgroup v2 (one unified hierarchy), so the same MINC_* limits are
// mapped onto whichever the host has: v2 when it is mounted with the needed
// controllers, else v1 (as on a "hybrid" host, whose unified hierarchy is
// empty). The values are checked and converted here, without side effects,
// so that minc can refuse bad input before anything is made.
import { existsSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";
import type { Host } from "../core/host.ts";
import { usageError } from "../core/fail.ts";
import { shortHash } from "../core/hash.ts";
import { optionName } from "../boot/minc-options.ts";
import { mounts, type Mount } from "../core/mounts.ts";
import { LIMIT_SETTINGS, type LimitSetting, type Settings } from "../core/settings.ts";
import { quote, quoteAll, shown, step } from "../core/trace.ts";

export interface Limits {
  memLimit?: number; // bytes
  memSwap?: number; // bytes of memory + swap (v1 semantics)
  memKmem?: number; // bytes
  cpuShares?: number; // 2..262144
  cpuQuota?: number; // usec per 100000
  pidMax?: number;
}

const UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** A size as MINCS took it (and the kernel's memparse): bytes, or K, M, G. */
export function parseSize(option: string, text: string): number {
  const m = /^(\d+)([kmg]?)$/i.exec(text);
  if (!m) throw usageError(`${option} ${text}: not a size (bytes, or a number with K, M or G)`);
  const bytes = Number(m[1]) * UNITS[m[2].toLowerCase()];
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw usageError(`${option} ${text}: out of range`);
  return bytes;
}

function parseNumber(option: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw usageError(`${option} ${text}: must be a whole number from ${min} to ${max}`);
  }
  return Number(text);
}

/** How each limit's setting reads (named by its option in messages), and which of the Limits it gives. */
const LIMIT_READERS: { [N in LimitSetting]: { limit: keyof Limits; read: (option: string, text: string) => number } } =
  {
    MINC_MEM_LIMIT: { limit: "memLimit", read: parseSize },
    MINC_MEM_SWAP: { limit: "memSwap", read: parseSize },
    MINC_MEM_KMEM: { limit: "memKmem", read: parseSize },
    MINC_CPU_SHARES: { limit: "cpuShares", read: (option, text) => parseNumber(option, text, 2, 262144) },
    MINC_CPU_QUOTA: { limit: "cpuQuota", read: (option, text) => parseNumber(option, text, 1000, 100_000_000) },
    MINC_PID_MAX: { limit: "pidMax", read: (option, text) => parseNumber(option, text, 1, 4_194_304) },
  };

/** The settings the cage needs: the limits, and the working directory its name comes from. */
export type CageSettings = Partial<Pick<Settings, LimitSetting | "MINC_TMPDIR">>;

/** The limits asked for in MINC_* settings, checked. */
export function limitsOf(settings: CageSettings): Limits {
  const l: Limits = {};
  for (const name of LIMIT_SETTINGS) {
    const text = settings[name];
    if (!text) continue;
    const { limit, read } = LIMIT_READERS[name];
    l[limit] = read(optionName(name), text);
  }
  if ((l.memSwap !== undefined || l.memKmem !== undefined) && l.memLimit === undefined) {
    throw usageError(`${l.memSwap !== undefined ? "--mem-swap" : "--mem-kmem"} needs --mem-limit`);
  }
  if (l.memSwap !== undefined && l.memSwap < l.memLimit!) {
    throw usageError("--mem-swap is memory + swap: it cannot be less than --mem-limit");
  }
  return l;
}

export function anyLimit(l: Limits): boolean {
  return Object.values(l).some((v) => v !== undefined);
}

export type Controller = "memory" | "cpu" | "pids";

export function controllersFor(l: Limits): Controller[] {
  const c: Controller[] = [];
  if (l.memLimit !== undefined) c.push("memory");
  if (l.cpuShares !== undefined || l.cpuQuota !== undefined) c.push("cpu");
  if (l.pidMax !== undefined) c.push("pids");
  return c;
}

/**
 * cgroup v1 cpu.shares (2..262144, default 1024) to v2 cpu.weight
 * (1..10000, default 100), the linear map the OCI runtimes use.
 */
export function sharesToWeight(shares: number): number {
  return 1 + Math.floor(((shares - 2) * 9999) / 262142);
}

/** v1 limits memory+swap together; v2 limits swap alone. */
export function swapOnly(memSwap: number, memLimit: number): number {
  return memSwap - memLimit;
}

/** One file write of the cage: which file (relative to a cage) gets which value. */
export interface Setting {
  controller: Controller;
  file: string;
  value: string;
}

export function v1Settings(l: Limits): Setting[] {
  const s: Setting[] = [];
  if (l.memLimit !== undefined)
    s.push({ controller: "memory", file: "memory.limit_in_bytes", value: String(l.memLimit) });
  if (l.memSwap !== undefined)
    s.push({ controller: "memory", file: "memory.memsw.limit_in_bytes", value: String(l.memSwap) });
  if (l.memKmem !== undefined)
    s.push({ controller: "memory", file: "memory.kmem.limit_in_bytes", value: String(l.memKmem) });
  if (l.cpuShares !== undefined) s.push({ controller: "cpu", file: "cpu.shares", value: String(l.cpuShares) });
  if (l.cpuQuota !== undefined) s.push({ controller: "cpu", file: "cpu.cfs_quota_us", value: String(l.cpuQuota) });
  if (l.pidMax !== undefined) s.push({ controller: "pids", file: "pids.max", value: String(l.pidMax) });
  return s;
}

/** The same limits for v2 (--mem-kmem has no v2 file: the caller warns). */
export function v2Settings(l: Limits): Setting[] {
  const s: Setting[] = [];
  if (l.memLimit !== undefined) s.push({ controller: "memory", file: "memory.max", value: String(l.memLimit) });
  if (l.memSwap !== undefined)
    s.push({ controller: "memory", file: "memory.swap.max", value: String(swapOnly(l.memSwap, l.memLimit!)) });
  if (l.cpuShares !== undefined)
    s.push({ controller: "cpu", file: "cpu.weight", value: String(sharesToWeight(l.cpuShares)) });
  if (l.cpuQuota !== undefined) s.push({ controller: "cpu", file: "cpu.max", value: `${l.cpuQuota} 100000` });
  if (l.pidMax !== undefined) s.push({ controller: "pids", file: "pids.max", value: String(l.pidMax) });
  return s;
}

function cgroupMounts(): Mount[] {
  return mounts().filter((m) => m.type === "cgroup" || m.type === "cgroup2");
}

/** Where the cages of each controller go, and why that hierarchy. */
export type Hierarchy =
  | { version: 2; root: string; reason: string }
  | { version: 1; roots: Record<Controller, string>; reason: string };

export function findHierarchy(needed: Controller[]): Hierarchy {
  const mounts = cgroupMounts();
  const missingIn = (root: string): Controller[] => {
    const have = existsSync(`${root}/cgroup.controllers`)
      ? readFileSync(`${root}/cgroup.controllers`, "utf8").trim().split(/\s+/)
      : [];
    return needed.filter((c) => !have.includes(c));
  };
  const unified = mounts.filter((m) => m.type === "cgroup2");
  const v2 = unified.find((m) => missingIn(m.point).length === 0);
  if (v2) return { version: 2, root: v2.point, reason: `cgroup v2 at ${v2.point} has ${needed.join(", ")}` };

  const roots = {} as Record<Controller, string>;
  for (const c of needed) {
    const m = mounts.find((x) => x.type === "cgroup" && x.superOptions.includes(c));
    if (m) roots[c] = m.point;
  }
  const missing = needed.filter((c) => !roots[c]);
  if (missing.length === 0) {
    const why =
      unified.length > 0
        ? `the unified hierarchy at ${unified[0].point} lacks ${missingIn(unified[0].point).join(", ")}`
        : "there is no cgroup v2";
    return { version: 1, roots, reason: `cgroup v1 (${why})` };
  }
  throw usageError(
    `no cgroup hierarchy has the ${missing.join(", ")} controller${missing.length > 1 ? "s" : ""} these limits need`,
  );
}

/** The cage directories of a container id. */
export function cagesOf(h: Hierarchy, needed: Controller[], id: string): string[] {
  if (h.version === 2) return [`${h.root}/mincs/${id}`];
  return needed.map((c) => `${h.roots[c]}/mincs/${id}`);
}

/** The names minc and marten give working directories: mktemp's minc<PID>-XXXXXX, a store container's id. */
const MADE_NAME = /^(minc\d+-[A-Za-z0-9]{6}|[0-9a-f]{64})$/;

/**
 * The container's id, as its cages are named. MINCS named them after the
 * working directory; the names minc and marten make are unique, and kept
 * as they are. A directory given with -t may share its name with another
 * (~/a/work, ~/b/work: the two would share one cage) or have one that is
 * no good in a cgroup path: its name made safe, and a hash of its path.
 */
export function containerId(settings: CageSettings): string {
  const tmpdir = settings.MINC_TMPDIR;
  if (!tmpdir) throw usageError("MINC_TMPDIR is not set (run minc)");
  const name = basename(tmpdir);
  if (MADE_NAME.test(name)) return name;
  const safe =
    name
      .replace(/[^A-Za-z0-9_-]+/g, "_")
      .replace(/^[_-]+|[_-]+$/g, "")
      .slice(0, 32) || "tempdir";
  return `${safe}-${shortHash(tmpdir)}`;
}

/** The cages the MINC_* limits ask for, none without limits. */
export function cageDirs(settings: CageSettings): string[] {
  const limits = limitsOf(settings);
  if (!anyLimit(limits)) return [];
  const needed = controllersFor(limits);
  return cagesOf(findHierarchy(needed), needed, containerId(settings));
}

function hasProcesses(cage: string): boolean {
  try {
    return readFileSync(`${cage}/cgroup.procs`, "utf8").trim() !== "";
  } catch {
    return false; // not made yet
  }
}

/** A cage that has processes already is another container's: its limits are not ours to write. */
export function checkCagesFree(cages: string[]): void {
  if (cages.length === 0) return;
  step("A cage that has processes in it already is another container's: refused");
  shown(`! grep -qs . ${quoteAll(cages.map((c) => `${c}/cgroup.procs`))}`);
  const taken = cages.find(hasProcesses);
  if (taken)
    throw usageError(`the cgroup ${taken} has another container's processes in it: its limits are left as they are`);
}

/** Write one cgroup file; the kernel's refusal is the user's bad input. */
export function writeCgroup(file: string, value: string): void {
  shown(`echo ${quote(value)} > ${quote(file)}`);
  try {
    writeFileSync(file, value);
  } catch (e) {
    throw usageError(
      `the kernel refused ${value} for ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}

/** A cage's cgroup.procs, opened ahead: after pivot_root the host's cgroup fs is out of reach. */
export interface CageDoor {
  file: string;
  /** Not opened when the boot is written down ahead: the script, still outside the new root, writes the file itself. */
  fd: number | undefined;
}

export function openCages(settings: CageSettings, host: Host): CageDoor[] {
  return cageDirs(settings).map((cage) => ({
    file: `${cage}/cgroup.procs`,
    fd: host.ahead ? undefined : openSync(`${cage}/cgroup.procs`, "w"),
  }));
}

/**
 * Move the calling process into the cages ("0" names the writer itself,
 * whatever its PID namespace). minc-leash does it last, right before it
 * becomes the user's command: from then on even a fork of Node's would
 * count against --pid-max.
 */
export function enterCages(doors: CageDoor[], host: Host): void {
  if (doors.length === 0) return;
  step("Step into the cage: from here on this process and all it starts count against the limits");
  for (const { file, fd } of doors) host.enterCage(file, fd);
}
