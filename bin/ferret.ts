// ferret: the OCI runtime of MINCS (the runc command line on a bundle's
// config.json), so that podman, containerd and the like can run containers
// with it.
//
//   ferret [--root DIR] [--log FILE] [--log-format text|json] [--debug] COMMAND [OPTIONS] ID
//
// create builds the container from the bundle and leaves its init waiting
// before the user's program (lib/ferret/init.ts, lib/confine/dive.ts);
// start lets it go on; state, kill, delete, run, list, spec, features as
// runc has them. The state of each container is a directory under --root
// (lib/ferret/state.ts).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  appendFileSync,
  chmodSync,
  statSync,
  chownSync,
  readdirSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { constants as os } from "node:os";
import { dirname } from "node:path";
import { MincError, start, usageError } from "../lib/core/fail.ts";
import { lineOf } from "../lib/core/host.ts";
import { run } from "../lib/core/run.ts";
import { sleepSync } from "../lib/core/signals.ts";
import { quote, quoteAll, shown, step } from "../lib/core/trace.ts";
import { VERSION } from "../lib/core/version.ts";
import { CAPABILITIES } from "../lib/confine/caps.ts";
import { DIVE_PERL, planText } from "../lib/confine/dive.ts";
import { MASKED_PATHS } from "../lib/confine/policy.ts";
import { compileFilter } from "../lib/confine/seccomp.ts";
import { writeCgroup } from "../lib/cgroups/cage.ts";
import { makeCgroups, removeCgroups } from "../lib/ferret/cgroups.ts";
import { type Config, checkProcess, readConfig } from "../lib/ferret/config.ts";
import { divePlan, initScript, ownMountNamespace } from "../lib/ferret/init.ts";
import {
  alive,
  checkId,
  containerIds,
  readState,
  type State,
  startTime,
  statePaths,
  statusOf,
  writeState,
} from "../lib/ferret/state.ts";

const OCI_VERSION = "1.2.0";

interface Globals {
  root: string;
  log: string | undefined;
  logFormat: "text" | "json";
}

/** Options of a command: --name VALUE, --name=VALUE, flags; the rest are its operands. */
function parseOptions(
  args: string[],
  withValue: readonly string[],
  repeated: readonly string[] = [],
): { opts: Map<string, string>; rest: string[] } {
  const opts = new Map<string, string>();
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      rest.push(...args.slice(i + 1));
      break;
    }
    if (!a.startsWith("-") || a === "-" || rest.length > 0) {
      rest.push(a);
      continue;
    }
    const m = /^--?([^=]+)(?:=(.*))?$/.exec(a)!;
    const name = m[1];
    if (withValue.includes(name) || repeated.includes(name)) {
      const value = m[2] ?? args[++i];
      if (value === undefined) throw usageError(`--${name} needs a value`);
      // (a repeated one, -e A=1 -e B=2, keeps every value, NUL-separated)
      opts.set(name, repeated.includes(name) && opts.has(name) ? `${opts.get(name)}\0${value}` : value);
    } else if (m[2] !== undefined) throw usageError(`--${name} takes no value`);
    else opts.set(name, "true");
  }
  return { opts, rest };
}

function onlyKnown(opts: Map<string, string>, known: readonly string[], command: string): void {
  for (const k of opts.keys()) if (!known.includes(k)) throw usageError(`${command}: unknown option --${k}`);
}

/** Wait until check() says something, at most ms; sleeps 5 ms between looks (the init tells its progress by files). */
function until<T>(check: () => T | undefined, ms: number): T | undefined {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined || Date.now() > deadline) return v;
    sleepSync(5);
  }
}

/** The unshare (and nsenter, for namespaces joined by path) that starts the init in the container's namespaces. */
function namespaceArgv(c: Config, userHolder: number | undefined): string[] {
  // (unshare makes a namespace with the option, nsenter joins one by OPTION=PATH: the same names)
  const flags: Record<string, string> = {
    pid: "--pid",
    network: "--net",
    mount: "--mount",
    ipc: "--ipc",
    uts: "--uts",
    cgroup: "--cgroup",
  };
  const join = flags;
  const joined = [
    ...(userHolder ? [`--user=/proc/${userHolder}/ns/user`] : []),
    ...c.namespaces.filter((n) => n.path).map((n) => `${join[n.type]}=${n.path}`),
  ];
  const fresh = c.namespaces.filter((n) => !n.path && n.type !== "user").map((n) => flags[n.type]);
  return [
    ...(joined.length > 0 ? ["nsenter", ...joined, "--"] : []),
    "unshare",
    ...fresh,
    // (a new mount namespace's mounts are made private, so that none shows on the host; a joined one is as it is)
    ...(fresh.includes("--mount") ? ["--propagation", "private"] : []),
  ];
}

