// minc-core's boot, written down ahead as a script for sh.
//
// Starting Node inside the new namespaces costs about 20 ms, more than
// everything minc-core does there. So minc-exec, before it enters them, runs
// minc-core (and minc-leash after it) inside minc's own Node, given the
// executor here (writeDown; lib/core/host.ts): their steps run as usual, but each command, mount and write
// under the new root becomes a line of TMPDIR/minc-core.sh instead of being
// done, and their --debug trace becomes lines that print it when the script
// runs. minc-fork.sh then starts `sh minc-core.sh` as PID 1, and the boot
// inside is all plain commands, as in the shell MINCS.
// - Questions about the root are answered by lib/boot/rootview.ts: it is not
//   mounted yet.
// - Work outside the root (the working dir's files) is done at once.
// - Mounts in a row are written to an fstab and made by one `mount -a`.
// - A step that cannot be written down (it needs to look inside the new
//   namespaces) throws NotWrittenDown: minc-exec then starts minc-core
//   itself in them, as before.
import { statSync, writeFileSync } from "node:fs";
import { HandedOver, NotWrittenDown } from "../core/fail.ts";
import { type Executor, type Host, lineOf, type Op } from "../core/host.ts";
import { quote, quoteAll } from "../core/quote.ts";
import { findInPath, liveExecutor, mainHere, stringsOf } from "../core/run.ts";
import { traceAside } from "../core/trace.ts";
import { closeView, viewMount, viewRemove, viewRoot } from "./rootview.ts";
import { fstabOf } from "./workdir.ts";

interface Script {
  file: string;
  /** --debug: the script prints the trace as it goes. */
  tracing: boolean;
  root: string;
  lines: string[];
  trace: string[];
  /** Mounts not made yet: their fstab lines, where, and what kind of mountpoint they need. */
  mounts: { entry: string; target: string; kind: "dir" | "file" }[];
  /** May the script make a mountpoint that is not there after all (an overlay's root; not --direct)? */
  remake: boolean;
  fstabs: number;
}

const HEAD = [
  "# The boot of the new root, written down ahead by minc-core (lib/boot/bootscript.ts);",
  "# minc-fork.sh runs it as PID 1 of the new namespaces.",
  "fail() { printf 'minc-core: %s\\n' \"$1\" >&2; exit 1; }",
  "trap : PIPE   # (a --debug reader gone: the boot goes on; the command it execs gets the default)",
];

/** The executor that writes the boot down (lib/core/host.ts); finish() writes the script out, abandon() drops it. */
export interface WrittenDown extends Executor {
  finish(): void;
  abandon(): void;
}

/** Start writing the boot down as file, for the root mounted on root; the trace goes into it too. */
export function writeDown(file: string, root: string, o: { tracing: boolean; remake: boolean }): WrittenDown {
  const script: Script = {
    file,
    tracing: o.tracing,
    remake: o.remake,
    root,
    lines: [...HEAD],
    trace: [],
    mounts: [],
    fstabs: 0,
  };
  traceAside({ line: (line) => script.trace.push(line), phaseEnds: () => flush(script) });
  const done = (): void => {
    traceAside(undefined);
    closeView();
  };
  return {
    ahead: true,
    traceOf: (op) => traceOf(script, op),
    do: (op, host) => perform(script, op, host),
    together: (body) => body(), // (one fstab per batch: see flush)
    finish(): void {
      flush(script); // the last pending mounts first
      writeFileSync(script.file, `${script.lines.join("\n")}\n`);
      done();
    },
    abandon: done,
  };
}

/**
 * Is this write for the script (in the new root, or anywhere but the
 * working dir, /proc/sys/kernel/hostname say)? The working dir's own
 * files are written at once.
 */
function deferred(script: Script, path: string): boolean {
  const workdir = process.env.MINC_TMPDIR;
  return path.startsWith(`${script.root}/`) || !workdir || !(path === workdir || path.startsWith(`${workdir}/`));
}

function traceOf(script: Script, op: Op): string[] {
  switch (op.op) {
    case "removeTree":
      return deferred(script, op.path) ? lineOf(op) : liveExecutor.traceOf(op);
    case "recordPid":
      return []; // the script prints it (recordPidWhenRun)
    case "exec": {
      const file = findInPath(op.argv[0], op.env.PATH);
      if (!file || mainHere(file)) return lineOf(op);
      const line = quoteAll([...defaultSignals(), file, ...op.argv.slice(1)]);
      return [
        "# (INT and QUIT are ignored in this sh, a background job of the waiter: env gives the command their default action)",
        `exec ${line}`,
      ];
    }
    default:
      return lineOf(op);
  }
}

