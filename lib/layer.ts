// Unpacking an image layer (a tar, plain, gzip or zstd) into a directory,
// safely, in the form overlayfs stacks:
//
// - names are kept as the archive's bytes, UTF-8 or not (see BYTES);
// - entries with an absolute path or a ".." component abort the unpack;
//   parents are resolved without following symlinks (a symlink unpacked
//   earlier never leads a later entry out of the layer), hardlinks must point
//   at a file of the layer itself;
// - owners, modes, mtimes, symlinks, hardlinks, devices, fifos and (from
//   pax headers) user.* and security.capability xattrs are kept;
// - OCI/AUFS whiteouts become overlayfs ones: ".wh.NAME" a 0/0 character
//   device NAME, ".wh..wh..opq" the trusted.overlay.opaque=y xattr on its
//   directory (set with setfattr, from Debian's attr package);
// - a file that cannot be written (a full disk, a name too long) is an error
//   that says so, not a broken archive;
// - the sha256 of the uncompressed stream (the layer's DiffID) and of the
//   stream as given (the blob's digest) are computed; a DiffID that differs
//   from the expected one is an error, and the caller discards the directory.
import { createHash, type Hash } from "node:crypto";
import * as fs from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createZstdDecompress } from "node:zlib";
import tar, { type Header } from "tar-stream";
import { MincError, systemErrorText } from "./fail.ts";
import { findInPath, run } from "./run.ts";
import { quote, shown } from "./trace.ts";

export type Compression = "gzip" | "zstd" | "none";

export interface UnpackOptions {
  /** The expected DiffID ("sha256:HEX" or HEX): a different one is an error. */
  diffId?: string;
  /** How the input is compressed; "auto" (the default) looks at its first bytes. */
  compression?: Compression | "auto";
  /** The input's sha256 ("sha256:HEX"), checked already as it downloaded: not computed again. */
  digest?: string;
}

export interface UnpackResult {
  /** sha256 of the uncompressed tar: "sha256:HEX". */
  diffId: string;
  /** sha256 of the input as given (the blob): "sha256:HEX". */
  digest: string;
  /** Bytes of the input as given. */
  size: number;
  compression: Compression;
  entries: number;
  whiteouts: number;
  opaques: number;
}

/** What the first bytes of a stream say it is. */
export function sniff(head: Buffer): Compression | "xz" | "bzip2" {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return "xz";
  if (head.length >= 3 && head.subarray(0, 3).toString("latin1") === "BZh") return "bzip2";
  return "none";
}

/** Digests and sizes of a stream, as given and uncompressed. */
export class StreamDigests {
  /** Undefined when the input's digest is known already (a blob checked as it downloaded). */
  readonly given: Hash | undefined;
  constructor(hashGiven = true) {
    this.given = hashGiven ? createHash("sha256") : undefined;
  }
  readonly plain: Hash = createHash("sha256");
  size = 0;
  plainSize = 0;
  compression: Compression = "none";
}

