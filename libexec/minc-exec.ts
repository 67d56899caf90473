// minc-exec: phases 2 and 3 of the boot.
//
// Outside the container: save the settings, prepare the files the container
// will see as /etc/hosts and /etc/resolv.conf, apply CPU and cgroup limits
// to this very process (the container inherits them), then become unshare,
// which enters new IPC, UTS, mount and PID namespaces and runs minc-core
// there. What must be undone when the container ends goes into
// $MINC_TMPDIR/cleanup, which minc's waiter runs before its own trap.
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { hostname, networkInterfaces } from "node:os";
import { MincError, main } from "../lib/fail.ts";
import { backend } from "../lib/libexec.ts";
import { LIMIT_SETTINGS } from "../lib/cage.ts";
import { onExit } from "../lib/cleanup.ts";
import { capture, copyFile, exec, findInPath, removeFile, writeFile } from "../lib/run.ts";
import { phase, quote, shown, step } from "../lib/trace.ts";

const env = process.env;
const tmpdir = env.MINC_TMPDIR ?? "";

function ensureSettings(): void {
  if (!env.MINC_BASEDIR) throw new MincError("MINC_BASEDIR is not set (run minc, not minc-exec)");
  if (!tmpdir || !existsSync(tmpdir) || !statSync(tmpdir).isDirectory()) {
    throw new MincError(`MINC_TMPDIR ${tmpdir || "(unset)"} is not a directory`);
  }
}

function saveSettings(): void {
  step("Save the settings of this container");
  const lines = Object.entries(env).filter(([k]) => k.startsWith("MINC_")).map(([k, v]) => `${k}=${v}`);
  shown(`env | grep ^MINC_ > ${quote(`${tmpdir}/settings`)}`);
  writeFileSync(`${tmpdir}/settings`, lines.join("\n") + "\n");
}

function utsname(): string {
  if (env.MINC_UTSNAME) return env.MINC_UTSNAME;
  try {
    // A reused working directory remembers the name it was given.
    return readFileSync(`${tmpdir}/utsname`, "utf8").trim() || hostname();
  } catch {
    return hostname();
  }
}

function prepareResolvConf(): void {
  step("Name resolution: the container shares the host's network, so its resolver too");
  const target = `${tmpdir}/resolv.conf`;
  if (existsSync("/etc/resolv.conf")) copyFile("/etc/resolv.conf", target);
  else writeFile(target, "nameserver 8.8.8.8\n");
}

function prepareHosts(): void {
  step("Name this host in /etc/hosts by each of its IPv4 addresses");
  const name = utsname();
  const lines = ["127.0.0.1\tlocalhost"];
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === "IPv4") lines.push(`${a.address}\t${name}`);
  }
  writeFile(`${tmpdir}/hosts`, lines.join("\n") + "\n");
}

function setCpuMask(): void {
  if (!env.MINC_CPUMASK) return;
  step("Limit the CPUs this process and so the whole container may run on");
  capture(["taskset", "-ap", env.MINC_CPUMASK, String(process.pid)]);
}

/** minc-cage makes the cgroups asked for and registers their removal; minc-leash steps in. */
function prepareCage(): void {
  if (!Object.keys(LIMIT_SETTINGS).some((k) => env[k])) {
    step("No resource limits asked for: no cage");
    return;
  }
  step('Make a "cage" of cgroups for the container (minc-leash steps into it at the end of the boot)');
  // setpriv: minc-cage dies with us, so a signal to minc cannot leave it making cages afterwards.
  const tied = findInPath("setpriv") ? ["setpriv", "--pdeathsig", "KILL"] : [];
  capture([...tied, backend("minc-cage"), "--prepare", String(process.pid)]);
}

function enterNamespaces(command: string[]): never {
  const pidfile = `${tmpdir}/pid`;
  if (existsSync(pidfile)) removeFile(pidfile); // left by a reused working directory
  step("Prepare cleanup: the pid file goes when the container ends");
  onExit(tmpdir, `rm -f ${quote(pidfile)}`);
  // Not `unshare --fork`: see minc-fork.sh for why it forks PID 1 instead.
  const unshare = ["unshare", "-iump", "/bin/sh", backend("minc-fork.sh"), backend("minc-core"), ...command];
  step("Enter new IPC, UTS, mount and PID namespaces; minc-fork.sh starts minc-core there as PID 1 and waits for it");
  if (!findInPath("setpriv")) return exec(unshare);
  step("(setpriv --pdeathsig: the container dies with minc's waiter, even if that is SIGKILLed)");
  return exec(["setpriv", "--pdeathsig", "KILL", ...unshare]);
}

function runningInBackground(): boolean {
  return !!env.MINC_BACKGROUND;
}

main(() => {
  phase(2);
  ensureSettings();
  saveSettings();
  prepareResolvConf();
  prepareHosts();
  setCpuMask();
  prepareCage();
  if (runningInBackground()) step(`Running in the background: output in ${tmpdir}/log`);

  phase(3);
  enterNamespaces(process.argv.slice(2));
});
