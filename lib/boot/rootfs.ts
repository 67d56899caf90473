// Facts about a container's rootfs that more than one backend needs.
import { usageError } from "../core/fail.ts";
import { resolveInRoot } from "./paths.ts";
import { foundInRoot, readFileInRoot } from "./rootview.ts";
import { isExecutable } from "../core/run.ts";

/**
 * The shell to run when no command is given: $SHELL if the rootfs has it,
 * else /bin/sh. A $SHELL that is a command name (SHELL=ps) runs as the
 * shell MINCS runs it, found in the command's PATH inside the rootfs.
 */
export function shellOf(root: string): string | undefined {
  const shell = process.env.SHELL;
  if (shell && !shell.includes("/")) {
    const dirs = (process.env.PATH || "/usr/sbin:/usr/bin:/sbin:/bin").split(":").filter((d) => d.startsWith("/"));
    if (dirs.some((d) => isExecutableInRoot(resolveInRoot(root, `${d}/${shell}`)))) return shell;
  }
  const wanted = [shell, "/bin/sh"].filter((s): s is string => !!s && s.startsWith("/"));
  return wanted.find((sh) => isExecutableInRoot(resolveInRoot(root, sh)));
}

export interface User {
  uid: number;
  gid: number;
}

function table(root: string, file: string): string[][] {
  try {
    return readFileInRoot(resolveInRoot(root, file))
      .split("\n")
      .map((l) => l.split(":"));
  } catch {
    return [];
  }
}

const NUMBER = /^\d+$/;

/**
 * --user UID[:GID], by number or by name from the rootfs's own /etc/passwd
 * and /etc/group (the host's names mean nothing inside). Without GID, the
 * user's group from passwd, or GID = UID when passwd does not know it.
 */
export function userOf(root: string, spec: string): User {
  const [who, group] = spec.split(":", 2);
  const passwd = table(root, "/etc/passwd");
  const entry = passwd.find((p) => (NUMBER.test(who) ? p[2] === who : p[0] === who));
  let uid: number;
  if (NUMBER.test(who)) uid = Number(who);
  else if (entry) uid = Number(entry[2]);
  else throw usageError(`--user: no user ${who} in the rootfs's /etc/passwd`);
  let gid: number;
  if (group === undefined || group === "") gid = entry ? Number(entry[3]) : uid;
  else if (NUMBER.test(group)) gid = Number(group);
  else {
    const g = table(root, "/etc/group").find((p) => p[0] === group);
    if (!g) throw usageError(`--user: no group ${group} in the rootfs's /etc/group`);
    gid = Number(g[2]);
  }
  return { uid, gid };
}

/**
 * An executable file in the root (resolve the path first: a last symlink is
 * not followed). In a layer of the root's view, before the root is mounted,
 * by its mode bits (root may run a file with any of them set).
 */
export function isExecutableInRoot(path: string): boolean {
  const f = foundInRoot(path);
  if (!f) return false;
  if (f.at === path) return isExecutable(path);
  return f.stat.isFile() && (f.stat.mode & 0o111) !== 0;
}
