// Paths inside a container's root, seen from the host.
//
// A rootfs may hold symlinks such as /etc/resolv.conf -> /run/... or a
// hostile /mnt -> /. The backends work from outside the root, where the
// kernel would follow such a link to the host's own files; so every path
// inside the root is resolved here the way the container will see it:
// links are followed, but "/" and ".." never leave the root.
import { MincError } from "../core/fail.ts";
import { lstatInRoot, readlinkInRoot } from "./rootview.ts";

const MAX_LINKS = 40; // what the kernel allows in one lookup

export function resolveInRoot(root: string, path: string): string {
  const done: string[] = [];
  let todo = path.split("/").filter((c) => c !== "" && c !== ".");
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    if (name === ".") continue;
    if (name === "..") {
      done.pop();
      continue;
    }
    const here = hostPath(root, [...done, name]);
    let target: string | undefined;
    // Not there (yet): the rest is taken as written.
    if (lstatInRoot(here)?.isSymbolicLink()) target = readlinkInRoot(here);
    if (target === undefined) {
      done.push(name);
      continue;
    }
    if (++links > MAX_LINKS) throw new MincError(`too many symbolic links in ${path} inside ${root}`);
    if (target.startsWith("/")) done.length = 0;
    todo = [...target.split("/").filter((c) => c !== "" && c !== "."), ...todo];
  }
  return hostPath(root, done);
}

function hostPath(root: string, parts: string[]): string {
  const base = root.replace(/\/+$/, "");
  return parts.length === 0 ? base || "/" : `${base}/${parts.join("/")}`;
}

/** True if the path exists inside the root (following links inside it). */
export function existsInRoot(root: string, path: string): boolean {
  return lstatInRoot(resolveInRoot(root, path)) !== undefined;
}
