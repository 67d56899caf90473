// minc: run a command in a new container.
//
// Phase 1 of the boot: parse the options into MINC_* variables, set up the
// working directory and trap the exit to clean it up, then go on with
// minc-exec in this same Node. At the end of phase 3 minc-exec makes minc
// a small sh (the waiter, libexec/minc-waiter.sh) that keeps the trap, as
// MINCS's `trap "$TRAPCMD" EXIT`, so no Node process stays resident while
// the container runs.
import { spawn } from "node:child_process";
import { accessSync, closeSync, constants, existsSync, openSync, readFileSync, realpathSync, statSync } from "node:fs";
import { basename, resolve } from "node:path";
import { anyLimit, cageDirs, checkCagesFree, controllersFor, findHierarchy, limitsOf } from "../lib/cgroups/cage.ts";
import { claimWorkingDir } from "../lib/boot/claim.ts";
import { onExit } from "../lib/boot/cleanup.ts";
import { parsePortMap } from "../lib/net/dens.ts";
import { MincError, start, usageError } from "../lib/core/fail.ts";
import { checkLayerPath, existingDir } from "../lib/store/layerpath.ts";
import { backend, checkBackends, WAITER_SCRIPTS } from "../lib/core/libexec.ts";
import { CROSS_ARCHES, MINC_OPTIONS, mincUsage, parseMincArgs, type ParsedArgs } from "../lib/boot/minc-options.ts";
import { exec, findInPath, makeTempDir, removeFile, runInThisNode } from "../lib/core/run.ts";
import { farm, isStoreName } from "../lib/store/store.ts";
import { shellOf } from "../lib/boot/rootfs.ts";
import {
  BOOT_SETTINGS,
  LIMIT_SETTINGS,
  readSettings,
  settingsEnv,
  type BootSettings,
  type Settings,
  type SettingsEnv,
} from "../lib/core/settings.ts";
import { phase, quote, quoteAll, shown, step } from "../lib/core/trace.ts";
import { subordinateIds, unprivilegedOverlay } from "../lib/boot/userns.ts";
import { VERSION } from "../lib/core/version.ts";
import { WORKDIR, workdirPaths } from "../lib/boot/workdir.ts";
import { main as mincExec } from "../libexec/minc-exec.ts";

// minc-exec, and the backends it runs so, run in this Node: the boot starts Node once.
runInThisNode({ "minc-exec": mincExec });

interface Plan {
  /** What minc exports for the backends (lib/core/settings.ts). */
  settings: BootSettings;
  keep: boolean;
  tempdirGiven: boolean;
  command: string[];
  /** -r NAME and -t ID that are not directories: an image or a container of the store (minc-farm). */
  image?: string;
  container?: string;
  userGiven: boolean;
}

function one(args: ParsedArgs, name: string): string | undefined {
  const v = args.values.get(name);
  return v ? v[v.length - 1] : undefined;
}

function has(args: ParsedArgs, name: string): boolean {
  return args.values.has(name);
}

function rootdirOf(args: ParsedArgs): string {
  const nopriv = one(args, "nopriv");
  if (nopriv !== undefined && has(args, "rootdir"))
    throw usageError("--nopriv DIR names the rootdir: give -r or --nopriv, not both");
  const given = nopriv ?? one(args, "rootdir");
  if (given === undefined) return "/";
  if (nopriv === undefined && isStoreName(given)) return given; // an image: resolved by minc-farm in phase 1
  if (nopriv === undefined && given.startsWith("sshfs://")) return given; // mounted by minc-exec
  const dir = existingDir("rootdir", given);
  return checkLayerPath("rootdir", dir);
}

/** -b HOSTPATH[:PATH]: kept in MINC_RWBIND as "HOST:PATH HOST:PATH ..." like MINCS. */
function bindsOf(args: ParsedArgs): string[] {
  return (args.values.get("bind") ?? []).map((spec) => {
    const colon = spec.indexOf(":");
    const host = colon < 0 ? spec : spec.slice(0, colon);
    const abs = resolve(host);
    if (!existsSync(abs)) throw usageError(`bind source ${host}: no such file or directory`);
    const inside = colon < 0 ? abs : spec.slice(colon + 1);
    if (!inside.startsWith("/")) throw usageError(`bind target ${inside}: must be an absolute path`);
    if (/\s/.test(abs + inside)) throw usageError(`bind ${spec}: paths with blanks are not supported`);
    // (not docker's HOST:PATH:ro, which would bind read-write at "PATH:ro")
    if (inside.includes(":"))
      throw usageError(`bind ${spec}: one ":" between HOSTPATH and PATH (no options; binds are read-write)`);
    return `${abs}:${inside}`;
  });
}

