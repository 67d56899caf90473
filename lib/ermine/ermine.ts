// Ermine: a container inside a virtual machine of its own, like MINCS's.
//
// What minc-moult (minc --qemu, --um) and ermine-breeder (build, testrun)
// share: the arches a guest can be, where the ermine kernel and initramfs
// live, the guest's init, and how a guest is booted and its exit status
// read back.
//
// The guest runs the host's own programs: besides the shared working
// directory (9p tag "minc", or a hostfs path under user-mode Linux) the
// host's / is shared read-only (9p tag "minchost", or hostfs "/"), and the
// guest's init runs run.sh chrooted there. So Node.js, the project's
// bundles, util-linux and capsh need not be packed into the initramfs, which
// holds only busybox and the modules that reach the shares.
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { constants as os, cpus } from "node:os";
import { basename } from "node:path";
import { GATEWAY } from "../net/dens.ts";
import { MincError, usageError } from "../core/fail.ts";
import { backend, libexecDir } from "../core/libexec.ts";
import { removeOnInterrupt, runStoppable, undoOnInterrupt } from "../core/interrupt.ts";
import { capture, findInPath, run } from "../core/run.ts";
import { readSettings } from "../core/settings.ts";
import { userTerminal } from "../core/terminal.ts";
import { progname, quoteAll, shown, step, tracing } from "../core/trace.ts";
import { workdirPaths, WORKDIR } from "../boot/workdir.ts";

export interface GuestArch {
  /** The kernel's name for the arch, as in vmlinuz.ARCH (MINCS's names). */
  arch: string;
  /** qemu-system-QEMU; undefined for user-mode Linux. */
  qemu?: string;
  /** Machine options for qemu. */
  machine: string[];
  /** The guest's console device, on which run.sh runs. */
  console: string;
  /** qemu can use KVM for it on this host (same arch). */
  kvmCapable: boolean;
  /** At most this many CPUs (MINCS gave 32-bit arm two). */
  maxCpus?: number;
}

/**
 * Every name MINCS's minc-moult took for an arch, normalised to the guest
 * it boots. (MINCS said ttyS0 for ppc64le and s390x; their real consoles
 * are hvc0 and ttysclp0.)
 */
export function guestArch(given: string): GuestArch {
  const host = process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "arm64" : process.arch;
  const a = (
    arch: string,
    qemu: string | undefined,
    machine: string[],
    console: string,
    maxCpus?: number,
  ): GuestArch => ({ arch, qemu, machine, console, kvmCapable: arch === host, maxCpus });
  switch (given) {
    case "x86_64":
    case "amd64":
      return a("x86_64", "x86_64", ["-M", "pc"], "ttyS0");
    case "i386":
    case "i486":
    case "i586":
    case "i686":
      return a("i386", "i386", ["-M", "pc"], "ttyS0");
    case "arm":
    case "armv7l":
    case "armhf":
      return a("arm", "arm", ["-M", "virt"], "ttyAMA0", 2);
    case "arm64":
    case "aarch64":
      return a("arm64", "aarch64", ["-M", "virt,gic-version=3", "-cpu", "cortex-a57"], "ttyAMA0");
    case "ppc64le":
    case "ppc64":
    case "ppc64el":
    case "powerpc64le":
    case "powerpc":
      return a("powerpc", "ppc64", ["-M", "pseries", "-cpu", "POWER8"], "hvc0");
    case "riscv64":
    case "riscv":
      return a("riscv", "riscv64", ["-M", "virt", "-cpu", "rv64"], "ttyS0");
    case "s390x":
    case "s390":
      return a("s390", "s390x", ["-M", "s390-ccw-virtio", "-cpu", "max,zpci=on"], "ttysclp0");
    case "um":
    case "uml":
      return a("um", undefined, [], "tty1");
    default:
      throw usageError(`${given}: not an arch ermine knows (x86_64, i386, arm, arm64, ppc64le, riscv64, s390x, um)`);
  }
}

/** The host's arch by MINCS's names. */
export function hostGuestArch(): string {
  return guestArch(process.arch === "x64" ? "x86_64" : process.arch).arch;
}

