// minc-exec: phases 2 and 3 of the boot.
//
// Outside the container: save the settings, prepare the files the container
// will see as /etc/hosts and /etc/resolv.conf, apply CPU and cgroup limits
// to this very process (the container inherits them), then enter new IPC,
// UTS, mount and PID namespaces with unshare, running minc-core there.
// This process then becomes the waiter (plain sh) that runs the cleanup
// chain when the container ends.
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { hostname, networkInterfaces } from "node:os";
import { MincError, main } from "../lib/fail.ts";
import { backend } from "../lib/libexec.ts";
import { capture, copyFile, exec, removeFile, writeFile } from "../lib/run.ts";
import { phase, quote, quoteAll, shown, step } from "../lib/trace.ts";

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

const CAGE_SETTINGS = ["MINC_MEM_LIMIT", "MINC_MEM_SWAP", "MINC_MEM_KMEM", "MINC_CPU_SHARES", "MINC_CPU_QUOTA", "MINC_PID_MAX"];

/** minc-cage makes the cgroups asked for and prints the command that removes them. */
function prepareCage(): string {
  if (!CAGE_SETTINGS.some((k) => env[k])) {
    step("No resource limits asked for: no cage");
    return "";
  }
  step('Make a "cage" of cgroups for this container');
  const cleanup = capture([backend("minc-cage"), "--prepare", String(process.pid)]).trim();
  return cleanup;
}

/** The cleanup chain, last step first, like MINCS's TRAPCMD. */
function cleanupChain(pidfile: string, cage: string): string {
  return [`rm -f ${quote(pidfile)}`, cage, env.MINC_TRAPCMD ?? ""].filter((c) => c !== "").join("; ");
}

function enterNamespaces(cage: string, command: string[]): never {
  const pidfile = `${tmpdir}/pid`;
  if (existsSync(pidfile)) removeFile(pidfile); // left by a reused working directory
  const trap = cleanupChain(pidfile, cage);
  step("When the container ends (or on INT/TERM, which go on to it), run the cleanup chain");
  shown(`trap ${quote(trap)} EXIT`);
  step("Enter new IPC, UTS, mount and PID namespaces; minc-core is PID 1 there");
  const unshare = ["unshare", "-iumpf", "--kill-child", backend("minc-core"), ...command];
  shown(quoteAll(unshare));
  step("(minc-exec becomes a small sh that waits for unshare: no Node stays resident)");
  return exec(["/bin/sh", backend("minc-waiter.sh"), trap, pidfile, ...unshare], env, "");
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
  const cage = prepareCage();
  if (runningInBackground()) step(`Running in the background: output in ${tmpdir}/log`);

  phase(3);
  enterNamespaces(cage, process.argv.slice(2));
});