function x11Binds(): string[] {
  if (!process.env.DISPLAY) throw usageError("--X11: $DISPLAY is empty");
  if (!existsSync("/tmp/.X11-unix")) throw usageError("--X11: no X11 socket directory /tmp/.X11-unix");
  const binds = ["/tmp/.X11-unix:/tmp/.X11-unix"];
  const xauth = process.env.XAUTHORITY;
  if (xauth) {
    if (!existsSync(xauth)) throw usageError(`--X11: $XAUTHORITY ${xauth} does not exist`);
    binds.push(`${xauth}:${xauth}`);
  }
  return binds;
}

function checked(value: string, pattern: RegExp, what: string): string {
  if (!pattern.test(value)) throw usageError(`${what}: ${JSON.stringify(value)} is not valid`);
  return value;
}

/**
 * -t DIR: the working directory to use, made writable by us. Its storage
 * and work become overlayfs's upperdir and workdir, whose mount options
 * split at "," and read "\\" as an escape.
 */
function workingDirOf(given: string): string {
  const dir = existingDir("tempdir", given);
  if (/[,\\]/.test(dir))
    throw usageError(`tempdir ${dir}: a path with ',' or '\\' cannot hold an overlay's upper layer`);
  try {
    accessSync(dir, constants.W_OK);
  } catch (e) {
    throw usageError(`tempdir ${dir}: not writable (${(e as NodeJS.ErrnoException).code})`);
  }
  return dir;
}

/** --cpu MASK: hex, and naming at least one CPU this host has online (taskset refuses it late otherwise). */
function cpuMaskOf(given: string): string {
  const mask = checked(given, /^(0x)?[0-9a-fA-F]*[1-9a-fA-F][0-9a-fA-F]*$/, "--cpu MASK (hex, not zero)");
  let online: string;
  try {
    online = readFileSync("/sys/devices/system/cpu/online", "utf8").trim(); // ("0-3,6")
  } catch {
    return mask; // (the kernel does not say)
  }
  const bits = BigInt(`0x${mask.replace(/^0x/, "")}`);
  if (!cpusIn(online).some((cpu) => (bits >> BigInt(cpu)) & 1n)) {
    throw usageError(`--cpu ${mask}: no CPU of this mask is online here (online: ${online})`);
  }
  return mask;
}

/** The CPU numbers of a list as /sys/devices/system/cpu/online writes it ("0-3,6"). */
function cpusIn(list: string): number[] {
  return list.split(",").flatMap((range) => {
    const [from, to = from] = range.split("-").map(Number);
    return Array.from({ length: to - from + 1 }, (_, i) => from + i);
  });
}

/** How an option's value is checked before it becomes its setting (the others' go as given). */
const CHECKS: Record<string, (given: string) => string> = {
  cpu: cpuMaskOf,
  name: (given) => checked(given, /^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/, "--name (a hostname)"),
  nocaps: (given) =>
    checked(
      given,
      /^(cap_[a-z_]+|\d+)(,(cap_[a-z_]+|\d+))*$/i,
      "--nocaps (capabilities like cap_net_raw,cap_sys_admin)",
    ),
  user: (given) => checked(given, /^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$/, "--user UID[:GID]"),
  ftrace: ftraceScript,
};

/**
 * The options that fill their settings together with others, or from what
 * they find on this host: planFrom and the functions after it fill those.
 */
const BY_HAND = new Set(["rootdir", "nopriv", "tempdir", "bind", "X11", "net", "port", "cross", "arch", "qemu", "um"]);

/**
 * The settings the other options fill, each the one it names
 * (lib/boot/minc-options.ts): a flag is on when its option is given, a value is
 * the last one given, checked. The settings no option asked for are off or
 * empty, as minc exports them.
 */
