// A container's init, written down from its config.json: a script for sh,
// PID 1 of the new namespaces, that mounts the container's file tree with
// the host's tools, then execs the dive (lib/confine/dive.ts), which swaps
// the roots, confines the process and waits for ferret start.
import { statSync } from "node:fs";
import { basename, dirname } from "node:path";
import { MincError } from "../core/fail.ts";
import { quote, quoteAll } from "../core/quote.ts";
import { resolveInRoot } from "../boot/paths.ts";
import { CAPABILITIES } from "../confine/caps.ts";
import type { DiveStep } from "../confine/dive.ts";
import { type Config, type Mount, rlimitNumber } from "./config.ts";
import type { StatePaths } from "./state.ts";

/** What the spec says every container has in /dev (bound from the host's, as runc does in a user namespace). */
const DEFAULT_DEVICES = ["null", "zero", "full", "random", "urandom", "tty"];
const PROPAGATIONS = ["private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable"];

/** A path inside the root as the container will see it, symlinks followed inside the root; a missing one is made there. */
function inRoot(root: string, path: string): string {
  try {
    return resolveInRoot(root, path);
  } catch (e) {
    if (!(e instanceof MincError)) throw e;
    return `${inRoot(root, dirname(path))}/${basename(path)}`;
  }
}

class Script {
  lines: string[] = [];
  /** A command whose failure ends the init, saying which command it was in the ready file. */
  cmd(line: string): void {
    this.lines.push(`${line} || fail ${quote(line)}`);
  }
  raw(line: string): void {
    this.lines.push(line);
  }
  comment(text: string): void {
    this.lines.push(`# ${text}`);
  }
}

function mountpoint(s: Script, target: string, file: boolean): void {
  if (file) s.cmd(`[ -e ${quote(target)} ] || { mkdir -p ${quote(dirname(target))} && : >> ${quote(target)}; }`);
  else s.cmd(`mkdir -p ${quote(target)}`);
}

function mountOne(s: Script, root: string, m: Mount): void {
  const target = inRoot(root, m.destination);
  const bind = m.type === "bind" || m.options.includes("bind") || m.options.includes("rbind");
  const propagation = m.options.filter((o) => PROPAGATIONS.includes(o));
  const options = m.options.filter((o) => !PROPAGATIONS.includes(o) && o !== "bind" && o !== "rbind");
  if (bind) {
    let isFile = false;
    try {
      isFile = !statSync(m.source).isDirectory();
    } catch {
      throw new MincError(`config.json: mounts: ${m.destination}: the source ${m.source} does not exist`, 2);
    }
    mountpoint(s, target, isFile);
    const how = m.options.includes("rbind") ? "--rbind" : "--bind";
    s.cmd(quoteAll(["mount", how, m.source, target]));
    if (options.length > 0) s.cmd(quoteAll(["mount", "-o", `remount,bind,${options.join(",")}`, target]));
  } else if (m.type === "cgroup" || m.type === "cgroup2") {
    // The container gets no view of the host's cgroups (cgroup v1, hybrid here): an empty read-only tmpfs.
    mountpoint(s, target, false);
    s.cmd(quoteAll(["mount", "-t", "tmpfs", "-o", "ro,nosuid,nodev,noexec,mode=755", "cgroup", target]));
  } else {
    mountpoint(s, target, false);
    s.cmd(quoteAll(["mount", "-t", m.type, ...(options.length ? ["-o", options.join(",")] : []), m.source, target]));
  }
  for (const p of propagation) s.cmd(quoteAll(["mount", `--make-${p}`, target]));
}

