// Tar archives for the image tests, made with tar-stream, so that they may
// hold what tar(1) would refuse to make (absolute paths, "..", escapes).
import tar from "tar-stream";

export interface E {
  name: string;
  type?: "file" | "directory" | "symlink" | "link" | "character-device" | "block-device" | "fifo";
  data?: string | Buffer;
  linkname?: string;
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
  const done = new Promise<void>((resolve, reject) => { pack.on("end", resolve); pack.on("error", reject); });
  for (const e of entries) {
    const type = e.type ?? "file";
    const header = {
      name: e.name, type, linkname: e.linkname, mode: e.mode ?? (type === "directory" ? 0o755 : 0o644),
      uid: e.uid ?? 0, gid: e.gid ?? 0, mtime: e.mtime ?? T0, devmajor: e.devmajor, devminor: e.devminor, pax: e.pax,
    };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (type === "file") pack.entry(header, e.data ?? "", cb);
      else pack.entry(header, cb);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}
