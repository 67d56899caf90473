// Pax extended header records as their bytes.
//
// tar-stream decodes pax records as UTF-8 text, which loses every value that
// is not UTF-8: a binary xattr (security.capability: cap_setuid+ep, say, as
// newuidmap has it where it is not set-uid), a path that Go's archive/tar
// (Docker, buildkit) wrote as raw bytes. PaxReader stands in front of
// tar-stream and reads the same stream's 512-byte headers itself: the chunks
// pass through untouched, only header blocks and the (small) data of pax
// headers are looked at; file data is only counted past. For each entry it
// queues the entry's pax records as bytes, in order, and walkTar pairs them
// with tar-stream's entry at the same offset, which any disagreement between
// the two readers breaks: an error, never records given to the wrong entry.
//
// It follows tar-stream's own reading where the two must agree (which blocks
// are headers, how much data each entry has). Where tar-stream refuses a
// header, it says what is wrong: the reader stops at a pax header it would
// refuse, and reads on past an entry's (tar-stream stops there). A pax record
// that is malformed (a wrong length) is an error here: tar-stream would take
// a wrong name or value from it.
import { MincError } from "../core/fail.ts";

/**
 * An entry's pax records: keys one character per byte ("latin1" strings, as
 * lib/store/layer.ts keeps names; the keys looked up are ASCII), values as bytes.
 * An empty value means "no value": the ustar header's field stands.
 */
export type PaxRecords = ReadonlyMap<string, Buffer>;

const NO_RECORDS: PaxRecords = new Map();
const BLOCK = 512;
/** tar-stream refuses pax and GNU long-name headers larger than this. */
const MAX_META = 4 * 1024 * 1024;
/** The checksum field's own part of the checksum: its 8 bytes counted as spaces. */
const EMPTY_SUM = 8 * 0x20;

const TYPE_PAX = 0x78; // 'x': records for the next entry
const TYPE_GLOBAL = 0x67; // 'g': records for all the entries that follow
const TYPE_FILE = 0x30; // '0' (or NUL)
const TYPE_DIR = 0x35; // '5'
/** GNU long names ('L', 'K', and tar-stream's 'N'): tar-stream reads them, they are not entries. */
const GNU_LONG = new Set([0x4c, 0x4b, 0x4e]);

interface Queued {
  /** Where the entry's data starts in the stream: tar-stream's header.byteOffset. */
  offset: number;
  records: PaxRecords;
}

/** A pax header whose data is being collected. */
interface Meta {
  global: boolean;
  /** Where its header block starts, for messages. */
  at: number;
  size: number;
  pieces: Buffer[];
  have: number;
}

export class PaxReader {
  /** Bytes of the stream read so far. */
  private offset = 0;
  /** Bytes still to pass of an entry's data and padding. */
  private skip = 0;
  /** A header block split across chunks, and how much of it has come. */
  private readonly block = Buffer.alloc(BLOCK);
  private blockHave = 0;
  private meta: Meta | undefined;
  /** The global records so far; replaced, never changed, as entries share it. */
  private global: PaxRecords = NO_RECORDS;
  /** The size record of the last global header (tar-stream keeps the last 'g' only). */
  private globalSize: Buffer | undefined;
  /** The records of the last 'x' header, for the next entry. */
  private next: PaxRecords | undefined;
  /** The data size it gives the next entry, as tar-stream takes it (see entry()). */
  private nextSize: Buffer | undefined;
  private readonly queue: (Queued | undefined)[] = [];
  private head = 0;
  /** Where a header that tar-stream refuses was found: the reader stopped there. */
  private lostAt: number | undefined;