function devices(s: Script, c: Config): void {
  const root = c.root.path;
  const given = new Set(c.devices.map((d) => d.path));
  s.comment("The devices every container has: the host's, bound");
  for (const d of DEFAULT_DEVICES.filter((d) => !given.has(`/dev/${d}`))) {
    const at = inRoot(root, `/dev/${d}`);
    mountpoint(s, at, true);
    s.cmd(quoteAll(["mount", "--bind", `/dev/${d}`, at]));
  }
  for (const [name, target] of [
    ["ptmx", "pts/ptmx"],
    ["fd", "/proc/self/fd"],
    ["stdin", "/proc/self/fd/0"],
    ["stdout", "/proc/self/fd/1"],
    ["stderr", "/proc/self/fd/2"],
  ]) {
    const at = inRoot(root, `/dev/${name}`);
    s.cmd(`{ [ -e ${quote(at)} ] || [ -L ${quote(at)} ]; } || ln -s ${quote(target)} ${quote(at)}`);
  }
  if (c.devices.length > 0) s.comment("linux.devices");
  for (const d of c.devices) {
    const at = inRoot(root, d.path);
    if (c.uidMap) {
      // A user namespace may not make device nodes: the host's node of the same path is bound.
      mountpoint(s, at, true);
      s.cmd(quoteAll(["mount", "--bind", d.path, at]));
      continue;
    }
    s.cmd(`mkdir -p ${quote(dirname(at))}`);
    s.cmd(`rm -f ${quote(at)}`);
    const mode = (d.fileMode & 0o7777).toString(8);
    s.cmd(quoteAll(["mknod", "-m", mode, at, d.type, ...(d.type === "p" ? [] : [String(d.major), String(d.minor)])]));
    s.cmd(quoteAll(["chown", `${d.uid}:${d.gid}`, at]));
  }
}

function masks(s: Script, c: Config): void {
  const root = c.root.path;
  if (c.maskedPaths.length > 0)
    s.comment("linux.maskedPaths: a file behind /dev/null, a directory behind an empty read-only tmpfs");
  for (const p of c.maskedPaths) {
    const at = inRoot(root, p);
    const q = quote(at);
    s.raw(
      `if [ -d ${q} ]; then mount -t tmpfs -o ro,nosuid,nodev,noexec tmpfs ${q} || fail ${quote(`mask ${p}`)}; elif [ -e ${q} ]; then mount --bind /dev/null ${q} || fail ${quote(`mask ${p}`)}; fi`,
    );
  }
  if (c.readonlyPaths.length > 0) s.comment("linux.readonlyPaths");
  for (const p of c.readonlyPaths) {
    const at = quote(inRoot(root, p));
    s.raw(
      `if [ -e ${at} ]; then { mount --bind ${at} ${at} && mount -o remount,bind,ro,nosuid,nodev,noexec ${at}; } || fail ${quote(`read-only ${p}`)}; fi`,
    );
  }
}

/** Does the container get a mount namespace (new, or joined by path), or stay in the host's? */
export function ownMountNamespace(c: Config): boolean {
  return c.namespaces.some((n) => n.type === "mount");
}

/** The init: sh lines, PID 1 of the new namespaces, ending in the exec of the dive. */
export function initScript(c: Config, files: StatePaths, cgroups: readonly string[]): string {
  const root = c.root.path;
  const s = new Script();
  s.raw(`# ferret's init (lib/ferret/init.ts): PID 1 of the container's new namespaces, still on the host's root`);
  s.raw(`fail() { printf 'error: failed: %s\\n' "$1" > ${quote(files.ready)}; exit 1; }`);
  s.comment("Our PID as the host sees it: /proc is still the host's");
  s.raw(`read -r pid _ < /proc/self/stat && echo "$pid" > ${quote(files.pid)} || fail 'record the pid'`);
  // (root of a new user namespace may not write the host's cgroups or lower its OOM score: ferret create does that)
  if (!c.uidMap) {
    for (const cg of cgroups) s.cmd(`echo 0 > ${quote(`${cg}/cgroup.procs`)}`);
    if (c.process.oomScoreAdj !== undefined) s.cmd(`echo ${c.process.oomScoreAdj} > /proc/self/oom_score_adj`);
  }
  s.cmd("export LIBMOUNT_MTAB=/proc/mounts");
  s.comment("The root must be a mount point for pivot_root");
  s.cmd(quoteAll(["mount", "--rbind", root, root]));
  if (!ownMountNamespace(c)) {
    s.comment(
      "No mount namespace of its own: these mounts are the host's, kept from spreading; ferret delete unmounts them",
    );
    s.cmd(quoteAll(["mount", "--make-rprivate", root]));
  }
  // (/proc/sys belongs to the host's root; in a new user namespace only the syscall, hostname(1), may name it)
  if (c.hostname && c.uidMap) s.cmd(quoteAll(["hostname", c.hostname]));
  else if (c.hostname) s.cmd(`printf '%s\\n' ${quote(c.hostname)} > /proc/sys/kernel/hostname`);
  s.comment("mounts");
  for (const m of c.mounts) mountOne(s, root, m);
  devices(s, c);
  const procAt = c.mounts.find((m) => m.destination === "/proc" && m.type === "proc");
  for (const [k, v] of Object.entries(c.sysctl)) {
    if (!procAt) throw new MincError("config.json: linux.sysctl: needs a /proc mount to write to", 2);
    s.cmd(`printf '%s\\n' ${quote(v)} > ${quote(inRoot(root, `/proc/sys/${k.replaceAll(".", "/")}`))}`);
  }
  masks(s, c);
  if (c.root.readonly) s.cmd(quoteAll(["mount", "-o", "remount,bind,ro", root]));
  // (private until pivot_root, which refuses a shared one; the dive gives / the config's propagation after it, as runc)
  s.cmd(quoteAll(["mount", "--make-rprivate", root]));
  s.comment("Dive: perl swaps the roots, confines the process, waits for ferret start and execs it");
  s.raw(`exec ${quoteAll(["perl", files.dive, files.plan, ...c.process.args])}`);
  return `${s.lines.join("\n")}\n`;
}