function perform(script: Script, op: Op, host: Host): void {
  const atOnce = (): void => liveExecutor.do(op, host);
  switch (op.op) {
    case "mount":
      return writeDownMount(script, op.args);
    case "runTogether":
      // Written down, it waits only for the mounts on the paths it names.
      return recordCommand(
        script,
        quoteAll(op.argv),
        op.argv.filter((a) => a.startsWith("/")),
      );
    case "run":
      if (op.input === undefined && mainHere(op.argv[0])) return atOnce(); // a backend of this Node: it writes its own steps down
      return recordCommand(script, lineOf(op)[0]);
    case "export":
      recordRaw(script, lineOf(op)[0]);
      process.env[op.name] = op.value;
      return;
    case "mkdirs":
      if (!op.dirs.some((d) => deferred(script, d))) return atOnce();
      return recordCommand(script, lineOf(op)[0], op.dirs);
    case "touch":
      if (!deferred(script, op.path)) return atOnce();
      return recordCommand(script, `: >> ${quote(op.path)}`, [op.path]); // (touch, without a process)
    case "symlink":
    case "writeFile":
      if (!deferred(script, op.path)) return atOnce();
      // (a here-document cannot take the "|| fail" after it: bytes go to the working dir only, written at once)
      if (op.op === "writeFile" && typeof op.content !== "string") throw new NotWrittenDown(`bytes for ${op.path}`);
      return recordCommand(script, lineOf(op)[0], [op.path]);
    case "removeFile":
      if (!deferred(script, op.path)) return atOnce();
      viewRemove(op.path);
      return recordCommand(script, lineOf(op)[0], [op.path]);
    case "removeTree":
      if (!deferred(script, op.path)) return atOnce();
      return recordCommand(script, lineOf(op)[0]);
    case "copyFile":
      if (!deferred(script, op.to)) return atOnce();
      return recordCommand(script, lineOf(op)[0], [op.to]);
    case "exec": {
      const file = findInPath(op.argv[0], op.env.PATH);
      if (!file || mainHere(file)) return atOnce();
      return writeDownExec(script, file, op.argv, op.env);
    }
    case "recordPid":
      return recordPidWhenRun(script, op.file);
    case "rootWillBe":
      // The root is not mounted until the script runs: until then, look at what it will show.
      return viewRoot(op.root, [...op.layers]);
    case "needsInside":
      throw new NotWrittenDown(op.why);
    case "enterCage":
      // (not opened ahead: the script, still outside the new root, writes the file itself)
      return recordCommand(script, lineOf(op)[0]);
  }
}

/** A mount for the written-down boot; the root's view learns what it will show there. */
function writeDownMount(script: Script, args: readonly string[]): void {
  const m = parseMount(args);
  const bind = !!m?.options.includes("bind");
  const onFile = bind && !!statSync(m!.source, { throwIfNoEntry: false })?.isFile(); // a file is bound onto a file
  if (!m || !recordMount(script, m, onFile ? "file" : "dir")) recordCommand(script, quoteAll(["mount", ...args]));
  if (m) viewMount(m.target, bind ? m.source : undefined);
}

/** The PID is known only when the script runs: sh reads it from the first field of /proc/self/stat. */
function recordPidWhenRun(script: Script, file: string): void {
  const pidfile = quote(file);
  recordRaw(script, "read -r MINC_PID _ < /proc/self/stat; export MINC_PID");
  // (the trace shows the path quoted as the other lines do: quoted once more here, for sh to print it so)
  if (script.tracing)
    recordRaw(
      script,
      `printf '+ export MINC_PID=%s\\n+ echo %s > %s\\n' "$MINC_PID" "$MINC_PID" ${quote(pidfile)} >&2`,
    );
  recordRaw(script, `echo "$MINC_PID" > ${pidfile}`);
  process.env.MINC_PID = "(known when the script runs)"; // so minc-leash washes it out
}

/**
 * The written-down boot ends by exec, with the environment the next program
 * gets. The script's sh is a background job of minc's waiter, started with
 * INT and QUIT ignored for good (sh cannot undo that, Node could), so env
 * gives them back their default action on the way.
 */
function writeDownExec(script: Script, file: string, argv: readonly string[], env: NodeJS.ProcessEnv): never {
  const line = quoteAll([...defaultSignals(), file, ...argv.slice(1)]);
  const gone = Object.keys(process.env)
    .filter((k) => env[k] === undefined)
    .sort();
  if (gone.length > 0) recordRaw(script, `unset ${gone.join(" ")}`);
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && process.env[k] !== v) recordRaw(script, `export ${k}=${quote(v)}`);
  }
  recordRaw(script, `exec ${line}`);
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
 * A command; its failure stops the boot. With the paths it works on, it
 * waits only for the pending mounts on or under them, so the mounts before
 * and after it can still be made together.
 */
function recordCommand(script: Script, line: string, paths?: readonly string[]): void {
  recordRaw(script, `${line} || fail ${quote(`failed: ${line}`)}`, paths);
}

