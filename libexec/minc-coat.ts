// minc-coat: the container's coat, its layered root filesystem.
//
//   minc-coat bind TMPDIR BASEDIR   mount the root on TMPDIR/root
//   minc-coat unbind TMPDIR         unmount it again
//
// The root is an overlay: BASEDIR (one directory, or several joined with
// ":" for an image's layers) below, TMPDIR/storage on top, so everything
// the container writes lands in storage and BASEDIR stays untouched. In
// direct mode (MINC_DIRECT) BASEDIR itself is bound instead.
import { existsSync, statSync } from "node:fs";
import { MincError, usageError } from "../lib/core/fail.ts";
import { mounts } from "../lib/core/mounts.ts";
import type { Host } from "../lib/core/host.ts";
import { live } from "../lib/core/run.ts";
import { readSettings, type Settings } from "../lib/core/settings.ts";
import { phase, step } from "../lib/core/trace.ts";
import { workdirPaths } from "../lib/boot/workdir.ts";

// The settings, from the environment main() is given.
let settings: Settings;
/** Does each step: live, or written down ahead (minc-core's choice). */
let host: Host;

function checkTmpdir(tmpdir: string | undefined): string {
  if (!tmpdir || !existsSync(tmpdir) || !statSync(tmpdir).isDirectory()) {
    throw usageError(`working directory ${tmpdir ?? "(none)"} is not a directory`);
  }
  return tmpdir;
}

function bind(tmpdir: string, basedir: string | undefined): void {
  phase(4);
  if (!basedir) throw usageError("usage: minc-coat bind TMPDIR BASEDIR");
  const { root, storage: upper, work } = workdirPaths(tmpdir);
  step("Working sub-directories: root is the mountpoint, storage the upper layer, work is overlayfs's scratch");
  host.mkdirs(root, upper, work);
  const direct = settings.MINC_DIRECT;
  // Written down ahead, the root is not mounted until the script runs: until then, look at what it will show.
  host.rootWillBe(root, direct ? [basedir] : [upper, ...basedir.split(":")]);
  // A device node in the rootdir or an image (an OCI layer may hold one) must not open a host device.
  const nodev = settings.MINC_PRIVILEGED ? "" : ",nodev";
  if (direct) {
    step(`Direct mode: bind the rootdir itself as the root${nodev ? ", nodev: its device nodes do not open" : ""}`);
    if (nodev) host.mount("-o", "bind,nodev", basedir, root);
    else host.bindMount(basedir, root);
    return;
  }
  step(
    `Mount the overlay: the rootdir below, storage on top; writes land in storage${nodev ? ". nodev: a device node in it does not open (the container's own are on /dev)" : ""}`,
  );
  // In a user namespace overlayfs keeps whiteouts and opaque dirs in user.* xattrs (trusted.* needs the host's root).
  const userxattr = settings.MINC_NOPRIV ? ",userxattr" : "";
  host.mount(
    "-t",
    "overlay",
    "-o",
    `lowerdir=${basedir},upperdir=${upper},workdir=${work}${userxattr}${nodev}`,
    "overlay",
    root,
  );
}

function isMountpoint(dir: string): boolean {
  return mounts().some((m) => m.point === dir);
}

function unbind(tmpdir: string): void {
  const { root } = workdirPaths(tmpdir);
  if (!existsSync(root) || !isMountpoint(root)) return;
  step("Unmount the container's root");
  host.run(["umount", root]);
}

export function main(args: string[], env: NodeJS.ProcessEnv, given: Host = live): number {
  settings = readSettings(env);
  host = given;
  const [cmd, tmpdir, basedir] = args;
  if (cmd === "bind") bind(checkTmpdir(tmpdir), basedir);
  else if (cmd === "unbind") unbind(checkTmpdir(tmpdir));
  else throw new MincError("usage: minc-coat bind TMPDIR BASEDIR | unbind TMPDIR", 2);
  return 0;
}