/** The uncompressed bytes of a (possibly compressed) stream, digests taken on the way. */
export async function* decompress(
  input: AsyncIterable<Buffer | Uint8Array | string>,
  want: Compression | "auto",
  d: StreamDigests,
): AsyncGenerator<Buffer> {
  const it = input[Symbol.asyncIterator]();
  const pull = async (): Promise<Buffer | undefined> => {
    const r = await it.next();
    if (r.done) return undefined;
    const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
    d.given?.update(b);
    d.size += b.length;
    return b;
  };
  const first: Buffer[] = [];
  let have = 0;
  while (have < 6) {
    const b = await pull();
    if (!b) break;
    first.push(b);
    have += b.length;
  }
  const head = Buffer.concat(first);
  const kind = want === "auto" ? sniff(head) : want;
  if (kind === "xz" || kind === "bzip2") throw new MincError(`${kind} compressed layers are not supported (only gzip, zstd or plain tar)`);
  d.compression = kind;
  async function* raw(): AsyncGenerator<Buffer> {
    if (head.length) yield head;
    for (;;) {
      const b = await pull();
      if (!b) return;
      yield b;
    }
  }
  let out: AsyncIterable<Buffer>;
  if (kind === "none") {
    out = raw();
  } else {
    // Larger output chunks than zlib's 16 KiB: fewer trips through the hashes and the tar reader.
    const chunkSize = 256 << 10;
    const z = kind === "gzip" ? createGunzip({ chunkSize }) : createZstdDecompress({ chunkSize });
    pipeline(Readable.from(raw()), z).catch((e: Error) => z.destroy(e));
    out = z;
  }
  try {
    for await (const chunk of out) {
      d.plain.update(chunk);
      d.plainSize += chunk.length;
      yield chunk;
    }
  } catch (e) {
    if (e instanceof MincError) throw e;
    const why = systemErrorText(e); // (the input could not be read: not a decompression failure)
    throw new MincError(why !== undefined ? `cannot read the layer: ${why}` : `cannot decompress (${kind}): ${(e as Error).message}`);
  }
}

/**
 * An entry of a tar being read: its header, and its data to read (or leave).
 * The header's name and linkname are the archive's bytes, one character per
 * byte (see BYTES): read them with entryBytes() or entryText().
 */
export interface Entry extends AsyncIterable<Buffer> {
  header: Header;
  resume(): unknown;
}

/**
 * Entry names are kept as the archive's bytes, one character per byte
 * ("latin1" strings), from the tar reader to the file system, as GNU tar and
 * Docker keep them: a name that is not UTF-8 (café in latin-1) is unpacked
 * as exactly its bytes, not as U+FFFD (two such names would become one
 * file). They become Buffers at each file system call, and text (UTF-8) only
 * in messages.
 */
const BYTES = "latin1";

function fsPath(bytes: string): Buffer {
  return Buffer.from(bytes, BYTES);
}

/** A byte name as text, for messages. */
function text(bytes: string): string {
  return Buffer.from(bytes, BYTES).toString("utf8");
}

interface PaxHeaders {
  [key: string]: string;
}

const PAX_KEY = { name: "path", linkname: "linkpath" } as const;

function paxOf(h: Header): PaxHeaders {
  return ((h as { pax?: PaxHeaders | null }).pax ?? {}) as PaxHeaders;
}

/**
 * An entry's path or link target as its bytes (see BYTES). tar-stream
 * decodes pax records (path, linkpath) as UTF-8 whatever they hold: those
 * are encoded back, and one that was not UTF-8 (U+FFFD now) is refused, as
 * its bytes are lost.
 */
export function entryBytes(h: Header, field: "name" | "linkname"): string {
  const pax = paxOf(h)[PAX_KEY[field]];
  if (!pax) return h[field] ?? "";
  if (pax.includes("\uFFFD")) {
    throw new MincError(`refused: entry ${JSON.stringify(pax)} has a pax ${PAX_KEY[field]} that is not UTF-8 (its bytes cannot be kept)`);
  }
  return Buffer.from(pax, "utf8").toString(BYTES);
}

/** An entry's path or link target as text, for names that JSON documents give (manifest.json, blobs/sha256/...). */
export function entryText(h: Header, field: "name" | "linkname"): string {
  return paxOf(h)[PAX_KEY[field]] || text(h[field] ?? "");
}

/**
 * Read a tar from a stream of its bytes, calling each() for every entry in
 * order (its data must be read or left; what is left is skipped). The whole
 * stream is read, padding included, so that its digests are complete.
 */