/** A line of sh as it is (see recordCommand for paths). */
function recordRaw(script: Script, line: string, paths?: readonly string[]): void {
  flush(script, paths);
  script.lines.push(line);
}

/** A mount for the fstab of the next mount -a; false if it does not fit one (then record the command). */
function recordMount(script: Script, m: MountArgs, kind: "dir" | "file"): boolean {
  if (m.options.includes("noauto")) return false;
  flushTrace(script);
  script.mounts.push({ entry: fstabEntry(m), target: m.target, kind });
  return true;
}

/** Make the pending mounts (those that paths wait for, or all), by one mount -a. */
function flush(script: Script, paths?: readonly string[]): void {
  flushTrace(script);
  const n = paths ? lastCovering(script.mounts, paths) + 1 : script.mounts.length;
  if (n === 0) return;
  const fstab = fstabOf(script.file, ++script.fstabs);
  const batch = script.mounts.slice(0, n);
  writeFileSync(fstab, `${batch.map((m) => m.entry).join("\n")}\n`);
  script.mounts = script.mounts.slice(n);
  if (n > 1 && script.tracing)
    script.trace.push(`# (${n} of the mounts above are made together, by one mount(8): mount -a -T ${fstab})`);
  flushTrace(script);
  const mountAll = `mount -a -T ${quote(fstab)}`;
  const failed = `fail ${quote(`failed: the mounts of ${fstab}`)}`;
  const remade = remakeMountpoints(script, batch);
  if (remade === "") script.lines.push(`${mountAll} || ${failed}`);
  else script.lines.push(`${mountAll} 2>/dev/null || { ${remade} ${mountAll}; } || ${failed}`);
}

/**
 * What makes the batch's mountpoints in the new root, should one not be
 * there after all: the root's view cannot read overlayfs's opaque-directory
 * xattr, so under a directory a higher layer made opaque it may have seen a
 * file of a lower one. Then the mounts are tried once more (mount -a skips
 * those it made); as minc-core booting inside would have, the mountpoint is
 * made in the upper layer. Nothing runs when every mount works.
 */
function remakeMountpoints(script: Script, batch: Script["mounts"]): string {
  if (!script.remake) return "";
  const steps = batch
    .filter((m) => m.target.startsWith(`${script.root}/`))
    .map(({ target, kind }) => {
      const t = quote(target);
      const make =
        kind === "dir"
          ? `mkdir -p ${t}`
          : `{ mkdir -p ${quote(target.slice(0, target.lastIndexOf("/")))} && : >> ${t}; }`;
      return `[ -e ${t} ] || ${make};`;
    });
  if (steps.length === 0) return "";
  const note = script.tracing
    ? "printf '%s\\n' '# (a mountpoint the plan saw in a lower layer is hidden by an opaque directory above: made now)' >&2; "
    : "";
  // (Only while the working dir is there: mkdir -p must not make it again after a cleanup.)
  return `[ -d ${quote(script.root)} ] && { ${note}${steps.join(" ")} } &&`;
}

/** The last pending mount on, over or under one of the paths; -1 if none. */
function lastCovering(mounts: readonly { target: string }[], paths: readonly string[]): number {
  const related = (a: string, b: string): boolean => a === b || a.startsWith(`${b}/`) || b.startsWith(`${a}/`);
  for (let i = mounts.length - 1; i >= 0; i--) {
    if (paths.some((p) => related(p.replace(/\/+$/, ""), mounts[i].target))) return i;
  }
  return -1;
}

function flushTrace(script: Script): void {
  if (script.trace.length === 0) return;
  script.lines.push(`printf '%s\\n' ${script.trace.map(quote).join(" ")} >&2`);
  script.trace = [];
}

export interface MountArgs {
  type: string;
  options: string[];
  source: string;
  target: string;
}

/** mount [-t TYPE] [-o OPTIONS] [--bind] SOURCE TARGET; undefined for any other form. */
export function parseMount(args: readonly string[]): MountArgs | undefined {
  let type = "none";
  const options: string[] = [];
  const places: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "-t" && i + 1 < args.length) type = args[++i];
    else if (a === "-o" && i + 1 < args.length) options.push(...args[++i].split(","));
    else if (a === "--bind") options.unshift("bind");
    else if (a.startsWith("-")) return undefined;
    else places.push(a);
  }
  if (places.length !== 2) return undefined;
  return { type, options, source: places[0], target: places[1] };
}

/** fstab's six fields. */
function fstabEntry(m: MountArgs): string {
  return [
    fstabField(m.source),
    fstabField(m.target),
    fstabField(m.type),
    fstabField(m.options.length > 0 ? m.options.join(",") : "defaults"),
    "0",
    "0",
  ].join(" ");
}

/** fstab separates fields by blanks: spaces and the like are written in octal, as getmntent(3) reads them. */
function fstabField(text: string): string {
  return text.replace(/[\\\s]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
}
