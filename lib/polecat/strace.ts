// The files a traced container touched, read from `strace -f -o FILE`.
//
// minc-trapper runs strace outside the root (the rootfs needs no strace), in
// front of the chroot (capsh --chroot or chroot(1)): so what comes before
// the chroot() call is the host loading capsh, and what comes after are
// paths as the container sees them. A relative path is taken from the
// directory strace prints beside its directory fd (-y; the host's view, the
// root's path taken off), or else from the process's working directory,
// which it inherits from its parent (clone, fork, vfork) and changes with
// chdir().
import { posix } from "node:path";

/**
 * The strace options: file syscalls, and the process creations that pass
 * the working directory on; -y prints the directory behind a directory fd
 * (as the host sees it), so a path relative to one can be placed too.
 */
export const STRACE_ARGS = ["-f", "-q", "-y", "-e", "trace=file,clone,clone3,fork,vfork"];

const FORKS = new Set(["clone", "clone3", "fork", "vfork"]);
/** Their first string is no path to copy: a link's target, or text. */
const SKIPPED = new Set(["symlink", "symlinkat"]);
/** Filesystems minc mounts afresh in every container: nothing of them is in the image. */
const MOUNTED = /^\/(proc|sys|dev|tmp)(\/|$)/;

const LINE = /^(\d+)\s+(.*)$/;
const CALL = /^(\w+)\((.*)$/;
const RESUMED = /^<\.\.\. (\w+) resumed>/;
const RESULT = /\)\s+=\s+(-?\d+)/;
const STRING = /"((?:[^"\\]|\\.)*)"/;
/** The arguments before the path: none, AT_FDCWD, or a directory fd; with -y decorated with its directory (3</x>, AT_FDCWD</x>). */
const BEFORE_PATH = /^(|(AT_FDCWD|\d+)(?:<([^>]*)>)?, )"/;

const ESCAPES: Record<string, number> = { n: 10, t: 9, r: 13, v: 11, f: 12, a: 7, b: 8, '"': 34, "\\": 92 };

/** strace's C-style escapes undone, bytes decoded as UTF-8. */
export function unescapeC(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== "\\") {
      bytes.push(...Buffer.from(s[i], "utf8"));
      continue;
    }
    const next = s[++i];
    const oct = /^[0-7]{1,3}/.exec(s.slice(i));
    const hex = /^x([0-9a-fA-F]{2})/.exec(s.slice(i));
    if (oct) {
      bytes.push(parseInt(oct[0], 8));
      i += oct[0].length - 1;
    } else if (hex) {
      bytes.push(parseInt(hex[1], 16));
      i += 2;
    } else bytes.push(ESCAPES[next] ?? next.charCodeAt(0));
  }
  return Buffer.from(bytes).toString("utf8");
}

function result(text: string): number | undefined {
  const m = RESULT.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** A directory as the host printed it (-y), as the container sees it: under the root it chrooted into. */
function inside(hostPath: string, root: string): string | undefined {
  const dir = posix.normalize(unescapeC(hostPath));
  if (dir === root) return "/";
  return dir.startsWith(`${root}/`) ? dir.slice(root.length) : undefined;
}

/** The path a file syscall names, absolute, or undefined when it names none we can place. */
function pathOf(args: string, cwd: string, root: string): string | undefined {
  const before = BEFORE_PATH.exec(args);
  const quoted = STRING.exec(args);
  if (!before || !quoted || quoted.index !== before[0].length - 1) return undefined;
  const path = unescapeC(quoted[1]);
  if (path === "") return undefined;
  if (path.startsWith("/")) return posix.normalize(path);
  const [, , dirfd, shown] = before;
  if (shown !== undefined) {
    const dir = inside(shown, root);
    return dir === undefined ? undefined : posix.join(dir, path);
  }
  // Relative to a directory fd strace did not name (no -y): we do not know that directory.
  if (dirfd !== undefined && dirfd !== "AT_FDCWD") return undefined;
  return posix.join(cwd, path);
}

/**
 * The paths the container's processes named in file syscalls, in the order
 * first named, without those of /proc, /sys, /dev and /tmp. Undefined if
 * the trace has no successful chroot() (then nothing in it is the container's).
 */
export function tracedPaths(trace: string): string[] | undefined {
  const cwd = new Map<string, string>();
  const paths = new Set<string>();
  const forking: string[] = [];
  let chrooted = false;
  let root = "/";
  for (const line of trace.split("\n")) {
    const m = LINE.exec(line);
    if (!m) continue;
    const [, pid, rest] = m;
    const resumed = RESUMED.exec(rest);
    const call = resumed ? undefined : CALL.exec(rest);
    const name = resumed?.[1] ?? call?.[1];
    if (!name) continue;
    // A child may show up before its parent's fork returns: it starts where the forking parent is.
    if (!cwd.has(pid) && forking.length > 0) cwd.set(pid, cwd.get(forking[forking.length - 1]) ?? "/");
    const here = cwd.get(pid) ?? "/";
    if (name === "chroot") {
      const into = call ? STRING.exec(call[2]) : null;
      if (result(rest) === 0) {
        chrooted = true;
        cwd.set(pid, "/");
        if (into) root = posix.normalize(unescapeC(into[1]));
      }
      continue;
    }
    if (!chrooted) continue;
    if (FORKS.has(name)) {
      if (call && rest.endsWith("<unfinished ...>")) forking.push(pid);
      else if (resumed && forking.includes(pid)) forking.splice(forking.lastIndexOf(pid), 1);
      const child = result(rest);
      if (child !== undefined && child > 0) cwd.set(String(child), here);
      continue;
    }
    if (!call || SKIPPED.has(name)) continue;
    const path = pathOf(call[2], here, root);
    if (path === undefined) continue;
    if (name === "chdir" && result(rest) === 0) cwd.set(pid, path);
    if (!MOUNTED.test(path)) paths.add(path);
  }
  return chrooted ? [...paths] : undefined;
}
