// minc-core: phase 4 of the boot, "prepare the new root".
//
//   minc-core [COMMAND [ARG...]]                     boot, as PID 1 of the new namespaces
//   minc-core --write-down SCRIPT [COMMAND [ARG...]] write that boot down ahead, for sh
//
// Records its PID as the host sees it, names the container, mounts the
// layered root with minc-coat, and builds the root's /dev, /proc, /sys and
// /tmp and the user's binds, then execs minc-leash to dive in. Everything
// mounted here lives in the container's private mount namespace and
// disappears with it.
//
// minc-exec runs it with --write-down first, before the namespaces exist:
// the same steps then become SCRIPT (lib/boot/bootscript.ts), which sh runs as
// PID 1 instead, so that no Node has to start in there. A boot that must
// look inside the namespaces (--nopriv, a VM, --ftrace, -B, pivot_root)
// exits NOT_WRITTEN_DOWN and minc-core boots there itself.
import { existsSync, lstatSync, readFileSync, statSync } from "node:fs";
import { basename, dirname } from "node:path";
import { writeDown as writtenDown } from "../lib/boot/bootscript.ts";
import { HandedOver, MincError, NOT_WRITTEN_DOWN, NotWrittenDown, usageError } from "../lib/core/fail.ts";
import { Host } from "../lib/core/host.ts";
import { backend } from "../lib/core/libexec.ts";
import { resolveInRoot } from "../lib/boot/paths.ts";
import { lstatInRoot } from "../lib/boot/rootview.ts";
import { live, runInThisNode } from "../lib/core/run.ts";
import { readSettings, type Settings } from "../lib/core/settings.ts";
import { resetSignals } from "../lib/core/signals.ts";
import { userTerminal } from "../lib/core/terminal.ts";
import { phase, step, tracing } from "../lib/core/trace.ts";
import { workdirPaths, type WorkdirPaths } from "../lib/boot/workdir.ts";
import { type Confinement, mincConfinement } from "../lib/confine/policy.ts";
import { main as coat } from "./minc-coat.ts";
import { main as leash } from "./minc-leash.ts";
import { main as moult } from "./minc-moult.ts";

// minc-coat, and minc-leash or minc-moult after us, run in this Node, not in a Node of their own.
runInThisNode({ "minc-coat": coat, "minc-leash": leash, "minc-moult": moult });

// The settings of this boot, from the environment main() is given.
let settings: Settings;
let tmpdir: string;
let basedir: string;
let direct: boolean;
let nopriv: boolean;
let files: WorkdirPaths;
let rootdir: string;
/** Does each step: live, or written down ahead (chosen in main). */
let host: Host;
/** The masks and read-only paths of /proc and /sys (none with --privileged). */
let confinement: Confinement;

function recordPid(): void {
  step("Record our PID as the host sees it: /proc is still the host's, so /proc/self tells it (here we are PID 1)");
  host.recordPid(files.pid);
}

function setHostname(): void {
  let name = settings.MINC_UTSNAME;
  if (name) {
    step("Name the container (this UTS namespace is ours alone)");
    host.writeFile(files.utsname, `${name}\n`);
  } else if (existsSync(files.utsname)) {
    step("Name the container as it was named before");
    name = readFileSync(files.utsname, "utf8").trim();
  }
  if (!name) return;
  // /proc/sys belongs to the host's root; in a user namespace only the syscall (hostname(1)) may name ours.
  if (nopriv) host.run(["hostname", name]);
  else host.writeFile("/proc/sys/kernel/hostname", `${name}\n`);
}

function mountsStayInside(): void {
  step(
    "(Every mount is private already, so nothing mounted here shows on the host: unshare --propagation private did it)",
  );
  step("Keep mount(8) from writing /etc/mtab");
  host.exportVar("LIBMOUNT_MTAB", "/proc/mounts");
}

function mountRoot(): void {
  step("Mount the container's root with minc-coat");
  host.run([backend("minc-coat"), "bind", tmpdir, basedir]);
}

/**
 * A mountpoint inside the new root, resolved as the container will see it.
 * Missing ones are made in the upper layer; in direct mode minc never
 * writes into the rootdir, so a missing mountpoint is skipped instead.
 */
function mountpoint(path: string, kind: "dir" | "file"): string | undefined {
  const at = resolvedOrReplaced(path);
  if (at === undefined) return undefined;
  if (lstatInRoot(at)) return at;
  if (direct) {
    step(`(${path} does not exist in the rootdir and direct mode does not create it: skipped)`);
    return undefined;
  }
  try {
    if (kind === "dir") host.mkdirs(at);
    else {
      if (!lstatInRoot(dirname(at))) host.mkdirs(dirname(at));
      host.touch(at);
    }
  } catch (e) {
    // A rootdir owned by the host's root cannot be written (not even copied up) from a user namespace.
    if (!nopriv) throw e;
    step(`(${path} cannot be made in this rootdir without root: skipped)`);
    return undefined;
  }
  return at;
}

