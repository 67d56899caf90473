// minc-trapper: trap what a command needs from its rootfs.
//
//   minc-trapper [-r ROOTDIR|IMAGE] TMPDIR COMMAND...
//
// Runs COMMAND once in a container over ROOTDIR (or an image of the store)
// with TMPDIR as its working directory, under strace, which stays on the
// host side of the chroot (the rootfs needs no strace). Then it copies
// every file the command named into TMPDIR/storage, the container's upper
// layer, following symbolic links; adds the shared libraries those
// programs need (their DT_NEEDED entries, found the way the rootfs's own
// loader would find them) and their ELF interpreter; and makes the
// directories minc mounts on. TMPDIR/storage is then all the command needs.
//
// MINC_IGNORE_STATE=1 takes a failing command as it is; a command stopped
// with Ctrl-C (exit 130: a server, after its test run) is always taken.
//
// Signals: a Ctrl-C at the terminal (INT to the whole process group, the
// container too) ends the test run. TERM, HUP, and an INT sent to
// minc-trapper alone (as polecat passes one on), are passed on to the
// traced command (strace, in front of it, leaves them to it), and
// minc-trapper ends by the signal, copying nothing (lib/core/interrupt.ts).
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  utimesSync,
  type Stats,
} from "node:fs";
import { runContainer } from "../lib/boot/container.ts";
import { readElf } from "../lib/polecat/elf.ts";
import { MincError, usageError, warn } from "../lib/core/fail.ts";
import { catchInterrupts, spareGroupInterrupts } from "../lib/core/interrupt.ts";
import { findLibrary, ldSoConfDirs } from "../lib/polecat/ldso.ts";
import { existsInRoot, resolveInRoot } from "../lib/boot/paths.ts";
import { findInPath, mkdirs, mount, removeFile, run } from "../lib/core/run.ts";
import { readSettings, type Settings } from "../lib/core/settings.ts";
import { farm } from "../lib/store/store.ts";
import { STRACE_ARGS, tracedPaths } from "../lib/polecat/strace.ts";
import { quote, shown, step } from "../lib/core/trace.ts";
import { workdirPaths } from "../lib/boot/workdir.ts";

const USAGE = "usage: minc-trapper [-r ROOTDIR|IMAGE] TMPDIR COMMAND...";
// The settings, from the environment main() is given.
let settings: Settings;
const MAX_LINKS = 40;
/** Exit status of a command stopped with Ctrl-C. */
const INTERRUPTED = 130;
/** Where minc mounts its own filesystems: they must exist in the image. */
const MOUNTPOINTS = ["dev", "proc", "sys", "tmp", "var/run"];

interface Job {
  basedir: string;
  tmpdir: string;
  upper: string;
  view: string;
  command: string[];
}

/** ROOTDIR, a stack of layers "TOP:...:BOTTOM" (as polecat passes an image), or an image of the store. */
function basedirOf(given: string): string {
  if (given.split(":").every((d) => d.startsWith("/") && existsSync(d) && statSync(d).isDirectory())) return given;
  return farm("imagestack", given);
}

function jobOf(argv: string[]): Job {
  let basedir = settings.MINC_BASEDIR || "/";
  if (argv[0] === "-r" || argv[0] === "--rootdir") {
    if (!argv[1]) throw usageError(USAGE);
    basedir = basedirOf(argv[1]);
    argv = argv.slice(2);
  }
  const [tmpdir, ...command] = argv;
  if (!tmpdir || command.length === 0) throw usageError(USAGE);
  if (!existsSync(tmpdir) || !statSync(tmpdir).isDirectory()) throw usageError(`${tmpdir} is not a directory`);
  const files = workdirPaths(tmpdir);
  return { basedir, tmpdir, upper: files.storage, view: files.root, command };
}

function traceFileOf(job: Job): string {
  return workdirPaths(job.tmpdir).trace;
}

