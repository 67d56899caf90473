// The container's root as it will be, read before it is mounted.
//
// When minc-core writes its boot down ahead (lib/boot/bootscript.ts), it decides
// in minc's own Node, outside the new namespaces, where nothing is mounted
// on TMPDIR/root yet. Its questions about the root (is /dev there? where
// does /etc/resolv.conf lead? is /bin/sh executable?) are then answered
// from what the overlay will show: the upper layer first, then each lower
// layer, a whiteout (a 0:0 character device) hiding what lies below, and
// what the plan itself mounts on the root (a fresh tmpfs or proc is empty,
// a bind shows its source). Overlayfs keeps opaque directories in an xattr
// Node cannot read, so under one the view may see a lower layer's file that
// is hidden; should a mount then miss its mountpoint, the script makes it
// and mounts again (lib/boot/bootscript.ts).
// Without a view, every question goes to the filesystem itself.
import { lstatSync, readFileSync, readlinkSync, type Stats } from "node:fs";

interface View {
  root: string;
  layers: string[];
  /** What the plan mounts on the root, latest last: a source dir, or undefined for an empty filesystem. */
  mounts: { target: string; source: string | undefined }[];
  /** What the plan removes from the root (a symlink it replaces, say). */
  removed: Set<string>;
}

/** The root's view while minc-core writes its boot down (minc-coat opens it, minc-core closes it). */
let current: View | undefined;

export function viewRoot(root: string, layers: string[]): void {
  current = { root, layers, mounts: [], removed: new Set() };
}

export function closeView(): void {
  current = undefined;
}

/** The plan mounts on target: a bind of source, or (no source) a new, empty filesystem. */
export function viewMount(target: string, source: string | undefined): void {
  const view = current;
  if (view && target !== view.root) view.mounts.push({ target, source }); // the root's own mount is what the layers show
}

/** The plan removes path (rm -f). */
export function viewRemove(path: string): void {
  current?.removed.add(path);
}

function under(path: string, dir: string): string | undefined {
  if (path === dir) return "";
  return path.startsWith(`${dir}/`) ? path.slice(dir.length) : undefined;
}

/** The host paths that may hold path, top first; [] when it cannot exist yet. Mounts made after the first `before` are ignored. */
function candidates(path: string, before?: number): string[] {
  const view = current;
  if (!view) return [path];
  for (let i = (before ?? view.mounts.length) - 1; i >= 0; i--) {
    const m = view.mounts[i];
    const rest = under(path, m.target);
    if (rest === undefined) continue;
    if (m.source === undefined) {
      if (rest === "") continue; // the mountpoint itself: what was there before
      return [];
    }
    return candidates(m.source + rest, i); // (a bind of a path as it was then: a read-only remount binds a path to itself)
  }
  const rest = under(path, view.root);
  if (rest === undefined) return [path];
  return view.layers.map((layer) => layer + rest);
}

function isWhiteout(s: Stats): boolean {
  return s.isCharacterDevice() && s.rdev === 0;
}

/** Where path is found: the host path of the first layer that has it, and its lstat; undefined if absent or whited out. */
export function foundInRoot(path: string): { at: string; stat: Stats } | undefined {
  const view = current;
  if (view?.removed.has(path)) return undefined;
  for (const at of candidates(path)) {
    const stat = lstatSync(at, { throwIfNoEntry: false });
    if (!stat) continue;
    if (view && isWhiteout(stat) && at !== path) return undefined;
    return { at, stat };
  }
  return undefined;
}

export function lstatInRoot(path: string): Stats | undefined {
  return foundInRoot(path)?.stat;
}

export function readlinkInRoot(path: string): string {
  return readlinkSync(existing(path));
}

export function readFileInRoot(path: string): string {
  return readFileSync(existing(path), "utf8");
}

function existing(path: string): string {
  const f = foundInRoot(path);
  if (!f) throw Object.assign(new Error(`${path}: no such file`), { code: "ENOENT" });
  return f.at;
}