export async function walkTar(chunks: AsyncIterable<Buffer>, each: (entry: Entry) => Promise<void>): Promise<void> {
  // (filenameEncoding is an option of tar-stream's that its own types leave out)
  const extract = tar.extract({ filenameEncoding: BYTES } as Parameters<typeof tar.extract>[0]);
  let feedError: unknown;
  const feeding = pipeline(Readable.from(chunks), extract).catch((e: unknown) => { feedError = e; });
  let handlerError: unknown;
  let iterError: unknown;
  try {
    for await (const entry of extract) {
      try {
        await each(entry as unknown as Entry);
      } catch (e) {
        handlerError = e;
        break;
      }
      entry.resume();
    }
  } catch (e) {
    iterError = e;
  }
  if (handlerError !== undefined || iterError !== undefined) extract.destroy();
  await feeding;
  // The handler's own failure first: a refusal, or a file it could not write
  // (a full disk, a name too long); the stream it broke off then fails too,
  // only because of it ("Premature close"). Else what broke the stream
  // (truncation, corruption), which an entry's data being read fails with too.
  const handlerFailed = handlerError instanceof MincError || systemErrorText(handlerError) !== undefined;
  const err = handlerFailed ? handlerError : (feedError ?? handlerError ?? iterError);
  if (err === undefined) return;
  if (err instanceof MincError) throw err;
  throw new MincError(systemErrorText(err) ?? `not a valid tar archive: ${(err as Error).message ?? String(err)}`);
}

/** The components of an entry's path (its bytes, see BYTES); absolute paths and ".." are refused. */
export function entryParts(name: string): string[] {
  if (name.startsWith("/")) throw new MincError(`refused: entry ${JSON.stringify(text(name))} has an absolute path`);
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new MincError(`refused: entry ${JSON.stringify(text(name))} has a ".." component`);
  if (name.includes("\0")) throw new MincError(`refused: entry ${JSON.stringify(text(name))} has a NUL byte`);
  return parts;
}

const OPAQUE = ".wh..wh..opq";
const WH = ".wh.";
/** xattrs of an archive that are set on the files; trusted.* (overlayfs's own) and the like never are. */
const XATTR_ALLOWED = /^(user\.|security\.capability$)/;

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

// The file system calls are synchronous: each takes microseconds, where a
// round trip through libuv's thread pool costs tens; the data still streams.
function lstatOrUndefined(path: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(fsPath(path));
  } catch (e) {
    if (errno(e) === "ENOENT") return undefined;
    throw e;
  }
}

function isWhiteoutDevice(st: fs.Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

/** Bytes as getfattr --dump writes names: octal escapes for all but a few plain characters. */
function dumpQuoted(bytes: Buffer): string {
  let out = "";
  for (const b of bytes) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9._\/+:@,-]/.test(c) ? c : `\\${b.toString(8).padStart(3, "0")}`;
  }
  return out;
}

/**
 * Set extended attributes (name, hex value) on path itself (-h: a symlink's
 * own). Node cannot set xattrs: setfattr, of Debian's attr package, does,
 * reading a getfattr dump on stdin, as an argument could not carry a path
 * that is not UTF-8.
 */
function setXattrs(path: string, attrs: readonly (readonly [string, string])[]): void {
  if (!findInPath("setfattr")) throw new MincError("setfattr is needed to set extended attributes (opaque directories): apt-get install attr");
  const dump = [`# file: ${dumpQuoted(fsPath(path))}`, ...attrs.map(([name, hex]) => `${dumpQuoted(Buffer.from(name))}=0x${hex}`)];
  run(["setfattr", "-h", "--restore=-"], `${dump.join("\n")}\n`);
}

/** A new file (never through a link: O_EXCL) with the entry's data. */
async function writeData(data: AsyncIterable<Buffer>, path: string): Promise<void> {
  const fd = fs.openSync(fsPath(path), "wx", 0o600);
  try {
    for await (const chunk of data) {
      for (let off = 0; off < chunk.length; ) off += fs.writeSync(fd, chunk, off, chunk.length - off);
    }
  } finally {
    fs.closeSync(fd);
  }
}

class Unpacker {
  /** The layer's root, as given (text), for the commands that run here. */
  private readonly root: string;
  /** The same, as bytes: every path below is bytes (see BYTES). */
  readonly dest: string;
  /** Directories of the layer known to be real directories (no symlink on the way). */
  private readonly dirs = new Set<string>();
  /** Directory mtimes, set last (writing into a directory changes its mtime). */
  private times: { path: string; mtime: Date }[] = [];
  readonly isRoot = process.getuid?.() === 0;
  entries = 0;
  whiteouts = 0;
  opaques = 0;

