// polecat: make one self-executable file of a command and what it needs.
//
// Like MINCS's polecat: (with -s, run the build script's install_command in
// a container over the rootfs first,) run the command once under
// minc-trapper, which leaves in the upper layer every file the command
// used and the libraries they need; then write that tree as a squashfs or
// tgz image, or (the default) as a sh header plus a squashfs that carries
// its own minc runtime and boots the command wherever it is copied.
//
// Signals: a Ctrl-C at the terminal during the traced run (INT to the whole
// process group, the container too) ends the command's test run, and what
// it used is packed. TERM, HUP, an INT sent to polecat alone, and any of
// them at another time, abort the build: the running stage (the container,
// through minc-trapper; mksquashfs) gets the signal, the partial output and
// the working directory go, and polecat ends by the signal (lib/core/interrupt.ts).
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { basename, dirname, resolve } from "node:path";
import { spawnSync } from "node:child_process";
import yargs from "yargs";
import { runContainer } from "../lib/boot/container.ts";
import { MincError, start, usageError } from "../lib/core/fail.ts";
import { checkLayerPath, existingDir } from "../lib/store/layerpath.ts";
import { catchInterrupts, removeOnInterrupt, runStoppable, spareGroupInterrupts } from "../lib/core/interrupt.ts";
import { backend, frontend } from "../lib/core/libexec.ts";
import { resolveInRoot } from "../lib/boot/paths.ts";
import { header, RUNTIME_BACKENDS, RUNTIME_DIR } from "../lib/polecat/polecat.ts";
import {
  capture,
  makeTempDir,
  mkdirs,
  removeFile,
  removeTree,
  run,
  touch,
  writeFile,
  writeFileMkdir,
} from "../lib/core/run.ts";
import { settingsEnv } from "../lib/core/settings.ts";
import { signalsDelivered } from "../lib/core/signals.ts";
import { farm, isStoreName } from "../lib/store/store.ts";
import { needTool } from "../lib/core/tools.ts";
import { quote, quoteAll, shown, step, tracing } from "../lib/core/trace.ts";
import { VERSION } from "../lib/core/version.ts";
import { workdirPaths } from "../lib/boot/workdir.ts";

const FORMATS = ["sh", "squashfs", "sfs", "tgz"] as const;
type Format = (typeof FORMATS)[number];
/** The output's name without -o, as in the shell MINCS (and its usage). */
const DEFAULT_OUTPUT = "polecat-out";

interface Plan {
  /** The rootfs, or an image's layers "TOP:...:BOTTOM". */
  basedir: string;
  command: string[];
  output: string;
  format: Format;
  script?: string;
  /** A working directory given with -t: used and kept. */
  tempdir?: string;
  ignoreState: boolean;
  debug: boolean;
}

/** What a build script defines: the command, and directories to make and to remove in the image. */
interface BuildScript {
  command: string[];
  mkdirs: string[];
  rmdirs: string[];
}

function parse(argv: string[]) {
  return yargs(argv)
    .scriptName("polecat")
    .version(VERSION)
    .strict()
    .parserConfiguration({ "halt-at-non-option": true })
    .usage(
      "polecat - make a self-executable application container\n" +
        "Usage: polecat [options] ROOTDIR|IMAGE [COMMAND [ARG...]]\n\n" +
        "Runs COMMAND once in a container over ROOTDIR (or an image of the store), traces the files it uses,\n" +
        "adds the shared libraries they need, and writes them as one file: by default a sh script that boots\n" +
        "COMMAND in a container on any host with root, sh, mount, unshare and Node.js 24 (arguments given to it\n" +
        "are appended to COMMAND; its exit status is COMMAND's). Stop a server with Ctrl-C after its test run;\n" +
        "TERM, HUP or an INT sent to polecat alone abort the build, and leave nothing.",
    )
    .option("output", {
      alias: "o",
      type: "string",
      describe: `Output file (default ${DEFAULT_OUTPUT}); -f tgz, sfs and squashfs add .tgz, .sfs, .squashfs to it (unless it ends so already); its directory is made if missing`,
    })
    .option("format", {
      alias: "f",
      type: "string",
      choices: FORMATS,
      describe: "sh (self-executable), squashfs or sfs, tgz (just the image)",
    })
    .option("script", {
      alias: "s",
      type: "string",
      describe:
        "Build script: sets COMMAND, MKDIRS, RMDIRS and defines install_command, run in the container before tracing",
    })
    .option("tempdir", {
      alias: "t",
      type: "string",
      describe: "Working directory to use and keep (its storage/ is the image)",
    })
    .option("ignore-state", { type: "boolean", describe: "Pack even if the command fails while traced" })
    .option("debug", { type: "boolean", describe: "Print every step and command (the minc --debug trace)" })
    .alias("h", "help")
    .alias("V", "version")
    .fail((msg, err) => {
      throw usageError(err?.message ?? msg);
    })
    .parseSync();
}

