// minc-core: phase 4 of the boot, "prepare the new root".
//
// Runs as PID 1 of the new namespaces. Records its PID as the host sees it,
// names the container, mounts the layered root with minc-coat, and builds
// the root's /dev, /proc, /sys and /tmp and the user's binds, then execs
// minc-leash to dive in. Everything mounted here lives in the container's
// private mount namespace and disappears with it.
import { existsSync, lstatSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { basename, dirname } from "node:path";
import { MincError, main, usageError } from "../lib/fail.ts";
import { backend } from "../lib/libexec.ts";
import { resolveInRoot } from "../lib/paths.ts";
import { bindMount, bindMountReadonly, exec, exportVar, mkdirs, mount, mountsTogether, removeFile, removeTree, run, runTogether, symlink, touch, writeFile } from "../lib/run.ts";
import { userTerminal } from "../lib/terminal.ts";
import { phase, step } from "../lib/trace.ts";

const env = process.env;
const tmpdir = env.MINC_TMPDIR ?? "";
const basedir = env.MINC_BASEDIR ?? "";
const direct = !!env.MINC_DIRECT;
const nopriv = !!env.MINC_NOPRIV;
const rootdir = `${tmpdir}/root`;

function recordPid(): void {
  step("Record our PID as the host sees it: /proc is still the host's, so /proc/self tells it (here we are PID 1)");
  const pid = readlinkSync("/proc/self");
  exportVar("MINC_PID", pid);
  writeFile(`${tmpdir}/pid`, `${pid}\n`);
}

function setHostname(): void {
  let name = env.MINC_UTSNAME;
  if (name) {
    step("Name the container (this UTS namespace is ours alone)");
    writeFile(`${tmpdir}/utsname`, `${name}\n`);
  } else if (existsSync(`${tmpdir}/utsname`)) {
    step("Name the container as it was named before");
    name = readFileSync(`${tmpdir}/utsname`, "utf8").trim();
  }
  if (!name) return;
  // /proc/sys belongs to the host's root; in a user namespace only the syscall (hostname(1)) may name ours.
  if (nopriv) run(["hostname", name]);
  else writeFile("/proc/sys/kernel/hostname", `${name}\n`);
}

function mountsStayInside(): void {
  step("(Every mount is private already, so nothing mounted here shows on the host: unshare --propagation private did it)");
  step("Keep mount(8) from writing /etc/mtab");
  exportVar("LIBMOUNT_MTAB", "/proc/mounts");
}

function mountRoot(): void {
  step("Mount the container's root with minc-coat");
  run([backend("minc-coat"), "bind", tmpdir, basedir]);
}

/**
 * A mountpoint inside the new root, resolved as the container will see it.
 * Missing ones are made in the upper layer; in direct mode minc never
 * writes into the rootdir, so a missing mountpoint is skipped instead.
 */
function mountpoint(path: string, kind: "dir" | "file"): string | undefined {
  const at = resolvedOrReplaced(path);
  if (at === undefined) return undefined;
  if (existsSync(at)) return at;
  if (direct) {
    step(`(${path} does not exist in the rootdir and direct mode does not create it: skipped)`);
    return undefined;
  }
  try {
    if (kind === "dir") mkdirs(at);
    else {
      if (!existsSync(dirname(at))) mkdirs(dirname(at));
      touch(at);
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
  removeFile(at);
  return at;
}

function bindResolvers(): void {
  step("Give the container its own /etc/resolv.conf and /etc/hosts");
  for (const name of ["resolv.conf", "hosts"]) {
    const at = mountpoint(`/etc/${name}`, "file");
    if (at) bindMount(`${tmpdir}/${name}`, at);
  }
}

/** --cross: the kernel runs qemu-user for each foreign binary, by this path, inside the root too. */
function bindCrossQemu(): void {
  const qemu = env.MINC_CROSS_QEMU;
  if (!qemu) return;
  step(`Bind qemu-user (${qemu}) into the new root at the same path, for the ${env.MINC_ARCH} binaries`);
  const at = mountpoint(qemu, "file");
  if (at) bindMount(qemu, at);
}

function hideMtab(): void {
  if (direct) return;
  const mtab = `${resolveInRoot(rootdir, "/etc")}/mtab`;
  let stat;
  try { stat = lstatSync(mtab); } catch { return; }
  if (stat.isSymbolicLink()) return;
  step("Show the container's own mounts as /etc/mtab");
  removeFile(mtab);
  symlink("/proc/mounts", mtab);
}

const DEVICES = ["null", "zero", "full", "random", "urandom", "tty"];

function prepareDev(): void {
  const dev = mountpoint("/dev", "dir");
  if (!dev) return;
  if (env.MINC_USE_DEV) {
    step("Use devtmpfs for /dev (--usedev): the host's device nodes");
    mount("-t", "devtmpfs", "devtmpfs", dev);
    return;
  }
  freshDev(dev);
  mkdirs(`${dev}/pts`);
  const tty = userTerminal();
  if (tty) {
    step("Bind the user's terminal as the container's /dev/console");
    touch(`${dev}/console`);
    bindMount(tty, `${dev}/console`);
  } else {
    step("(No terminal on stdin, stdout or stderr: no /dev/console)");
  }
  step("A new devpts instance, so the host's ptys stay hidden");
  // gid 5 (tty) may not exist in a user namespace that maps only root.
  const ttyGroup = nopriv && !ttyGroupMapped() ? "" : ",gid=5";
  mount("-t", "devpts", "-o", `newinstance,ptmxmode=0666,mode=0620${ttyGroup},nosuid,noexec`, "devpts", `${dev}/pts`);
  symlink("pts/ptmx", `${dev}/ptmx`);
  fundamentalDevices(dev);
  symlink("/proc/self/fd", `${dev}/fd`);
  ["stdin", "stdout", "stderr"].forEach((name, fd) => symlink(`/proc/self/fd/${fd}`, `${dev}/${name}`));
  step("POSIX message queues and shared memory of the container's own IPC namespace");
  mkdirs(`${dev}/mqueue`, `${dev}/shm`);
  mount("-t", "mqueue", "-o", "nosuid,nodev,noexec", "mqueue", `${dev}/mqueue`);
  mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "shm", `${dev}/shm`);
}

/**
 * null, zero, full, random, urandom, tty. cp -a copies a device node as a
 * node: one cp makes them all, where MINCS bound each (a mount each). In a
 * user namespace (--nopriv) no device node may be made: bind them there.
 */
function fundamentalDevices(dev: string): void {
  const present = DEVICES.filter((d) => existsSync(`/dev/${d}`));
  if (!nopriv) {
    step("Make the fundamental device nodes, as the host's");
    runTogether(["cp", "-a", ...present.map((d) => `/dev/${d}`), `${dev}/`]);
    return;
  }
  step("Bind the fundamental device files (a user namespace may not make device nodes)");
  for (const d of present) {
    touch(`${dev}/${d}`);
    bindMount(`/dev/${d}`, `${dev}/${d}`);
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
    mount("-t", "tmpfs", "-o", "nosuid,mode=0755", "tmpfs", dev);
    return;
  }
  step("Make a fresh /dev, with only the harmless devices: --nopriv binds a directory of the working dir (devices do not open on a tmpfs of a user namespace)");
  const dir = `${tmpdir}/dev`;
  removeTree(dir); // from a last run with this working dir, if any
  mkdirs(dir);
  bindMount(dir, dev);
}

function ttyGroupMapped(): boolean {
  return readFileSync("/proc/self/gid_map", "utf8").split("\n").some((l) => {
    const [inside, , count] = l.trim().split(/\s+/).map(Number);
    return inside <= 5 && 5 < inside + count;
  });
}

const PROC_READONLY = ["sys", "sysrq-trigger", "irq", "bus"];

function prepareProc(): void {
  const proc = mountpoint("/proc", "dir");
  if (!proc) return;
  step("A fresh /proc that shows only the container's processes");
  mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", proc);
  step("Its parts that reach into the host's kernel are read-only");
  for (const p of PROC_READONLY) {
    // (the host's /proc tells what the new one, not mounted yet, will have: the same kernel)
    if (existsSync(`/proc/${p}`)) bindMountReadonly(`${proc}/${p}`, `${proc}/${p}`, ",nosuid,nodev,noexec");
  }
}

function prepareSys(): void {
  if (env.MINC_NOPRIV) return;
  const sys = mountpoint("/sys", "dir");
  if (!sys) return;
  step("The host's /sys, read-only");
  bindMountReadonly("/sys", sys, ",nosuid,nodev,noexec");
  if (env.MINC_MNT_DEBUGFS) {
    step("Mount debugfs (--debugfs)");
    mount("-t", "debugfs", "debugfs", `${sys}/kernel/debug`);
  }
}

function prepareTmp(): void {
  const tmp = mountpoint("/tmp", "dir");
  if (!tmp) return;
  step("/tmp is the application's scratch space: a tmpfs");
  mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "tmpfs", tmp);
}

function userBinds(): void {
  const binds = (env.MINC_RWBIND ?? "").split(/\s+/).filter((b) => b !== "");
  if (binds.length === 0) return;
  step("Bind the user's directories and files (-b)");
  for (const bind of binds) {
    const colon = bind.indexOf(":");
    const host = colon < 0 ? bind : bind.slice(0, colon);
    const inside = colon < 0 ? host : bind.slice(colon + 1);
    if (!existsSync(host)) throw usageError(`bind source ${host}: no such file or directory`);
    const at = mountpoint(inside, statSync(host).isDirectory() ? "dir" : "file");
    if (!at) throw usageError(`bind target ${inside} does not exist in the rootdir (direct mode does not create it)`);
    bindMount(host, at);
  }
}

/** --qemu, --um: the rest of the boot happens inside the guest, which minc-moult boots on this root. */
function moultIntoVm(command: string[]): never {
  userBinds();
  step("Hand over to minc-moult, which boots a virtual machine on this root (the guest's minc does the rest)");
  return exec([backend("minc-moult"), ...command]);
}

function diveIn(command: string[]): never {
  step("Hand over to minc-leash, which dives into the new root");
  return exec([backend("minc-leash"), rootdir, ...command]);
}

main(() => {
  phase(4);
  if (!tmpdir || !basedir) throw new MincError("MINC_TMPDIR and MINC_BASEDIR must be set (run minc)");
  recordPid();
  setHostname();
  mountsStayInside();
  mountRoot();
  // One sh runs these mounts, in this order, rather than one spawn from Node each.
  mountsTogether(() => {
    bindResolvers();
    bindCrossQemu();
    if (env.MINC_QEMU) return; // the guest's own minc makes the rest, inside the VM
    hideMtab();
    prepareDev();
    prepareProc();
    prepareSys();
    prepareTmp();
  });
  if (env.MINC_QEMU) moultIntoVm(process.argv.slice(2));
  userBinds();
  diveIn(process.argv.slice(2));
});
