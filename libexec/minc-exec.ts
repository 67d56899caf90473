// minc-exec: phases 2 and 3 of the boot.
//
// Outside the container: save the settings, apply the CPU mask to this very
// process (the container inherits it), make the cgroup cage; then make the
// network namespace (with minc-dens for --net dens), prepare the files the
// container will see as /etc/hosts and /etc/resolv.conf, and become
// the waiter (libexec/minc-waiter.sh), which runs unshare: new IPC, UTS,
// mount and PID namespaces with minc-core in them. minc runs this program
// in its own Node (its bundle holds our main) rather than starting another.
// What must be undone when the container ends goes into
// $MINC_TMPDIR/cleanup, the chain the waiter (or, should minc die first,
// its guard) runs.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, openSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { constants, hostname, networkInterfaces } from "node:os";
import { MincError, NOT_WRITTEN_DOWN } from "../lib/core/fail.ts";
import { backend } from "../lib/core/libexec.ts";
import { anyLimit, limitsOf } from "../lib/cgroups/cage.ts";
import { onExit } from "../lib/boot/cleanup.ts";
import {
  capture,
  copyFile,
  exec,
  exportVar,
  findInPath,
  mkdirs,
  removeFile,
  run,
  runInThisNode,
  writeFile,
} from "../lib/core/run.ts";
import { phase, quote, quoteAll, shown, step } from "../lib/core/trace.ts";
import { LIMIT_SETTINGS, readSettings, type Settings } from "../lib/core/settings.ts";
import { holdSignals, releaseSignals, signalsDelivered, sleepSync } from "../lib/core/signals.ts";
import { userNamespaceOptions } from "../lib/boot/userns.ts";
import { workdirPaths, type WorkdirPaths } from "../lib/boot/workdir.ts";
import { main as core } from "./minc-core.ts";
import { main as dens } from "./minc-dens.ts";

// minc-core --write-down and minc-dens map run in this Node, not in a Node of their own.
runInThisNode({ "minc-core": core, "minc-dens": dens });

// The settings of this boot, from the environment main() is given.
let settings: Settings;
let tmpdir: string;
let files: WorkdirPaths;
/** minc's guard (bin/minc.ts startGuard): only the waiter is given it, to tell the guard it is in charge. */
let guardPid: string | undefined;

/** The signals minc holds until the waiter takes over (see main below). */
const HELD: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];

function ensureSettings(): void {
  if (!settings.MINC_BASEDIR) throw new MincError("MINC_BASEDIR is not set (run minc, not minc-exec)");
  if (!tmpdir || !existsSync(tmpdir) || !statSync(tmpdir).isDirectory()) {
    throw new MincError(`MINC_TMPDIR ${tmpdir || "(unset)"} is not a directory`);
  }
}

/**
 * -r sshfs://...: mount the remote rootdir in the working dir; it is the
 * lower layer from here on. It is unmounted when the container ends.
 */
function mountRemoteRootdir(): void {
  const host = settings.MINC_SSHFS_HOST;
  if (!host) return;
  phase(1);
  const dir = files.sshfs;
  step(`The rootdir is on ${host}: mount it with sshfs in the working dir (unmounted when the container ends)`);
  mkdirs(dir);
  onExit(tmpdir, `umount -l ${quote(dir)} 2>/dev/null`);
  const options = [...symlinkOptions(), ...(settings.MINC_SSHFS_OPTS ? ["-o", settings.MINC_SSHFS_OPTS] : [])];
  try {
    run([
      "sshfs",
      "-p",
      settings.MINC_SSHFS_PORT || "22",
      ...options,
      `${host}:${settings.MINC_SSHFS_PATH || "/"}`,
      dir,
    ]);
  } catch {
    throw new MincError(
      `cannot mount the rootdir sshfs://${host}:${settings.MINC_SSHFS_PORT}${settings.MINC_SSHFS_PATH} (see sshfs's message above)`,
    );
  }
  exportVar("MINC_BASEDIR", dir);
}

/**
 * Debian's sshfs refuses absolute symlinks unless told otherwise. A rootfs
 * is full of them (/bin/sh -> /bin/busybox) and they are meant inside it:
 * the container's root resolves them there, and minc's own path lookups
 * stay inside the root too (lib/boot/paths.ts).
 */
function symlinkOptions(): string[] {
  step("Let sshfs show the rootfs's absolute symlinks as they are, if this sshfs would refuse them");
  return /no_contain_symlinks/.test(capture(["sshfs", "-h"])) ? ["-o", "no_contain_symlinks"] : [];
}