/** A container in the host's mount namespace: its root's bind and every mount under it, from the host's tree. */
function unmountRoot(root: string): void {
  step(
    "The container was in the host's mount namespace: unmount what its init mounted there (the root's own bind on top)",
  );
  const ours = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .some((l) => l.split(" ")[4] === root);
  if (ours) run(["umount", "-R", "-l", root]);
}

/** Write a file of the state dir, shown in the trace as the shell line that writes the same. */
function writeShown(path: string, content: string | Buffer, mode?: number): void {
  // (NUL-separated text, the environment, is the one printfLines cannot show)
  if (typeof content === "string" && content.includes("\0")) {
    shown(`printf '%s\\0' ${quoteAll(content.split("\0").slice(0, -1))} > ${quote(path)}`);
  } else shown(lineOf({ op: "writeFile", path, content })[0]);
  writeFileSync(path, content, mode === undefined ? undefined : { mode });
}

/** Remove what create made: the init if it runs, its cgroups, the state directory. */
function undo(
  files: ReturnType<typeof statePaths>,
  cgroups: readonly string[],
  pid: number | undefined,
  hostMountsUnder?: string,
): void {
  if (pid && startTime(pid)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone already
    }
    until(() => (startTime(pid) ? undefined : true), 10_000);
  }
  if (hostMountsUnder) unmountRoot(hostMountsUnder);
  removeCgroups(cgroups);
  rmSync(files.dir, { recursive: true, force: true });
}

/**
 * A new user namespace, its ids mapped: held by a sleep while the init
 * joins it (nsenter makes it root there, mapped, before it execs, so it
 * keeps its capabilities in the namespace; a process that execs unmapped
 * loses them). We write the maps as the host's root: newuidmap would want
 * /etc/subuid ranges for root. Returns the holder's PID.
 */
function userNamespace(c: Config): number {
  // (--pdeathsig: the holder dies with us, should we be killed before we kill it)
  const holder = spawn("setpriv", ["--pdeathsig", "KILL", "unshare", "--user", "sleep", "600"], {
    stdio: "ignore",
    detached: true,
  });
  holder.unref();
  const pid = holder.pid!;
  const userns = until(() => {
    try {
      const ns = readlinkSync(`/proc/${pid}/ns/user`);
      return ns !== readlinkSync("/proc/self/ns/user") ? ns : undefined;
    } catch {
      return undefined;
    }
  }, 10_000);
  if (!userns) throw new MincError("unshare --user did not make a user namespace");
  for (const [file, m] of [
    ["uid_map", c.uidMap!],
    ["gid_map", c.gidMap ?? c.uidMap!],
  ] as const) {
    hostIdOfRoot(m);
    writeCgroup(`/proc/${pid}/${file}`, `${m.containerID} ${m.hostID} ${m.size}\n`);
  }
  return pid;
}

/** Root of a new user namespace is an ordinary user on the host: every directory above path must let others through. */
function reachableByOthers(path: string, what: string): void {
  for (let d = dirname(path); d !== "/"; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) {
      throw usageError(
        `${what} ${path}: ${d} is not searchable by others, and root of the container's user namespace is no one on the host`,
      );
    }
  }
}

/**
 * The init goes on as root of its new user namespace (a host uid the
 * mapping gives): the state dir and its files become that uid's, so that
 * it reads its plan and says ready there.
 */
function giveToMappedRoot(c: Config, dir: string): void {
  const uid = hostIdOfRoot(c.uidMap!);
  const gid = hostIdOfRoot(c.gidMap ?? c.uidMap!);
  shown(`chown -R ${uid}:${gid} ${dir}`);
  chownSync(dir, uid, gid);
  for (const f of readdirSync(dir)) chownSync(`${dir}/${f}`, uid, gid);
}

function hostIdOfRoot(m: { containerID: number; hostID: number; size: number }): number {
  if (m.containerID !== 0) throw usageError("config.json: linux.uidMappings: ferret needs container id 0 mapped");
  return m.hostID;
}