  constructor(dest: string) {
    this.root = dest.replace(/\/+$/, "");
    this.dest = Buffer.from(this.root).toString(BYTES);
    this.dirs.add(this.dest);
  }

  path(parts: readonly string[]): string {
    return parts.length ? `${this.dest}/${parts.join("/")}` : this.dest;
  }

  /** Make sure every parent of parts is a real directory of the layer, making the missing ones. */
  private parents(parts: readonly string[], what: string): void {
    for (let i = 1; i < parts.length; i++) {
      const p = this.path(parts.slice(0, i));
      if (this.dirs.has(p)) continue;
      const st = lstatOrUndefined(p);
      if (st === undefined) {
        fs.mkdirSync(fsPath(p), { mode: 0o755 });
      } else if (st.isSymbolicLink()) {
        throw new MincError(`refused: entry ${JSON.stringify(text(what))} goes through the symbolic link ${text(parts.slice(0, i).join("/"))}`);
      } else if (isWhiteoutDevice(st)) {
        fs.unlinkSync(fsPath(p));
        fs.mkdirSync(fsPath(p), { mode: 0o755 });
      } else if (!st.isDirectory()) {
        throw new MincError(`refused: entry ${JSON.stringify(text(what))}: ${text(parts.slice(0, i).join("/"))} is not a directory`);
      }
      this.dirs.add(p);
    }
  }

  /** Clear the way for a new entry: what is there goes, unless both are directories. */
  private clear(path: string, dir: boolean): boolean {
    const st = lstatOrUndefined(path);
    if (st === undefined) return false;
    if (dir && st.isDirectory()) return true;
    if (path === this.dest) throw new MincError("refused: an entry replaces the layer's root directory");
    fs.rmSync(fsPath(path), { recursive: true, force: true });
    this.dirs.clear();
    this.dirs.add(this.dest);
    this.times = this.times.filter((t) => t.path !== path && !t.path.startsWith(`${path}/`));
    return false;
  }

  /** Unpack one entry; a file it cannot write (a full disk, a name too long) is said so, with its name. */
  async entry(entry: Entry): Promise<void> {
    const name = entryBytes(entry.header, "name");
    try {
      await this.place(entry, name);
    } catch (e) {
      const why = systemErrorText(e);
      if (why !== undefined) throw new MincError(`cannot unpack ${JSON.stringify(text(name))}: ${why}`);
      throw e;
    }
  }