function saveSettings(): void {
  step("Save the settings of this container");
  // Every MINC_* variable as it is, those of no setting too: what env | grep would save.
  const lines = Object.entries(process.env)
    .filter(([k]) => k.startsWith("MINC_"))
    .map(([k, v]) => `${k}=${v}`);
  shown(`env | grep ^MINC_ > ${quote(files.settings)}`);
  writeFileSync(files.settings, `${lines.join("\n")}\n`);
}

function utsname(): string {
  if (settings.MINC_UTSNAME) return settings.MINC_UTSNAME;
  try {
    // A reused working directory remembers the name it was given.
    return readFileSync(files.utsname, "utf8").trim() || hostname();
  } catch {
    return hostname();
  }
}

function nameservers(resolvConf: string): string[] {
  return resolvConf
    .split("\n")
    .filter((l) => /^\s*nameserver\s/.test(l))
    .map((l) => l.trim().split(/\s+/)[1]);
}

function prepareResolvConf(): void {
  const target = files.resolvConf;
  const host = existsSync("/etc/resolv.conf") ? readFileSync("/etc/resolv.conf", "utf8") : "";
  if (settings.MINC_NETMODE !== "dens" && host) {
    step(
      "Name resolution: the host's resolver" +
        (settings.MINC_NETNS
          ? " (unreachable without a network, kept for the names)"
          : ", reachable as the network is shared"),
    );
    copyFile("/etc/resolv.conf", target);
    return;
  }
  // Behind NAT a resolver on the host's loopback (systemd-resolved's 127.0.0.53) is out of reach.
  const usable = nameservers(host).filter((ns) => !/^(127\.|::1$)/.test(ns));
  step(
    usable.length
      ? "Name resolution: the host's resolvers, but those on its loopback"
      : "Name resolution: a public resolver (the host has none the container can reach)",
  );
  writeFile(target, `${(usable.length ? usable : ["8.8.8.8"]).map((ns) => `nameserver ${ns}`).join("\n")}\n`);
}

/** The container's IPv4 addresses: the host's, its dens address, or none but loopback. */
function addressesOf(ip: string | undefined): string[] {
  if (ip) return [ip];
  if (settings.MINC_NETNS) return [];
  return Object.values(networkInterfaces()).flatMap((addrs) =>
    (addrs ?? []).filter((a) => a.family === "IPv4").map((a) => a.address),
  );
}

function prepareHosts(ip: string | undefined): void {
  step("Name the container in /etc/hosts by each of its IPv4 addresses");
  const name = utsname();
  const lines = ["127.0.0.1\tlocalhost", ...addressesOf(ip).map((a) => `${a}\t${name}`)];
  if (!lines.some((l) => l.endsWith(`\t${name}`))) lines.push(`127.0.1.1\t${name}`);
  writeFile(files.hosts, `${lines.join("\n")}\n`);
}

/**
 * -n/--net: a network namespace of the container's own, MINC_NETNS. raw has
 * only lo (and IFNAME, moved in from the host); dens plugs it into the
 * bridge with minc-dens, leases an address and maps the -p ports.
 * Returns the container's address in dens mode.
 */
function prepareNetwork(): string | undefined {
  const netns = settings.MINC_NETNS;
  if (!netns) {
    step("No --net: the container shares the host's network");
    return undefined;
  }
  step(`A network namespace of its own, ${netns}; removed when the container ends`);
  onExit(tmpdir, `ip netns del ${quote(netns)}`);
  run(["ip", "netns", "add", netns]);
  const mode = settings.MINC_NETMODE || "raw";
  if (mode === "dens") return plugIntoDens(netns);
  run(["ip", "-n", netns, "link", "set", "lo", "up"]);
  const ifname = mode.startsWith("raw,") ? mode.slice(4) : "";
  if (ifname) {
    step(
      `Move the host's interface ${ifname} into it (a physical one comes back when the namespace goes; a virtual one goes with it)`,
    );
    run(["ip", "link", "set", ifname, "netns", netns]);
  }
  return undefined;
}