/** What the init cannot do as root of a user namespace, done from the host: its cgroups, its OOM score. */
function fromOutside(c: Config, pid: number, cgroups: readonly string[]): void {
  for (const cg of cgroups) writeCgroup(`${cg}/cgroup.procs`, String(pid));
  if (c.process.oomScoreAdj !== undefined) writeCgroup(`/proc/${pid}/oom_score_adj`, String(c.process.oomScoreAdj));
}

/** Build the container: its state dir, cgroups, init and dive; the init waits for start. Returns the init's PID. */
function create(g: Globals, id: string, bundle: string, o: { pidFile?: string; keyring: boolean; fork: boolean }) {
  const c = readConfig(bundle);
  if (c.process.terminal) throw usageError("config.json: process.terminal: a terminal is not supported by ferret yet");
  const files = statePaths(g.root, id);
  step("config.json checked (lib/ferret/config.ts); the container's state dir");
  shown(`mkdir -p -m 711 ${quote(g.root)} && mkdir -m 700 ${quote(files.dir)}`);
  // (traversable, not listable: the init of a new user namespace, root only there, reaches its own dir)
  mkdirSync(g.root, { recursive: true, mode: 0o711 });
  if (c.uidMap) {
    chmodSync(g.root, statSync(g.root).mode | 0o111);
    reachableByOthers(files.dir, "--root");
    reachableByOthers(c.root.path, "root.path");
  }
  try {
    mkdirSync(files.dir, { mode: 0o700 });
  } catch {
    throw usageError(`container ${id} exists already`);
  }
  let cgroups: { own: string[]; made: string[] } = { own: [], made: [] };
  let pid: number | undefined;
  /** A new user namespace's holder, until the init is in it. */
  let holder: number | undefined;
  try {
    cgroups = makeCgroups(c, id);
    // A first state, no PID yet: should we be killed from here on, delete --force finds the cgroups (and all in them).
    const made: State = {
      ociVersion: OCI_VERSION,
      id,
      pid: 0,
      starttime: "",
      bundle: c.bundle,
      rootfs: c.root.path,
      created: new Date().toISOString(),
      annotations: c.annotations,
      cgroups: cgroups.own,
      madeCgroups: cgroups.made,
      hostMounts: !ownMountNamespace(c),
    };
    writeState(files, made);
    if (c.seccomp) {
      step("The seccomp filter, compiled from linux.seccomp (lib/confine/seccomp.ts)");
      writeShown(files.seccomp, compileFilter(c.seccomp).filter);
    }
    step("The process's environment, NUL-separated");
    writeShown(files.env, c.process.env.map((kv) => `${kv}\0`).join(""), 0o600);
    step("The dive: perl, loaded before pivot_root, does the process's confinement after it (lib/confine/dive.ts)");
    writeShown(files.dive, DIVE_PERL);
    step("Its plan, a step a line");
    writeShown(files.plan, planText(divePlan(c, files, { keyring: o.keyring })));
    step("The init: PID 1 of the new namespaces, sh, mounting with the host's tools (lib/ferret/init.ts)");
    writeShown(files.init, initScript(c, files, cgroups.own));
    run(["mkfifo", "-m", "600", files.execFifo]);
    if (c.uidMap) giveToMappedRoot(c, files.dir);
    holder = c.uidMap ? userNamespace(c) : undefined;
    // The new PID namespace's first process is the one the starter sh starts in the background. For create the
    // starter exits at once, so the init belongs to whoever reaps our orphans (conmon, containerd's shim); for run
    // it waits for the init. It tells the init's PID as it sees it (the host's, unless a PID namespace is joined).
    const starter = 'sh "$0" <&0 & echo $! > "$1"; [ -z "$2" ] || wait $!';
    const startArgv = [
      ...namespaceArgv(c, holder),
      "sh",
      "-c",
      starter,
      files.init,
      files.starter,
      ...(o.fork ? ["wait"] : []),
    ];
    shown(`${quoteAll(startArgv)}${o.fork ? " &" : ""}`);
    let child: ChildProcess | undefined;
    if (o.fork) child = spawn(startArgv[0], startArgv.slice(1), { stdio: "inherit" });
    else {
      const r = spawnSync(startArgv[0], startArgv.slice(1), { stdio: "inherit" });
      if (r.status !== 0)
        throw new MincError(`starting the init failed (${startArgv[0]} exited ${r.status ?? r.signal})`);
    }
    // (an init that could not even start, its script unreadable say, is seen gone by its starter's PID)
    const watchable = !c.namespaces.some((n) => n.type === "pid" && n.path);
    pid = until(() => {
      const p = existsSync(files.pid) ? Number(readFileSync(files.pid, "utf8")) : 0;
      if (p) return p;
      const started = existsSync(files.starter) ? Number(readFileSync(files.starter, "utf8")) : 0;
      return watchable && started && !startTime(started) ? 0 : undefined;
    }, 60_000);
    if (!pid) throw new MincError("the init did not start (see the error above)");
    step("Wait until the init says ready (or why not) in its ready file");
    shown(`until grep -qx ready ${quote(files.ready)} 2>/dev/null; do sleep 0.01; done`);
    const ready = until(() => {
      const text = existsSync(files.ready) ? readFileSync(files.ready, "utf8") : "";
      if (text.endsWith("\n")) return text.trim();
      if (!startTime(pid!)) return "error: the init ended before it was ready";
      return undefined;
    }, 60_000);
    if (holder) {
      process.kill(holder, "SIGKILL"); // (the namespace lives on with the init in it)
      holder = undefined;
    }
    if (ready !== "ready") throw new MincError(ready?.replace(/^error: /, "") ?? "the init did not get ready in 60 s");
    if (c.uidMap) fromOutside(c, pid!, cgroups.own);
    const state: State = { ...made, pid: pid!, starttime: startTime(pid!) ?? "" };
    step("The state ferret state and delete read; the caller's pid file");
    shown(lineOf({ op: "writeFile", path: files.state, content: `${JSON.stringify(state)}\n` })[0]);
    writeState(files, state);
    if (o.pidFile) {
      shown(`cp ${quote(files.pid)} ${quote(o.pidFile)}`);
      writeFileSync(`${o.pidFile}.ferret-new`, String(pid));
      renameSync(`${o.pidFile}.ferret-new`, o.pidFile);
    }
    return { state, child };
  } catch (e) {
    if (holder) process.kill(holder, "SIGKILL");
    undo(files, cgroups.made, pid, ownMountNamespace(c) ? undefined : c.root.path);
    throw e;
  }
}