  private async place(entry: Entry, name: string): Promise<void> {
    const h = entry.header;
    const pax = paxOf(h);
    const parts = entryParts(name);
    this.entries++;
    const base = parts[parts.length - 1] ?? "";
    if (base.startsWith(WH)) return this.whiteout(parts, name);
    this.parents(parts, name);
    const path = this.path(parts);
    const uid = pax.uid !== undefined ? Number(pax.uid) : (h.uid ?? 0);
    const gid = pax.gid !== undefined ? Number(pax.gid) : (h.gid ?? 0);
    const mode = (h.mode ?? 0o644) & 0o7777;
    const mtime = pax.mtime !== undefined ? new Date(Number(pax.mtime) * 1000) : (h.mtime ?? new Date(0));
    switch (h.type) {
      case "file":
      case "contiguous-file":
        this.clear(path, false);
        await writeData(entry, path);
        break;
      case "directory":
        if (!this.clear(path, true)) fs.mkdirSync(fsPath(path), { mode: 0o700 });
        this.dirs.add(path);
        this.owner(path, uid, gid);
        fs.chmodSync(fsPath(path), mode);
        this.xattrs(path, pax);
        this.times.push({ path, mtime });
        return;
      case "symlink":
        this.clear(path, false);
        fs.symlinkSync(fsPath(entryBytes(h, "linkname")), fsPath(path));
        this.owner(path, uid, gid);
        fs.lutimesSync(fsPath(path), mtime, mtime);
        return;
      case "link": {
        const linkname = entryBytes(h, "linkname");
        const target = this.linkTarget(linkname, name);
        this.checkParents(target, name);
        const st = lstatOrUndefined(this.path(target));
        if (st === undefined) throw new MincError(`refused: hardlink ${JSON.stringify(text(name))} points at ${JSON.stringify(text(linkname))}, which is not in the layer`);
        if (st.isDirectory()) throw new MincError(`refused: hardlink ${JSON.stringify(text(name))} points at a directory`);
        if (this.path(target) === path) return;
        this.clear(path, false);
        fs.linkSync(fsPath(this.path(target)), fsPath(path));
        return;
      }
      case "character-device":
      case "block-device":
      case "fifo": {
        this.clear(path, false);
        const kind = h.type === "fifo" ? ["p"] : [h.type === "block-device" ? "b" : "c", String(h.devmajor ?? 0), String(h.devminor ?? 0)];
        this.mknod(path, ["-m", mode.toString(8)], kind);
        break;
      }
      default:
        throw new MincError(`refused: entry ${JSON.stringify(text(name))} has an unsupported type (${h.type ?? "unknown"})`);
    }
    this.owner(path, uid, gid);
    fs.chmodSync(fsPath(path), mode); // after chown, which clears set-id bits
    this.xattrs(path, pax);
    fs.lutimesSync(fsPath(path), mtime, mtime);
  }

  /**
   * A device, fifo or whiteout at path. mknod(1) takes its path as an
   * argument, which cannot carry bytes that are not UTF-8: the node is made
   * under a plain name in the layer's root, then renamed into place.
   */
  private mknod(path: string, options: string[], kind: string[]): void {
    const made = `${this.root}/.minc-mknod-${process.pid}`;
    run(["mknod", ...options, made, ...kind]);
    shown(`mv ${quote(made)} ${quote(text(path))}`);
    try {
      fs.renameSync(made, fsPath(path));
    } catch (e) {
      fs.rmSync(made, { force: true });
      throw e;
    }
  }

  private linkTarget(linkname: string, name: string): string[] {
    try {
      return entryParts(linkname);
    } catch {
      throw new MincError(`refused: hardlink ${JSON.stringify(text(name))} points outside the layer (${JSON.stringify(text(linkname))})`);
    }
  }

  /** Like parents(), for a path that must already be there: nothing is made. */
  private checkParents(parts: readonly string[], what: string): void {
    for (let i = 1; i < parts.length; i++) {
      const p = this.path(parts.slice(0, i));
      if (this.dirs.has(p)) continue;
      const st = lstatOrUndefined(p);
      if (st === undefined) throw new MincError(`refused: hardlink ${JSON.stringify(text(what))} points at ${text(parts.join("/"))}, which is not in the layer`);
      if (!st.isDirectory()) {
        throw new MincError(`refused: hardlink ${JSON.stringify(text(what))} points through ${text(parts.slice(0, i).join("/"))}, not a directory of the layer`);
      }
      this.dirs.add(p);
    }
  }

  private owner(path: string, uid: number, gid: number): void {
    if (this.isRoot) fs.lchownSync(fsPath(path), uid, gid);
  }

  private async whiteout(parts: string[], name: string): Promise<void> {
    const base = parts[parts.length - 1];
    const dirParts = parts.slice(0, -1);
    if (base === OPAQUE) {
      // The directory hides what lower layers have in it.
      this.parents(parts, name);
      setXattrs(this.path(dirParts), [["trusted.overlay.opaque", Buffer.from("y").toString("hex")]]);
      this.opaques++;
      return;
    }
    if (base.startsWith(`${WH}${WH}`)) return; // AUFS's own bookkeeping (.wh..wh.plnk, ...)
    const hidden = base.slice(WH.length);
    if (hidden === "" || hidden === "." || hidden === "..") throw new MincError(`refused: bad whiteout ${JSON.stringify(text(name))}`);
    const target = [...dirParts, hidden];
    this.parents(target, name);
    // A whiteout hides the lower layers' file; this layer's own stays.
    if (lstatOrUndefined(this.path(target))) return;
    this.mknod(this.path(target), [], ["c", "0", "0"]);
    this.whiteouts++;
  }