/** Where the kernels and initramfses are: $MINC_ERMINE_DIR, else libexec/ermine. */
export function ermineDir(given = readSettings().MINC_ERMINE_DIR): string {
  return given || `${libexecDir()}/ermine`;
}

export function kernelOf(dir: string, arch: string): string {
  return `${dir}/vmlinuz.${arch}`;
}

export function initramfsOf(dir: string, arch: string): string {
  return `${dir}/initramfs.${arch}`;
}

/** Modules of Debian's kernel that reach a 9p share over virtio, in the order they load. */
export const GUEST_MODULES = [
  "virtio_ring",
  "virtio",
  "virtio_pci_modern_dev",
  "virtio_pci_legacy_dev",
  "virtio_pci",
  "9pnet",
  "9pnet_virtio",
  "netfs",
  "fscache",
  "9p",
];

/**
 * The virtio network card's modules, for testrun --net: packed when the
 * kernel has them as modules (a kernel with them built in needs none).
 */
export const GUEST_NET_MODULES = ["failover", "net_failover", "virtio_net"];

/** Where the guest mounts the working directory, seen from the host's root it chroots into. */
export const GUEST_SHARE = "/run/minc";

/** The working directory's files as the guest's init sees them, and as run.sh does (chrooted into /host). */
const SHARED = workdirPaths(`/host${GUEST_SHARE}`);
const CHROOTED = workdirPaths(GUEST_SHARE);

/** PATH inside the guest, for run.sh (the host's programs). */
const GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The guest's PID 1, /init of the initramfs (busybox sh). */
export function guestInit(): string {
  return `#!/bin/busybox sh
# PID 1 of an ermine guest, put into the initramfs by ermine-breeder.
# It mounts the host's / read-only at /host and the container's working
# directory at /host${GUEST_SHARE} (9p over virtio, or hostfs under user-mode
# Linux when the kernel command line names minc.share=PATH), runs run.sh from
# there chrooted into the host's / with the console minc.console= as its
# terminal, leaves run.sh's exit status in ${WORKDIR.exitCode.name}, and powers off.
# Without a run.sh it offers a shell on the console instead. An ip= on the
# kernel command line, in the kernel's static form
# (ip=ADDRESS::GATEWAY:NETMASK::DEVICE:...), configures that interface.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
console=console share= netconf=
for word in $(cat /proc/cmdline); do
  case $word in
    minc.console=*) console=\${word#*=} ;;
    minc.share=*) share=\${word#*=} ;;
    ip=*) netconf=\${word#ip=} ;;
  esac
done
# init keeps no console open (see on_console); its own output goes to the
# kernel log, its failures to the console too.
exec </dev/null >/dev/kmsg 2>&1
fail() { echo "ermine: $*"; echo "ermine: $*" >/dev/$console; }
# Run a command in a session of its own with the console as its terminal.
# When that session ends the kernel hangs the console up and drops what is
# not sent yet; so the session closes the console first, as the last one
# holding it, and that close waits until all output has gone out.
on_console() {
  setsid -c sh -c '"$@"; status=$?; exec </dev/null >/dev/null 2>&1; exit $status' on_console "$@" <>/dev/$console >&0 2>&0
}
for m in ${[...GUEST_MODULES, ...GUEST_NET_MODULES].join(" ")}; do
  [ ! -f /lib/modules/$m.ko ] || insmod /lib/modules/$m.ko || fail "cannot load $m"
done
ifconfig lo 127.0.0.1 up
if [ -n "$netconf" ]; then
  IFS=: read -r addr server gw mask name dev rest <<END
$netconf
END
  dev=\${dev:-eth0}
  case $addr in
    off|none|"") ;;
    *.*.*.*)
      if [ ! -e /sys/class/net/$dev ]; then
        fail "ip=$netconf: no network device $dev (is virtio_net in the initramfs? ermine-breeder build --repack)"
      elif ifconfig $dev $addr netmask \${mask:-255.255.255.0} up; then
        [ -z "$gw" ] || route add default gw $gw || fail "cannot add the default route via $gw"
      else
        fail "cannot give $dev the address $addr"
      fi ;;
    *) fail "ip=$netconf: only the static form ADDRESS::GATEWAY:NETMASK::DEVICE is supported here" ;;
  esac
fi
nine=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /host
if [ -n "$share" ]; then
  mount -t hostfs -o ro,/ hostfs /host || fail "cannot mount the host's / (hostfs)"
else
  mount -t 9p -o ro,$nine,cache=loose minchost /host || fail "cannot mount the host's / (9p minchost)"
fi
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /host/dev/pts
# Writable: /run (the guest minc's working dirs, the share's mountpoint) and /dev/shm.
# Not /tmp: the host's /tmp may hold minc itself or its rootfs, which the guest must see.
for d in /host/run /host/dev/shm; do mount -t tmpfs -o mode=1777 tmpfs $d; done
mkdir -p /host${GUEST_SHARE}
if [ -n "$share" ]; then
  mount -t hostfs -o "$share" hostfs /host${GUEST_SHARE} || fail "cannot mount the shared directory $share (hostfs)"
else
  mount -t 9p -o $nine,cache=none minc /host${GUEST_SHARE} || fail "cannot mount the shared directory (9p minc)"
fi
if [ -f ${SHARED.runScript} ]; then
  on_console chroot /host /usr/bin/env PATH=${GUEST_PATH} HOME=/root /bin/sh ${CHROOTED.runScript}
  echo $? >${SHARED.exitCode}
else
  echo "=== ermine console: no run.sh in the shared directory; exit to power off ===" >/dev/$console
  on_console sh
fi
sync
umount /host${GUEST_SHARE}
poweroff -f
`;
}

