// The id of an imported directory: a sha256 over the whole tree, computed
// here rather than over a `tar -c` stream piped in. Reading the files
// directly is one copy of their bytes instead of three (into the pipe, out
// of it, into the hash), and no tar process competes with the copy that
// runs at the same time (cp -a).
//
// Names below the top are bytes: a file name need not be UTF-8 (Latin-1's
// "caf\xe9" is a valid name), and as a string it would become another name.
import type { Hash } from "node:crypto";
import * as fs from "node:fs";
import { resolve } from "node:path";
import { captureBytes, findInPath } from "../core/run.ts";
import { step } from "../core/trace.ts";

const CHUNK = 1 << 20;
const SLASH = Buffer.from("/");

/** getfattr writes a "# file:" name with its control bytes and "\" as \ooo, other bytes as they are. */
function unescapeOctal(text: Buffer): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const digits = text.toString("latin1", i + 1, i + 4);
    if (text[i] === 0x5c && /^[0-7]{3}$/.test(digits)) {
      bytes.push(parseInt(digits, 8));
      i += 3;
    } else {
      bytes.push(text[i]);
    }
  }
  return Buffer.from(bytes);
}

/** A path's bytes as a map key. */
const key = (path: Buffer): string => path.toString("latin1");

/** Extended attributes by absolute path (see key()), as getfattr dumps them (hex values). */
function xattrsOf(dir: string): Map<string, string> {
  const found = new Map<string, string>();
  if (!findInPath("getfattr")) {
    step("(no getfattr here: extended attributes are left out of the digest)");
    return found;
  }
  const dump = captureBytes(["getfattr", "-R", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", dir]);
  let file = "";
  for (let start = 0; start < dump.length; ) {
    let end = dump.indexOf(0x0a, start);
    if (end < 0) end = dump.length;
    const line = dump.subarray(start, end);
    start = end + 1;
    if (line.toString("latin1", 0, 8) === "# file: ") file = key(unescapeOctal(line.subarray(8)));
    else if (line.length > 0 && file) found.set(file, `${found.get(file) ?? ""}${line.toString("latin1")};`);
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
 * A name in the digest: as JSON text when it is UTF-8 (which keeps the ids
 * of such trees what they were), else its bytes in hex (which no JSON text
 * can be mistaken for: that starts with a quote).
 */
function nameText(name: Buffer): string {
  const text = name.toString("utf8");
  return Buffer.from(text, "utf8").equals(name) ? JSON.stringify(text) : `x${name.toString("hex")}`;
}

/** A directory's names in the order of their UTF-8 text (as ids always had it), then of their bytes; each decoded once. */
function namesIn(dir: Buffer): Buffer[] {
  const named = fs.readdirSync(dir, { encoding: "buffer" }).map((bytes) => ({ text: bytes.toString("utf8"), bytes }));
  named.sort((a, b) => (a.text < b.text ? -1 : a.text > b.text ? 1 : Buffer.compare(a.bytes, b.bytes)));
  return named.map((n) => n.bytes);
}

/**
 * sha256 of a directory: every entry in name order, depth first, as one
 * line of its path, type, mode, owner, size, mtime, device number, link
 * target (a symlink's, or the first path of a hard link) and xattrs, then a
 * regular file's bytes. The same tree gives the same id; anything marten
 * would store differently gives another. A symlink given as the directory
 * is followed, as cp -a is given its target.
 */
export function treeDigest(given: string): string {
  const dir = fs.realpathSync(resolve(given));
  const xattrs = xattrsOf(dir);
  const hash = process.getBuiltinModule("node:crypto").createHash("sha256"); // (loaded here, not by each command of minc-farm)
  const firstLink = new Map<string, Buffer>();
  const buf = Buffer.allocUnsafe(CHUNK);
  const entry = (path: Buffer, full: Buffer): void => {
    const st = fs.lstatSync(full, { bigint: true });
    let type = typeOf(st);
    let link: Buffer = st.isSymbolicLink() ? fs.readlinkSync(full, { encoding: "buffer" }) : Buffer.alloc(0);
    if (type === "f" && st.nlink > 1n) {
      const inode = `${st.dev}:${st.ino}`;
      const first = firstLink.get(inode);
      if (first === undefined) firstLink.set(inode, path);
      else [type, link] = ["h", first];
    }
    const meta = [
      type,
      st.mode.toString(8),
      `${st.uid}:${st.gid}`,
      st.size,
      st.mtimeNs,
      st.rdev,
      nameText(path),
      nameText(link),
      xattrs.get(key(full)) ?? "",
    ];
    hash.update(`${meta.join(" ")}\n`);
    if (type === "f") hashFile(full, hash, buf);
    else if (type === "d") {
      const below = (at: Buffer, name: Buffer): Buffer =>
        Buffer.concat(at.equals(SLASH) ? [SLASH, name] : [at, SLASH, name]);
      for (const name of namesIn(full)) entry(below(path, name), below(full, name));
    }
  };
  entry(SLASH, Buffer.from(dir));
  return `sha256:${hash.digest("hex")}`;
}

function hashFile(path: Buffer, hash: Hash, buf: Buffer): void {
  const fd = fs.openSync(path, "r");
  try {
    for (let n: number; (n = fs.readSync(fd, buf, 0, CHUNK, null)) > 0; ) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
}