  /** The chunks, each passed on as it is once its headers have been read. */
  async *watch(chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const chunk of chunks) {
      this.read(chunk);
      yield chunk;
    }
  }

  /** The pax records of tar-stream's next entry, whose data starts at offset (its header.byteOffset). */
  take(offset: number): PaxRecords {
    const q = this.queue[this.head];
    if (q === undefined || q.offset !== offset) {
      const why =
        this.lostAt !== undefined
          ? `an unreadable header at byte ${this.lostAt}`
          : q === undefined
            ? "no header seen"
            : `a header at byte ${q.offset - BLOCK}`;
      throw new MincError(
        `not a valid tar archive: the entry at byte ${offset - BLOCK} is out of step with its headers (${why})`,
      );
    }
    this.queue[this.head++] = undefined;
    if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return q.records;
  }

  private read(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && this.lostAt === undefined) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - at);
        this.skip -= n;
        at += n;
      } else if (this.meta !== undefined) {
        at += this.collect(this.meta, chunk, at);
      } else if (this.blockHave === 0 && chunk.length - at >= BLOCK) {
        this.header(chunk, at, this.offset + at);
        at += BLOCK;
      } else {
        // A header split across chunks: its pieces are gathered (512 bytes at most).
        const n = chunk.copy(this.block, this.blockHave, at, Math.min(chunk.length, at + BLOCK - this.blockHave));
        this.blockHave += n;
        at += n;
        if (this.blockHave === BLOCK) {
          this.blockHave = 0;
          this.header(this.block, 0, this.offset + at - BLOCK);
        }
      }
    }
    this.offset += chunk.length;
  }

  /**
   * One header block, at b of buf (not a subarray: it costs more than the
   * rest of the reading of a small entry), at offset `at` of the stream.
   */
  private header(buf: Buffer, b: number, at: number): void {
    if (isEmpty(buf, b)) return; // the end of the archive, and its padding: tar-stream reads on too
    if (!knownFormat(buf, b)) {
      this.lostAt = at;
      return;
    }
    const type = buf[b + 156];
    const size = numberField(buf, b + 124, 12);
    if (type !== TYPE_PAX && type !== TYPE_GLOBAL && !GNU_LONG.has(type)) {
      // (Its checksum is not summed here, a third of the reading of a small
      // entry: tar-stream checks it, and stops at a bad one, emitting nothing more.)
      this.entry(buf, b, at, size);
    } else if (checksum(buf, b) !== numberField(buf, b + 148, 8) || !(size >= 0 && size <= MAX_META)) {
      this.lostAt = at; // (no pax records taken from a header tar-stream refuses)
    } else if (GNU_LONG.has(type)) {
      this.skip = padded(size);
    } else {
      this.meta = { global: type === TYPE_GLOBAL, at, size, pieces: [], have: 0 };
      if (size === 0) this.metaDone(this.meta);
    }
  }

  /** A real entry: its records are queued, its data passed. */
  private entry(buf: Buffer, b: number, at: number, headerSize: number): void {
    const next = this.next;
    const paxSize = this.nextSize;
    this.next = this.nextSize = undefined;
    let records = this.global;
    if (next !== undefined) {
      const merged = new Map(this.global);
      for (const [k, v] of next) merged.set(k, v);
      records = merged;
    }
    this.queue.push({ offset: at + BLOCK, records });
    // The data's size as tar-stream takes it: the ustar field, unless a pax
    // size record says otherwise. A directory has no data for tar-stream.
    const size = paxSize?.length ? parseInt(paxSize.toString("utf8"), 10) : headerSize;
    if (!(size >= 0)) {
      this.lostAt = at;
      return;
    }
    this.skip = isDirectory(buf, b) ? 0 : padded(size);
  }

  /** Gather a pax header's data from chunk at `at`; how much of the chunk it took. */
  private collect(meta: Meta, chunk: Buffer, at: number): number {
    const n = Math.min(meta.size - meta.have, chunk.length - at);
    meta.pieces.push(chunk.subarray(at, at + n));
    meta.have += n;
    if (meta.have === meta.size) this.metaDone(meta);
    return n;
  }

  private metaDone(meta: Meta): void {
    this.meta = undefined;
    this.skip = padded(meta.size) - meta.size;
    if (meta.size === 0) return; // tar-stream ignores an empty pax header
    // (concat copies: no record keeps a whole chunk of the stream alive)
    const records = parsePaxRecords(Buffer.concat(meta.pieces, meta.size), meta.at);
    if (!meta.global) {
      this.next = records;
      // tar-stream merges the global records of the time into the 'x' ones,
      // and takes the size from those; a global size counts only there.
      this.nextSize = records.get("size") ?? this.globalSize;
      return;
    }
    // Global records add up, an empty value removes one (POSIX).
    const global = new Map(this.global);
    for (const [k, v] of records) {
      if (v.length) global.set(k, v);
      else global.delete(k);
    }
    this.global = global;
    this.globalSize = records.get("size");
  }
}

/**
 * The records of a pax header's data: "LEN KEY=VALUE\n" each, LEN the
 * record's whole length in bytes, in decimal. A record that does not fit
 * that is an error: reading on would take data for records.
 */
