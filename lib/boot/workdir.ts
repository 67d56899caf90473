// A container's working directory (MINC_TMPDIR): what is in it, who writes
// and reads each part, and the hand-offs made through it. As crun's
// status.c owns its state directory, this module owns the layout: every
// name below is spelled here alone (WORKDIR), and every path is built by
// workdirPaths(). The sh that acts on the directory (the waiter, its guard
// and watcher: libexec/minc-waiter.sh and the parts it sources) names the
// same files through the variables that libexec/minc-waiter-common.sh sets
// in one place, workdir_files. test/workdir-layout.test.ts checks that both
// spell the same names, and that no other TypeScript joins one onto a
// directory.
//
// The directory is minc's mktemp -d (MINC_TMPDIR=${XDG_RUNTIME_DIR:-/var/run}/
// minc$$-XXXXXX), one given with -t, or a container of the store
// ($MINCS_DIR/containers/<id>, lib/store/farm.ts); polecat and minc-trapper make
// their own for the containers they run.
//
// Who is in charge of it, from the start of minc to the end of the cleanup:
//
//   minc (Node, phase 1)  --starts-->  guard (sh minc-waiter.sh --guard MINC_PID [tied])
//     |  "made TEMPLATE\n", "dir TMPDIR\n" on the guard's stdin (a pipe)
//   minc-exec (phases 2, 3, in minc's Node)
//     |  exec (or, -B, spawn)
//   waiter (sh minc-waiter.sh TMPDIR COMMAND...)  writes TMPDIR/waiter: in charge
//     |  (-B: it starts its watcher, sh minc-waiter.sh --watch TMPDIR WAITER_PID)
//   the container's init writes TMPDIR/pid
//     ...
//   the container ends: the waiter runs TMPDIR/cleanup, last line first
//
// The hand-offs:
//
// - The guard's pipe. minc starts the guard before the directory exists,
//   with a pipe as its stdin, and says on it "made TEMPLATE" just before its
//   mktemp (the name will be TEMPLATE then six characters) and "dir TMPDIR"
//   once it has the directory, made or given. The pipe closes when minc
//   exits or execs its waiter. The guard then waits for the waiter file
//   (handed over) or for minc's PID to be gone (minc died: the guard runs the
//   cleanup chain, and removes a directory minc made before it wrote its
//   chain; told only "made", it removes an empty TEMPLATE?????? that is
//   there). bin/minc.ts startGuard, libexec/minc-waiter-guard.sh.
// - The waiter file (WORKDIR.waiter): the waiter writes its PID there once
//   every trap of its own is set, and is in charge from then on. The guard
//   reads it (made empty, then written: only a non-empty one is a handover)
//   and, for a waiter in the foreground (minc's own PID, its parent), stays
//   until setpriv --pdeathsig tells it the waiter ended; a waiter in the
//   background has a watcher of its own. minc-exec -B returns once the file
//   is there; lib/boot/claim.ts refuses a directory whose waiter still runs.
// - The guard's URG. A container that ends at once may have its waiter
//   write the file, run the chain (which removes it) and exit between two
//   looks of a guard the machine did not schedule: the file alone cannot
//   tell that from minc dying before the handover (the guard would run the
//   chain again and, with -k, remove the kept directory). So once its file
//   is written the waiter also sends the guard a URG, without waiting for
//   it: minc gives the guard's PID to the waiter alone (MINC_GUARD_PID,
//   which minc-exec takes out of the environment of everything else, and
//   the waiter out of the container's). A pending signal is not lost; the
//   guard's trap, set first thing, notes it, and a guard so told that finds
//   no waiter file knows the chain has run.
// - The pid file (WORKDIR.pid): the first step of the boot in the new
//   namespaces (minc-core, or the script it wrote down) writes the
//   container's init as the host sees it. Before it is there, or while that
//   init is still minc-core or its script, the container is booting, and the
//   waiter stops the boot on a signal rather than relay it. The guard and the
//   watcher read it to stop an init a SIGKILLed waiter left untied;
//   lib/boot/container.ts to find the command under a tracer; the store
//   (lib/store/farm.ts) to tell a running container.
// - The lock (WORKDIR.lock, lib/boot/claim.ts): minc through the boot, the guard,
//   the waiter and its watcher hold it shared on fd 9, to the end of the
//   cleanup; another minc that wants the directory takes it exclusive for a
//   moment first, and so refuses it while any of them holds it. minc makes
//   the file: with the directory, or in its claim of one given (-t, the
//   store). The guard, the waiter and the watcher only open it, so that a
//   guard told the directory late never makes it again in one that a
//   failing minc is removing.
// - The cleanup chain (WORKDIR.cleanup, lib/boot/cleanup.ts): what undoes the
//   boot, one line each, written before what it undoes is made; minc's own
//   trap (remove the directory, or say how to reuse it) is its first line.
//   The waiter runs it last line first when the container ends; before the
//   handover minc-exec runs it on a failure (minc-waiter.sh --cleanup), the
//   guard when minc died; the guard or the watcher when the waiter was
//   SIGKILLed. The run removes the chain (and, with -k and -t, the waiter and
//   pid files): a chain that is gone has run, and is not run twice.
//
// A reused directory (-t, a container of the store) keeps what it had: minc
// forgets the chain and the waiter file of the last run once it has claimed
// it, minc-exec its pid file.