export interface BootOptions {
  /** The directory shared with the guest read-write; its run.sh runs there. */
  share: string;
  /** Kill the guest after this many seconds (0: never). */
  timeoutSeconds: number;
  /** Run the guest in a PID namespace of its own, so that nothing of it outlives it (not needed inside minc's). */
  ownPidNamespace: boolean;
  /** Words added to the kernel command line (testrun --cmdline). */
  cmdline?: string[];
  /** A network card on the dens network (testrun --net): see plugGuest. */
  net?: GuestNet;
  /** More options for qemu, after ours (testrun's trailing arguments). */
  qemuOptions?: string[];
}

function ensureReadable(path: string, fix: string): void {
  try {
    accessSync(path, constants.R_OK);
  } catch {
    throw new MincError(`${path}: missing; ${fix}`);
  }
}

/** Check the kernel, the initramfs and the emulator are there, with what to do if not. */
export function checkGuest(guest: GuestArch, dir: string): void {
  const build = `run: ermine-breeder build --arch ${guest.arch}`;
  ensureReadable(kernelOf(dir, guest.arch), build);
  ensureReadable(initramfsOf(dir, guest.arch), build);
  if (guest.qemu && !findInPath(`qemu-system-${guest.qemu}`)) {
    throw new MincError(`qemu-system-${guest.qemu}: not found (apt-get install qemu-system)`);
  }
}

/**
 * KVM where it can boot a kernel, else TCG. MINC_QEMU_ACCEL=kvm or tcg
 * decides without asking. Otherwise a /dev/kvm that opens is probed once:
 * the kernel must print its banner within a few seconds (a paravirtual KVM
 * can hang in the decompressor for ever). The answer is kept in
 * /run/minc-kvm-probe until the host reboots.
 */
export function chooseAccel(guest: GuestArch, kernel: string): "kvm" | "tcg" {
  const given = readSettings().MINC_QEMU_ACCEL;
  if (given === "kvm" || given === "tcg") return given;
  if (given) throw usageError(`MINC_QEMU_ACCEL=${given}: kvm or tcg`);
  if (!guest.kvmCapable) return "tcg";
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
  } catch {
    notice("no usable /dev/kvm: using TCG (slower)");
    return "tcg";
  }
  const cache = "/run/minc-kvm-probe";
  let answer = existsSync(cache) ? readFileSync(cache, "utf8").trim() : "";
  if (answer !== "kvm" && answer !== "tcg") {
    answer = probeKvm(guest, kernel) ? "kvm" : "tcg";
    try {
      writeFileSync(cache, `${answer}\n`);
    } catch {
      /* a read-only /run: probe again next time */
    }
  }
  if (answer === "tcg")
    notice(
      "KVM cannot boot a kernel on this host (the probe saw no banner): using TCG, which is slower; MINC_QEMU_ACCEL=tcg skips the probe",
    );
  return answer as "kvm" | "tcg";
}

