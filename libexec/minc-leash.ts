// minc-leash: phase 5 of the boot, "dive into it".
//
//   minc-leash ROOTDIR [COMMAND [ARG...]]
//
// Puts the command into the new root on a leash: with capsh, chroot into it
// and drop cap_sys_chroot (root inside could otherwise chroot its way back
// out) and any --nocaps; without capsh (or with --pivot), pivot_root into it
// and detach the old root altogether. Either way the MINC_* variables are
// washed out and the command replaces this process, so it is PID 1.
//
// Unless --privileged, the command is confined too (lib/confine/): it keeps
// only Docker's default capabilities (less cap_sys_chroot and cap_mknod),
// and just before capsh a loader sets no_new_privs, joins a new session
// keyring and loads the seccomp filter.
import { statSync } from "node:fs";
import { enterCages, openCages, type CageDoor } from "../lib/cgroups/cage.ts";
import { MincError, usageError } from "../lib/core/fail.ts";
import { backend } from "../lib/core/libexec.ts";
import { resolveInRoot } from "../lib/boot/paths.ts";
import { isExecutableInRoot, shellOf, userOf, type User } from "../lib/boot/rootfs.ts";
import type { Host } from "../lib/core/host.ts";
import { capture, findInPath, live, runInThisNode, stringsOf } from "../lib/core/run.ts";
import { readSettings, type Settings } from "../lib/core/settings.ts";
import { phase, quote, shown, step } from "../lib/core/trace.ts";
import { workdirPaths } from "../lib/boot/workdir.ts";
import { capsOtherThan } from "../lib/confine/caps.ts";
import { loaderArgv } from "../lib/confine/loader.ts";
import { type Confinement, mincConfinement } from "../lib/confine/policy.ts";
import { mincFilter } from "../lib/confine/filter.ts";
import { main as hunt } from "./minc-hunt.ts";

// minc-hunt runs in this Node, not in a Node of its own.
runInThisNode({ "minc-hunt": hunt });

// The settings, from the environment main() is given.
let settings: Settings;
/** Does each step: live, or written down ahead (minc-core's choice). */
let host: Host;
/** What confines the command (none of it with --privileged, but cap_sys_chroot). */
let confinement: Confinement;

function checkRoot(rootdir: string | undefined): string {
  try {
    if (rootdir && statSync(rootdir).isDirectory()) return rootdir;
  } catch {
    // reported below
  }
  throw usageError(`${rootdir ?? "(no rootdir)"} is not a directory`);
}

function commandOf(rootdir: string, argv: string[]): string[] {
  if (argv.length > 0) return argv;
  step("No command given: run the rootfs's shell");
  const shell = shellOf(rootdir);
  if (!shell) throw usageError("no command given and no shell in the rootfs");
  return [shell];
}

/** --ftrace: minc-hunt points ftrace at this process, PID 1, before it becomes the command. */
function huntIfAsked(): void {
  if (!settings.MINC_FTRACE) return;
  step("Set up ftrace for the container with minc-hunt");
  host.run([backend("minc-hunt")]);
}

function userOfSettings(rootdir: string): User | undefined {
  return settings.MINC_USERSPEC ? userOf(rootdir, settings.MINC_USERSPEC) : undefined;
}

/** The environment the command gets: ours without the MINC_* settings, plus an image's own. */
function washedEnv(): NodeJS.ProcessEnv {
  step("Wash the MINC_* settings out of the environment");
  const washed: NodeJS.ProcessEnv = {};
  const dirty: string[] = [];
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("MINC_") || k === "LIBMOUNT_MTAB") dirty.push(k);
    else washed[k] = v;
  }
  if (dirty.length > 0) shown(`unset ${dirty.sort().join(" ")}`);
  const imageEnv = imageEnvironment();
  if (imageEnv.length > 0) {
    step("Add the image's environment");
    shown(`export ${imageEnv.map(quote).join(" ")}`);
    for (const kv of imageEnv) washed[kv.slice(0, kv.indexOf("="))] = kv.slice(kv.indexOf("=") + 1);
  }
  return washed;
}

