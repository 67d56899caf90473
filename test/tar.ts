// Tar archives for the image tests, made with tar-stream, so that they may
// hold what tar(1) would refuse to make (absolute paths, "..", escapes).
import tar from "tar-stream";

export interface E {
  /** A Buffer: these exact bytes in the ustar header (100 at most), UTF-8 or not. */
  name: string | Buffer;
  /**
   * "pax-header" ('x', for the next entry) and "pax-global-header" ('g', for
   * all that follow) are headers of their own, with data as given: records
   * made with paxRecords() (their values bytes, UTF-8 or not), or malformed.
   */
  type?:
    | "file"
    | "directory"
    | "symlink"
    | "link"
    | "character-device"
    | "block-device"
    | "fifo"
    | "pax-header"
    | "pax-global-header";
  data?: string | Buffer;
  linkname?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
}

export const T0 = new Date(1_600_000_000_000);

/** A tar of the entries, made with tar-stream (so it may hold what tar(1) would refuse to make). */
export async function makeTar(entries: E[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on("data", (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    pack.on("end", resolve);
    pack.on("error", reject);
  });
  // tar-stream writes names as UTF-8 (a pax record when not ASCII): raw names go in as placeholders, patched after.
  const raw = new Map<string, Buffer>();
  // tar-stream writes no pax header of given data: one goes in as a file, its name and type patched after.
  const paxTypes = new Map<string, number>();
  const placeholder = (n: string | Buffer | undefined): string | undefined => {
    if (!Buffer.isBuffer(n)) return n;
    const p = `raw-name-${raw.size}`;
    raw.set(p, n);
    return p;
  };
  for (const e of entries) {
    if (Buffer.isBuffer(e.name) && e.pax)
      throw new Error(
        "makeTar: a raw name cannot have pax records (tar-stream would write its placeholder as a pax path)",
      );
    const type = e.type ?? "file";
    let name = placeholder(e.name)!;
    const paxType = { "pax-header": "x", "pax-global-header": "g" }[type as string];
    if (paxType) paxTypes.set((name = `raw-pax-${paxTypes.size}`), paxType.charCodeAt(0));
    const header = {
      name,
      type: paxType ? ("file" as const) : (type as Exclude<typeof type, "pax-header" | "pax-global-header">),
      linkname: placeholder(e.linkname),
      mode: e.mode ?? (type === "directory" ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: e.mtime ?? T0,
      devmajor: e.devmajor,
      devminor: e.devminor,
      pax: e.pax,
    };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (header.type === "file") pack.entry(header, e.data ?? "", cb);
      else pack.entry(header, cb);
    });
  }
  pack.finalize();
  await done;
  return patched(Buffer.concat(chunks), raw, paxTypes);
}

/** Pax records ("LEN KEY=VALUE\n", LEN in bytes, its own digits included) with values as given, bytes or text. */
export function paxRecords(records: Record<string, string | Buffer>): Buffer {
  return Buffer.concat(
    Object.entries(records).map(([key, value]) => {
      const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from("\n")]);
      let len = body.length + 1;
      while (len !== body.length + String(len).length) len = body.length + String(len).length;
      return Buffer.concat([Buffer.from(String(len)), body]);
    }),
  );
}

const BLOCK = 512;

/**
 * Put the raw names in place of their placeholders, in the ustar name and
 * linkname fields, and the pax headers' types in theirs (checksums made again).
 */
function patched(archive: Buffer, raw: Map<string, Buffer>, paxTypes: Map<string, number>): Buffer {
  if (raw.size === 0 && paxTypes.size === 0) return archive;
  const field = (h: Buffer, at: number, len: number): Buffer => {
    const f = h.subarray(at, at + len);
    const end = f.indexOf(0);
    return end < 0 ? f : f.subarray(0, end);
  };
  for (let off = 0; off + BLOCK <= archive.length; ) {
    const h = archive.subarray(off, off + BLOCK);
    if (h.every((b) => b === 0)) break;
    for (const [at, len] of [
      [0, 100],
      [157, 100],
    ]) {
      const bytes = raw.get(field(h, at, len).toString("latin1"));
      if (bytes === undefined) continue;
      if (bytes.length > len) throw new Error("a raw name is longer than its ustar field");
      h.fill(0, at, at + len);
      bytes.copy(h, at);
    }
    h[156] = paxTypes.get(field(h, 0, 100).toString("latin1")) ?? h[156];
    h.fill(0x20, 148, 156);
    const sum = h.reduce((a, b) => a + b, 0);
    h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
    const size = parseInt(field(h, 124, 12).toString("latin1").trim() || "0", 8);
    off += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
  }
  return archive;
}