function notice(message: string): void {
  process.stderr.write(`${progname()}: notice: ${message}\n`);
}

const KVM_PROBE_MS = 4000;

/** qemu with no screen, graphics card or monitor: the guest's console is a serial line. */
const HEADLESS = ["-display", "none", "-vga", "none", "-monitor", "none"];

function probeKvm(guest: GuestArch, kernel: string): boolean {
  step(`Probe KVM: does the kernel print its banner within ${KVM_PROBE_MS / 1000} s?`);
  const argv = [
    `qemu-system-${guest.qemu}`,
    ...guest.machine,
    "-accel",
    "kvm",
    "-m",
    "256",
    ...HEADLESS,
    "-serial",
    "stdio",
    "-no-reboot",
    "-nic",
    "none",
    "-kernel",
    kernel,
    "-append",
    `console=${guest.console} earlyprintk=serial loglevel=8 panic=-1`,
  ];
  shown(`timeout ${KVM_PROBE_MS / 1000} ${quoteAll(argv)} | grep -q 'Linux version'`);
  const r = spawnSync(argv[0], argv.slice(1), {
    stdio: ["ignore", "pipe", "ignore"],
    encoding: "utf8",
    timeout: KVM_PROBE_MS,
    killSignal: "SIGKILL",
  });
  return /Linux version/.test(r.stdout ?? "");
}