function imageEnvironment(): string[] {
  if (!settings.MINC_IMAGE_ENV) return [];
  let list: unknown;
  try {
    list = JSON.parse(settings.MINC_IMAGE_ENV);
  } catch {
    list = undefined;
  }
  if (!Array.isArray(list) || !list.every((x) => typeof x === "string" && /^[^=]+=/.test(x))) {
    throw usageError("MINC_IMAGE_ENV must be a JSON array of NAME=VALUE strings");
  }
  return list as string[];
}

/** The image's working directory, where the command starts (the root otherwise). */
function workdir(): string | undefined {
  const dir = settings.MINC_WORKDIR;
  if (dir && !dir.startsWith("/")) throw usageError(`MINC_WORKDIR ${dir} is not absolute`);
  return dir || undefined;
}

/**
 * MINC_DEBUG_PREFIX: a command put in front of the dive, outside the new
 * root, as MINCS's minc-leash did (minc-trapper puts strace there). Words
 * split at blanks, like the shell's unquoted $MINC_DEBUG_PREFIX.
 */
function debugPrefix(): string[] {
  return settings.MINC_DEBUG_PREFIX;
}

/** The capabilities capsh drops from the bounding set, so that the command never has them. */
function capsToDrop(): string {
  if (confinement.keep === "all") {
    const drop = [settings.MINC_DROPCAPS, "cap_sys_chroot"].filter((c) => c).join(",");
    step(`Drop ${drop}: root inside must not chroot its way out`);
    return drop;
  }
  const drop = [...new Set([...capsOtherThan(confinement.keep), ...confinement.drop])];
  step(
    `Keep only ${confinement.keep.join(",")} (Docker's default set, less cap_sys_chroot and cap_mknod${settings.MINC_DROPCAPS ? ` and --nocaps ${settings.MINC_DROPCAPS}` : ""}): drop the rest, so root inside cannot mount, load modules, reach raw devices, trace the host or chroot its way out`,
  );
  return drop.join(",");
}

/**
 * The words that load the seccomp filter before capsh runs (none with
 * --privileged). The filter is compiled here, into the working dir.
 */
function filterLoader(): string[] {
  if (!confinement.filtered) return [];
  const file = workdirPaths(settings.MINC_TMPDIR).seccomp;
  const filter = mincFilter(confinement);
  step(
    `The seccomp filter: Docker's default profile for these capabilities (lib/confine/seccomp.ts), ${filter.length / 8} BPF instructions. It blocks mount, umount, keyctl, add_key, request_key, bpf, perf_event_open, open_by_handle_at, kexec, module loading, new user namespaces, ...`,
  );
  host.writeFile(file, filter);
  step(
    "Then perl (lib/confine/loader.ts) joins a new session keyring (not the host's), sets no_new_privs (no setuid program or file capability gains anything) and loads the filter, and execs capsh",
  );
  return loaderArgv(file);
}

type Capsh = { path: string; exec: boolean; shellOption: boolean };

/** capsh, and which of the ways to run a command it knows. */
function findCapsh(): Capsh | undefined {
  if (settings.MINC_PIVOT) {
    step("--pivot: use pivot_root, not capsh");
    return undefined;
  }
  const path = findInPath("capsh");
  if (!path) {
    step("No capsh here: fall back to pivot_root");
    return undefined;
  }
  step("Ask capsh how it can start a command (--exec is not in Debian's capsh; --shell is)");
  const help = helpInProgram(path) ?? capture([path, "--help"]);
  return { path, exec: /(^|\0)\s*--exec\b/m.test(help), shellOption: /(^|\0)\s*--shell=/m.test(help) };
}

