// minc-core's boot, written down ahead as a script for sh.
//
// Starting Node inside the new namespaces costs about 20 ms, more than
// everything minc-core does there. So minc-exec, before it enters them, runs
// minc-core (and minc-leash after it) inside minc's own Node in "write
// down" mode: their steps run as usual, but each command, mount and write
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
import { writeFileSync } from "node:fs";
import { quote } from "../core/quote.ts";
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

/** The script being written down, if any. */
let current: Script | undefined;

const HEAD = [
  "# The boot of the new root, written down ahead by minc-core (lib/boot/bootscript.ts);",
  "# minc-fork.sh runs it as PID 1 of the new namespaces.",
  "fail() { printf 'minc-core: %s\\n' \"$1\" >&2; exit 1; }",
  "trap : PIPE   # (a --debug reader gone: the boot goes on; the command it execs gets the default)",
];

export function startWritingDown(file: string, root: string, o: { tracing: boolean; remake: boolean }): void {
  current = { file, tracing: o.tracing, remake: o.remake, root, lines: [...HEAD], trace: [], mounts: [], fstabs: 0 };
}

export function writingDown(): boolean {
  return current !== undefined;
}

/** Write the script out (the last pending mounts first). */
export function finishWritingDown(): void {
  const script = current;
  if (!script) return;
  flush(script);
  writeFileSync(script.file, `${script.lines.join("\n")}\n`);
  current = undefined;
}

export function abandonWritingDown(): void {
  current = undefined;
}

/** True for a path in the new root (below its mountpoint), which only the script may touch. */
export function inNewRoot(path: string): boolean {
  const root = current?.root;
  return root !== undefined && path.startsWith(`${root}/`);
}

/** A line of the --debug trace, printed when the script gets there. */
export function recordTrace(line: string): void {
  current!.trace.push(line);
}

/**
 * A command; its failure stops the boot. With the paths it works on, it
 * waits only for the pending mounts on or under them, so the mounts before
 * and after it can still be made together.
 */
export function recordCommand(line: string, paths?: readonly string[]): void {
  recordRaw(`${line} || fail ${quote(`failed: ${line}`)}`, paths);
}

/** A line of sh as it is (see recordCommand for paths). */
export function recordRaw(line: string, paths?: readonly string[]): void {
  const script = current!;
  flush(script, paths);
  script.lines.push(line);
}

/** A mount for the fstab of the next mount -a; false if it does not fit one (then record the command). */
export function recordMount(m: MountArgs, kind: "dir" | "file"): boolean {
  if (m.options.includes("noauto")) return false;
  const script = current!;
  flushTrace(script);
  script.mounts.push({ entry: fstabEntry(m), target: m.target, kind });
  return true;
}

/** At a phase's end: its mounts are made before the next phase's trace (nothing when not writing down). */
export function flushWrittenDown(): void {
  const script = current;
  if (script) flush(script);
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

/** Thrown by a step that cannot be written down ahead (the reason is its message). */
export class NotWrittenDown extends Error {}