/** "rows cols" of the user's terminal, if there is one. */
export function terminalSize(): [number, number] | undefined {
  const tty = userTerminal();
  if (!tty) return undefined;
  const r = spawnSync("stty", ["-F", tty, "size"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  const m = /^(\d+) (\d+)/.exec(r.stdout ?? "");
  return m && Number(m[1]) > 0 ? [Number(m[1]), Number(m[2])] : undefined;
}

/** The kernel command line: quiet, kernel messages away from the console run.sh uses, unless tracing. */
function kernelCommandLine(guest: GuestArch, extra: string[], opts: BootOptions): string[] {
  const kernelConsole = guest.qemu ? (guest.machine.includes("pc") ? "ttyS1" : guest.console) : "tty0";
  const log = tracing() ? [`console=${kernelConsole}`, "loglevel=7"] : ["console=tty0", "quiet", "loglevel=1"];
  // (In the kernel's own ip= syntax, which the guest's init reads: Debian's kernel has no IP_PNP to do it.)
  const net = opts.net ? [`ip=${opts.net.ip}::${GATEWAY}:255.255.255.0::eth0:off`] : [];
  return [
    "rdinit=/init",
    "panic=-1",
    `minc.console=${guest.console}`,
    ...log,
    ...extra,
    ...net,
    ...(opts.cmdline ?? []),
  ];
}

function qemuArgv(guest: GuestArch, dir: string, opts: BootOptions): string[] {
  const share = opts.share;
  const kernel = kernelOf(dir, guest.arch);
  const accel = chooseAccel(guest, kernel);
  const cpus = Math.min(availableCpus(), guest.maxCpus ?? Infinity);
  // The console on stdio without qemu's monitor or signals: ^C goes to the guest as in MINCS.
  const stdio = ["-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"];
  // With --debug on a pc, kernel messages go to a second serial port, shown on stderr.
  const klog =
    tracing() && guest.machine.includes("pc")
      ? ["-chardev", "file,id=klog,path=/dev/stderr", "-serial", "chardev:klog"]
      : [];
  const nic = opts.net
    ? [
        "-netdev",
        `tap,id=net0,ifname=${opts.net.tap},script=no,downscript=no`,
        "-device",
        `virtio-net-pci,netdev=net0,mac=${opts.net.mac}`,
      ]
    : ["-nic", "none"];
  return [
    `qemu-system-${guest.qemu}`,
    ...guest.machine,
    "-accel",
    accel,
    "-smp",
    String(cpus),
    "-m",
    "512",
    ...HEADLESS,
    ...stdio,
    ...klog,
    "-no-reboot",
    ...nic,
    "-device",
    "virtio-rng-pci",
    "-kernel",
    kernel,
    "-initrd",
    initramfsOf(dir, guest.arch),
    "-append",
    kernelCommandLine(guest, [], opts).join(" "),
    "-virtfs",
    `local,id=minc,path=${share},security_model=none,mount_tag=minc,multidevs=remap`,
    "-virtfs",
    "local,id=minchost,path=/,security_model=none,mount_tag=minchost,multidevs=remap,readonly=on",
    ...(opts.qemuOptions ?? []),
  ];
}

function availableCpus(): number {
  return Math.max(1, cpus().length);
}

/**
 * User-mode Linux: its console 1 is our stdin and a copy of our stdout
 * (fd 3); the kernel's own console and UML's early messages go nowhere, or
 * to stderr when tracing. Its run directory (umid) is in the shared dir.
 */
function umArgv(guest: GuestArch, dir: string, opts: BootOptions): string[] {
  const share = opts.share;
  if (/[\s,]/.test(share))
    throw usageError(`${share}: a shared directory with blanks or commas cannot be a hostfs path`);
  return [
    kernelOf(dir, guest.arch),
    "mem=512M",
    `initrd=${initramfsOf(dir, guest.arch)}`,
    `umid=ermine-${basename(share)}`,
    `uml_dir=${workdirPaths(share).umlDir}`,
    tracing() ? "con0=null,fd:2" : "con0=null",
    "con1=fd:0,fd:3",
    "con=null",
    "ssl=null",
    ...(opts.net ? [`eth0=tuntap,${opts.net.tap},${opts.net.mac}`] : []),
    ...kernelCommandLine(guest, [`minc.share=${share}`], opts),
  ];
}

/**
 * Boot the guest with share as its working directory; return run.sh's exit
 * status. A guest that ends without one (crash, panic) or outlives the
 * timeout is an error. Interrupted (INT, TERM, HUP), we stop the guest and
 * end by that signal, leaving nothing (lib/core/interrupt.ts).
 */
export async function bootGuest(guest: GuestArch, dir: string, opts: BootOptions): Promise<number> {
  const exitFile = workdirPaths(opts.share).exitCode;
  rmSync(exitFile, { force: true });
  let argv = guest.qemu ? qemuArgv(guest, dir, opts) : umArgv(guest, dir, opts);
  if (opts.ownPidNamespace) {
    step("In a PID namespace of its own, so no helper of the guest outlives it");
    argv = ["unshare", "--pid", "--fork", "--kill-child", ...argv];
  }
  if (opts.net) {
    step(`In the network namespace ${opts.net.netns}, where the other end of its network card, ${opts.net.tap}, is`);
    argv = ["ip", "netns", "exec", opts.net.netns, ...argv];
  }
  step(
    guest.qemu
      ? `Boot qemu (${guest.arch}): the working directory is 9p tag minc, the host's / tag minchost (read-only)`
      : "Boot user-mode Linux: the working directory and the host's / (read-only) through hostfs",
  );
  if (opts.timeoutSeconds > 0) step(`(killed after ${opts.timeoutSeconds} s)`);
  // UML writes early messages on its stdout: the console gets a copy of ours as fd 3 instead.
  const umStdout = tracing() ? 2 : "ignore";
  const stdio = guest.qemu ? ["inherit", "inherit", "inherit"] : ["inherit", umStdout, "inherit", 1];
  shown(guest.qemu ? quoteAll(argv) : `${quoteAll(argv)} 3>&1 >${tracing() ? "&2" : "/dev/null"}`);
  const umlDir = workdirPaths(opts.share).umlDir;
  if (!guest.qemu) removeOnInterrupt(umlDir);
  const started = Date.now();
  // SIGKILL, whatever the signal: unshare --fork ignores INT and TERM (its
  // --kill-child then kills the guest), and UML, in a process group of its
  // own, would miss a group's signal.
  const timeout = opts.timeoutSeconds > 0 ? opts.timeoutSeconds * 1000 : undefined;
  const code = await runStoppable(
    argv,
    { stdio: stdio as ("inherit" | "ignore" | number)[], timeout, killSignal: "SIGKILL" },
    (_sig, child) => child.kill("SIGKILL"),
  );
  const timedOut = timeout !== undefined && code === 128 + os.signals.SIGKILL && Date.now() - started >= timeout;
  step(`(the guest ran ${((Date.now() - started) / 1000).toFixed(1)} s)`);
  if (!guest.qemu) rmSync(umlDir, { recursive: true, force: true });
  if (timedOut) throw new MincError(`the virtual machine did not finish within ${opts.timeoutSeconds} s: killed`);
  const status = existsSync(exitFile) ? readFileSync(exitFile, "utf8").trim() : "";
  if (!/^\d+$/.test(status)) {
    const how = code > 128 ? `killed by signal ${code - 128}` : `exit ${code}`;
    throw new MincError(
      `the virtual machine ended (${how}) without the command's exit status: it crashed or could not start run.sh`,
    );
  }
  return Number(status);
}

/** A guest's place on the dens network (testrun --net). */
export interface GuestNet {
  /** A network namespace of its own, plugged into the bridge by minc-dens (also the id of its lease). */
  netns: string;
  /** Its address, leased by minc-dens; the guest's init gives it to eth0 (ip= on the kernel command line). */
  ip: string;
  /** The tap device in the netns that the VM's network card is. */
  tap: string;
  mac: string;
}

/**
 * Plug a guest into the dens network as minc --net dens plugs a container:
 * a network namespace of its own, plugged into the bridge by minc-dens (a
 * veth pair with eth0 inside, a leased address, NAT). Inside it a bridge
 * joins that eth0 and a tap device, the VM's network card, and the address
 * moves from eth0 to the guest. The VM runs in the netns. unplug (called
 * by an interruption too) removes it all.
 */
export function plugGuest(netns: string): { net: GuestNet; unplug: () => void } {
  const dens = backend("minc-dens");
  const undo = (): void => {
    step(`Unplug the guest: its lease, veth and rules (minc-dens del), then ${netns} with its bridge and tap`);
    let failure: unknown;
    for (const part of [() => run([dens, "del", netns, netns]), () => run(["ip", "netns", "del", netns])]) {
      try {
        part();
      } catch (e) {
        failure ??= e;
      }
    }
    if (failure) throw failure;
  };
  step(`Plug the guest into the dens network: a network namespace ${netns} of its own, plugged in by minc-dens`);
  run(["ip", "netns", "add", netns]);
  const forget = undoOnInterrupt(undo);
  const unplug = (): void => {
    forget();
    undo();
  };
  try {
    const ip = capture([dens, "add", netns, netns]).trim();
    const tap = "tap0";
    step(`In ${netns}: a bridge joins eth0 and the VM's tap device ${tap}, and the address ${ip} goes to the guest`);
    const ipn = (...args: string[]): void => run(["ip", "-n", netns, ...args]);
    ipn("addr", "flush", "dev", "eth0");
    ipn("link", "add", "br0", "type", "bridge");
    ipn("link", "set", "eth0", "master", "br0");
    // The host's end is in hairpin mode (for port maps): it sends the guest's broadcasts back, and
    // a bridge learning from them would put the guest's address behind eth0, and drop its replies.
    ipn("link", "set", "eth0", "type", "bridge_slave", "learning", "off");
    ipn("tuntap", "add", "dev", tap, "mode", "tap");
    ipn("link", "set", tap, "master", "br0", "up");
    ipn("link", "set", "br0", "up");
    // One MAC address per lease: guests on the one bridge must not all have qemu's default.
    const mac = `52:54:00:8b:00:${Number(ip.split(".")[3]).toString(16).padStart(2, "0")}`;
    return { net: { netns, ip, tap, mac }, unplug };
  } catch (e) {
    try {
      unplug();
    } catch {
      // (it said why; the first failure is the one to report)
    }
    throw e;
  }
}