/**
 * capsh's option names, read from the program (lib/core/run.ts stringsOf).
 * Undefined if they are not found there (a wrapper script, a packed
 * program): then capsh --help is asked.
 */
function helpInProgram(path: string): string | undefined {
  const text = stringsOf(path);
  if (text === undefined || !/\0\s*--chroot=/.test(text)) return undefined;
  step("(its option names are strings in the program: read them there)");
  return text;
}

/** The shell capsh will start in the new root to exec the command. */
function capshShell(rootdir: string, capsh: Capsh): string | undefined {
  const candidates = capsh.shellOption ? ["/bin/sh", "/bin/bash"] : ["/bin/bash"];
  return candidates.find((sh) => isExecutableInRoot(resolveInRoot(rootdir, sh)));
}

/**
 * The command's file in the new root, for a capsh that has no --exec and a
 * rootfs with no shell (a distroless image): found as the shell would find
 * it, by the PATH the command gets. Undefined if it is not there.
 */
function commandInRoot(rootdir: string, name: string): string | undefined {
  if (name.includes("/"))
    return name.startsWith("/") && isExecutableInRoot(resolveInRoot(rootdir, name)) ? name : undefined;
  const path =
    imageEnvironment()
      .find((kv) => kv.startsWith("PATH="))
      ?.slice(5) ??
    process.env.PATH ??
    "";
  return path
    .split(":")
    .filter((d) => d.startsWith("/"))
    .map((d) => `${d.replace(/\/+$/, "")}/${name}`)
    .find((f) => isExecutableInRoot(resolveInRoot(rootdir, f)));
}

function diveWithCapsh(
  rootdir: string,
  capsh: Capsh,
  command: string[],
  user: User | undefined,
  cage: CageDoor[],
): never {
  const drop = capsToDrop();
  const prefix = debugPrefix();
  if (prefix.length > 0) step(`Run it under ${prefix[0]} (MINC_DEBUG_PREFIX), which stays outside the new root`);
  const loader = filterLoader();
  // (capsh chroots first, while it still has cap_sys_chroot, then drops; --inh= leaves no inheritable set to regain them by)
  const args = [...prefix, ...loader, capsh.path, `--chroot=${rootdir}`, `--drop=${drop}`];
  if (confinement.filtered) args.push("--inh=");
  if (user) {
    step(`Run as uid ${user.uid}, gid ${user.gid}`);
    args.push(`--gid=${user.gid}`, `--groups=${user.gid}`, `--uid=${user.uid}`);
  }
  const washed = washedEnv();
  enterCages(cage, host);
  if (capsh.exec && !workdir()) {
    step("Execute the command in the new root; it becomes PID 1");
    return host.exec([...args, "--exec", "--", ...command], washed);
  }
  const shell = capshShell(rootdir, capsh);
  if (!shell) {
    const file = commandInRoot(rootdir, command[0])!;
    step(`No shell in the rootfs for this capsh to start: it starts ${file} itself as its "shell" (so it is PID 1)`);
    return host.exec([...args, `--shell=${file}`, "--", ...command.slice(1)], washed);
  }
  step(`This capsh has no --exec: it starts ${shell}, which execs the command (so it becomes PID 1)`);
  const viaShell = shell === "/bin/bash" ? [] : [`--shell=${shell}`];
  const dir = workdir();
  if (dir) return host.exec([...args, ...viaShell, "--", "-c", 'cd -- "$0" && exec "$@"', dir, ...command], washed);
  return host.exec([...args, ...viaShell, "--", "-c", 'exec "$0" "$@"', ...command], washed);
}

/**
 * A traced dive into a rootfs with no shell for capsh: chroot(1), so the
 * tracer can stay outside (after pivot_root nothing of the host is left).
 * Only for tracing: the command keeps cap_sys_chroot.
 */