export function parsePaxRecords(data: Buffer, headerAt = 0): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  const bad = (at: number, why: string): MincError =>
    new MincError(
      `not a valid tar archive: bad pax record in the header at byte ${headerAt} (record at byte ${at} of its data): ${why}`,
    );
  for (let at = 0; at < data.length; ) {
    const space = data.indexOf(0x20, at);
    const digits = space < 0 ? "" : data.toString("latin1", at, space);
    if (!/^[0-9]{1,9}$/.test(digits)) throw bad(at, "no length");
    const len = Number(digits);
    const end = at + len;
    if (end > data.length)
      throw bad(at, `its length ${len} runs past the end of the header's data (${data.length - at} bytes left)`);
    if (end <= space + 1 || data[end - 1] !== 0x0a) throw bad(at, `its length ${len} does not end it at a newline`);
    const eq = data.indexOf(0x3d, space + 1);
    if (eq <= space + 1 || eq >= end) throw bad(at, "no KEY=");
    records.set(data.toString("latin1", space + 1, eq), data.subarray(eq + 1, end - 1));
    at = end;
  }
  return records;
}

/** A block of zeros but for its checksum field: tar-stream's "no header" (its checksum would be EMPTY_SUM). */
function isEmpty(buf: Buffer, b: number): boolean {
  for (let i = b; i < b + 148; i++) if (buf[i] !== 0) return false;
  for (let i = b + 156; i < b + BLOCK; i++) if (buf[i] !== 0) return false;
  return true;
}

/** The header's checksum as tar computes it: the checksum field counted as spaces. */
function checksum(buf: Buffer, b: number): number {
  let sum = EMPTY_SUM;
  for (let i = b; i < b + 148; i++) sum += buf[i];
  for (let i = b + 156; i < b + BLOCK; i++) sum += buf[i];
  return sum;
}

/**
 * A numeric field at buf[at, at + len): octal text, or GNU's base-256
 * (first byte 0x80, or 0xff for a negative); NaN if neither. Octal as
 * tar-stream reads it: after spaces and NULs, up to a space, what parseInt
 * would take.
 */
function numberField(buf: Buffer, at: number, len: number): number {
  if (buf[at] & 0x80) return base256(buf, at, len);
  const end = at + len;
  let i = at;
  while (i < end && buf[i] === 0x20) i++;
  let stop = i;
  while (stop < end && buf[stop] !== 0x20) stop++;
  while (i < stop && buf[i] === 0) i++;
  if (i === stop) return 0;
  while (i < stop && buf[i] >= 0x09 && buf[i] <= 0x0d) i++; // (white space, which parseInt skips)
  const sign = buf[i] === 0x2d ? -1 : 1;
  if (buf[i] === 0x2b || buf[i] === 0x2d) i++;
  let n = NaN;
  for (; i < stop && buf[i] >= 0x30 && buf[i] <= 0x37; i++) n = (n || 0) * 8 + buf[i] - 0x30;
  return sign * n;
}

function base256(buf: Buffer, at: number, len: number): number {
  if (buf[at] !== 0x80 && buf[at] !== 0xff) return NaN;
  const negative = buf[at] === 0xff;
  let n = 0;
  for (let i = at + 1; i < at + len; i++) n = n * 256 + (negative ? 0xff - buf[i] : buf[i]);
  return negative ? -n : n;
}

/** "ustar\0" at 257 (POSIX) or "ustar  \0" (GNU): the formats tar-stream reads. */
function knownFormat(buf: Buffer, b: number): boolean {
  const m = b + 257;
  if (buf[m] !== 0x75 || buf[m + 1] !== 0x73 || buf[m + 2] !== 0x74 || buf[m + 3] !== 0x61 || buf[m + 4] !== 0x72)
    return false;
  return buf[m + 5] === 0 || (buf[m + 5] === 0x20 && buf[m + 6] === 0x20 && buf[m + 7] === 0);
}

/** A directory for tar-stream: type '5', or a plain file whose name ends with "/" (old tars). */
function isDirectory(buf: Buffer, b: number): boolean {
  const type = buf[b + 156];
  if (type === TYPE_DIR) return true;
  if (type !== TYPE_FILE && type !== 0) return false;
  let nameEnd = b;
  while (nameEnd < b + 100 && buf[nameEnd] !== 0) nameEnd++;
  if (nameEnd > b) return buf[nameEnd - 1] === 0x2f;
  // An empty name with a ustar prefix: tar-stream reads it "PREFIX/".
  return buf[b + 262] === 0 && knownFormat(buf, b) && buf[b + 345] !== 0;
}

/** Size rounded up to whole blocks. */
function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}