function plugIntoDens(netns: string): string {
  const dens = backend("minc-dens");
  step(
    "Plug it into the dens network with minc-dens (bridge, veth, leased address, NAT); unplugged when the container ends",
  );
  onExit(tmpdir, `${quote(dens)} del ${quote(netns)} ${quote(netns)}`);
  const ip = capture([dens, "add", netns, netns]).trim();
  writeFile(files.ipv4, `${ip}\n`);
  const ports = settings.MINC_PORT_MAP;
  if (ports.length > 0) {
    step("Map the host's ports to the container (DNAT)");
    run([dens, "map", netns, ip, ...ports]);
    writeFile(files.portmap, `${ports.join(" ")}\n`);
  }
  return ip;
}

function setCpuMask(): void {
  if (!settings.MINC_CPUMASK) return;
  step("Limit the CPUs this process and so the whole container may run on");
  const argv = ["taskset", "-ap", settings.MINC_CPUMASK];
  capture([...argv, String(process.pid)], `${quoteAll(argv)} "$$"`); // ($$: pasted, the shell that runs the boot)
}

/** minc-cage makes the cgroups asked for and registers their removal; minc-leash steps in. */
function prepareCage(): void {
  if (!LIMIT_SETTINGS.some((name) => settings[name])) {
    step("No resource limits asked for: no cage");
    return;
  }
  step('Make a "cage" of cgroups for the container (minc-leash steps into it at the end of the boot)');
  // setpriv: minc-cage dies with us, so a signal to minc cannot leave it making cages afterwards.
  const tied = findInPath("setpriv") ? ["setpriv", "--pdeathsig", "KILL"] : [];
  const argv = [...tied, backend("minc-cage"), "--prepare"];
  capture([...argv, String(process.pid)], `${quoteAll(argv)} "$$"`); // (minc-cage checks that the PID is its parent's)
}

/**
 * --nopriv: a user namespace first, where the caller is root and so may make
 * the other namespaces and mount in them (its subordinate ids, if it has
 * any, become 1..N inside, for --user).
 */
function userNamespace(): string[] {
  if (!settings.MINC_NOPRIV) return [];
  const options = userNamespaceOptions();
  step(
    options.length > 1
      ? "--nopriv: a new user namespace where we are root, with our subordinate ids (/etc/subuid) as 1..N"
      : "--nopriv: a new user namespace where we are root (no subordinate ids: only root is mapped)",
  );
  return options;
}

/** The command that enters the new namespaces and starts minc-core there. */
function namespacesCommand(command: string[]): string[] {
  const pidfile = files.pid;
  if (existsSync(pidfile)) removeFile(pidfile); // left by a reused working directory (the waiter removes it at the end)
  const core = bootOfTheNewRoot(command);
  // Not `unshare --fork`: see minc-fork.sh for why it forks PID 1 instead.
  let argv = [
    "unshare",
    ...userNamespace(),
    "-iump",
    "--propagation",
    "private",
    "/bin/sh",
    backend("minc-fork.sh"),
    ...core,
  ];
  step(
    `Enter new IPC, UTS, mount and PID namespaces, every mount made private (nothing mounted inside shows on the host); minc-fork.sh starts ${core[0] === "/bin/sh" ? "minc-core's script" : "minc-core"} there as PID 1 and waits for it`,
  );
  if (settings.MINC_NETNS) {
    step(`... in the network namespace ${settings.MINC_NETNS}`);
    argv = ["nsenter", `--net=/var/run/netns/${settings.MINC_NETNS}`, ...argv];
  }
  if (findInPath("setpriv")) {
    step("(setpriv --pdeathsig: the container dies with minc's waiter, even if that is SIGKILLed)");
    argv = ["setpriv", "--pdeathsig", "KILL", ...argv];
  }
  return argv;
}

/**
 * Phase 4 is minc-core's. Rather than start Node again in the new
 * namespaces, minc-core writes its steps down first, in this Node, as a
 * script that sh runs there (lib/boot/bootscript.ts); a boot that must look
 * inside them as it goes is left to minc-core itself.
 */
function bootOfTheNewRoot(command: string[]): string[] {
  const script = files.bootScript;
  step(
    "minc-core writes the boot of the new root down ahead, as a script for sh: no Node has to start in the new namespaces",
  );
  try {
    run([backend("minc-core"), "--write-down", script, ...command]);
    return ["/bin/sh", script];
  } catch (e) {
    if (!(e instanceof MincError)) throw e;
    if (e.status !== NOT_WRITTEN_DOWN) throw new MincError("", e.status); // minc-core (or minc-leash) said why
    return [backend("minc-core"), ...command];
  }
}