/**
 * The path inside the root, following its symlinks; a symlink that goes
 * nowhere (debootstrap --foreign leaves /proc -> /proc) is replaced by a
 * plain mountpoint in the upper layer, or skipped in direct mode.
 */
function resolvedOrReplaced(path: string): string | undefined {
  try {
    return resolveInRoot(rootdir, path);
  } catch (e) {
    if (!(e instanceof MincError)) throw e;
  }
  const at = `${resolveInRoot(rootdir, dirname(path))}/${basename(path)}`;
  if (direct) {
    step(`(${path} is a symbolic link that leads nowhere, and direct mode does not replace it: skipped)`);
    return undefined;
  }
  step(`${path} is a symbolic link that leads nowhere: replace it to mount on`);
  host.removeFile(at);
  return at;
}

function bindResolvers(): void {
  step("Give the container its own /etc/resolv.conf and /etc/hosts");
  for (const [name, file] of [
    ["resolv.conf", files.resolvConf],
    ["hosts", files.hosts],
  ]) {
    const at = mountpoint(`/etc/${name}`, "file");
    if (at) host.bindMount(file, at);
  }
}

/** --cross: the kernel runs qemu-user for each foreign binary, by this path, inside the root too. */
function bindCrossQemu(): void {
  const qemu = settings.MINC_CROSS_QEMU;
  if (!qemu) return;
  step(`Bind qemu-user (${qemu}) into the new root at the same path, for the ${settings.MINC_ARCH} binaries`);
  const at = mountpoint(qemu, "file");
  if (at) host.bindMount(qemu, at);
}

function hideMtab(): void {
  if (direct) return;
  const mtab = `${resolveInRoot(rootdir, "/etc")}/mtab`;
  const stat = lstatInRoot(mtab);
  if (!stat || stat.isSymbolicLink()) return;
  step("Show the container's own mounts as /etc/mtab");
  host.removeFile(mtab);
  host.symlink("/proc/mounts", mtab);
}

const DEVICES = ["null", "zero", "full", "random", "urandom", "tty"];

function prepareDev(): void {
  const dev = mountpoint("/dev", "dir");
  if (!dev) return;
  if (settings.MINC_USE_DEV) {
    step(
      `Use devtmpfs for /dev (--usedev): the host's device nodes${confinement.nodevRoot ? ", disks included: the container may open what they reach (asked for; without cap_mknod it makes no others)" : ""}`,
    );
    host.mount("-t", "devtmpfs", "devtmpfs", dev);
    return;
  }
  freshDev(dev);
  const tty = userTerminal();
  fillDev(dev, devSkeleton(!!tty));
  if (nopriv) bindDevices(dev);
  if (tty) {
    step("Bind the user's terminal as the container's /dev/console");
    host.bindMount(tty, `${dev}/console`);
  } else {
    step("(No terminal on stdin, stdout or stderr: no /dev/console)");
  }
  step("A new devpts instance, so the host's ptys stay hidden");
  // gid 5 (tty) may not exist in a user namespace that maps only root.
  const ttyGroup = nopriv && !ttyGroupMapped() ? "" : ",gid=5";
  host.mount(
    "-t",
    "devpts",
    "-o",
    `newinstance,ptmxmode=0666,mode=0620${ttyGroup},nosuid,noexec`,
    "devpts",
    `${dev}/pts`,
  );
  step("POSIX message queues and shared memory of the container's own IPC namespace");
  host.mount("-t", "mqueue", "-o", "nosuid,nodev,noexec", "mqueue", `${dev}/mqueue`);
  host.mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "shm", `${dev}/shm`);
}

/**
 * What every /dev has besides devices: the mountpoints pts, mqueue and shm
 * (and console when there is a terminal to bind), ptmx into the container's
 * devpts, fd and stdin, stdout, stderr into /proc/self/fd. Made once in the
 * working dir, so that one cp puts them all in place.
 */
function devSkeleton(console: boolean): string[] {
  const skeleton = files.devSkeleton;
  const links: [string, string][] = [
    ["ptmx", "pts/ptmx"],
    ["fd", "/proc/self/fd"],
    ["stdin", "/proc/self/fd/0"],
    ["stdout", "/proc/self/fd/1"],
    ["stderr", "/proc/self/fd/2"],
  ];
  const entries = ["pts", "mqueue", "shm", ...links.map(([name]) => name), ...(console ? ["console"] : [])];
  if (!entries.every((e) => lstatSync(`${skeleton}/${e}`, { throwIfNoEntry: false }))) {
    step("The rest of /dev, made once in the working dir: mountpoints, and links into devpts and /proc/self/fd");
    host.removeTree(skeleton); // a part left by an earlier run, if any
    host.mkdirs(`${skeleton}/pts`, `${skeleton}/mqueue`, `${skeleton}/shm`);
    for (const [name, target] of links) host.symlink(target, `${skeleton}/${name}`);
    if (console) host.touch(`${skeleton}/console`);
  }
  return entries.map((e) => `${skeleton}/${e}`);
}