function existingLayerDir(what: string, dir: string): string {
  return checkLayerPath(what, existingDir(what, dir));
}

/** A directory, or the name of an image of the store (its layers, through minc-farm). */
function basedirOf(given: string): string {
  if (!isStoreName(given)) return existingLayerDir("rootdir", given);
  step(`${given} is no directory: take the image of that name from the store, its layers top first`);
  farm("pull", given);
  return farm("imagestack", given);
}

function planFrom(args: ReturnType<typeof parse>): Plan {
  const words = args._.map(String);
  if (words.length === 0) throw usageError("ROOTDIR or IMAGE missing (polecat --help)");
  const [given, ...rest] = words;
  const command = rest[0] === "--" ? rest.slice(1) : rest;
  const format = (args.format ?? "sh") as Format;
  if (args.output === "") throw usageError("--output needs a file name");
  const output = checkOutput(outputName(args.output ?? DEFAULT_OUTPUT, format));
  const script = args.script === undefined ? undefined : existingFile("--script", args.script);
  if (!script && command.length === 0) throw usageError("no COMMAND given (and no --script that sets it)");
  const tempdir = args.tempdir === undefined ? undefined : existingLayerDir("--tempdir", args.tempdir);
  return {
    basedir: basedirOf(given),
    command,
    output,
    format,
    script,
    tempdir,
    ignoreState: !!args["ignore-state"],
    debug: !!args.debug,
  };
}

/**
 * The file written, as the shell MINCS names it: the sh format (a program)
 * is NAME itself; an image is NAME.tgz, NAME.sfs or NAME.squashfs, named
 * after the format as given. Unlike the shell MINCS (which makes
 * ls.tgz.tgz of -o ls.tgz), a NAME that ends with that suffix already gets
 * no second one.
 */
function outputName(given: string, format: Format): string {
  const path = resolve(given);
  if (format === "sh" || path.endsWith(`.${format}`)) return path;
  return `${path}.${format}`;
}

/**
 * An output path that cannot be written fails now, not after the traced
 * run (which a server's test run may have made long): it must not be a
 * directory, and what of its directory exists must be directories.
 */
function checkOutput(output: string): string {
  const st = statSync(output, { throwIfNoEntry: false });
  if (st?.isDirectory()) throw usageError(`--output ${output}: is a directory`);
  if (st && !st.isFile()) throw usageError(`--output ${output}: not a regular file`);
  let dir = dirname(output);
  while (!existsSync(dir)) dir = dirname(dir);
  if (!statSync(dir).isDirectory()) throw usageError(`--output ${output}: ${dir} is not a directory`);
  return output;
}

/**
 * The file the output is written as, then renamed over it: a new one of
 * our own beside it, made exclusively (set -C), so that builds to the same
 * output never share one, and a failed build leaves no half file. Making it
 * is the last check of the output path (a read-only or virtual filesystem
 * such as /proc cannot hold it).
 */