function diveWithChroot(rootdir: string, command: string[], user: User | undefined, cage: CageDoor[]): never {
  const prefix = debugPrefix();
  step(
    `Run it under ${prefix[0]} (MINC_DEBUG_PREFIX) with chroot: no shell in the rootfs for capsh, and pivot_root would leave the tracer behind`,
  );
  if (confinement.filtered) step("(Traced this way, the command keeps its capabilities: only the filter confines it)");
  const loader = filterLoader();
  const spec = user ? [`--userspec=${user.uid}:${user.gid}`, `--groups=${user.gid}`] : [];
  const washed = washedEnv();
  enterCages(cage, host);
  return host.exec([...prefix, ...loader, "chroot", ...spec, rootdir, ...command], washed);
}

function diveWithPivot(rootdir: string, command: string[], user: User | undefined, cage: CageDoor[]): never {
  if (confinement.filtered) {
    step(
      "--pivot: after pivot_root no host program is left to drop capabilities and load the seccomp filter: the command keeps every capability and has no filter (the masks and the nodev root still apply)",
    );
  }
  host.needsInside("pivot_root changes this process's own root and ids");
  const umountInside = ["/bin", "/sbin", "/usr/bin", "/usr/sbin"].some((d) =>
    isExecutableInRoot(resolveInRoot(rootdir, `${d}/umount`)),
  );
  if (!umountInside) {
    throw new MincError("pivot_root needs umount inside the rootfs to detach the old root, and there is none");
  }
  step("Swap the roots: the new root becomes / and the old one is stacked on top of it");
  shown(`cd ${quote(rootdir)}`);
  process.chdir(rootdir);
  host.run(["pivot_root", ".", "."]);
  step("Detach the old root (this umount is the rootfs's own: the host's is gone)");
  host.run(["umount", "-l", "."]);
  shown("cd /");
  process.chdir("/");
  if (user) {
    step(`Run as uid ${user.uid}, gid ${user.gid} (setgroups, setgid, setuid)`);
    process.setgroups!([user.gid]);
    process.setgid!(user.gid);
    process.setuid!(user.uid);
  }
  const washed = washedEnv();
  const dir = workdir();
  if (dir) {
    shown(`cd ${quote(dir)}`);
    process.chdir(dir);
  }
  enterCages(cage, host);
  step("Execute the command in the new root; it becomes PID 1");
  return host.exec(command, washed);
}

export function main(args: string[], env: NodeJS.ProcessEnv, boot: Host = live): number {
  settings = readSettings(env);
  host = boot;
  confinement = mincConfinement(settings);
  phase(5);
  const [given, ...argv] = args;
  const rootdir = checkRoot(given);
  const command = commandOf(rootdir, argv);
  const user = userOfSettings(rootdir);
  const cage = openCages(settings, host);
  const capsh = findCapsh();
  huntIfAsked();
  if (capsh && (capsh.exec || capshShell(rootdir, capsh))) return diveWithCapsh(rootdir, capsh, command, user, cage);
  if (capsh?.shellOption && !workdir() && commandInRoot(rootdir, command[0]))
    return diveWithCapsh(rootdir, capsh, command, user, cage);
  if (settings.MINC_DROPCAPS) {
    throw usageError(
      `cannot drop ${settings.MINC_DROPCAPS}: that needs capsh${capsh ? " and a shell in the rootfs" : ""}`,
    );
  }
  if (debugPrefix().length > 0 && !settings.MINC_DROPCAPS && !workdir())
    return diveWithChroot(rootdir, command, user, cage);
  if (confinement.filtered && !settings.MINC_PIVOT) {
    throw usageError(
      `cannot confine this container: ${capsh ? "the rootfs has no shell for capsh and the command is not found in it" : "no capsh here (Debian package libcap2-bin)"}; add --privileged to run it unconfined with pivot_root`,
    );
  }
  if (capsh) step("The rootfs has no shell for capsh to start: fall back to pivot_root");
  return diveWithPivot(rootdir, command, user, cage);
}
