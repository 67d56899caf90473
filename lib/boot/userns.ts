// --nopriv: what an ordinary user may map into a user namespace.
//
// Without help, a user namespace maps one id: the caller, as root. With
// newuidmap/newgidmap (setuid helpers from Debian's uidmap package) and
// ranges of subordinate ids in /etc/subuid and /etc/subgid, the ids 1..N
// inside map to that range, so `--user 1000` works in the container.
import { readFileSync } from "node:fs";
import { release, userInfo } from "node:os";
import { findInPath } from "../core/run.ts";

export interface IdRange {
  start: number;
  count: number;
}

/** The caller's first range in an /etc/subuid-style file, by name or by number. */
function rangeOf(file: string, name: string, id: number): IdRange | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    const [who, start, count] = line.trim().split(":");
    if ((who === name || who === String(id)) && /^\d+$/.test(start ?? "") && /^[1-9]\d*$/.test(count ?? "")) {
      return { start: Number(start), count: Number(count) };
    }
  }
  return undefined;
}

/** The caller's name and uid; a uid with no passwd entry (docker run -u 1234, CI jobs) has only its number. */
function caller(): { username: string; uid: number } {
  try {
    const { username, uid } = userInfo();
    return { username, uid };
  } catch {
    const uid = process.getuid!();
    return { username: String(uid), uid };
  }
}

/** The subordinate uid and gid ranges the caller may map, if the helpers are there too. */
export function subordinateIds(): { uids: IdRange; gids: IdRange } | undefined {
  if (!findInPath("newuidmap") || !findInPath("newgidmap")) return undefined;
  const me = caller();
  const uids = rangeOf("/etc/subuid", me.username, me.uid);
  const gids = rangeOf("/etc/subgid", me.username, me.uid);
  return uids && gids ? { uids, gids } : undefined;
}

/** unshare's options for the user namespace of --nopriv. */
export function userNamespaceOptions(): string[] {
  const ids = subordinateIds();
  if (!ids) return ["--map-root-user"];
  return [
    "--map-root-user",
    `--map-users=${ids.uids.start},1,${ids.uids.count}`,
    `--map-groups=${ids.gids.start},1,${ids.gids.count}`,
  ];
}

/** Linux lets an unprivileged user mount overlayfs (in its own user namespace) since 5.11. */
export function unprivilegedOverlay(kernel = release()): boolean {
  const [major, minor] = kernel.split(".").map((n) => parseInt(n, 10));
  return major > 5 || (major === 5 && minor >= 11);
}