/**
 * ferret exec: a process in a running container's namespaces and cgroups,
 * confined as its --process (or the container's process, with these args)
 * says, under the container's seccomp filter. The dive enters them and
 * forks (a PID namespace takes children only); with --detach ferret returns
 * once it runs, else with its exit status.
 */
function execIn(g: Globals, id: string, args: string[], opts: Map<string, string>): number {
  const state = readState(g.root, id);
  if (statusOf(g.root, state) !== "running") throw new MincError(`container ${id} is not running`);
  const c = readConfig(state.bundle);
  if (c.uidMap) throw usageError("exec: into a container with a user namespace is not supported by ferret yet");
  const file = opts.get("process") ?? opts.get("p");
  let proc = c.process;
  if (file) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(file, "utf8"));
    } catch (e) {
      throw usageError(`exec --process ${file}: ${(e as Error).message}`);
    }
    proc = checkProcess(json);
  } else {
    if (args.length === 0) throw usageError("exec: no command");
    proc = { ...proc, args, env: [...proc.env, ...(opts.get("env") ?? "").split("\0").filter((e) => e)] };
    const cwd = opts.get("cwd");
    if (cwd)
      proc.cwd = cwd.startsWith("/")
        ? cwd
        : (() => {
            throw usageError(`exec --cwd ${cwd}: not absolute`);
          })();
    const user = opts.get("user") ?? opts.get("u");
    if (user) {
      const m = /^(\d+)(?::(\d+))?$/.exec(user);
      if (!m) throw usageError(`exec --user ${user}: UID[:GID] as numbers`);
      proc.uid = Number(m[1]);
      proc.gid = Number(m[2] ?? m[1]);
    }
    if (opts.has("no-new-privs")) proc.noNewPrivileges = true;
  }
  if (proc.terminal) throw usageError("exec: process.terminal: a terminal is not supported by ferret yet");
  const files = statePaths(g.root, id);
  const tag = `exec-${process.pid}`;
  const plan = `${files.dir}/${tag}.plan`;
  const env = `${files.dir}/${tag}.env`;
  try {
    writeFileSync(env, proc.env.map((kv) => `${kv}\0`).join(""), { mode: 0o600 });
    const steps = divePlan({ ...c, process: proc, seccomp: existsSync(files.seccomp) ? c.seccomp : undefined }, files, {
      keyring: false,
      exec: {
        pid: state.pid,
        cgroups: state.cgroups,
        pidFile: opts.get("pid-file") ?? "",
        detach: opts.has("detach") || opts.has("d"),
      },
    });
    writeFileSync(plan, planText(steps.map((st) => (st[0] === "env" ? ["env", env] : st))));
    const argv = ["perl", files.dive, plan, ...proc.args];
    shown(quoteAll(argv));
    const r = spawnSync(argv[0], argv.slice(1), { stdio: "inherit" });
    return r.status ?? 128 + (r.signal ? os.signals[r.signal] : 0);
  } finally {
    rmSync(plan, { force: true });
    rmSync(env, { force: true });
  }
}