async function runTraced(job: Job): Promise<void> {
  const strace = findInPath("strace");
  if (!strace) throw new MincError("needs strace on this host to trace the command (apt-get install strace)");
  step(
    "Run the command once in a container, strace in front of its chroot (MINC_DEBUG_PREFIX); Ctrl-C ends a server's test run",
  );
  mkdirs(job.upper);
  const prefix = [strace, ...STRACE_ARGS, "-o", traceFileOf(job)];
  if (prefix.some((w) => /\s/.test(w)))
    throw usageError(`${job.tmpdir}: a working directory with blanks cannot hold the trace`);
  const unspare = spareGroupInterrupts();
  try {
    checkStatus(await runContainer(job.tmpdir, job.command, { MINC_BASEDIR: job.basedir, MINC_DEBUG_PREFIX: prefix }));
  } finally {
    unspare();
  }
}

function checkStatus(status: number): void {
  if (status === 0) return;
  if (status === INTERRUPTED) {
    step("Stopped with Ctrl-C: the end of the test run");
  } else if (settings.MINC_IGNORE_STATE) {
    warn(`the command exited with ${status} while traced (ignored: --ignore-state)`);
  } else {
    throw new MincError(
      `the command failed while traced (exit ${status}); fix it, or pack it anyway with --ignore-state`,
    );
  }
}

/**
 * The root as the command saw it, read-only: the container's own overlay
 * again (storage as the upper layer over the rootfs), mounted ro. Not
 * storage as a second lower layer: overlayfs refuses lower layers of which
 * one lies inside another on the same filesystem ("overlapping lowerdir
 * path", ELOOP), which the working directory is whenever the rootdir holds
 * it (polecat's rootdir "/"); an upper layer inside a lower one it takes.
 */
function mountView(job: Job): void {
  step("Mount the root as the command saw it, read-only, to copy from: storage over the rootfs, as in the container");
  const { work } = workdirPaths(job.tmpdir);
  mkdirs(job.view, work);
  mount("-t", "overlay", "-o", `ro,lowerdir=${job.basedir},upperdir=${job.upper},workdir=${work}`, "overlay", job.view);
}

function unmountView(job: Job): void {
  step("Unmount it");
  run(["umount", job.view]);
}

function tracedFiles(job: Job): string[] {
  const paths = tracedPaths(readFileSync(traceFileOf(job), "utf8"));
  if (!paths)
    throw new MincError("the trace shows no chroot into the container: nothing in it can be told apart from the host");
  return paths;
}

function copyMetadata(from: Stats, to: string): void {
  lchownSync(to, from.uid, from.gid);
  if (!from.isSymbolicLink()) {
    chmodSync(to, from.mode & 0o7777);
    utimesSync(to, from.atime, from.mtime);
  }
}

/** A directory of the view made in the upper layer, its contents left out (cp -a would copy them). */
function copyDir(from: string, to: string, st: Stats): void {
  shown(
    `mkdir ${quote(to)} && chown --reference=${quote(from)} ${quote(to)} && chmod --reference=${quote(from)} ${quote(to)} && touch -r ${quote(from)} ${quote(to)}`,
  );
  mkdirSync(to);
  copyMetadata(st, to);
}

/** The directories down to rel (a path with no links in it), made in the upper layer as they are in the view. */
function ensureDirs(job: Job, parts: string[]): void {
  for (let i = 1; i <= parts.length; i++) {
    const rel = parts.slice(0, i).join("/");
    if (existsSync(`${job.upper}/${rel}`)) continue;
    copyDir(`${job.view}/${rel}`, `${job.upper}/${rel}`, lstatSync(`${job.view}/${rel}`));
  }
}

/** One entry of the view into the upper layer, unless it is there: a file, a directory or a link (not followed here). */
function copyEntry(job: Job, parts: string[], st: Stats): void {
  ensureDirs(job, parts.slice(0, -1));
  const rel = parts.join("/");
  const to = `${job.upper}/${rel}`;
  try {
    lstatSync(to);
    return; // written by the command or copied already
  } catch {
    // to copy
  }
  // From the view (the root the command saw), not from the host's path of the same name.
  const from = `${job.view}/${rel}`;
  if (st.isDirectory()) return copyDir(from, to, st);
  if (!st.isSymbolicLink() && !st.isFile()) return; // devices, fifos, sockets: minc makes its own /dev
  shown(`cp -a ${quote(from)} ${quote(to)}`);
  if (st.isSymbolicLink()) symlinkSync(readlinkSync(from), to);
  else copyFileSync(from, to);
  copyMetadata(st, to);
}

