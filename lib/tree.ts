// The id of an imported directory: a sha256 over the whole tree, computed
// here rather than over a `tar -c` stream piped in. Reading the files
// directly is one copy of their bytes instead of three (into the pipe, out
// of it, into the hash), and no tar process competes with the copy that
// runs at the same time (cp -a).
import type { Hash } from "node:crypto";
import * as fs from "node:fs";
import { resolve } from "node:path";
import { capture, findInPath } from "./run.ts";
import { step } from "./trace.ts";

const CHUNK = 1 << 20;

/** Extended attributes by absolute path, as getfattr dumps them (hex values). */
function xattrsOf(dir: string): Map<string, string> {
  const found = new Map<string, string>();
  if (!findInPath("getfattr")) {
    step("(no getfattr here: extended attributes are left out of the digest)");
    return found;
  }
  const dump = capture(["getfattr", "-R", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", dir]);
  let file = "";
  for (const line of dump.split("\n")) {
    if (line.startsWith("# file: ")) file = line.slice(8);
    else if (line !== "" && file) found.set(file, `${found.get(file) ?? ""}${line};`);
  }
  return found;
}

function typeOf(st: fs.BigIntStats): string {
  if (st.isFile()) return "f";
  if (st.isDirectory()) return "d";
  if (st.isSymbolicLink()) return "l";
  if (st.isCharacterDevice()) return "c";
  if (st.isBlockDevice()) return "b";
  if (st.isFIFO()) return "p";
  return "s";
}

/**
 * sha256 of a directory: every entry in name order, depth first, as one
 * line of its path, type, mode, owner, size, mtime, device number, link
 * target (a symlink's, or the first path of a hard link) and xattrs, then a
 * regular file's bytes. The same tree gives the same id; anything marten
 * would store differently gives another.
 */
export function treeDigest(given: string): string {
  const dir = resolve(given);
  const xattrs = xattrsOf(dir);
  const hash = process.getBuiltinModule("node:crypto").createHash("sha256"); // (loaded here, not by each command of minc-farm)
  const firstLink = new Map<string, string>();
  const buf = Buffer.allocUnsafe(CHUNK);
  const entry = (path: string, full: string): void => {
    const st = fs.lstatSync(full, { bigint: true });
    let type = typeOf(st);
    let link = st.isSymbolicLink() ? fs.readlinkSync(full) : "";
    if (type === "f" && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = firstLink.get(key);
      if (first === undefined) firstLink.set(key, path);
      else [type, link] = ["h", first];
    }
    const meta = [type, st.mode.toString(8), `${st.uid}:${st.gid}`, st.size, st.mtimeNs, st.rdev, JSON.stringify(path), JSON.stringify(link), xattrs.get(full) ?? ""];
    hash.update(`${meta.join(" ")}\n`);
    if (type === "f") hashFile(full, hash, buf);
    else if (type === "d") for (const name of fs.readdirSync(full).sort()) entry(`${path === "/" ? "" : path}/${name}`, `${full === "/" ? "" : full}/${name}`);
  };
  entry("/", dir);
  return `sha256:${hash.digest("hex")}`;
}

function hashFile(path: string, hash: Hash, buf: Buffer): void {
  const fd = fs.openSync(path, "r");
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, CHUNK, null)) > 0;) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
}