/** Let the init exec the user's program: a byte into its exec fifo. */
function startContainer(g: Globals, id: string): void {
  const state = readState(g.root, id);
  const status = statusOf(g.root, state);
  if (status !== "created") throw new MincError(`container ${id} is ${status}, not created`);
  const files = statePaths(g.root, id);
  step("Start: a byte into the exec fifo lets the dive exec the process");
  shown(`printf x > ${quote(files.execFifo)} && rm ${quote(files.execFifo)}`);
  const fd = openSync(files.execFifo, constants.O_WRONLY | constants.O_NONBLOCK);
  try {
    writeSync(fd, "x");
  } finally {
    closeSync(fd);
  }
  rmSync(files.execFifo, { force: true });
}

function signalNumber(name: string | undefined): number {
  if (name === undefined) return os.signals.SIGTERM;
  if (/^\d+$/.test(name)) {
    const n = Number(name);
    if (n < 1 || n > 64) throw usageError(`${name} is not a signal`);
    return n;
  }
  const full = (
    name.toUpperCase().startsWith("SIG") ? name.toUpperCase() : `SIG${name.toUpperCase()}`
  ) as keyof typeof os.signals;
  const n = os.signals[full];
  if (n === undefined) throw usageError(`${name} is not a signal`);
  return n;
}

function kill(g: Globals, id: string, signal: string | undefined, all: boolean): void {
  const state = readState(g.root, id);
  const n = signalNumber(signal);
  if (!alive(state)) throw new MincError(`container ${id} is not running`);
  const pids = all ? cgroupPids(state) : [state.pid];
  shown(`kill -${n} ${pids.join(" ")}`);
  for (const p of pids) {
    try {
      process.kill(p, n);
    } catch {
      // gone meanwhile
    }
  }
}

function cgroupPids(state: State): number[] {
  const cg = state.cgroups.find((c) => c.includes("/pids/")) ?? state.cgroups[0];
  if (!cg) return state.pid ? [state.pid] : [];
  if (!existsSync(`${cg}/cgroup.procs`)) return [];
  return readFileSync(`${cg}/cgroup.procs`, "utf8")
    .split("\n")
    .filter((l) => l)
    .map(Number);
}

function remove(g: Globals, id: string, force: boolean): void {
  const files = statePaths(g.root, checkId(id));
  let state: State;
  try {
    state = readState(g.root, id);
  } catch (e) {
    if (force) {
      rmSync(files.dir, { recursive: true, force: true });
      return;
    }
    throw e;
  }
  const status = statusOf(g.root, state);
  if (status !== "stopped" && !force) {
    throw new MincError(`container ${id} is ${status}: stop it first, or delete --force`);
  }
  // (a half-made one, its create killed, has no PID yet: what is in its cgroups is all of it)
  const left = state.pid === 0 ? [...cgroupPids(state), ...initBeforeCgroups(files)] : [];
  if (alive(state) || left.length > 0) {
    step("Kill what is left of the container (thawed, if paused: a frozen process does not die)");
    for (const p of state.pid === 0 ? left : cgroupPids(state)) {
      try {
        process.kill(p, "SIGKILL");
      } catch {
        // gone
      }
    }
    if (status === "paused")
      writeCgroup(`${state.cgroups.find((c) => c.includes("/freezer/"))}/freezer.state`, "THAWED");
    const gone = (): true | undefined =>
      alive(state) || (state.pid === 0 && left.some((p) => startTime(p))) ? undefined : true;
    if (until(gone, 10_000) === undefined) throw new MincError(`container ${id} did not end after SIGKILL`);
  }
  if (state.hostMounts) unmountRoot(state.rootfs);
  step("Remove its cgroups and state");
  removeCgroups(state.madeCgroups);
  shown(`rm -rf ${files.dir}`);
  rmSync(files.dir, { recursive: true, force: true });
}