function runningInBackground(): boolean {
  return settings.MINC_BACKGROUND;
}

/**
 * From here the waiter (a small sh) is in charge: it runs the command that
 * enters the namespaces, relays signals, and runs the cleanup chain when
 * the container ends. In the foreground minc becomes it, so minc's exit
 * status is the container's; with -B it goes on in a session of its own.
 */
function handOverToWaiter(command: string[]): never {
  const waiter = ["/bin/sh", backend("minc-waiter.sh"), tmpdir, ...command];
  const env = guardPid ? { ...process.env, MINC_GUARD_PID: guardPid } : process.env;
  if (runningInBackground()) return startInBackground(waiter, env);
  releaseSignals(HELD); // first thing after the last look at the held signals: see releaseSignals
  step("minc becomes its waiter, a small sh that starts the container, relays signals to it and cleans up after it");
  return exec(waiter, env);
}

function startInBackground(waiter: string[], env: NodeJS.ProcessEnv): never {
  step("Start the waiter in a session of its own, the container's output in the working directory");
  shown(`setsid ${quoteAll(waiter)} > ${quote(files.log)} 2> ${quote(files.debug)} < /dev/null &`);
  spawn(waiter[0], waiter.slice(1), {
    detached: true,
    env,
    stdio: ["ignore", openSync(files.log, "a"), openSync(files.debug, "a")],
  }).unref();
  step("Return once it has taken over (it writes the waiter file), so minc's guard leaves the working directory to it");
  for (let waited = 0; !existsSync(files.waiter); waited += 5) {
    if (waited > 5000) throw new MincError("the container's waiter did not start in the background");
    sleepSync(5);
  }
  process.stdout.write(`Run container in background. See ${files.log} for output.\n`);
  process.exit(0);
}

/**
 * A failure, or a signal held until the end of phase 3: the waiter has not
 * taken over yet, so run the cleanup chain now, before minc exits.
 */
function cleanUpNow(): void {
  step("The boot stops before the waiter took over: run the cleanup chain now");
  const argv = ["/bin/sh", backend("minc-waiter.sh"), "--cleanup", tmpdir];
  shown(quoteAll(argv));
  spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "inherit", "inherit"] });
}

/**
 * Does this boot make what a signal must not interrupt half way: a cage, a
 * network namespace, an sshfs mount (each a process to run, and a chain
 * entry to write before it)? Then the signals are held to the end of phase
 * 3. Otherwise there is only the working dir, and a signal may end minc at
 * once: the guard runs the chain. (Node can only hold a signal by catching
 * it, and one it catches just before an exec is lost.)
 */
function makesMoreThanTheWorkingDir(): boolean {
  return !!(settings.MINC_NETNS || settings.MINC_SSHFS_HOST || anyLimit(limitsOf(settings)));
}

export async function main(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  guardPid = env.MINC_GUARD_PID;
  delete env.MINC_GUARD_PID; // (not a setting: the backends and the settings file do not get it)
  delete process.env.MINC_GUARD_PID;
  settings = readSettings(env);
  tmpdir = settings.MINC_TMPDIR;
  files = workdirPaths(tmpdir);
  // Stopping half way would leave what phases 2 and 3 made; stop at the end instead.
  const held = makesMoreThanTheWorkingDir() ? holdSignals(HELD) : () => undefined;
  try {
    ensureSettings();
    mountRemoteRootdir();
    phase(2);
    saveSettings();
    setCpuMask();
    prepareCage();
    if (runningInBackground()) step(`Running in the background: output in ${files.log}`);

    phase(3);
    const ip = prepareNetwork();
    prepareResolvConf();
    prepareHosts(ip);
    const command = namespacesCommand(args);
    await signalsDelivered();
    const signal = held();
    if (!signal) return handOverToWaiter(command);
    return stopFor(signal);
  } catch (e) {
    // A Ctrl-C reaches the whole process group: minc-cage or minc-dens may die of the very
    // signal we hold, and fail this step. That is the signal's stop, not a failure.
    await signalsDelivered();
    const signal = held();
    if (signal) return stopFor(signal);
    if (existsSync(tmpdir)) cleanUpNow();
    throw e;
  }
}

/** A held signal came during the boot: undo it and end as that signal would have. */
function stopFor(signal: NodeJS.Signals): number {
  step(`${signal} came during the boot: stop here`);
  if (existsSync(tmpdir)) cleanUpNow();
  return 128 + constants.signals[signal];
}