/** mount(2)'s flags for a propagation: MS_SHARED, MS_SLAVE, MS_PRIVATE, MS_UNBINDABLE, with MS_REC for the r- ones. */
function propagationFlags(p: string): number {
  const base: Record<string, number> = { shared: 1 << 20, slave: 1 << 19, private: 1 << 18, unbindable: 1 << 17 };
  return p.startsWith("r") ? base[p.slice(1)] | 16384 : base[p];
}

function capNumbers(names: readonly string[]): string {
  return names.map((n) => (CAPABILITIES as readonly string[]).indexOf(n)).join(",");
}

/** The dive's plan (lib/confine/dive.ts) for this config. */
export function divePlan(
  c: Config,
  files: StatePaths,
  o: { keyring: boolean; exec?: { pid: number; cgroups: string[]; pidFile: string; detach: boolean } },
): DiveStep[] {
  const p = c.process;
  const caps = p.capabilities;
  const filter: DiveStep[] = c.seccomp ? [["seccomp", files.seccomp]] : [];
  const dropped = CAPABILITIES.filter((n) => !caps.bounding.includes(n));
  // (ferret exec: into a running container's namespaces, no new root, nothing to wait for)
  const into: DiveStep[] = o.exec
    ? [
        ["join", String(o.exec.pid), o.exec.cgroups.join(",")],
        ["fork", o.exec.pidFile, o.exec.detach ? "detach" : "wait"],
      ]
    : [[ownMountNamespace(c) ? "pivot" : "chroot", c.root.path]];
  return [
    ["env", files.env],
    // pivot_root would swap the host's own root when the mount namespace is the host's: chroot then
    ...into,
    ...(!o.exec && c.rootfsPropagation && ownMountNamespace(c)
      ? [["propagation", String(propagationFlags(c.rootfsPropagation))] as DiveStep]
      : []),
    ...p.rlimits.map((r): DiveStep => ["rlimit", String(rlimitNumber(r.type)), String(r.soft), String(r.hard)]),
    ...(o.keyring ? [["keyring"] as DiveStep] : []),
    // Without no_new_privs the filter can only be loaded while the process still has cap_sys_admin (as runc does).
    ...(p.noNewPrivileges ? [] : filter),
    ["bounding", capNumbers(dropped)],
    ["groups", p.additionalGids.join(",")],
    ["ids", String(p.uid), String(p.gid)],
    ["caps", capNumbers(caps.effective), capNumbers(caps.permitted), capNumbers(caps.inheritable)],
    ["ambient", capNumbers(caps.ambient)],
    ["umask", (p.umask ?? 0o022).toString(8)],
    ["cwd", p.cwd],
    ...(p.noNewPrivileges ? [["nnp"] as DiveStep, ...filter] : []),
    ...(o.exec ? [] : [["ready", files.ready] as DiveStep, ["wait", files.execFifo] as DiveStep]),
  ];
}
