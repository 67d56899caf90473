// minc-moult: phase 5 of a boot in a virtual machine (minc --qemu, --um).
//
// minc-core has mounted the layered root on the host, in the container's
// mount namespace, and execs this instead of minc-leash. Here the container
// moults into a kernel of its own: write run.sh, the guest's minc command
// line, into the working directory, boot qemu-system-ARCH or user-mode Linux
// with the ermine kernel and initramfs and that directory shared, and wait.
// Inside, the guest's init runs run.sh, so the guest's minc repeats the boot
// on the shared root in direct mode (the overlay stays on the host side).
// The guest's exit status comes back through a file in the shared
// directory and becomes ours. As PID 1 of the container's namespaces we
// take the VM with us if minc's waiter kills us (^C, a signal).
import { closeSync, existsSync, openSync, readFileSync, readSync, writeSync } from "node:fs";
import { isatty } from "node:tty";
import { enterCages, openCages } from "../lib/cgroups/cage.ts";
import { bootGuest, checkGuest, ermineDir, guestArch, GUEST_SHARE, terminalSize } from "../lib/ermine/ermine.ts";
import { MincError, usageError } from "../lib/core/fail.ts";
import { frontend } from "../lib/core/libexec.ts";
import { optionsFor } from "../lib/boot/minc-options.ts";
import { live, writeFile } from "../lib/core/run.ts";
import { readSettings, settingsEnv, type Settings } from "../lib/core/settings.ts";
import { sleepSync } from "../lib/core/signals.ts";
import { phase, quote, quoteAll, shown, step } from "../lib/core/trace.ts";
import { workdirPaths, type WorkdirPaths } from "../lib/boot/workdir.ts";

// The settings of this boot, from the environment main() is given.
let settings: Settings;
let tmpdir: string;
let files: WorkdirPaths;
/** The same files in the guest, where its run.sh finds the working directory. */
const guestFiles = workdirPaths(GUEST_SHARE);

/** The name the host gave the container (minc-core set it in our UTS namespace). */
function containerName(): string {
  return readFileSync("/proc/sys/kernel/hostname", "utf8").trim();
}

/** The guest's minc options: the same container, on the shared root, in direct mode. */
function guestOptions(): string[] {
  step(
    "The guest's minc boots the same container on the shared root; the host mounted the overlay, so the guest uses it directly (-D)",
  );
  const again = optionsFor(settings, [
    "MINC_DEBUG",
    "MINC_USE_DEV",
    "MINC_MNT_DEBUGFS",
    "MINC_PIVOT",
    "MINC_USERSPEC",
    "MINC_DROPCAPS",
    "MINC_PRIVILEGED",
  ]);
  return ["-r", guestFiles.root, "--name", containerName(), "-D", ...again];
}

/** stty lines for the guest's console: the user's terminal size, or no echo and no CR where there is no terminal. */
function consoleSetup(): string[] {
  const lines: string[] = [];
  const size = terminalSize();
  if (size) lines.push(`stty rows ${size[0]} cols ${size[1]}`);
  if (!isatty(0)) lines.push("stty -echo");
  if (!isatty(1)) lines.push("stty -onlcr");
  if (process.env.TERM) lines.push(`export TERM=${quote(process.env.TERM)}`);
  return lines;
}

/** An image's environment and working directory (minc -r IMAGE), which the guest's minc takes from its own. */
function imageSettings(): string[] {
  const image = settingsEnv({ MINC_IMAGE_ENV: settings.MINC_IMAGE_ENV, MINC_WORKDIR: settings.MINC_WORKDIR });
  const set = Object.entries(image)
    .filter(([, v]) => v !== "")
    .map(([k, v]) => `${k}=${quote(v)}`);
  if (set.length === 0) return [];
  step("The image's environment and working directory go to the guest's minc");
  return [`export ${set.join(" ")}`];
}

/**
 * A stdin that is not a terminal (a pipe, a file) would reach the guest
 * through its console, which never tells an end: a command reading it would
 * wait for ever. So it is read to its end here and given to the guest's
 * command as a file of the share.
 */
function stdinForGuest(): string | undefined {
  if (isatty(0)) return undefined;
  const file = files.stdin;
  step(
    "stdin is not a terminal: read it to its end and give it to the guest's command as a file (a VM console has no end of file)",
  );
  shown(`cat > ${quote(file)}`);
  copyToEnd(0, file);
  return guestFiles.stdin;
}

function copyToEnd(fd: number, file: string): void {
  const out = openSync(file, "w");
  const buf = Buffer.allocUnsafe(1 << 20);
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
        sleepSync(10); // a non-blocking pipe with nothing yet
        continue;
      }
      if (n === 0) return;
      writeSync(out, buf, 0, n);
    }
  } finally {
    closeSync(out);
  }
}

function writeRunScript(command: string[]): void {
  const minc = frontend("minc");
  if (!existsSync(minc)) throw new MincError(`${minc}: missing (the guest runs the host's minc; run make)`);
  const stdin = stdinForGuest();
  step("Write run.sh: the guest's init runs it on the console, chrooted into the host's / (read-only)");
  writeFile(
    files.runScript,
    `${[
      "#!/bin/sh",
      ...consoleSetup(),
      ...imageSettings(),
      `exec ${quoteAll([minc, ...guestOptions(), ...(command.length ? ["--", ...command] : [])])}${stdin ? ` < ${quote(stdin)}` : ""}`,
    ].join("\n")}\n`,
  );
}

/** $MINC_VM_TIMEOUT: seconds after which the VM is killed (default: no limit). */
function timeoutSeconds(): number {
  const given = settings.MINC_VM_TIMEOUT;
  if (given === "") return 0;
  if (!/^\d+$/.test(given)) throw usageError(`MINC_VM_TIMEOUT=${given}: seconds`);
  return Number(given);
}

export async function main(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  settings = readSettings(env);
  tmpdir = settings.MINC_TMPDIR;
  files = workdirPaths(tmpdir);
  phase(5);
  if (!tmpdir) throw new MincError("MINC_TMPDIR must be set (run minc --qemu or --um)");
  const guest = guestArch(settings.MINC_ARCH || "x86_64");
  const dir = ermineDir(settings.MINC_ERMINE_DIR);
  checkGuest(guest, dir);
  writeRunScript(args);
  // The resource limits hold for the whole VM.
  enterCages(openCages(settings, live), live);
  return bootGuest(guest, dir, { share: tmpdir, timeoutSeconds: timeoutSeconds(), ownPidNamespace: false });
}
