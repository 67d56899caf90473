// Unpacking an image layer (a tar, plain, gzip or zstd) into a directory,
// safely, in the form overlayfs stacks:
//
// - names are kept as the archive's bytes, UTF-8 or not (see BYTES);
// - entries with an absolute path or a ".." component abort the unpack;
//   parents are resolved without following symlinks (a symlink unpacked
//   earlier never leads a later entry out of the layer), hardlinks must point
//   at a file of the layer itself;
// - owners, modes, mtimes, symlinks, hardlinks, devices, fifos and (from
//   pax headers, as their bytes: see lib/store/pax.ts) user.* and
//   security.capability xattrs are kept;
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
import tar, { type Extract, type Header } from "tar-stream";
import { MincError, systemErrorText } from "../core/fail.ts";
import { PaxReader, type PaxRecords } from "./pax.ts";
import { findInPath, run } from "../core/run.ts";
import { quote, shown } from "../core/trace.ts";

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
  if (kind === "xz" || kind === "bzip2")
    throw new MincError(`${kind} compressed layers are not supported (only gzip, zstd or plain tar)`);
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
    throw new MincError(
      why !== undefined ? `cannot read the layer: ${why}` : `cannot decompress (${kind}): ${(e as Error).message}`,
    );
  }
}

/**
 * An entry of a tar being read: its header, its pax records as bytes, and
 * its data to read (or leave). Its name and link target are read with
 * entryBytes() or entryText(): the header's are the ustar (or GNU) fields as
 * bytes (see BYTES), which a pax path or linkpath replaces.
 */
export interface Entry extends AsyncIterable<Buffer> {
  header: Header;
  /** The pax records that apply to it (global ones included), values as bytes: see lib/store/pax.ts. */
  pax: PaxRecords;
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

const PAX_KEY = { name: "path", linkname: "linkpath" } as const;

/** A pax record's value; an empty one is none (the header's field stands, as in GNU tar and Go). */
function paxValue(pax: PaxRecords, key: string): Buffer | undefined {
  const v = pax.get(key);
  return v?.length ? v : undefined;
}

/**
 * An entry's path or link target as its bytes (see BYTES): the pax record's
 * bytes, UTF-8 or not, else the header's field. (tar-stream's header.name
 * holds the pax path decoded as UTF-8, which has lost any other bytes.)
 */
export function entryBytes(e: Pick<Entry, "header" | "pax">, field: "name" | "linkname"): string {
  const pax = paxValue(e.pax, PAX_KEY[field]);
  return pax !== undefined ? pax.toString(BYTES) : (e.header[field] ?? "");
}

/** An entry's path or link target as text, for names that JSON documents give (manifest.json, blobs/sha256/...). */
export function entryText(e: Pick<Entry, "header" | "pax">, field: "name" | "linkname"): string {
  return text(entryBytes(e, field));
}

/** The decimal numbers of pax records: ids, and seconds with a fraction. */
const PAX_NUMBER = { uid: /^[0-9]{1,10}$/, gid: /^[0-9]{1,10}$/, mtime: /^-?[0-9]{1,15}(\.[0-9]*)?$/ } as const;

/** A number the pax records give (the entry's, for messages, is name), if they give it. */
function paxNumber(pax: PaxRecords, key: keyof typeof PAX_NUMBER, name: string): number | undefined {
  const v = paxValue(pax, key)?.toString("latin1");
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!PAX_NUMBER[key].test(v) || (key !== "mtime" && n > 0xffffffff)) {
    throw new MincError(`refused: entry ${JSON.stringify(text(name))} has a bad pax ${key} (${JSON.stringify(v)})`);
  }
  return n;
}

/**
 * Read a tar from a stream of its bytes, calling each() for every entry in
 * order (its data must be read or left; what is left is skipped). The whole
 * stream is read, padding included, so that its digests are complete.
 */