  private xattrs(path: string, pax: PaxHeaders): void {
    const attrs: [string, string][] = [];
    for (const [key, value] of Object.entries(pax)) {
      let name: string;
      let hex: string;
      if (key.startsWith("SCHILY.xattr.")) {
        name = key.slice("SCHILY.xattr.".length);
        // tar-stream decodes pax values as UTF-8: a binary value is lost, and skipped.
        if (value.includes("\uFFFD")) continue;
        hex = Buffer.from(value, "utf8").toString("hex");
      } else if (key.startsWith("LIBARCHIVE.xattr.")) {
        name = decodeURIComponent(key.slice("LIBARCHIVE.xattr.".length));
        hex = Buffer.from(value, "base64").toString("hex");
      } else {
        continue;
      }
      if (XATTR_ALLOWED.test(name)) attrs.push([name, hex]);
    }
    if (attrs.length) setXattrs(path, attrs);
  }

  /** Directory mtimes, deepest first, once nothing more is written into them. */
  finish(): void {
    const byDepth = [...this.times].sort((a, b) => b.path.split("/").length - a.path.split("/").length);
    for (const t of byDepth) fs.lutimesSync(fsPath(t.path), t.mtime, t.mtime);
  }
}

/** Unpack a layer into dest (made if missing); see the top of this file. */
export async function unpackLayer(input: Readable | AsyncIterable<Buffer>, dest: string, opts: UnpackOptions = {}): Promise<UnpackResult> {
  const want = opts.diffId === undefined ? undefined : normalizeDigest(opts.diffId);
  fs.mkdirSync(dest, { recursive: true });
  const d = new StreamDigests(opts.digest === undefined);
  const u = new Unpacker(dest);
  await walkTar(decompress(input, opts.compression ?? "auto", d), (e) => u.entry(e));
  u.finish();
  const diffId = `sha256:${d.plain.digest("hex")}`;
  if (want !== undefined && diffId !== want) {
    throw new MincError(`layer content does not match its diff_id: expected ${want}, got ${diffId}`);
  }
  return {
    diffId,
    digest: opts.digest ?? `sha256:${d.given!.digest("hex")}`,
    size: d.size,
    compression: d.compression,
    entries: u.entries,
    whiteouts: u.whiteouts,
    opaques: u.opaques,
  };
}

/** The digests of a layer without unpacking it (a layer the store has already, checked all the same). */
export async function digestLayer(input: Readable | AsyncIterable<Buffer>, compression: Compression | "auto" = "auto"): Promise<Pick<UnpackResult, "diffId" | "digest" | "size" | "compression">> {
  const d = new StreamDigests();
  for await (const chunk of decompress(input, compression, d)) void chunk;
  return { diffId: `sha256:${d.plain.digest("hex")}`, digest: `sha256:${d.given!.digest("hex")}`, size: d.size, compression: d.compression };
}

/** Where minc-smuggler unpacks blobs/sha256/HEX of an OCI layout as it comes: LAYOUT/unpacked/HEX/{root,result.json}. */
export function unpackedDir(layout: string, blob: string): string | undefined {
  const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(blob);
  return m ? `${layout}/unpacked/${m[1]}` : undefined;
}

/** "sha256:HEX" from "sha256:HEX" or "HEX"; anything else is an error. */
export function normalizeDigest(digest: string): string {
  const d = digest.startsWith("sha256:") ? digest : `sha256:${digest}`;
  if (!/^sha256:[0-9a-f]{64}$/.test(d)) throw new MincError(`not a sha256 digest: ${JSON.stringify(digest)}`);
  return d;
}
