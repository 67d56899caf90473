// Commands and file writes, each shown in the trace as the shell line that
// does the same thing. Backends use these instead of calling child_process
// or fs directly, so nothing they do escapes the --debug trace.
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
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname } from "node:path";
import {
  inNewRoot,
  NotWrittenDown,
  parseMount,
  recordCommand,
  recordMount,
  recordRaw,
  writingDown,
} from "../boot/bootscript.ts";
import { HandedOver, MincError, statusOf, type Main } from "./fail.ts";
import { stopOnInterrupt } from "./interrupt.ts";
import { libexecDir } from "./libexec.ts";
import { viewMount, viewRemove } from "../boot/rootview.ts";
import { flushCompileCache } from "./compilecache.ts";
import { resetSignals } from "./signals.ts";
import { quote, quoteAll, shown, step } from "./trace.ts";

/**
 * Mounts queued by mountsTogether(): they run in one sh, in order, instead
 * of one spawn from Node each (a spawn from Node costs about twice what
 * mount(8) itself does). `targets` are their mountpoints: a file operation
 * under one of them first runs the queue, so it sees what it would have seen.
 */
let queue: { lines: string[]; targets: string[] } | undefined;

/** Run body(), with its mounts batched as above; they have all run when it returns. */
export function mountsTogether(body: () => void): void {
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
  runQueuedMounts();
  const line = input === undefined ? quoteAll(argv) : `${quoteAll(argv)} <<'EOF'\n${input.replace(/\n?$/, "\n")}EOF`;
  shown(line);
  const main = input === undefined ? mainHere(argv[0]) : undefined;
  if (main) return runHere(main, argv);
  if (writingDown()) return recordCommand(line);
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

export function mount(...args: string[]): void {
  if (writingDown()) return writeDownMount(args);
  if (!queue) return run(["mount", ...args]);
  runTogether(["mount", ...args]);
  queue.targets.push(args[args.length - 1]);
}

/** Run a command with the mounts of mountsTogether() if it is open (in order with them), else now. */
export function runTogether(argv: readonly string[]): void {
  if (writingDown()) {
    // Written down, it waits only for the mounts on the paths it names.
    shown(quoteAll(argv));
    return recordCommand(
      quoteAll(argv),
      argv.filter((a) => a.startsWith("/")),
    );
  }
  if (!queue) return run(argv);
  const line = quoteAll(argv);
  shown(line);
  queue.lines.push(line);
}

/** A mount for the written-down boot (lib/boot/bootscript.ts); the root's view learns what it will show there. */
function writeDownMount(args: readonly string[]): void {
  const line = quoteAll(["mount", ...args]);
  shown(line);
  const m = parseMount(args);
  const bind = !!m?.options.includes("bind");
  const onFile = bind && !!statSync(m!.source, { throwIfNoEntry: false })?.isFile(); // a file is bound onto a file
  if (!m || !recordMount(m, onFile ? "file" : "dir")) recordCommand(line);
  if (m) viewMount(m.target, bind ? m.source : undefined);
}

/**
 * While the boot is written down, is this write for the script (in the new
 * root, or anywhere but the working dir, /proc/sys/kernel/hostname say)?
 * The working dir's own files are written at once.
 */
function deferred(path: string): boolean {
  if (!writingDown()) return false;
  const workdir = process.env.MINC_TMPDIR;
  return inNewRoot(path) || !workdir || !(path === workdir || path.startsWith(`${workdir}/`));
}

export function bindMount(source: string, target: string): void {
  mount("--bind", source, target);
}

/** A read-only bind mount (mount(8) binds, then remounts it read-only). */
export function bindMountReadonly(source: string, target: string, extra = ""): void {
  mount("-o", `bind,ro${extra}`, source, target);
}

export function exportVar(name: string, value: string): void {
  shown(`export ${name}=${quote(value)}`);
  if (writingDown()) recordRaw(`export ${name}=${quote(value)}`);
  process.env[name] = value;
}

export function mkdirs(...dirs: string[]): void {
  for (const d of dirs) settle(d);
  shown(`mkdir -p ${quoteAll(dirs)}`);
  if (dirs.some(deferred)) return recordCommand(`mkdir -p ${quoteAll(dirs)}`, dirs);
  for (const d of dirs) mkdirSync(d, { recursive: true });
}

export function touch(file: string): void {
  settle(file);
  shown(`touch ${quote(file)}`);
  if (deferred(file)) return recordCommand(`: >> ${quote(file)}`, [file]); // (touch, without a process)
  closeSync(openSync(file, "a"));
}

export function symlink(target: string, path: string): void {
  settle(path);
  shown(`ln -s ${quote(target)} ${quote(path)}`);
  if (deferred(path)) return recordCommand(`ln -s ${quote(target)} ${quote(path)}`, [path]);
  symlinkSync(target, path);
}

export function removeFile(path: string): void {
  settle(path);
  shown(`rm -f ${quote(path)}`);
  if (deferred(path)) {
    viewRemove(path);
    return recordCommand(`rm -f ${quote(path)}`, [path]);
  }
  rmSync(path, { force: true });
}

/** rm -rf --one-file-system: never into a mount below the directory. */
export function removeTree(dir: string): void {
  settle(dir);
  if (deferred(dir)) return run(["rm", "-rf", "--one-file-system", dir]);
  try {
    lstatSync(dir);
  } catch {
    return; // gone already
  }
  const argv = ["rm", "-rf", "--one-file-system", dir];
  shown(quoteAll(argv));
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "inherit", "inherit"] });
  if (r.error || r.status !== 0) throw new MincError(`cannot remove ${dir}`);
}