function optionSettings(args: ParsedArgs): BootSettings {
  const given: SettingsEnv = {};
  for (const option of MINC_OPTIONS) {
    const value = one(args, option.long);
    if (!option.setting || value === undefined || BY_HAND.has(option.long)) continue;
    given[option.setting] = option.arg ? (CHECKS[option.long]?.(value) ?? value) : "1";
  }
  return readSettings(given, BOOT_SETTINGS);
}

function planFrom(args: ParsedArgs): Plan {
  const basedir = rootdirOf(args);
  const image = one(args, "rootdir") === basedir && isStoreName(basedir) ? basedir : undefined;
  const tempdir = one(args, "tempdir");
  const container = tempdir !== undefined && isStoreName(tempdir) ? tempdir : undefined;
  const binds = bindsOf(args);
  if (has(args, "X11")) binds.push(...x11Binds());
  const command = args.command;
  if (command.length === 0 && !image && !container && !basedir.startsWith("sshfs://") && !shellOf(basedir)) {
    throw usageError(`no command given and no shell ($SHELL or /bin/sh) in ${basedir}`);
  }
  const tmpdir = tempdir === undefined || container ? "" : workingDirOf(tempdir);
  const settings = optionSettings(args);
  settings.MINC_BASEDIR = basedir;
  settings.MINC_TMPDIR = tmpdir;
  settings.MINC_RWBIND = binds;
  settings.MINC_ARCH = hostArch();
  // Given by a caller that resolved an image already (the guest of minc --qemu/--um); an image of the store sets them below.
  const caller = readSettings();
  settings.MINC_WORKDIR = caller.MINC_WORKDIR;
  settings.MINC_IMAGE_ENV = caller.MINC_IMAGE_ENV;
  checkPrivilege(args, settings);
  setRemoteRootdir(settings, caller);
  checkLimits(settings);
  setNetwork(args, settings);
  setCrossArch(args, settings);
  setVirtualMachine(args, settings);
  return {
    settings,
    command,
    image,
    container,
    userGiven: has(args, "user"),
    keep: has(args, "keep") || tempdir !== undefined || image !== undefined,
    tempdirGiven: tempdir !== undefined,
  };
}

