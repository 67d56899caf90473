// ferret's state directory: one directory a container, under --root
// (default /run/ferret), owned by this module as lib/boot/workdir.ts owns
// minc's working directory.
//
//   ROOT/ID/state.json   what `ferret state` says, and what delete undoes (the cgroups)
//   ROOT/ID/pid          the init's PID as the host sees it (the init writes it)
//   ROOT/ID/starter.pid  the init's PID as its starter sees it (create watches it until the init writes pid)
//   ROOT/ID/init.sh      the init (lib/ferret/init.ts)
//   ROOT/ID/dive.pl      the dive (lib/confine/dive.ts), and its plan
//   ROOT/ID/seccomp.bpf  the compiled seccomp filter
//   ROOT/ID/env          the process's environment, NUL-separated
//   ROOT/ID/ready        "ready" or "error: ..." from the init (create waits for it)
//   ROOT/ID/exec.fifo    start writes a byte there; gone once started
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { usageError } from "../core/fail.ts";

export interface StatePaths {
  dir: string;
  state: string;
  pid: string;
  starter: string;
  init: string;
  dive: string;
  plan: string;
  seccomp: string;
  env: string;
  ready: string;
  execFifo: string;
}

export interface State {
  ociVersion: string;
  id: string;
  pid: number;
  /** The init's start time (field 22 of /proc/PID/stat): a PID used again by another process is not ours. */
  starttime: string;
  bundle: string;
  rootfs: string;
  created: string;
  annotations: Record<string, string>;
  /** The container's cgroups, one a controller. */
  cgroups: string[];
  /** The cgroup directories create made (parents too), in the order delete removes them. */
  madeCgroups: string[];
  /** In the host's mount namespace, the mounts under the root are the host's: delete unmounts them. */
  hostMounts: boolean;
}

export type Status = "creating" | "created" | "running" | "paused" | "stopped";

/** A container id: letters, digits and _ . + -, as runc takes them; never a path. */
export function checkId(id: string | undefined): string {
  if (!id) throw usageError("a container id is needed");
  if (!/^[A-Za-z0-9][A-Za-z0-9_.+-]{0,1023}$/.test(id)) {
    throw usageError(`${JSON.stringify(id)} is not a container id (letters, digits, _ . + -)`);
  }
  return id;
}

export function statePaths(root: string, id: string): StatePaths {
  const dir = `${root}/${checkId(id)}`;
  return {
    dir,
    state: `${dir}/state.json`,
    pid: `${dir}/pid`,
    starter: `${dir}/starter.pid`,
    init: `${dir}/init.sh`,
    dive: `${dir}/dive.pl`,
    plan: `${dir}/plan`,
    seccomp: `${dir}/seccomp.bpf`,
    env: `${dir}/env`,
    ready: `${dir}/ready`,
    execFifo: `${dir}/exec.fifo`,
  };
}

export function writeState(files: StatePaths, state: State): void {
  writeFileSync(`${files.state}.new`, `${JSON.stringify(state)}\n`);
  renameSync(`${files.state}.new`, files.state);
}

export function readState(root: string, id: string): State {
  const files = statePaths(root, id);
  try {
    return JSON.parse(readFileSync(files.state, "utf8")) as State;
  } catch {
    throw usageError(`container ${id} does not exist`);
  }
}

/** The ids of the containers under root. */
export function containerIds(root: string): string[] {
  try {
    return readdirSync(root).filter((id) => existsSync(`${root}/${id}/state.json`));
  } catch {
    return [];
  }
}

/** Field 22 of /proc/PID/stat (its start time), or undefined if the process is gone or a zombie. */
export function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z" || fields[0] === "X") return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

export function alive(state: State): boolean {
  return state.pid > 0 && startTime(state.pid) === state.starttime;
}

export function statusOf(root: string, state: State): Status {
  if (state.pid === 0) return "creating";
  if (!alive(state)) return "stopped";
  const files = statePaths(root, state.id);
  const freezer = state.cgroups.find((c) => c.includes("/freezer/"));
  if (freezer && readFileSync(`${freezer}/freezer.state`, "utf8").trim() === "FROZEN") return "paused";
  return existsSync(files.execFifo) ? "created" : "running";
}
