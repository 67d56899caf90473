// What polecat puts into a self-executable file: the minc runtime it packs
// into the image, and the sh header in front of the image that boots it.
import { WAITER_SCRIPTS } from "../core/libexec.ts";
import { quoteAll } from "../core/trace.ts";
// The header itself is lib/polecat/polecat-self.sh (a real sh file, which shellcheck
// reads), bundled into polecat as text; header() fills in its @POLECAT_...@.
import SELF from "./polecat-self.sh" with { type: "text" };

/** Where the runtime lives inside the image (MINCS packed its scripts in /opt/libexec). */
export const RUNTIME_DIR = "/opt/mincs";

/** minc and the backends one plain boot needs (no network, no image store). */
export const RUNTIME_BACKENDS = [
  "minc-exec",
  "minc-core",
  "minc-coat",
  "minc-leash",
  "minc-cage",
  ...WAITER_SCRIPTS,
  "minc-fork.sh",
];

/**
 * The header of a self-executable file: sh that checks the host, mounts the
 * squashfs after it (its last `size` bytes) through a loop device, boots the
 * command with the packed minc over it (which puts its own overlay on top
 * and removes its working directory), and undoes its mount and directory on
 * every exit, Ctrl-C included: sh makes the directory, so that it knows the
 * name to remove whatever fails. Arguments given to the file are appended
 * to the command. The status is the command's. A closed stdin is /dev/null
 * to the command, as under minc.
 */
export function header(command: readonly string[], size: number): string {
  const fill: Record<string, string> = {
    POLECAT_COMMAND_LINE: quoteAll(command).replace(/\n/g, " "),
    POLECAT_RUNTIME_DIR: RUNTIME_DIR,
    POLECAT_SIZE: String(size),
    POLECAT_MINC: `${RUNTIME_DIR}/bin/minc`,
    POLECAT_COMMAND: quoteAll(command),
  };
  // One pass, so that a command containing a placeholder's name stays as it is.
  return SELF.replace(/@(POLECAT_[A-Z_]+)@/g, (whole, name: string) => fill[name] ?? whole);
}