/**
 * A half-made container's init that had not stepped into its cgroups yet:
 * the PID its starter recorded, if that process still runs this container's
 * init or dive (its command line names the state dir).
 */
function initBeforeCgroups(files: ReturnType<typeof statePaths>): number[] {
  const pid = existsSync(files.starter) ? Number(readFileSync(files.starter, "utf8")) : 0;
  try {
    return pid && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(`${files.dir}/`) ? [pid] : [];
  } catch {
    return [];
  }
}

/** pause and resume: the freezer cgroup, as runc does on cgroup v1. */
function freeze(g: Globals, id: string, frozen: boolean): void {
  const state = readState(g.root, id);
  const status = statusOf(g.root, state);
  if (frozen ? status !== "running" && status !== "created" : status !== "paused") {
    throw new MincError(`container ${id} is ${status}: cannot ${frozen ? "pause" : "resume"} it`);
  }
  const freezer = state.cgroups.find((c) => c.includes("/freezer/"));
  if (!freezer) throw new MincError(`container ${id} has no freezer cgroup`);
  const want = frozen ? "FROZEN" : "THAWED";
  writeCgroup(`${freezer}/freezer.state`, want);
  if (
    until(() => (readFileSync(`${freezer}/freezer.state`, "utf8").trim() === want ? true : undefined), 10_000) ===
    undefined
  ) {
    throw new MincError(`container ${id} did not become ${want.toLowerCase()}`);
  }
}

/** The container's processes (their host PIDs), as runc's ps: a table by ps(1), or --format json, a list of PIDs. */
function ps(g: Globals, id: string, json: boolean): string {
  const state = readState(g.root, id);
  if (!alive(state)) throw new MincError(`container ${id} is not running`);
  const pids = cgroupPids(state);
  if (json) return JSON.stringify(pids);
  const r = spawnSync("ps", ["-o", "user,pid,ppid,stime,tty,time,cmd", "-p", pids.join(",")], { encoding: "utf8" });
  return r.stdout.trimEnd();
}

function stateJson(g: Globals, id: string): string {
  const state = readState(g.root, id);
  const status = statusOf(g.root, state);
  return JSON.stringify(
    {
      ociVersion: state.ociVersion,
      id,
      status,
      pid: status === "stopped" ? 0 : state.pid,
      bundle: state.bundle,
      rootfs: state.rootfs,
      created: state.created,
      annotations: state.annotations,
    },
    null,
    2,
  );
}

function list(g: Globals, json: boolean): string {
  const rows = containerIds(g.root).map((id) => {
    const s = readState(g.root, id);
    return { id, pid: s.pid, status: statusOf(g.root, s), bundle: s.bundle, created: s.created, owner: "root" };
  });
  if (json) return JSON.stringify(rows);
  const lines = rows.map((r) => [
    r.id,
    String(r.status === "stopped" ? 0 : r.pid),
    r.status,
    r.bundle,
    r.created,
    r.owner,
  ]);
  return [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"], ...lines].map((l) => l.join("\t")).join("\n");
}

function features(): string {
  return JSON.stringify(
    {
      ociVersionMin: "1.0.0",
      ociVersionMax: OCI_VERSION,
      hooks: [],
      mountOptions: ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "private", "rprivate", "shared"],
      linux: {
        namespaces: ["cgroup", "ipc", "mount", "network", "pid", "uts"],
        capabilities: CAPABILITIES.map((c) => c.toUpperCase()),
        cgroup: { v1: true, v2: false, systemd: false },
        seccomp: {
          enabled: true,
          actions: [
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_KILL",
            "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_KILL_THREAD",
            "SCMP_ACT_LOG",
            "SCMP_ACT_TRACE",
            "SCMP_ACT_TRAP",
          ],
          archs: ["SCMP_ARCH_X86_64"],
        },
        apparmor: { enabled: false },
        selinux: { enabled: false },
      },
      annotations: { "org.opencontainers.runtime-spec.features": "ferret (MINCS)" },
    },
    null,
    2,
  );
}