export interface WorkdirEntry {
  /** The file's name in the directory; at its end, {N} (a number from 1) or {PID} (a process id) stands for what completes it. */
  readonly name: string;
  readonly kind: "dir" | "file" | "fifo";
  readonly writes: string;
  readonly reads: string;
  readonly goes: string;
}

/** Everything minc and its backends put in a working directory. */
export const WORKDIR = {
  root: {
    name: "root",
    kind: "dir",
    writes:
      "minc-coat bind mounts the container's root on it, the overlay (or, direct, the rootdir itself); minc-farm makes it for a container of the store",
    reads:
      "minc-core and minc-leash boot the container in it; minc-trapper looks at the view; minc-farm rm unmounts it",
    goes: "unmounted with the container's mount namespace; the directory with the working dir",
  },
  storage: {
    name: "storage",
    kind: "dir",
    writes: "minc-coat makes it: the overlay's upper layer, what the container writes",
    reads: "marten commit (minc-farm), minc-trapper and polecat take an image from it",
    goes: "with the working dir (kept with -k, -t and in the store)",
  },
  work: {
    name: "work",
    kind: "dir",
    writes: "minc-coat makes it: overlayfs's scratch directory",
    reads: "overlayfs",
    goes: "with the working dir",
  },
  pid: {
    name: "pid",
    kind: "file",
    writes:
      "the first step of the boot in the new namespaces (minc-core, or its script): the container's init, as the host sees it",
    reads:
      "the waiter (relay signals; booting while it is missing), its guard and watcher (an untied init), lib/boot/container.ts, the store (lib/store/farm.ts: running?)",
    goes: "the cleanup chain's run removes it; minc-exec removes a last run's before the boot",
  },
  waiter: {
    name: "waiter",
    kind: "file",
    writes: "the waiter, its PID, once every trap of its own is set: it is in charge",
    reads: "minc's guard (handed over), minc-exec -B (started), lib/boot/claim.ts (a running container)",
    goes: "the cleanup chain's run removes it; minc removes a last run's once it has claimed the directory",
  },
  lock: {
    name: "lock",
    kind: "file",
    writes:
      "minc makes it with the directory, lib/boot/claim.ts in a given one; the guard, the waiter and its watcher open it (never make it) and hold a flock on it (shared, on fd 9)",
    reads: "lib/boot/claim.ts: another minc takes it exclusive for a moment, and is refused while it is held",
    goes: "with the working dir (a lock belongs to the open file: never stale)",
  },
  cleanup: {
    name: "cleanup",
    kind: "file",
    writes:
      "lib/boot/cleanup.ts onExit: minc's trap first, then minc-cage, minc-exec (network, sshfs), each before it makes what the line undoes",
    reads:
      "the waiter, last line first, when the container ends; before the handover minc-exec (--cleanup) or the guard; the guard or watcher after a SIGKILLed waiter",
    goes: "the run removes it (its first line removes the whole directory); minc removes a last run's once it has claimed the directory",
  },
  settings: {
    name: "settings",
    kind: "file",
    writes: "minc-exec: the container's MINC_* settings (env | grep ^MINC_), as the shell MINCS saved them",
    reads: "the user",
    goes: "with the working dir",
  },
  utsname: {
    name: "utsname",
    kind: "file",
    writes: "minc-core (--name); marten rename (minc-farm)",
    reads:
      "minc-core and minc-exec on a reused directory (its hostname, its name in /etc/hosts); the store (a container's name)",
    goes: "with the working dir",
  },
  baseid: {
    name: "baseid",
    kind: "file",
    writes: "minc-farm, for a container of the store: its image's id",
    reads: "minc (the container's image), minc-farm (its layers, marten commit, which images are used)",
    goes: "with the container",
  },
  hosts: {
    name: "hosts",
    kind: "file",
    writes: "minc-exec (phase 3): the container's names",
    reads: "minc-core binds it on the container's /etc/hosts",
    goes: "with the working dir",
  },
  resolvConf: {
    name: "resolv.conf",
    kind: "file",
    writes: "minc-exec (phase 3): the container's resolvers",
    reads: "minc-core binds it on the container's /etc/resolv.conf",
    goes: "with the working dir",
  },
  ipv4: {
    name: "ipv4",
    kind: "file",
    writes: "minc-exec (--net dens): the address the container leased",
    reads: "the user",
    goes: "with the working dir",
  },
  portmap: {
    name: "portmap",
    kind: "file",
    writes: "minc-exec (--net dens -p): the ports mapped to the container",
    reads: "the user",
    goes: "with the working dir",
  },
  sshfs: {
    name: "sshfs",
    kind: "dir",
    writes: "minc-exec (-r sshfs://): the remote rootdir is mounted there",
    reads: "minc-coat, as the lower layer",
    goes: "the cleanup chain unmounts it",
  },
  log: {
    name: "log",
    kind: "file",
    writes: "minc-exec -B: the waiter's (and so the container's) stdout",
    reads: "the user",
    goes: "with the working dir",
  },
  debug: {
    name: "debug",
    kind: "file",
    writes: "minc-exec -B: the waiter's (and so the container's) stderr, with --debug the trace",
    reads: "the user",
    goes: "with the working dir",
  },
  bootScript: {
    name: "minc-core.sh",
    kind: "file",
    writes: "minc-core --write-down (lib/boot/bootscript.ts): the boot of the new root, for sh",
    reads: "minc-fork.sh runs it as PID 1; the waiter: an init running it is still booting",
    goes: "with the working dir (the next run writes it again)",
  },
  fstab: {
    name: "minc-core.fstab{N}",
    kind: "file",
    writes: "minc-core --write-down (lib/boot/bootscript.ts): the mounts that one mount -a makes, in order",
    reads: "the boot script's mount -a -T",
    goes: "with the working dir",
  },
  devSkeleton: {
    name: "dev.skel",
    kind: "dir",
    writes: "minc-core, once: the rest of /dev (mountpoints, links)",
    reads: "minc-core copies it into the container's /dev",
    goes: "with the working dir",
  },
  dev: {
    name: "dev",
    kind: "dir",
    writes:
      "minc-core (--nopriv): the container's /dev, bound (a tmpfs of a user namespace cannot hold devices that open)",
    reads: "the container",
    goes: "with the working dir (the next run makes it again)",
  },
  seccomp: {
    name: "seccomp.bpf",
    kind: "file",
    writes: "minc-leash (phase 5): the seccomp filter, compiled from the profile (lib/confine/seccomp.ts)",
    reads: "the seccomp loader (lib/confine/loader.ts), just before the command",
    goes: "with the working dir (the next run writes it again)",
  },
  stdin: {
    name: "stdin",
    kind: "file",
    writes: "minc-moult (--qemu, --um): a stdin that is not a terminal, read to its end",
    reads: "the guest's command",
    goes: "with the working dir",
  },
  runScript: {
    name: "run.sh",
    kind: "file",
    writes: "minc-moult (--qemu, --um): the guest's minc command line; ermine-breeder testrun in its share",
    reads: "the guest's init (lib/ermine/ermine.ts)",
    goes: "with the working dir",
  },
  exitCode: {
    name: "exitcode",
    kind: "file",
    writes: "the guest's init (lib/ermine/ermine.ts): run.sh's exit status",
    reads: "lib/ermine/ermine.ts bootGuest: the guest's status becomes minc-moult's",
    goes: "with the working dir",
  },
  umlDir: {
    name: ".uml",
    kind: "dir",
    writes: "user-mode Linux (--um): its run directory (uml_dir)",
    reads: "user-mode Linux",
    goes: "lib/ermine/ermine.ts removes it when the guest is gone",
  },
  trace: {
    name: "trace",
    kind: "file",
    writes: "minc-trapper: strace -o, the traced command's system calls",
    reads: "minc-trapper: what the command used",
    goes: "with polecat's working dir",
  },
  squashfs: {
    name: "image.sfs",
    kind: "file",
    writes: "polecat (--format sh): the image, before it goes after the header",
    reads: "polecat",
    goes: "polecat removes it once appended",
  },
} as const satisfies Record<string, WorkdirEntry>;

