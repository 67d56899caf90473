// A directory that becomes an overlayfs layer (a rootdir, the store, a
// working directory). Its path goes into mount options and fstab lines,
// where some characters mean something: overlayfs splits "lowerdir=A:B" at
// ":" and reads "\" as an escape, mount(8) splits its options at ",",
// libmount reads '"' as quoting, and an fstab line splits at blanks. Such a
// path is refused up front, rather than failing in the mount with a message
// about an fstab file.
import { existsSync, realpathSync, statSync } from "node:fs";
import { usageError } from "../core/fail.ts";

const MEANINGFUL = /[:,\s"\\]/;

export function checkLayerPath(what: string, dir: string, use = "be an overlay layer"): string {
  if (MEANINGFUL.test(dir)) throw usageError(`${what} ${dir}: a path with ':', ',', '"', '\\' or blanks cannot ${use}`);
  return dir;
}

/** A directory the user named (-r, -t, ...), as its real path. */
export function existingDir(what: string, dir: string): string {
  if (!existsSync(dir)) throw usageError(`${what} ${dir}: no such directory`);
  if (!statSync(dir).isDirectory()) throw usageError(`${what} ${dir}: not a directory`);
  return realpathSync(dir);
}