const SSHFS_URL =
  /^sshfs:\/\/(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::(\d{1,5}))?(\/[^\s:,'"\\]*)?$/;

/**
 * -r sshfs://[USER@]HOST[:PORT]/PATH: the rootdir lives on another machine.
 * minc-exec mounts it with sshfs in the working dir (as MINCS did) and it
 * becomes the lower layer; the waiter unmounts it when the container ends.
 */
function setRemoteRootdir(settings: BootSettings, caller: Settings): void {
  const url = settings.MINC_BASEDIR;
  if (!url.startsWith("sshfs://")) return;
  const m = SSHFS_URL.exec(url);
  if (!m || (m[3] !== undefined && (Number(m[3]) < 1 || Number(m[3]) > 65535))) {
    throw usageError(`rootdir ${url}: not an sshfs://[USER@]HOST[:PORT]/PATH`);
  }
  if (!findInPath("sshfs")) throw usageError(`rootdir ${url}: there is no sshfs command (apt-get install sshfs)`);
  const options = caller.MINC_SSHFS_OPTS;
  if (options && !/^[A-Za-z0-9_=,./@-]+$/.test(options))
    throw usageError(
      `MINC_SSHFS_OPTS ${JSON.stringify(options)}: sshfs -o options like IdentityFile=/path,Compression=yes`,
    );
  settings.MINC_SSHFS_HOST = m[1] ? `${m[1]}@${m[2]}` : m[2];
  settings.MINC_SSHFS_PORT = m[3] ?? "22";
  settings.MINC_SSHFS_PATH = m[4] || "/";
}

/** What needs root: the options --nopriv cannot offer, and why. */
const NEEDS_ROOT: Record<string, string> = {
  ...Object.fromEntries(
    MINC_OPTIONS.filter((o) => LIMIT_SETTINGS.some((limit) => limit === o.setting)).map((o) => [o.long, "cgroups"]),
  ),
  net: "a network namespace of the host",
  port: "a network namespace of the host",
  ftrace: "ftrace",
  usedev: "the host's devices",
  debugfs: "debugfs",
  qemu: "a VM",
  um: "a VM",
};

/**
 * Without root, only --nopriv DIR works: a user namespace where the caller
 * is root, an overlay mounted there (Linux 5.11+, with userxattr) or DIR
 * itself, and none of what only the host's root may make.
 */
function checkPrivilege(args: ParsedArgs, settings: BootSettings): void {
  if (!has(args, "nopriv")) {
    if (process.geteuid?.() !== 0) throw usageError("minc needs root; as an ordinary user, run minc --nopriv DIR");
    return;
  }
  for (const [option, what] of Object.entries(NEEDS_ROOT)) {
    if (has(args, option))
      throw usageError(`--${option} needs ${what}, which an unprivileged container (--nopriv) cannot have`);
  }
  const tempdir = one(args, "tempdir");
  if (tempdir !== undefined && isStoreName(tempdir))
    throw usageError("--nopriv cannot use the image store: give -t a directory");
  if (has(args, "user") && !subordinateIds()) {
    throw usageError(
      "--user with --nopriv needs newuidmap/newgidmap (apt-get install uidmap) and your ranges in /etc/subuid and /etc/subgid",
    );
  }
  settings.MINC_NOPRIV = true;
  settings.MINC_OPT_PTY = true; // as MINCS set it for --nopriv (minc-core binds the terminal the same way)
  if (!unprivilegedOverlay()) {
    settings.MINC_DIRECT = true;
    process.stderr.write(
      "minc: this kernel (older than 5.11) has no unprivileged overlayfs: the container writes straight into " +
        settings.MINC_BASEDIR +
        "\n",
    );
  }
}

/** -n [MODE] and -p HOSTPORT[:PORT[:PROTO]] (which implies dens), as MINCS exported them. */
function setNetwork(args: ParsedArgs, settings: BootSettings): void {
  const ports = args.values.get("port") ?? [];
  if (!has(args, "net") && ports.length === 0) return;
  const mode = ports.length > 0 ? "dens" : one(args, "net") || "raw";
  if (!/^(raw(,[A-Za-z0-9_.:@-]{1,15})?|dens)$/.test(mode))
    throw usageError(`--net ${mode}: MODE is raw, raw,IFNAME or dens`);
  if (ports.length > 0 && one(args, "net") && one(args, "net") !== "dens")
    throw usageError(`--port needs --net dens, not --net ${one(args, "net")}`);
  for (const p of ports) parsePortMap(p);
  settings.MINC_NETNS = `minc${process.pid}`;
  settings.MINC_NETMODE = mode;
  settings.MINC_PORT_MAP = ports;
}

const BINFMT = "/proc/sys/fs/binfmt_misc";

function hostArch(): string {
  return CROSS_ARCHES[process.arch === "x64" ? "x86_64" : process.arch] ?? process.arch;
}

/**
 * --cross/--arch ARCH: a rootfs of another arch runs through qemu-user,
 * which the kernel starts for each foreign binary (binfmt_misc). minc finds
 * the interpreter there; minc-core binds it into the rootfs at the same path.
 */
function setCrossArch(args: ParsedArgs, settings: BootSettings): void {
  const given = one(args, "cross") ?? one(args, "arch");
  if (given === undefined) return;
  const arch = CROSS_ARCHES[given];
  if (!arch) throw usageError(`--cross ${given}: unknown arch (one of ${Object.keys(CROSS_ARCHES).join(", ")})`);
  settings.MINC_ARCH = arch;
  if (arch === hostArch()) return; // the host's own: no qemu
  if (!existsSync(`${BINFMT}/status`)) {
    throw usageError(`--cross ${given}: binfmt_misc is not mounted; run: mount -t binfmt_misc binfmt_misc ${BINFMT}`);
  }
  const entry = `${BINFMT}/qemu-${arch}`;
  const fix = `apt-get install qemu-user-static binfmt-support && update-binfmts --enable qemu-${arch}`;
  if (!existsSync(entry))
    throw usageError(`--cross ${given}: qemu-${arch} is not registered in binfmt_misc; run: ${fix}`);
  const text = readFileSync(entry, "utf8");
  const interpreter = /^interpreter (\S+)$/m.exec(text)?.[1];
  if (!/^enabled$/m.test(text) || !interpreter)
    throw usageError(
      `--cross ${given}: qemu-${arch} is disabled in binfmt_misc; run: update-binfmts --enable qemu-${arch}`,
    );
  if (!existsSync(interpreter))
    throw usageError(`--cross ${given}: the interpreter ${interpreter} is missing; run: ${fix}`);
  settings.MINC_CROSS_QEMU = interpreter;
}

/**
 * --qemu, --um: the container runs in a guest kernel (minc-moult). The
 * guest runs the host's own programs, so it must be of the host's arch
 * (or user-mode Linux); it has no network yet.
 */
function setVirtualMachine(args: ParsedArgs, settings: BootSettings): void {
  const vm = has(args, "um") ? "um" : has(args, "qemu") ? "qemu" : "";
  if (!vm) return;
  if (has(args, "qemu") && has(args, "um")) throw usageError("--qemu and --um: choose one");
  if (settings.MINC_NETNS)
    throw usageError(`--${vm}: networking (--net, --port) is not supported in a virtual machine yet`);
  if (settings.MINC_CROSS_QEMU)
    throw usageError(
      `--${vm} with --cross ${settings.MINC_ARCH}: a guest of another arch is not supported yet (it runs the host's Node.js)`,
    );
  settings.MINC_QEMU = true;
  if (vm === "um") settings.MINC_ARCH = "um";
}

function ftraceScript(given: string): string {
  if (!existsSync(given) || !statSync(given).isFile()) throw usageError(`--ftrace ${given}: not a file`);
  return realpathSync(given);
}

/** Bad limits, or no cgroup hierarchy for them, are refused before anything is made. */
function checkLimits(settings: BootSettings): void {
  const limits = limitsOf(settings);
  if (anyLimit(limits)) findHierarchy(controllersFor(limits));
}

/**
 * -r IMAGE forks a new container from an image of the store; -t ID reuses a
 * container of the store. Either way the working directory is the
 * container's directory, kept, and the lower layers are the image's.
 */
function useStore(plan: Plan): void {
  const s = plan.settings;
  let id: string;
  let image: string;
  if (plan.container) {
    step(`Reuse the container ${plan.container} of the image store`);
    id = plan.container;
    image = farm("baseid", id);
  } else {
    step(`Make a new container from the image ${plan.image}`);
    image = plan.image!;
    id = farm("fork", image);
    // The first line on stdout, as the shell MINCS prints it: scripts do ID=$(minc -r IMAGE ...).
    process.stdout.write(`${id}\n`);
  }
  step("The image's layers are the container's lower layers, top first");
  s.MINC_BASEDIR = farm("imagestack", image);
  s.MINC_TMPDIR = farm("dir", id);
  applyImageConfig(plan, farm("config", id));
}

interface ImageConfig {
  Env?: string[];
  Cmd?: string[];
  Entrypoint?: string[];
  WorkingDir?: string;
  User?: string;
}

/** What the image says to run, and how: its command, environment, directory and user. */
function applyImageConfig(plan: Plan, json: string): void {
  if (!json) return;
  let config: ImageConfig;
  try {
    const parsed = JSON.parse(json) as { config?: ImageConfig; container_config?: ImageConfig };
    config = parsed.config ?? parsed.container_config ?? {};
  } catch {
    throw new MincError("the image's config.json is not JSON");
  }
  step("Take the image's environment, working directory, user and (without a command) its entrypoint and command");
  const s = plan.settings;
  if (config.Env?.length) s.MINC_IMAGE_ENV = JSON.stringify(config.Env);
  if (config.WorkingDir) s.MINC_WORKDIR = config.WorkingDir;
  if (config.User && !plan.userGiven) s.MINC_USERSPEC = config.User;
  if (plan.command.length === 0) plan.command = [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
}

function exportSettings(settings: BootSettings): void {
  step("Export the settings; the backends read nothing else");
  const env = settingsEnv(settings);
  const set = Object.entries(env).filter(([, v]) => v !== "");
  shown(`export ${set.map(([k, v]) => `${k}=${quote(v)}`).join(" ")}`);
  Object.assign(process.env, env);
}

/** Where working directories go: the user's own runtime or temp dir without root. */
function runtimeDir(settings: BootSettings): string {
  if (settings.MINC_NOPRIV) return process.env.XDG_RUNTIME_DIR || process.env.TMPDIR || "/tmp";
  return process.env.XDG_RUNTIME_DIR || "/var/run";
}

/** mktemp -d ${XDG_RUNTIME_DIR:-/var/run}/minc$$-XXXXXX */
function makeWorkingDir(plan: Plan, guard: Guard): void {
  if (plan.image || plan.container) return;
  if (plan.tempdirGiven) {
    step(`Reuse the working directory ${plan.settings.MINC_TMPDIR}`);
    return;
  }
  step("Make a working directory for this container");
  const where = runtimeDir(plan.settings);
  const template = `${where}/minc${process.pid}-`;
  guard.made(template);
  let dir: string;
  try {
    dir = makeTempDir(template);
  } catch (e) {
    throw new MincError(`cannot make a working directory in ${where}: ${(e as Error).message}`);
  }
  // Its lock is made with it, here: the guard and the waiter only open it,
  // so that a guard told the name late never makes it again in a directory
  // that a failing minc is removing (rm: Directory not empty).
  const lock = workdirPaths(dir).lock;
  shown(`: > ${quote(lock)}   # (the lock its guard and waiter hold; they open it, never make it)`);
  closeSync(openSync(lock, "a"));
  plan.settings.MINC_TMPDIR = dir;
  shown(`export MINC_TMPDIR=${quote(dir)}`);
  process.env.MINC_TMPDIR = dir;
}

/**
 * A working directory that exists already (-t DIR, a container of the
 * store) is claimed before anything in it changes: refused while another
 * container uses it, and so are its cages, should another container's
 * processes be in them. Returns the claim's lock (lib/boot/claim.ts).
 */
function claimGivenDir(plan: Plan): number | undefined {
  const dir = plan.settings.MINC_TMPDIR;
  if (!dir) return undefined; // made below: new, so no one else's
  const lock = claimWorkingDir(dir, plan.container ? `container ${plan.container}` : `tempdir ${dir}`);
  checkCagesFree(cageDirs(plan.settings));
  return lock;
}

/** A reused working directory: forget the cleanup chain and the waiter of its last run (claimed: that run is over). */
function forgetLastRun(dir: string): void {
  const files = workdirPaths(dir);
  for (const key of ["cleanup", "waiter"] as const) {
    if (!existsSync(files[key])) continue;
    step(`(a reused working directory: forget the ${WORKDIR[key].name} of its last run)`);
    removeFile(files[key]);
  }
}

/**
 * Until its waiter takes over at the end of phase 3, minc is Node: should
 * it die (a signal, SIGKILL, a crash), a guard (minc-waiter.sh --guard)
 * runs the cleanup chain. (Failures minc-exec handles itself, and signals
 * too while phases 2 and 3 make a cage or a network.) It starts before the
 * working directory exists and is told on its stdin the mktemp template,
 * then the directory's name, so no moment is left where a directory is made
 * and unguarded. After the handover it stays for a waiter in the foreground
 * (minc itself, its parent, so setpriv --pdeathsig tells it when that ends):
 * should the waiter be SIGKILLed, the guard runs the cleanup chain instead.
 * Meanwhile it holds the working directory's lock (lib/boot/claim.ts): a claim
 * minc made is passed to it as fd 9, so that the lock is held without a gap
 * when minc execs its waiter, which takes one of its own. The waiter tells
 * it when it takes charge, with a URG (it is given the guard's PID as
 * MINC_GUARD_PID): a guard so told that finds the waiter file gone knows
 * the chain has run, and does not take minc's end for a death before the
 * handover, however late it is scheduled.
 */
interface Guard {
  /** minc is about to make its working directory with this mktemp template (then XXXXXX). */
  made(template: string): void;
  /** The working directory, made or given. */
  dir(dir: string): void;
}

function startGuard(lock: number | undefined): Guard {
  step(
    "Guard the container: should minc or its waiter die before they have cleaned up (a signal in the boot, SIGKILL), the guard runs the cleanup chain; it holds the working directory's lock meanwhile",
  );
  const setpriv = !!findInPath("setpriv");
  // WINCH: its default action is to ignore it, so one that came before the guard's trap is set does no harm.
  const tied = setpriv ? ["setpriv", "--pdeathsig", "WINCH"] : [];
  const head = [...tied, "/bin/sh", backend("minc-waiter.sh"), "--guard"];
  const tail = setpriv ? ["tied"] : [];
  const argv = [...head, String(process.pid), ...tail];
  shown(
    `(cd / && exec ${quoteAll(head)} "$$"${tail.map((a) => ` ${quote(a)}`).join("")}) &   # (told the working dir on a pipe from minc; acts when minc, then its waiter, ends)`,
  );
  // In /: it may outlive minc (by a moment, or by the cleanup after a SIGKILL), and must not keep the user's directory busy.
  const claim = lock === undefined ? [] : [...Array<"ignore">(6).fill("ignore"), lock]; // (as fd 9)
  const guard = spawn(argv[0], argv.slice(1), {
    detached: true,
    cwd: "/",
    stdio: ["pipe", "ignore", "inherit", ...claim],
  });
  guard.unref();
  // For the waiter alone (minc-exec takes it out of the environment and gives it to the waiter's
  // command): it tells the guard with a URG that it is in charge (see minc-waiter-guard.sh).
  if (guard.pid !== undefined) process.env.MINC_GUARD_PID = String(guard.pid);
  const tell = guard.stdin!; // ("pipe")
  return {
    made: (template) => {
      tell.write(`made ${template}\n`);
    },
    dir: (dir) => {
      tell.write(`dir ${dir}\n`);
    },
  };
}

/**
 * minc as the user called it, as the shell's $0 names it (./minc, or the
 * path PATH found): the raw argument Node got its script from, which Node
 * itself has made absolute in process.argv[1].
 */
function calledAs(): string {
  try {
    const raw = readFileSync("/proc/self/cmdline", "utf8").split("\0");
    const script = raw[1 + process.execArgv.length];
    if (script && resolve(script) === process.argv[1]) return script;
  } catch {
    // no /proc: the absolute path will do
  }
  return process.argv[1];
}

/**
 * What runs when the container ends: remove the directory, or say how to
 * reuse it (on stdout, where the shell MINCS says it and scripts read it:
 * DIR=$(minc -k ... | grep reuse ...)). It is the first command of the
 * cleanup chain, so the last run.
 */
function trapExit(plan: Plan): void {
  const dir = plan.settings.MINC_TMPDIR;
  let trap = "";
  const background = plan.settings.MINC_BACKGROUND;
  if (background && (plan.image || plan.tempdirGiven || plan.keep)) {
    // As in the shell MINCS: -B already said where the directory is ("See DIR/log"),
    // and a reuse line would land in the log, after the command's own output.
    step("A kept container in the background: the directory stays, without a reuse line");
  } else if (plan.image) {
    step("Trap the exit: the container stays in the store; say how to reuse it");
    trap = `echo ${quote(`To reuse this, run: ${quote(calledAs())} -t ${basename(dir).slice(0, 12)}`)}`;
  } else if (plan.tempdirGiven) {
    step("A working directory given with -t is kept");
  } else if (plan.keep) {
    step("Trap the exit: keep the working directory and say how to reuse it");
    const again = `${quote(calledAs())} -r ${quote(plan.settings.MINC_BASEDIR)} -t ${quote(dir)}`;
    trap = `echo ${quote(`To reuse this, run: ${again}`)}`;
  } else {
    step("Trap the exit and remove the working directory");
    trap = `rm -rf --one-file-system ${quote(dir)}`;
  }
  if (trap) onExit(dir, trap);
}

/** The backends phase 1 runs itself (the later phases check their own): the boot, its guard, and the store. */
function neededBackends(plan: Plan): string[] {
  return ["minc-exec", ...WAITER_SCRIPTS, ...(plan.image || plan.container ? ["minc-farm"] : [])];
}

start(() => {
  const args = parseMincArgs(process.argv.slice(2));
  if (has(args, "help")) {
    process.stdout.write(mincUsage());
    return 0;
  }
  if (has(args, "version")) {
    process.stdout.write(`minc (MINCS in TypeScript) ${VERSION}\n`);
    return 0;
  }
  if (has(args, "debug")) process.env.MINC_DEBUG = "1";
  const plan = planFrom(args);

  phase(1);
  checkBackends(neededBackends(plan));
  if (plan.image || plan.container) useStore(plan);
  const lock = claimGivenDir(plan);
  exportSettings(plan.settings);
  const guard = startGuard(lock);
  makeWorkingDir(plan, guard);
  guard.dir(plan.settings.MINC_TMPDIR);
  forgetLastRun(plan.settings.MINC_TMPDIR);
  trapExit(plan);
  step("Go on with minc-exec; it is loaded into this Node (the next program, not another start of Node)");
  exec([backend("minc-exec"), ...plan.command]);
  throw new MincError("not reached");
});