export async function walkTar(chunks: AsyncIterable<Buffer>, each: (entry: Entry) => Promise<void>): Promise<void> {
  // (filenameEncoding is an option of tar-stream's that its own types leave out)
  const extract = tar.extract({ filenameEncoding: BYTES } as Parameters<typeof tar.extract>[0]);
  // The pax records as bytes, read from the same stream on its way in.
  const paxReader = new PaxReader();
  let feedError: unknown;
  const feeding = pipeline(Readable.from(paxReader.watch(chunks)), extract).catch((e: unknown) => {
    feedError = e;
  });
  let handlerError: unknown;
  let iterError: unknown;
  try {
    for await (const stream of extract) {
      try {
        await each(withPax(stream, paxReader));
      } catch (e) {
        handlerError = e;
        break;
      }
      stream.resume();
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

/** An entry as tar-stream gives it. */
type TarStream = Extract extends AsyncIterable<infer S> ? S : never;

/** tar-stream's entry with its pax records, paired by where its data starts (which its types leave out). */
function withPax(stream: TarStream, paxReader: PaxReader): Entry {
  const header = stream.header;
  const pax = paxReader.take((header as Header & { byteOffset: number }).byteOffset);
  return {
    header,
    pax,
    resume: () => stream.resume(),
    [Symbol.asyncIterator]: () => stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>,
  };
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
    out += /[A-Za-z0-9._/+:@,-]/.test(c) ? c : `\\${b.toString(8).padStart(3, "0")}`;
  }
  return out;
}

/**
 * Set extended attributes (name as bytes, hex value) on path itself (-h: a
 * symlink's own). Node cannot set xattrs: setfattr, of Debian's attr
 * package, does, reading a getfattr dump on stdin, as an argument could not
 * carry a path that is not UTF-8.
 */
function setXattrs(path: string, attrs: readonly (readonly [string, string])[]): void {
  if (!findInPath("setfattr"))
    throw new MincError("setfattr is needed to set extended attributes (opaque directories): apt-get install attr");
  const dump = [
    `# file: ${dumpQuoted(fsPath(path))}`,
    ...attrs.map(([name, hex]) => `${dumpQuoted(fsPath(name))}=0x${hex}`),
  ];
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

/**
 * The xattr a pax record gives (its name as bytes, see BYTES; its value in
 * hex), if it gives one: "SCHILY.xattr.NAME=VALUE" (GNU tar, Go, star: the
 * value as its bytes, binary ones such as security.capability included), or
 * "LIBARCHIVE.xattr.NAME=BASE64" (bsdtar: the name %-escaped).
 */
function paxXattr(key: string, value: Buffer): [string, string] | undefined {
  if (key.startsWith("SCHILY.xattr.")) return [key.slice("SCHILY.xattr.".length), value.toString("hex")];
  if (key.startsWith("LIBARCHIVE.xattr.")) {
    return [
      percentDecoded(key.slice("LIBARCHIVE.xattr.".length)),
      Buffer.from(value.toString("latin1"), "base64").toString("hex"),
    ];
  }
  return undefined;
}

/** %XX escapes undone, byte by byte (decodeURIComponent would insist on UTF-8). */
function percentDecoded(bytes: string): string {
  return bytes.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
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
        throw new MincError(
          `refused: entry ${JSON.stringify(text(what))} goes through the symbolic link ${text(parts.slice(0, i).join("/"))}`,
        );
      } else if (isWhiteoutDevice(st)) {
        fs.unlinkSync(fsPath(p));
        fs.mkdirSync(fsPath(p), { mode: 0o755 });
      } else if (!st.isDirectory()) {
        throw new MincError(
          `refused: entry ${JSON.stringify(text(what))}: ${text(parts.slice(0, i).join("/"))} is not a directory`,
        );
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
    const name = entryBytes(entry, "name");
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
    const pax = entry.pax;
    const parts = entryParts(name);
    this.entries++;
    const base = parts[parts.length - 1] ?? "";
    if (base.startsWith(WH)) return this.whiteout(parts, name);
    this.parents(parts, name);
    const path = this.path(parts);
    const uid = paxNumber(pax, "uid", name) ?? h.uid ?? 0;
    const gid = paxNumber(pax, "gid", name) ?? h.gid ?? 0;
    const mode = (h.mode ?? 0o644) & 0o7777;
    const paxMtime = paxNumber(pax, "mtime", name);
    const mtime = paxMtime !== undefined ? new Date(paxMtime * 1000) : (h.mtime ?? new Date(0));
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
        fs.symlinkSync(fsPath(entryBytes(entry, "linkname")), fsPath(path));
        this.owner(path, uid, gid);
        fs.lutimesSync(fsPath(path), mtime, mtime);
        return;
      case "link": {
        const linkname = entryBytes(entry, "linkname");
        const target = this.linkTarget(linkname, name);
        this.checkParents(target, name);
        const st = lstatOrUndefined(this.path(target));
        if (st === undefined)
          throw new MincError(
            `refused: hardlink ${JSON.stringify(text(name))} points at ${JSON.stringify(text(linkname))}, which is not in the layer`,
          );
        if (st.isDirectory())
          throw new MincError(`refused: hardlink ${JSON.stringify(text(name))} points at a directory`);
        if (this.path(target) === path) return;
        this.clear(path, false);
        fs.linkSync(fsPath(this.path(target)), fsPath(path));
        return;
      }
      case "character-device":
      case "block-device":
      case "fifo": {
        this.clear(path, false);
        const kind =
          h.type === "fifo"
            ? ["p"]
            : [h.type === "block-device" ? "b" : "c", String(h.devmajor ?? 0), String(h.devminor ?? 0)];
        this.mknod(path, ["-m", mode.toString(8)], kind);
        break;
      }
      default:
        throw new MincError(
          `refused: entry ${JSON.stringify(text(name))} has an unsupported type (${h.type ?? "unknown"})`,
        );
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
      throw new MincError(
        `refused: hardlink ${JSON.stringify(text(name))} points outside the layer (${JSON.stringify(text(linkname))})`,
      );
    }
  }

  /** Like parents(), for a path that must already be there: nothing is made. */
  private checkParents(parts: readonly string[], what: string): void {
    for (let i = 1; i < parts.length; i++) {
      const p = this.path(parts.slice(0, i));
      if (this.dirs.has(p)) continue;
      const st = lstatOrUndefined(p);
      if (st === undefined)
        throw new MincError(
          `refused: hardlink ${JSON.stringify(text(what))} points at ${text(parts.join("/"))}, which is not in the layer`,
        );
      if (!st.isDirectory()) {
        throw new MincError(
          `refused: hardlink ${JSON.stringify(text(what))} points through ${text(parts.slice(0, i).join("/"))}, not a directory of the layer`,
        );
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
    if (hidden === "" || hidden === "." || hidden === "..")
      throw new MincError(`refused: bad whiteout ${JSON.stringify(text(name))}`);
    const target = [...dirParts, hidden];
    this.parents(target, name);
    // A whiteout hides the lower layers' file; this layer's own stays.
    if (lstatOrUndefined(this.path(target))) return;
    this.mknod(this.path(target), [], ["c", "0", "0"]);
    this.whiteouts++;
  }

  private xattrs(path: string, pax: PaxRecords): void {
    const attrs: [string, string][] = [];
    for (const [key, value] of pax) {
      const xattr = paxXattr(key, value);
      if (xattr !== undefined && XATTR_ALLOWED.test(xattr[0])) attrs.push(xattr);
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
export async function unpackLayer(
  input: Readable | AsyncIterable<Buffer>,
  dest: string,
  opts: UnpackOptions = {},
): Promise<UnpackResult> {
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
export async function digestLayer(
  input: Readable | AsyncIterable<Buffer>,
  compression: Compression | "auto" = "auto",
): Promise<Pick<UnpackResult, "diffId" | "digest" | "size" | "compression">> {
  const d = new StreamDigests();
  for await (const chunk of decompress(input, compression, d)) void chunk;
  return {
    diffId: `sha256:${d.plain.digest("hex")}`,
    digest: `sha256:${d.given!.digest("hex")}`,
    size: d.size,
    compression: d.compression,
  };
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