/**
 * Copy a path as the command met it: each symbolic link on the way is
 * copied as a link and then followed, inside the root ("/" and ".." never
 * leave it), down to the file or directory itself.
 */
function trap(job: Job, path: string): void {
  const done: string[] = [];
  let todo = path.split("/").filter((c) => c !== "" && c !== ".");
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    if (name === "..") {
      done.pop();
      continue;
    }
    const parts = [...done, name];
    let st: Stats;
    try {
      st = lstatSync(`${job.view}/${parts.join("/")}`);
    } catch {
      return; // the command looked for it in vain
    }
    if (st.isSymbolicLink()) {
      copyEntry(job, parts, st);
      if (++links > MAX_LINKS) return;
      const target = readlinkSync(`${job.view}/${parts.join("/")}`);
      if (target.startsWith("/")) done.length = 0;
      todo = [...target.split("/").filter((c) => c !== "" && c !== "."), ...todo];
      continue;
    }
    done.push(name);
    if (todo.length === 0) copyEntry(job, parts, st);
  }
}

function copyTraced(job: Job, paths: string[]): void {
  step(`Copy the ${paths.length} paths the command named (those that exist) into the upper layer, links followed`);
  for (const p of paths) trap(job, p);
}

/**
 * The command's own program, as PATH finds it in the root: a shell may
 * have run it without looking it up (busybox sh runs its applets itself),
 * but a capsh with --exec on another host looks it up.
 */
function copyCommand(job: Job): void {
  const [program] = job.command;
  const dirs = program.includes("/")
    ? [""]
    : (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").filter((d) => d.startsWith("/"));
  const found = dirs.map((d) => (d ? `${d}/${program}` : program)).find((p) => existsInRoot(job.view, p));
  if (!found) return;
  step(`Copy the command's program, ${found}`);
  trap(job, found);
}

/** The regular files of the upper layer, as paths inside the root. */
function filesOf(dir: string, prefix = ""): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = `${prefix}/${e.name}`;
    if (e.isDirectory()) return filesOf(`${dir}/${e.name}`, path);
    return e.isFile() ? [path] : [];
  });
}

/**
 * Each ELF object of the upper layer brings its interpreter and the
 * libraries of its DT_NEEDED entries, and each library its own: what a
 * program loads only on some paths, or what the test run never started,
 * still starts from the image.
 */
function closeOverLibraries(job: Job): void {
  step(
    "Add the shared libraries (DT_NEEDED, found as the rootfs's loader finds them) and the ELF interpreters, until none is missing",
  );
  const confDirs = ldSoConfDirs(job.view);
  const queue = filesOf(job.upper);
  const seen = new Set<string>();
  while (queue.length > 0) {
    const path = queue.shift()!;
    const real = resolveInRoot(job.view, path);
    if (seen.has(real)) continue;
    seen.add(real);
    const elf = readElf(real);
    if (!elf) continue;
    const wanted = elf.interpreter ? [elf.interpreter] : [];
    for (const name of elf.needed) {
      const lib = findLibrary(job.view, name, path, elf, confDirs);
      if (lib) wanted.push(lib);
      else warn(`${path} needs ${name}, which is not in the rootfs`);
    }
    for (const w of wanted) {
      trap(job, w);
      queue.push(w);
    }
  }
}

function makeMountpoints(job: Job): void {
  step("Add the directories minc mounts on");
  for (const dir of MOUNTPOINTS) {
    const at = resolveInRoot(job.upper, dir);
    if (!existsSync(at)) mkdirs(at);
  }
  const tmp = resolveInRoot(job.upper, "tmp");
  shown(`chmod 1777 ${quote(tmp)}`);
  chmodSync(tmp, 0o1777);
}

export async function main(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  settings = readSettings(env);
  const job = jobOf(args);
  catchInterrupts();
  await runTraced(job);
  mountView(job);
  try {
    copyTraced(job, tracedFiles(job));
    copyCommand(job);
    closeOverLibraries(job);
  } finally {
    unmountView(job);
  }
  makeMountpoints(job);
  removeFile(traceFileOf(job));
  return 0;
}
