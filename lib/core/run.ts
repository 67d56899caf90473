// Commands and file writes, each shown in the trace as the shell line that
// does the same thing. Backends use these instead of calling child_process
// or fs directly, so nothing they do escapes the --debug trace. They are
// the operations of `live` (lib/core/host.ts), done as they come; the boot
// steps are given a Host, live or written down ahead.
import { spawn, spawnSync } from "node:child_process";
import {
  accessSync,
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { basename, dirname } from "node:path";
import { HandedOver, MincError, statusOf, usageError, type Main } from "./fail.ts";
import { stopOnInterrupt } from "./interrupt.ts";
import { libexecDir } from "./libexec.ts";
import { flushCompileCache } from "./compilecache.ts";
import { resetSignals } from "./signals.ts";
import { Host, lineOf, type Executor, type Op } from "./host.ts";
import { quote, quoteAll, shown } from "./trace.ts";

/**
 * Mounts queued by mountsTogether(): they run in one sh, in order, instead
 * of one spawn from Node each (a spawn from Node costs about twice what
 * mount(8) itself does). `targets` are their mountpoints: a file operation
 * under one of them first runs the queue, so it sees what it would have seen.
 */
let queue: { lines: string[]; targets: string[] } | undefined;

/** Run body(), with its mounts batched as above; they have all run when it returns. */
function mountsTogether(body: () => void): void {
  queue = { lines: [], targets: [] };
  try {
    body();
    runQueuedMounts();
  } finally {
    queue = undefined;
  }
}

function runQueuedMounts(): void {
  if (!queue || queue.lines.length === 0) return;
  const script = queue.lines.map((l) => `${l} || { echo ${quote(`failed: ${l}`)} >&2; exit 1; }`).join("\n");
  queue.lines = [];
  queue.targets = [];
  const r = spawnSync("/bin/sh", ["-c", script], { stdio: ["ignore", "inherit", "inherit"] });
  if (r.error) throw new MincError(`cannot run /bin/sh: ${r.error.message}`);
  if (r.status !== 0) throw new MincError("preparing the new root failed (see above)");
}

/** Before a file operation at path: run the queued mounts it may lie under. */
function settle(path: string): void {
  if (queue?.targets.some((t) => path === t || path.startsWith(`${t}/`))) runQueuedMounts();
}

/** Run a command to its end, with input on its stdin if given (shown as a here-document); a non-zero exit is a MincError. */
export function run(argv: readonly string[], input?: string): void {
  live.run(argv, input);
}

/** run(), untraced. */
function runNow(argv: readonly string[], input: string | undefined, host: Host): void {
  runQueuedMounts();
  const main = input === undefined ? mainHere(argv[0]) : undefined;
  if (main) return runHere(main, argv, host);
  const r = spawnSync(program(argv[0]), argv.slice(1), {
    stdio: [input === undefined ? "ignore" : "pipe", "inherit", "inherit"],
    input,
  });
  if (r.error) throw new MincError(`cannot run ${argv[0]}: ${r.error.message}`);
  if (r.status !== 0) throw new MincError(`failed: ${quoteAll(argv)} (exit ${r.status ?? r.signal})`);
}

/**
 * Run a command to its end, without blocking this process (so other work can
 * go on meanwhile). Should this program be interrupted, the command gets the
 * signal too, and ends first (lib/core/interrupt.ts).
 */
export function runAsync(argv: readonly string[]): Promise<void> {
  runQueuedMounts();
  shown(`${quoteAll(argv)} &`);
  return new Promise((resolve, reject) => {
    const child = spawn(program(argv[0]), argv.slice(1), { stdio: ["ignore", "inherit", "inherit"] });
    stopOnInterrupt(child);
    child.on("error", (e) => reject(new MincError(`cannot run ${argv[0]}: ${e.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) resolve();
      else reject(new MincError(`failed: ${quoteAll(argv)} (exit ${code ?? signal})`));
    });
  });
}

/**
 * Run a command and return what it printed. `show`: false to show nothing,
 * or the line to show instead of the command's own (one that names our
 * PID as "$$", say, so that it works pasted into a shell).
 */
export function capture(argv: readonly string[], show: boolean | string = true): string {
  return captureBytes(argv, show).toString("utf8");
}

/** capture(), as bytes: for output that holds file names, which need not be UTF-8. */
export function captureBytes(argv: readonly string[], show: boolean | string = true): Buffer {
  runQueuedMounts();
  if (show !== false) shown(show === true ? quoteAll(argv) : show);
  const r = spawnSync(program(argv[0]), argv.slice(1), { stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 30 });
  if (r.error) throw new MincError(`cannot run ${argv[0]}: ${r.error.message}`);
  if (r.status !== 0) throw new MincError(`failed: ${quoteAll(argv)} (exit ${r.status ?? r.signal})`);
  return r.stdout;
}

/** Each operation done as it comes (the trace is shown by Host, before). */
export const liveExecutor: Executor = {
  ahead: false,
  traceOf(op: Op): string[] {
    if (op.op === "removeTree" && !lstatSync(op.path, { throwIfNoEntry: false })) return []; // gone already
    if (op.op === "recordPid") {
      const pid = readlinkSync("/proc/self");
      return [`export MINC_PID=${quote(pid)}`, ...lineOf({ op: "writeFile", path: op.file, content: `${pid}\n` })];
    }
    return lineOf(op);
  },
  together: mountsTogether,
  do(op: Op, host: Host): void {
    for (const path of filesOf(op)) settle(path);
    switch (op.op) {
      case "mount":
        if (!queue) return runNow(["mount", ...op.args], undefined, host);
        queue.lines.push(quoteAll(["mount", ...op.args]));
        queue.targets.push(op.args[op.args.length - 1]);
        return;
      case "runTogether":
        if (!queue) return runNow(op.argv, undefined, host);
        queue.lines.push(quoteAll(op.argv));
        return;
      case "run":
        return runNow(op.argv, op.input, host);
      case "export":
        process.env[op.name] = op.value;
        return;
      case "mkdirs":
        for (const d of op.dirs) mkdirSync(d, { recursive: true });
        return;
      case "touch":
        return closeSync(openSync(op.path, "a"));
      case "symlink":
        return symlinkSync(op.target, op.path);
      case "removeFile":
        return rmSync(op.path, { force: true });
      case "removeTree":
        return removeTreeNow(op.path);
      case "writeFile":
        return writeFileSync(op.path, op.content);
      case "copyFile":
        return copyFileSync(op.from, op.to);
      case "exec":
        return execNow(op.argv, op.env, host);
      case "recordPid": {
        const pid = readlinkSync("/proc/self");
        process.env.MINC_PID = pid;
        return writeFileSync(op.file, `${pid}\n`);
      }
      case "rootWillBe":
      case "needsInside":
        return; // live, the root is mounted and we are inside
      case "enterCage":
        return enterCageNow(op.file, op.fd!);
    }
  },
};

/** The files a file operation works on: the queued mounts they may lie under are made first. */
function filesOf(op: Op): readonly string[] {
  switch (op.op) {
    case "mkdirs":
      return op.dirs;
    case "touch":
    case "symlink":
    case "removeFile":
    case "removeTree":
    case "writeFile":
      return [op.path];
    case "copyFile":
      return [op.to];
    case "recordPid":
      return [op.file];
    default:
      return [];
  }
}

/** The live host: what the programs outside the boot use (frontends, the store), and a live boot. */
export const live = new Host(liveExecutor);

export function mount(...args: string[]): void {
  live.mount(...args);
}

export function exportVar(name: string, value: string): void {
  live.exportVar(name, value);
}

export function mkdirs(...dirs: string[]): void {
  live.mkdirs(...dirs);
}

export function touch(file: string): void {
  live.touch(file);
}

export function removeFile(path: string): void {
  live.removeFile(path);
}

/** rm -rf --one-file-system: never into a mount below the directory. */
export function removeTree(dir: string): void {
  live.removeTree(dir);
}

function removeTreeNow(dir: string): void {
  const argv = ["rm", "-rf", "--one-file-system", dir];
  if (!lstatSync(dir, { throwIfNoEntry: false })) return; // gone already
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "inherit", "inherit"] });
  if (r.error || r.status !== 0) throw new MincError(`cannot remove ${dir}`);
}

/** Write a file, shown as a printf of its lines (sh's echo would read backslashes in them). */
export function writeFile(path: string, content: string): void {
  live.writeFile(path, content);
}

export function copyFile(from: string, to: string): void {
  live.copyFile(from, to);
}

export { printfLines } from "./host.ts";

/**
 * mktemp -d PREFIXXXXXXX, shown as the mkdir of the name it chose: pasted,
 * the trace then makes the directory its next lines name.
 */
export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(prefix);
  shown(`mkdir -m 700 ${quote(dir)}   # (a new name, as mktemp -d ${quote(`${prefix}XXXXXX`)} makes one)`);
  return dir;
}

/** Write a file into a directory that may not exist yet. */
export function writeFileMkdir(path: string, content: string): void {
  if (!existsSync(dirname(path))) mkdirs(dirname(path));
  writeFile(path, content);
}

/**
 * The host's administration tools (pivot_root, capsh, chroot, ip, iptables)
 * are in the sbin directories, which an ordinary user's PATH on Debian does
 * not have (minc --nopriv): they are looked for there too, after PATH.
 */
const SBIN = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

function withSbin(path: string): string {
  const dirs = path.split(":");
  return [...dirs, ...SBIN.filter((d) => !dirs.includes(d))].join(":");
}

/** argv[0] as spawn gets it: found in PATH or sbin (see SBIN), else as given (spawn then says it is missing). */
function program(cmd: string): string {
  return cmd.includes("/") ? cmd : (findInPath(cmd) ?? cmd);
}

/** Look a command up in PATH (and sbin, for the host's own tools) as the shell's exec would. */
export function findInPath(cmd: string, path = withSbin(process.env.PATH ?? "/usr/bin:/bin")): string | undefined {
  if (cmd.includes("/")) return isExecutable(cmd) ? cmd : undefined;
  for (const dir of path.split(":")) {
    const candidate = `${dir || "."}/${cmd}`;
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Replace this process with another program, like the shell's exec: the
 * next program keeps our PID (so the user's command can be PID 1) and no
 * Node process stays behind.
 */
export function exec(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, shownAs?: string): never {
  return live.exec(argv, env, shownAs);
}

function execNow(argv: readonly string[], env: NodeJS.ProcessEnv, host: Host): void {
  const file = findInPath(argv[0], env.PATH);
  // execve aborts the whole process when it fails, so check first.
  if (!file) throw new MincError(`${argv[0]}: command not found or not executable`, 127);
  const main = mainHere(file);
  if (main) execHere(main, file, argv, env, host);
  resetSignals(["SIGPIPE", "SIGXFSZ"]);
  flushCompileCache();
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) clean[k] = v;
  process.execve!(file, [...argv], clean);
}

function enterCageNow(file: string, fd: number): void {
  try {
    writeSync(fd, "0");
  } catch (e) {
    throw usageError(`cannot enter the cage ${file}: ${(e as NodeJS.ErrnoException).code}`);
  }
  closeSync(fd);
}

/**
 * A program's bytes as text, to look for its option names: a program keeps
 * them and its --help text as strings, and reading them costs no process
 * (asking it --help does). Undefined if it cannot be read.
 */
export function stringsOf(program: string): string | undefined {
  try {
    return readFileSync(program, "latin1");
  } catch {
    return undefined;
  }
}

/**
 * The backends that run in this Node when run() or exec() is given their
 * program in libexec/, by name: a program imports the main of each backend
 * it runs so and registers it (runInThisNode), so that one bundle holds
 * all that runs in one process.
 */
const mains = new Map<string, Main>();

/** Run or exec these backends (by name) in this Node, by calling their main, instead of starting Node again. */
export function runInThisNode(backends: Record<string, Main>): void {
  for (const [name, main] of Object.entries(backends)) mains.set(name, main);
}

/** The main of file, if it is the program of one of our backends that runs in this Node (runInThisNode). */
export function mainHere(file: string): Main | undefined {
  if (!file.startsWith("/") || dirname(file) !== libexecDir()) return undefined;
  const main = mains.get(basename(file));
  return main && isExecutable(file) ? main : undefined;
}

/**
 * Exec of a backend that runs in this Node: rather than execve and start
 * Node all over again (~20 ms), call its main, with its own arguments and
 * environment. To the next program, and to anyone pasting the trace, it is
 * the same as an exec: this program's code does not go on (HandedOver),
 * and its exit status is the next one's.
 */
function execHere(main: Main, file: string, argv: readonly string[], env: NodeJS.ProcessEnv, host: Host): never {
  for (const k of Object.keys(process.env)) if (env[k] === undefined) delete process.env[k];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) process.env[k] = v;
  process.argv = [process.argv[0], file, ...argv.slice(1)];
  // (It may still have work on the event loop: minc-exec waits a turn for signals.)
  throw new HandedOver(statusOf(main, argv.slice(1), process.env, host));
}

/**
 * Run a backend that runs in this Node to its end, like a function call,
 * instead of starting Node again (~20 ms): the same arguments and
 * environment (what it exports stays its own), the same exit status. The
 * backends run so are synchronous, and end by returning from main, never
 * by process.exit.
 */
function runHere(main: Main, argv: readonly string[], host: Host): void {
  const saved = { argv: process.argv, env: { ...process.env } };
  process.argv = [process.argv[0], argv[0], ...argv.slice(1)];
  let status: number | Promise<number>;
  try {
    status = statusOf(main, argv.slice(1), process.env, host);
  } finally {
    process.argv = saved.argv;
    for (const k of Object.keys(process.env)) if (!(k in saved.env)) delete process.env[k];
    Object.assign(process.env, saved.env);
  }
  if (typeof status !== "number")
    throw new Error(`${argv[0]} does not end synchronously: run() cannot run it in this Node`);
  if (status !== 0) throw new MincError(`failed: ${quoteAll(argv)} (exit ${status})`, status);
}