/**
 * The files the waiter's sh acts on, and the variables it names them by:
 * workdir_files in libexec/minc-waiter-common.sh sets each, to its name.
 */
export const SH_VARIABLES = {
  pid: "pidfile",
  waiter: "waiterfile",
  lock: "lockfile",
  cleanup: "registered",
  bootScript: "bootscript",
} as const satisfies { readonly [K in keyof typeof WORKDIR]?: string };

type Entries = typeof WORKDIR;
/** The entries whose name is complete (no {N} or {PID} in it). */
export type WorkdirFile = {
  [K in keyof Entries]: Entries[K]["name"] extends `${string}{${string}` ? never : K;
}[keyof Entries];

/** A name without what completes it: "minc-core.fstab{N}" starts "minc-core.fstab". */
export function fixedPart(name: string): string {
  return name.replace(/\{[A-Z]+\}$/, "");
}

export type WorkdirPaths = { readonly [K in WorkdirFile]: string } & {
  /** minc-core.fstabN, the Nth fstab of the boot script. */
  fstab(n: number): string;
};

/** The paths of a working directory's files. */
export function workdirPaths(dir: string): WorkdirPaths {
  const paths: Record<string, unknown> = {};
  for (const [key, entry] of Object.entries(WORKDIR) as [string, WorkdirEntry][]) {
    if (fixedPart(entry.name) === entry.name) paths[key] = `${dir}/${entry.name}`;
  }
  paths.fstab = (n: number) => `${dir}/${fixedPart(WORKDIR.fstab.name)}${n}`;
  return paths as WorkdirPaths;
}

/**
 * The Nth fstab of a boot script written down as SCRIPT: beside it, named
 * after it (TMPDIR/minc-core.sh: workdirPaths(TMPDIR).fstab(N)).
 */
export function fstabOf(script: string, n: number): string {
  return `${script.replace(/\.sh$/, "")}.fstab${n}`;
}