function claimOutput(output: string): string {
  step(`Claim the output: a partial file of our own beside ${output}, renamed over it when done`);
  const dir = dirname(output);
  try {
    if (!existsSync(dir)) mkdirs(dir);
    for (;;) {
      const partial = `${dir}/.${basename(output)}.${randomBytes(3).toString("hex")}.partial`;
      try {
        closeSync(openSync(partial, "wx"));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST") continue;
        throw e;
      }
      removeOnInterrupt(partial);
      shown(`(set -C; : > ${quote(partial)})`);
      return partial;
    }
  } catch (e) {
    throw usageError(
      `--output ${output}: cannot write a file in ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
}

function existingFile(what: string, file: string): string {
  if (!existsSync(file) || !statSync(file).isFile()) throw usageError(`${what} ${file}: no such file`);
  return realpathSync(file);
}

/** The settings the backends read, and nothing of the caller's own MINC_* (the shell MINCS's exports). */
function exportSettings(plan: Plan, work: string): void {
  step("Export the settings the backends read (and drop any other MINC_* of the caller)");
  const settings = settingsEnv({
    MINC_BASEDIR: plan.basedir,
    MINC_TMPDIR: work,
    MINC_IGNORE_STATE: plan.ignoreState,
    MINC_PIVOT: false,
    ...(plan.debug ? { MINC_DEBUG: true } : {}),
  });
  const dropped = Object.keys(process.env).filter((k) => k.startsWith("MINC_") && !(k in settings));
  // Shown while MINC_DEBUG, which turns the trace on, is still set.
  if (dropped.length > 0) shown(`unset ${dropped.join(" ")}`);
  shown(
    `export ${Object.entries(settings)
      .map(([k, v]) => `${k}=${quote(v)}`)
      .join(" ")}`,
  );
  for (const k of dropped) delete process.env[k];
  Object.assign(process.env, settings);
}

function makeWorkingDir(plan: Plan): string {
  if (plan.tempdir) {
    step(`Use the working directory ${plan.tempdir} (kept)`);
    return plan.tempdir;
  }
  step("Make a working directory; it goes when polecat ends");
  const dir = makeTempDir(checkLayerPath("working directory", `${tmpdir()}/polecat-`));
  removeOnInterrupt(dir);
  return dir;
}

function removeWorkingDir(plan: Plan, work: string): void {
  if (plan.tempdir) return;
  step("Remove the working directory");
  shown(`rm -rf ${quote(work)}`);
  rmSync(work, { recursive: true, force: true });
}

/**
 * Read the build script as MINCS did, by sourcing it in sh (so its top
 * level runs on this host: it should only set variables and define
 * install_command). COMMAND, MKDIRS and RMDIRS are split into words.
 */
function readBuildScript(script: string): BuildScript {
  step(`Read COMMAND, MKDIRS and RMDIRS from the build script ${script}`);
  const print =
    'COMMAND= MKDIRS= RMDIRS=; . "$1" >&2 || exit 1; set -f; ' +
    'command -v install_command >/dev/null 2>&1 || { echo "no install_command function in $1" >&2; exit 1; }; ' +
    'for w in $COMMAND; do printf "c%s\\0" "$w"; done; for w in $MKDIRS; do printf "m%s\\0" "$w"; done; ' +
    'for w in $RMDIRS; do printf "r%s\\0" "$w"; done';
  shown(`sh -c ${quote(print)} polecat ${quote(script)}`);
  const r = spawnSync("/bin/sh", ["-c", print, "polecat", script], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (r.status !== 0)
    throw usageError(`build script ${script}: ${(r.stderr || "cannot read it").trim().split("\n").pop()}`);
  const words = r.stdout.split("\0").filter((w) => w !== "");
  const of = (kind: string): string[] => words.filter((w) => w[0] === kind).map((w) => w.slice(1));
  return { command: of("c"), mkdirs: of("m"), rmdirs: of("r") };
}

/** Tell the user which stage runs (the command's own output follows). */
function stage(what: string): void {
  step(`--- ${what} ---`);
  if (!tracing()) process.stderr.write(`--- ${what} ---\n`);
}

/** Stage 1 of a build script: install_command runs in the container; what it writes lands in the upper layer. */
async function installStage(script: string, work: string): Promise<void> {
  stage("Installation stage: install_command runs in a container over the rootfs");
  const upper = workdirPaths(work).storage;
  writeFileMkdir(`${upper}/.polecat/build-script`, readFileSync(script, "utf8"));
  const status = await runContainer(work, ["/bin/sh", "-c", "set -e; . /.polecat/build-script; install_command"]);
  rmSync(`${upper}/.polecat`, { recursive: true, force: true });
  shown(`rm -rf ${quote(`${upper}/.polecat`)}`);
  if (status !== 0) throw new MincError(`install_command failed (exit ${status})`);
}

/**
 * Stage 2: minc-trapper runs the command traced and collects what it used.
 * A Ctrl-C of the whole group reaches the container and minc-trapper too:
 * the end of the test run, no interruption here.
 */
async function traceStage(plan: Plan, command: string[], work: string): Promise<number> {
  stage(`Testing stage: ${quoteAll(command)} runs once, traced (stop a server with Ctrl-C after its test run)`);
  const argv = [backend("minc-trapper"), "-r", plan.basedir, work, ...command];
  shown(quoteAll(argv));
  const unspare = spareGroupInterrupts();
  try {
    return await runStoppable(argv);
  } finally {
    unspare();
  }
}

/** MKDIRS and RMDIRS, inside the image (links resolved inside it, never the image's root itself). */
function adjustDirs(build: BuildScript, upper: string): void {
  step("Make MKDIRS and remove RMDIRS in the image");
  for (const d of build.mkdirs) mkdirs(resolveInRoot(upper, d));
  for (const d of build.rmdirs) {
    const at = resolveInRoot(upper, d);
    if (at === upper) throw usageError(`RMDIRS ${d}: that is the whole image`);
    removeTree(at);
  }
}

/**
 * What the traced run deleted from the rootfs left overlay whiteouts (char
 * devices 0/0) in the upper layer. In the image they would be device nodes
 * (tgz) or hide nothing (the image is the only lower layer): drop them.
 */
function dropWhiteouts(upper: string): void {
  const whiteouts = readdirSync(upper, { recursive: true, withFileTypes: true })
    .filter((e) => e.isCharacterDevice())
    .map((e) => `${e.parentPath}/${e.name}`)
    .filter((path) => lstatSync(path).rdev === 0);
  if (whiteouts.length === 0) return;
  step("Drop the overlay's whiteouts (what the traced run deleted): the image has no layer below to hide");
  for (const path of whiteouts) removeFile(path);
}

function addRequiredFiles(upper: string): void {
  step("Add the files minc binds over: /etc/hosts and /etc/resolv.conf");
  const etc = resolveInRoot(upper, "/etc");
  if (!existsSync(etc)) mkdirs(etc);
  for (const f of ["hosts", "resolv.conf"]) if (!existsSync(resolveInRoot(upper, `/etc/${f}`))) touch(`${etc}/${f}`);
}

/** The sh format carries minc and its boot backends, so the target host needs only Node. */
function packRuntime(upper: string): void {
  step(`Pack the minc runtime into the image at ${RUNTIME_DIR}`);
  const files = [
    [frontend("minc"), `${upper}${RUNTIME_DIR}/bin/minc`],
    ...RUNTIME_BACKENDS.map((b) => [backend(b), `${upper}${RUNTIME_DIR}/libexec/${b}`]),
  ];
  mkdirs(`${upper}${RUNTIME_DIR}/bin`, `${upper}${RUNTIME_DIR}/libexec`);
  for (const [from, to] of files) {
    if (!existsSync(from)) throw new MincError(`cannot pack the runtime: ${from} is missing (run make)`);
    shown(`cp -p ${quote(from)} ${quote(to)}`);
    copyFileSync(from, to);
  }
  run(["chmod", "-R", "a+rX,u+w", `${upper}${RUNTIME_DIR}`]);
}

/**
 * A tool run to its end, stopped with us should polecat be interrupted
 * (mksquashfs of a large tree takes a while). Shown as a command in the
 * foreground (not lib/core/run.ts runAsync's "&"): nothing else runs meanwhile.
 */
async function runTool(argv: string[]): Promise<void> {
  shown(quoteAll(argv));
  const status = await runStoppable(argv, { stdio: ["ignore", "inherit", "inherit"] });
  if (status !== 0) throw new MincError(`failed: ${quoteAll(argv)} (exit ${status})`);
}

async function makeSquashfs(upper: string, out: string): Promise<void> {
  needTool("mksquashfs", "squashfs-tools");
  await runTool(["mksquashfs", upper, out, "-noappend", "-no-progress", "-quiet"]);
}

/** Into the partial file claimed beside the output, then renamed over it. */
async function writeOutput(plan: Plan, command: string[], upper: string, work: string, partial: string): Promise<void> {
  if (plan.format === "tgz") {
    step("Write the image as a gzipped tar");
    await runTool(["tar", "-C", upper, "--numeric-owner", "-czf", partial, "."]);
  } else if (plan.format !== "sh") {
    step("Write the image as a squashfs");
    await makeSquashfs(upper, partial);
  } else {
    packRuntime(upper);
    step("Write the sh header and the squashfs image after it");
    const image = workdirPaths(work).squashfs;
    await makeSquashfs(upper, image);
    writeFile(partial, header(command, statSync(image).size));
    shown(`chmod a+x ${quote(partial)}`);
    chmodSync(partial, statSync(partial).mode | 0o111);
    shown(`cat ${quote(image)} >> ${quote(partial)}`);
    writeFileSync(partial, readFileSync(image), { flag: "a" });
    removeFile(image);
  }
  await signalsDelivered(); // (a signal that came meanwhile acts before the output is there)
  shown(`mv ${quote(partial)} ${quote(plan.output)}`);
  renameSync(partial, plan.output);
}

async function build(plan: Plan, work: string, partial: string): Promise<number> {
  exportSettings(plan, work);
  const script = plan.script ? readBuildScript(plan.script) : undefined;
  const command = plan.command.length > 0 ? plan.command : (script?.command ?? []);
  if (command.length === 0) throw usageError(`build script ${plan.script}: COMMAND is empty`);
  if (plan.script) await installStage(plan.script, work);
  const status = await traceStage(plan, command, work);
  if (status !== 0) return status; // minc-trapper said why (or a signal ended it)
  const upper = workdirPaths(work).storage;
  if (script) adjustDirs(script, upper);
  dropWhiteouts(upper);
  addRequiredFiles(upper);
  await writeOutput(plan, command, upper, work, partial);
  const size = capture(["du", "-sh", plan.output], false).split(/\s/)[0];
  process.stdout.write(`done: ${plan.output} (${size})\n`);
  return 0;
}

start(async () => {
  const args = parse(process.argv.slice(2));
  if (args.debug) process.env.MINC_DEBUG = "1";
  const plan = planFrom(args);
  catchInterrupts();
  const partial = claimOutput(plan.output);
  try {
    const work = makeWorkingDir(plan);
    try {
      return await build(plan, work, partial);
    } finally {
      removeWorkingDir(plan, work);
    }
  } finally {
    if (existsSync(partial)) removeFile(partial);
  }
});
