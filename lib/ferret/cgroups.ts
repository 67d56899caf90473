// An OCI container's cgroups (linux.cgroupsPath, linux.resources): made by
// ferret create before the init starts, which steps into them; removed by
// ferret delete. cgroup v1 (this host's hierarchy); the limits are written
// through lib/cgroups/cage.ts's writeCgroup, as minc's cage.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync } from "node:fs";
import { type Controller, findHierarchy, writeCgroup } from "../cgroups/cage.ts";
import { MincError } from "../core/fail.ts";
import { sleepSync } from "../core/signals.ts";
import { shown, step } from "../core/trace.ts";
import type { Config, DeviceRule } from "./config.ts";

/** What every container may use besides its config's rules (runc's list): the default devices, ptys, tun. */
const DEFAULT_ALLOWED = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm"].concat([
  "c 5:0 rwm",
  "c 5:1 rwm",
  "c 5:2 rwm",
  "c 136:* rwm",
  "c 10:200 rwm",
]);

function rule(r: DeviceRule): string {
  return `${r.type} ${r.major ?? "*"}:${r.minor ?? "*"} ${r.access}`;
}

/**
 * Make the container's cgroups and write its limits. Returns every
 * directory made, deepest first for each controller: the container's own
 * (the init writes itself into those) and the parents that were not there.
 */
export function makeCgroups(c: Config, id: string): { own: string[]; made: string[] } {
  const r = c.resources;
  const text = (v: bigint | number | string | undefined): string | undefined =>
    v === undefined ? undefined : String(v);
  const flag = (v: boolean | undefined): string | undefined => (v === undefined ? undefined : v ? "1" : "0");
  const wanted: [Controller | "devices" | "freezer" | "cpuset", [string, string | undefined][]][] = [
    ["pids", [["pids.max", r.pidsLimit === undefined ? undefined : r.pidsLimit < 0 ? "max" : String(r.pidsLimit)]]],
    [
      "memory",
      [
        ["memory.use_hierarchy", flag(r.memoryUseHierarchy)],
        ["memory.limit_in_bytes", text(r.memoryLimit)],
        ["memory.memsw.limit_in_bytes", text(r.memorySwap)],
        ["memory.soft_limit_in_bytes", text(r.memoryReservation)],
        ["memory.swappiness", text(r.memorySwappiness)],
        ["memory.oom_control", r.disableOOMKiller ? "1" : undefined],
        ["memory.kmem.limit_in_bytes", text(r.memoryKernel)],
        ["memory.kmem.tcp.limit_in_bytes", text(r.memoryKernelTCP)],
      ],
    ],
    [
      "cpu",
      [
        ["cpu.shares", text(r.cpuShares)],
        ["cpu.cfs_period_us", text(r.cpuPeriod)],
        ["cpu.cfs_quota_us", text(r.cpuQuota)],
      ],
    ],
    [
      "cpuset",
      [
        ["cpuset.cpus", r.cpusetCpus],
        ["cpuset.mems", r.cpusetMems],
      ],
    ],
    ["devices", []],
    ["freezer", []],
  ];
  const path = (c.cgroupsPath ?? `/ferret/${id}`).replace(/^\/*/, "/");
  step(`The container's cgroups (${path}): its limits, its devices, a freezer for pause`);
  const h = findHierarchy(wanted.map(([ctl]) => ctl as Controller));
  if (h.version !== 1) throw new MincError("ferret's cgroups are cgroup v1 only so far");
  const made: string[] = [];
  const own: string[] = [];
  try {
    for (const [ctl, settings] of wanted) {
      const dir = `${h.roots[ctl as Controller]}${path}`;
      if (existsSync(`${dir}/cgroup.procs`) && readFileSync(`${dir}/cgroup.procs`, "utf8").trim()) {
        throw new MincError(`the cgroup ${dir} has processes of another container`, 2);
      }
      // (the levels it makes are its own to remove again: delete removes the deepest first)
      const levels = path
        .split("/")
        .filter((p) => p)
        .map((_, i, parts) => `${h.roots[ctl as Controller]}/${parts.slice(0, i + 1).join("/")}`);
      const fresh = levels.filter((l) => !existsSync(l));
      shown(`mkdir -p ${dir}`);
      mkdirSync(dir, { recursive: true });
      made.push(...fresh.reverse());
      own.push(dir);
      if (ctl === "cpuset") inheritCpuset(h.roots[ctl as Controller], path);
      for (const [file, value] of settings) {
        if (value === undefined) continue;
        // A kernel without kmem limits (6.x) charges kernel memory to memory.limit_in_bytes: nothing escapes the limit.
        if (file.startsWith("memory.kmem.") && !existsSync(`${dir}/${file}`)) {
          step(`(${file}: this kernel charges kernel memory to the memory limit; there is no separate limit to write)`);
          continue;
        }
        writeCgroup(`${dir}/${file}`, value);
      }
      if (ctl === "devices") {
        writeCgroup(`${dir}/devices.deny`, "a");
        for (const d of r.devices) writeCgroup(`${dir}/devices.${d.allow ? "allow" : "deny"}`, rule(d));
        for (const d of DEFAULT_ALLOWED) writeCgroup(`${dir}/devices.allow`, d);
      }
    }
  } catch (e) {
    removeCgroups(made);
    throw e;
  }
  return { own, made };
}

/** A new cpuset cgroup has no CPUs or memory nodes until given its parent's: each level down takes them. */
function inheritCpuset(root: string, path: string): void {
  let parent = root;
  for (const part of path.split("/").filter((p) => p)) {
    const dir = `${parent}/${part}`;
    for (const f of ["cpuset.cpus", "cpuset.mems"]) {
      if (!readFileSync(`${dir}/${f}`, "utf8").trim())
        writeCgroup(`${dir}/${f}`, readFileSync(`${parent}/${f}`, "utf8").trim());
    }
    parent = dir;
  }
}

/** Remove the cgroups, deepest first, and their parents ferret made empty (the kernel refuses one with processes). */
export function removeCgroups(dirs: readonly string[]): void {
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    // A parent that holds another container's cgroups stays (the last one out removes it).
    if (readdirSync(dir, { withFileTypes: true }).some((e) => e.isDirectory())) continue;
    shown(`rmdir ${dir}`);
    for (let i = 0; ; i++) {
      try {
        rmdirSync(dir);
        break;
      } catch (e) {
        // A cgroup whose last process is still being reaped is busy for a moment.
        if ((e as NodeJS.ErrnoException).code !== "EBUSY" || i >= 200) throw e;
        sleepSync(10);
      }
    }
  }
}