/** Write a file, shown as a printf of its lines (sh's echo would read backslashes in them). */
export function writeFile(path: string, content: string): void {
  settle(path);
  const line = `${printfLines(content)} > ${quote(path)}`;
  shown(line);
  if (deferred(path)) return recordCommand(line, [path]);
  writeFileSync(path, content);
}

/** The shell line that prints this text byte for byte (sh's echo would read backslashes in it). */
export function printfLines(content: string): string {
  const lines = content.replace(/\n$/, "").split("\n");
  // printf reuses its format for every argument; without a last newline, one "%s" per line says where they go.
  const format = content.endsWith("\n") ? "%s\\n" : `${"%s\\n".repeat(lines.length - 1)}%s`;
  return `printf '${format}' ${quoteAll(lines)}`;
}

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
  const file = findInPath(argv[0], env.PATH);
  const main = file ? mainHere(file) : undefined;
  if (file && writingDown() && !main) writeDownExec(file, argv, env);
  if (shownAs !== "") shown(shownAs ?? `exec ${quoteAll(argv)}`);
  // execve aborts the whole process when it fails, so check first.
  if (!file) throw new MincError(`${argv[0]}: command not found or not executable`, 127);
  if (main) execHere(main, file, argv, env);
  resetSignals(["SIGPIPE", "SIGXFSZ"]);
  flushCompileCache();
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) clean[k] = v;
  process.execve!(file, [...argv], clean);
  throw new MincError("execve returned"); // not reached
}

/**
 * The written-down boot ends by exec, with the environment the next program
 * gets. The script's sh is a background job of minc's waiter, started with
 * INT and QUIT ignored for good (sh cannot undo that, Node could), so env
 * gives them back their default action on the way.
 */
function writeDownExec(file: string, argv: readonly string[], env: NodeJS.ProcessEnv): never {
  const reset = defaultSignals();
  step(
    "(INT and QUIT are ignored in this sh, a background job of the waiter: env gives the command their default action)",
  );
  const line = quoteAll([...reset, file, ...argv.slice(1)]);
  shown(`exec ${line}`);
  const gone = Object.keys(process.env)
    .filter((k) => env[k] === undefined)
    .sort();
  if (gone.length > 0) recordRaw(`unset ${gone.join(" ")}`);
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && process.env[k] !== v) recordRaw(`export ${k}=${quote(v)}`);
  }
  recordRaw(`exec ${line}`);
  throw new HandedOver();
}

/** env --default-signal (GNU coreutils 8.31 and later; busybox's env has not got it: then minc-core boots inside itself). */
function defaultSignals(): string[] {
  const env = findInPath("env");
  if (!env || !stringsOf(env)?.includes("default-signal")) {
    throw new NotWrittenDown("this env(1) cannot give INT and QUIT their default action back (--default-signal)");
  }
  return [env, "--default-signal=INT,QUIT"];
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
function mainHere(file: string): Main | undefined {
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
function execHere(main: Main, file: string, argv: readonly string[], env: NodeJS.ProcessEnv): never {
  for (const k of Object.keys(process.env)) if (env[k] === undefined) delete process.env[k];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) process.env[k] = v;
  process.argv = [process.argv[0], file, ...argv.slice(1)];
  // (It may still have work on the event loop: minc-exec waits a turn for signals.)
  throw new HandedOver(statusOf(main, argv.slice(1), process.env));
}

/**
 * Run a backend that runs in this Node to its end, like a function call,
 * instead of starting Node again (~20 ms): the same arguments and
 * environment (what it exports stays its own), the same exit status. The
 * backends run so are synchronous, and end by returning from main, never
 * by process.exit.
 */
function runHere(main: Main, argv: readonly string[]): void {
  const saved = { argv: process.argv, env: { ...process.env } };
  process.argv = [process.argv[0], argv[0], ...argv.slice(1)];
  let status: number | Promise<number>;
  try {
    status = statusOf(main, argv.slice(1), process.env);
  } finally {
    process.argv = saved.argv;
    for (const k of Object.keys(process.env)) if (!(k in saved.env)) delete process.env[k];
    Object.assign(process.env, saved.env);
  }
  if (typeof status !== "number")
    throw new Error(`${argv[0]} does not end synchronously: run() cannot run it in this Node`);
  if (status !== 0) throw new MincError(`failed: ${quoteAll(argv)} (exit ${status})`, status);
}

export function copyFile(from: string, to: string): void {
  settle(to);
  shown(`cp ${quote(from)} ${quote(to)}`);
  if (deferred(to)) return recordCommand(`cp ${quote(from)} ${quote(to)}`, [to]);
  copyFileSync(from, to);
}