function spec(bundle: string): void {
  const file = `${bundle}/config.json`;
  if (existsSync(file)) throw usageError(`${file} exists already`);
  const caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
  const config = {
    ociVersion: OCI_VERSION,
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ["sh"],
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
      cwd: "/",
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: true },
    hostname: "ferret",
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    ],
    linux: {
      resources: { devices: [{ allow: false, access: "rwm" }] },
      namespaces: [{ type: "pid" }, { type: "network" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }],
      // (what minc's confinement masks, lib/confine/policy.ts)
      maskedPaths: MASKED_PATHS,
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
  writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`);
}

/** Report an error as runc does: a line on stderr, and to --log (one JSON object a line with --log-format json). */
function report(g: Globals, message: string): void {
  process.stderr.write(`ferret: ${message}\n`);
  if (!g.log) return;
  const line =
    g.logFormat === "json"
      ? JSON.stringify({ level: "error", msg: message, time: new Date().toISOString() })
      : `time="${new Date().toISOString()}" level=error msg=${JSON.stringify(message)}`;
  try {
    appendFileSync(g.log, `${line}\n`);
  } catch {
    // the log is a help, not a must
  }
}

async function runContainer(
  g: Globals,
  id: string,
  bundle: string,
  o: { pidFile?: string; keyring: boolean; detach: boolean },
) {
  const { child } = create(g, id, bundle, { ...o, fork: !o.detach });
  startContainer(g, id);
  if (o.detach || !child) return 0;
  step("Wait for the container's end: its starter waits for the init, whose exit status is ours");
  shown("wait $!");

  // Signals for the container go to its init, as runc relays them.
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"] as const) {
    process.on(sig, () => {
      try {
        process.kill(readState(g.root, id).pid, sig);
      } catch {
        // gone
      }
    });
  }
  const status = await new Promise<number>((resolve) =>
    child.on("exit", (code, signal) => resolve(code ?? 128 + (signal ? os.signals[signal] : 0))),
  );
  remove(g, id, true);
  return status;
}

export async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const g: Globals = { root: "/run/ferret", log: undefined, logFormat: "text" };
  let i = 0;
  // Global options, before the command.
  for (; i < argv.length && argv[i].startsWith("-"); i++) {
    const m = /^--?([^=]+)(?:=(.*))?$/.exec(argv[i])!;
    const value = (): string => {
      const v = m[2] ?? argv[++i];
      if (v === undefined) throw usageError(`--${m[1]} needs a value`);
      return v;
    };
    switch (m[1]) {
      case "root":
        g.root = value();
        break;
      case "log":
        g.log = value();
        break;
      case "log-format": {
        const f = value();
        if (f !== "text" && f !== "json") throw usageError(`--log-format ${f}: text or json`);
        g.logFormat = f;
        break;
      }
      case "debug":
        env.MINC_DEBUG = "1";
        process.env.MINC_DEBUG = "1";
        break;
      case "systemd-cgroup":
        throw usageError("--systemd-cgroup: there is no systemd here; ferret manages cgroups itself (cgroupfs)");
      case "cgroup-manager": {
        const v = value();
        if (v !== "cgroupfs") throw usageError(`--cgroup-manager ${v}: only cgroupfs`);
        break;
      }
      case "version":
      case "v":
        process.stdout.write(`ferret version ${VERSION}\nspec: ${OCI_VERSION}\n`);
        return 0;
      case "help":
      case "h":
        process.stdout.write(HELP);
        return 0;
      default:
        throw usageError(`unknown global option ${argv[i]}`);
    }
  }
  if (!g.root.startsWith("/")) throw usageError(`--root ${g.root}: an absolute path is needed`);
  const [command, ...rest] = argv.slice(i);
  try {
    switch (command) {
      case "create":
      case "run": {
        const { opts, rest: ops } = parseOptions(rest, ["bundle", "b", "pid-file", "console-socket"]);
        onlyKnown(
          opts,
          ["bundle", "b", "pid-file", "console-socket", "no-pivot", "no-new-keyring", "detach", "d"],
          command,
        );
        if (opts.has("console-socket")) throw usageError("--console-socket: a terminal is not supported by ferret yet");
        if (opts.has("no-pivot"))
          throw usageError("--no-pivot: ferret always uses pivot_root (chroot could be escaped)");
        const id = checkId(ops[0]);
        const bundle = opts.get("bundle") ?? opts.get("b") ?? ".";
        const o = { pidFile: opts.get("pid-file"), keyring: !opts.has("no-new-keyring") };
        if (command === "create") {
          create(g, id, bundle, { ...o, fork: false });
          return 0;
        }
        return await runContainer(g, id, bundle, { ...o, detach: opts.has("detach") || opts.has("d") });
      }
      case "exec": {
        const { opts, rest: ops } = parseOptions(
          rest,
          ["process", "p", "pid-file", "cwd", "user", "u", "console-socket"],
          ["env", "e"],
        );
        onlyKnown(
          opts,
          [
            "process",
            "p",
            "pid-file",
            "cwd",
            "user",
            "u",
            "detach",
            "d",
            "tty",
            "t",
            "console-socket",
            "env",
            "e",
            "no-new-privs",
          ],
          "exec",
        );
        if (opts.has("tty") || opts.has("t") || opts.has("console-socket")) {
          throw usageError("exec --tty: a terminal is not supported by ferret yet");
        }
        return execIn(g, checkId(ops[0]), ops.slice(1), opts);
      }
      case "start":
        startContainer(g, checkId(rest[0]));
        return 0;
      case "state":
        process.stdout.write(`${stateJson(g, checkId(rest[0]))}\n`);
        return 0;
      case "kill": {
        const { opts, rest: ops } = parseOptions(rest, []);
        onlyKnown(opts, ["all", "a"], "kill");
        kill(g, checkId(ops[0]), ops[1], opts.has("all") || opts.has("a"));
        return 0;
      }
      case "delete": {
        const { opts, rest: ops } = parseOptions(rest, []);
        onlyKnown(opts, ["force", "f"], "delete");
        remove(g, checkId(ops[0]), opts.has("force") || opts.has("f"));
        return 0;
      }
      case "list": {
        const { opts } = parseOptions(rest, ["format", "f"]);
        onlyKnown(opts, ["format", "f", "quiet", "q"], "list");
        if (opts.has("quiet") || opts.has("q")) process.stdout.write(`${containerIds(g.root).join("\n")}\n`);
        else process.stdout.write(`${list(g, (opts.get("format") ?? opts.get("f")) === "json")}\n`);
        return 0;
      }
      case "pause":
      case "resume":
        freeze(g, checkId(rest[0]), command === "pause");
        return 0;
      case "ps": {
        const { opts, rest: ops } = parseOptions(rest, ["format", "f"]);
        onlyKnown(opts, ["format", "f"], "ps");
        process.stdout.write(`${ps(g, checkId(ops[0]), (opts.get("format") ?? opts.get("f")) === "json")}\n`);
        return 0;
      }
      case "features":
        process.stdout.write(`${features()}\n`);
        return 0;
      case "spec": {
        const { opts } = parseOptions(rest, ["bundle", "b"]);
        onlyKnown(opts, ["bundle", "b", "rootless"], "spec");
        spec(opts.get("bundle") ?? opts.get("b") ?? ".");
        return 0;
      }
      case undefined:
        throw usageError("no command (ferret --help)");
      default:
        throw usageError(`${command}: not a command of ferret (or not one it has yet)`);
    }
  } catch (e) {
    if (e instanceof MincError) {
      report(g, e.message);
      return e.status;
    }
    throw e;
  }
}

const HELP = `usage: ferret [--root DIR] [--log FILE] [--log-format text|json] [--debug] COMMAND [OPTIONS] ID

The OCI runtime of MINCS: runs the container of a bundle (DIR/config.json).

commands:
  create [--bundle DIR] [--pid-file FILE] [--no-new-keyring] ID   build it; its process waits for start
  start ID                                   run the process of a created container
  run [--bundle DIR] [--pid-file FILE] [--detach] ID   create and start; wait for its end (not --detach)
  state ID                                   its state, as the OCI spec's JSON
  kill [--all] ID [SIGNAL]                   signal its process (default TERM)
  pause ID, resume ID                        freeze and thaw its processes
  ps [--format json] ID                      its processes
  delete [--force] ID                        remove a stopped container (--force: kill it first)
  list [--format json] [--quiet]             the containers under --root
  spec [--bundle DIR]                        write a default config.json
  features                                   what ferret supports, as JSON
`;

start(main);