/**
 * null, zero, full, random, urandom, tty and the skeleton, by one cp -a: it
 * copies a device node as a node and a link as a link, where MINCS bound
 * each device (a mount each). In a user namespace (--nopriv) no device node
 * may be made: they are bound there (bindDevices).
 */
function fillDev(dev: string, skeleton: string[]): void {
  const devices = nopriv ? [] : DEVICES.filter((d) => existsSync(`/dev/${d}`)).map((d) => `/dev/${d}`);
  step(
    nopriv
      ? "Put the rest of /dev in place"
      : "Make the fundamental device nodes, as the host's, and put the rest of /dev in place",
  );
  host.runTogether(["cp", "-a", ...devices, ...skeleton, `${dev}/`]);
}

function bindDevices(dev: string): void {
  step("Bind the fundamental device files (a user namespace may not make device nodes)");
  for (const d of DEVICES.filter((d) => existsSync(`/dev/${d}`))) {
    host.touch(`${dev}/${d}`);
    host.bindMount(`/dev/${d}`, `${dev}/${d}`);
  }
}

/**
 * An empty /dev. A tmpfs mounted in a user namespace (--nopriv) cannot hold
 * devices that open, not even bound ones, so there /dev is a directory of
 * the working dir, on a filesystem the host's root mounted.
 */
function freshDev(dev: string): void {
  if (!nopriv) {
    step("Make a fresh /dev on a tmpfs, with only the harmless devices");
    host.mount("-t", "tmpfs", "-o", "nosuid,mode=0755", "tmpfs", dev);
    return;
  }
  step(
    "Make a fresh /dev, with only the harmless devices: --nopriv binds a directory of the working dir (devices do not open on a tmpfs of a user namespace)",
  );
  const dir = files.dev;
  host.removeTree(dir); // from a last run with this working dir, if any
  host.mkdirs(dir);
  host.bindMount(dir, dev);
}

function ttyGroupMapped(): boolean {
  return readFileSync("/proc/self/gid_map", "utf8")
    .split("\n")
    .some((l) => {
      const [inside, , count] = l.trim().split(/\s+/).map(Number);
      return inside <= 5 && 5 < inside + count;
    });
}

const PROC_READONLY = ["sys", "sysrq-trigger", "irq", "bus"];

function prepareProc(): void {
  const proc = mountpoint("/proc", "dir");
  if (!proc) return;
  step("A fresh /proc that shows only the container's processes");
  host.mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", proc);
  step("Its parts that reach into the host's kernel are read-only");
  const readonly = [...PROC_READONLY, ...under("/proc", confinement.readonly)];
  for (const p of readonly) {
    // (the host's /proc tells what the new one, not mounted yet, will have: the same kernel)
    if (existsSync(`/proc/${p}`)) host.bindMountReadonly(`${proc}/${p}`, `${proc}/${p}`, ",nosuid,nodev,noexec");
  }
  mask("/proc", proc);
}

/** The paths under dir ("/proc"), relative to it. */
function under(dir: string, paths: readonly string[]): string[] {
  return paths.filter((p) => p.startsWith(`${dir}/`)).map((p) => p.slice(dir.length + 1));
}

/**
 * Hide these paths (as podman and Docker hide them): a file behind
 * /dev/null, a directory behind an empty read-only tmpfs. What the host
 * has not got is skipped (the new /proc and the bound /sys show the host's kernel).
 */
function mask(dir: "/proc" | "/sys", mountedAt: string): void {
  const present = under(dir, confinement.masked).filter((p) => existsSync(`${dir}/${p}`));
  if (present.length === 0) return;
  step(
    `Hide what tells of the host's memory, keys, timers, firmware or hardware: ${present.map((p) => `${dir}/${p}`).join(" ")}`,
  );
  for (const p of present) {
    const at = `${mountedAt}/${p}`;
    if (statSync(`${dir}/${p}`).isDirectory()) host.mount("-t", "tmpfs", "-o", "ro,nosuid,nodev,noexec", "tmpfs", at);
    else host.bindMount("/dev/null", at);
  }
}

function prepareSys(): void {
  if (nopriv) return;
  const sys = mountpoint("/sys", "dir");
  if (!sys) return;
  step("The host's /sys, read-only");
  host.bindMountReadonly("/sys", sys, ",nosuid,nodev,noexec");
  mask("/sys", sys);
  if (settings.MINC_MNT_DEBUGFS) {
    step(
      `Mount debugfs (--debugfs)${confinement.filtered ? ": the kernel's internals, readable by root inside (asked for)" : ""}`,
    );
    host.mount("-t", "debugfs", "debugfs", `${sys}/kernel/debug`);
  }
}

