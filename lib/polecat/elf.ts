// What the dynamic loader needs to start an ELF program, read from the file
// itself (no objdump, no ldd: the rootfs may be of another distribution and
// ldd would run its loader): the interpreter (PT_INTERP), the libraries
// (DT_NEEDED) and where the object says to look for them (DT_RPATH,
// DT_RUNPATH).
import { closeSync, openSync, readSync, fstatSync } from "node:fs";

export interface ElfInfo {
  /** 32 or 64 bits and the machine: a library must match its user in both. */
  bits: 32 | 64;
  machine: number;
  interpreter?: string;
  needed: string[];
  rpath: string[];
  runpath: string[];
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

/** The machines Debian has a multiarch triplet for (e_machine -> triplet). */
const TRIPLETS: Record<number, string> = {
  3: "i386-linux-gnu",
  40: "arm-linux-gnueabihf",
  62: "x86_64-linux-gnu",
  183: "aarch64-linux-gnu",
  21: "powerpc64le-linux-gnu",
  22: "s390x-linux-gnu",
  243: "riscv64-linux-gnu",
};

export function multiarchTriplet(machine: number): string | undefined {
  return TRIPLETS[machine];
}

/** A reader of one ELF file's bytes in its own word size and byte order. */
class Reader {
  readonly fd: number;
  readonly size: number;
  readonly bits: 32 | 64;
  readonly little: boolean;

  constructor(fd: number, size: number, bits: 32 | 64, little: boolean) {
    this.fd = fd;
    this.size = size;
    this.bits = bits;
    this.little = little;
  }

  bytes(offset: number, length: number): Buffer {
    if (offset < 0 || length < 0 || offset + length > this.size) throw new RangeError("outside the file");
    const buf = Buffer.alloc(length);
    readSync(this.fd, buf, 0, length, offset);
    return buf;
  }

  half(buf: Buffer, at: number): number {
    return this.little ? buf.readUInt16LE(at) : buf.readUInt16BE(at);
  }

  word(buf: Buffer, at: number): number {
    return this.little ? buf.readUInt32LE(at) : buf.readUInt32BE(at);
  }

  /** An address or offset: 4 bytes on ELF32, 8 on ELF64. */
  addr(buf: Buffer, at: number): number {
    if (this.bits === 32) return this.word(buf, at);
    return Number(this.little ? buf.readBigUInt64LE(at) : buf.readBigUInt64BE(at));
  }

  /** A NUL-terminated string at a file offset. */
  string(offset: number): string {
    const chunk = this.bytes(offset, Math.min(4096, this.size - offset));
    const end = chunk.indexOf(0);
    return chunk.subarray(0, end < 0 ? chunk.length : end).toString("utf8");
  }
}

interface Segment {
  type: number;
  offset: number;
  vaddr: number;
  filesz: number;
}

function segmentsOf(r: Reader, header: Buffer): Segment[] {
  const is64 = r.bits === 64;
  const phoff = r.addr(header, is64 ? 0x20 : 0x1c);
  const phentsize = r.half(header, is64 ? 0x36 : 0x2a);
  const phnum = r.half(header, is64 ? 0x38 : 0x2c);
  const table = r.bytes(phoff, phentsize * phnum);
  const segments: Segment[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = i * phentsize;
    segments.push(
      is64
        ? {
            type: r.word(table, at),
            offset: r.addr(table, at + 8),
            vaddr: r.addr(table, at + 16),
            filesz: r.addr(table, at + 32),
          }
        : {
            type: r.word(table, at),
            offset: r.word(table, at + 4),
            vaddr: r.word(table, at + 8),
            filesz: r.word(table, at + 16),
          },
    );
  }
  return segments;
}

/** The dynamic section's string table is given as an address: find it in the file. */
function fileOffsetOf(segments: Segment[], vaddr: number): number {
  const load = segments.find((s) => s.type === PT_LOAD && vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz);
  if (!load) throw new RangeError("address outside the loaded segments");
  return vaddr - load.vaddr + load.offset;
}

function readDynamic(r: Reader, segments: Segment[], info: ElfInfo): void {
  const dynamic = segments.find((s) => s.type === PT_DYNAMIC);
  if (!dynamic) return; // static
  const entry = r.bits === 64 ? 16 : 8;
  const table = r.bytes(dynamic.offset, dynamic.filesz - (dynamic.filesz % entry));
  const entries: [number, number][] = [];
  for (let at = 0; at + entry <= table.length; at += entry) {
    const tag = r.addr(table, at);
    if (tag === DT_NULL) break;
    entries.push([tag, r.addr(table, at + entry / 2)]);
  }
  const strtab = entries.find(([tag]) => tag === DT_STRTAB);
  if (!strtab) return;
  const strings = fileOffsetOf(segments, strtab[1]);
  const text = (value: number): string => r.string(strings + value);
  for (const [tag, value] of entries) {
    if (tag === DT_NEEDED) info.needed.push(text(value));
    else if (tag === DT_RPATH)
      info.rpath.push(
        ...text(value)
          .split(":")
          .filter((d) => d),
      );
    else if (tag === DT_RUNPATH)
      info.runpath.push(
        ...text(value)
          .split(":")
          .filter((d) => d),
      );
  }
}

/** The ELF facts of a file, or undefined if it is not an ELF file (or a broken one). */
export function readElf(path: string): ElfInfo | undefined {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    if (size < 52) return undefined;
    const ident = Buffer.alloc(64);
    readSync(fd, ident, 0, 64, 0);
    if (ident.readUInt32BE(0) !== 0x7f454c46) return undefined; // "\x7fELF"
    const bits = ident[4] === 2 ? 64 : 32;
    const r = new Reader(fd, size, bits, ident[5] !== 2);
    const header = r.bytes(0, bits === 64 ? 64 : 52);
    const info: ElfInfo = { bits, machine: r.half(header, 0x12), needed: [], rpath: [], runpath: [] };
    const segments = segmentsOf(r, header);
    const interp = segments.find((s) => s.type === PT_INTERP);
    if (interp) info.interpreter = r.string(interp.offset);
    readDynamic(r, segments, info);
    return info;
  } catch (e) {
    if (e instanceof RangeError) return undefined;
    throw e;
  } finally {
    closeSync(fd);
  }
}