function prepareTmp(): void {
  const tmp = mountpoint("/tmp", "dir");
  if (!tmp) return;
  step("/tmp is the application's scratch space: a tmpfs");
  host.mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "tmpfs", tmp);
}

function userBinds(): void {
  const binds = settings.MINC_RWBIND;
  if (binds.length === 0) return;
  step("Bind the user's directories and files (-b)");
  for (const bind of binds) {
    const colon = bind.indexOf(":");
    const source = colon < 0 ? bind : bind.slice(0, colon);
    const inside = colon < 0 ? source : bind.slice(colon + 1);
    if (!existsSync(source)) throw usageError(`bind source ${source}: no such file or directory`);
    const at = mountpoint(inside, statSync(source).isDirectory() ? "dir" : "file");
    if (!at) throw usageError(`bind target ${inside} does not exist in the rootdir (direct mode does not create it)`);
    host.bindMount(source, at);
  }
}

/** --qemu, --um: the rest of the boot happens inside the guest, which minc-moult boots on this root. */
function moultIntoVm(command: string[]): never {
  userBinds();
  step("Hand over to minc-moult, which boots a virtual machine on this root (the guest's minc does the rest)");
  return host.exec([backend("minc-moult"), ...command]);
}

function diveIn(command: string[]): never {
  step("Hand over to minc-leash, which dives into the new root");
  return host.exec([backend("minc-leash"), rootdir, ...command]);
}

function boot(command: string[]): void {
  phase(4);
  recordPid();
  setHostname();
  mountsStayInside();
  mountRoot();
  // One sh runs these mounts, in this order, rather than one spawn from Node each.
  host.together(() => {
    bindResolvers();
    bindCrossQemu();
    if (settings.MINC_QEMU) return; // the guest's own minc makes the rest, inside the VM
    hideMtab();
    prepareDev();
    prepareProc();
    prepareSys();
    prepareTmp();
  });
  if (settings.MINC_QEMU) moultIntoVm(command);
  userBinds();
  diveIn(command);
}

/** What only minc-core in the new namespaces can do: there, it looks and acts as it goes. */
function refuseWhatNeedsTheInside(): void {
  const inside: [unknown, string][] = [
    [nopriv, "--nopriv maps its ids in a user namespace that does not exist yet"],
    [settings.MINC_QEMU, "a virtual machine boots on the root"],
    [settings.MINC_FTRACE, "--ftrace points ftrace at minc-core's own PID"],
    [settings.MINC_BACKGROUND, "-B gives the container other stdio than minc's"],
  ];
  const why = inside.find(([asked]) => asked);
  if (why) throw new NotWrittenDown(why[1]);
}

/**
 * --write-down SCRIPT: the same boot, each step written down (lib/boot/bootscript.ts).
 * It ends where minc-leash execs the command: the script's last line.
 */
function writeDown(script: string, command: string[]): number | Promise<number> {
  const ahead = writtenDown(script, rootdir, { tracing: tracing(), remake: !direct });
  host = new Host(ahead);
  try {
    refuseWhatNeedsTheInside();
    boot(command);
    throw new MincError("the boot ended without diving into the root");
  } catch (e) {
    if (e instanceof HandedOver) {
      if (e.status !== 0) return e.status; // minc-leash said why
      ahead.finish();
      return 0;
    }
    if (!(e instanceof NotWrittenDown)) throw e;
    ahead.abandon();
    step(`(This boot is not written down ahead: ${e.message}. minc-core boots in the new namespaces itself.)`);
    return NOT_WRITTEN_DOWN;
  } finally {
    ahead.abandon();
  }
}

export function main(args: string[], env: NodeJS.ProcessEnv, given: Host = live): number | void | Promise<number> {
  settings = readSettings(env);
  tmpdir = settings.MINC_TMPDIR;
  basedir = settings.MINC_BASEDIR;
  direct = settings.MINC_DIRECT;
  nopriv = settings.MINC_NOPRIV;
  files = workdirPaths(tmpdir);
  rootdir = files.root;
  confinement = mincConfinement(settings);
  host = given;
  if (!tmpdir || !basedir) throw new MincError("MINC_TMPDIR and MINC_BASEDIR must be set (run minc)");
  if (args[0] === "--write-down") {
    if (!args[1]) throw usageError("usage: minc-core --write-down SCRIPT [COMMAND [ARG...]]");
    return writeDown(args[1], args.slice(2));
  }
  // As PID 1 of its namespace, Node would "handle" INT and TERM (reset the terminal, raise again) and so drop them.
  resetSignals(["SIGINT", "SIGTERM"]);
  boot(args);
}
