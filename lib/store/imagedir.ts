// Is a directory an image (to unpack) or a rootfs (to copy)? Apart from
// lib/store/archive.ts, which readers of tar streams and decompressors come with:
// a directory import needs only this.
import * as fs from "node:fs";

/** A directory holding an image (an OCI layout or an unpacked docker save), not a rootfs. */
export function isImageDir(dir: string): boolean {
  const file = (n: string): boolean => {
    try {
      return fs.statSync(`${dir}/${n}`).isFile();
    } catch {
      return false;
    }
  };
  if (file("oci-layout")) return true;
  const json = (n: string): unknown => {
    try {
      return JSON.parse(fs.readFileSync(`${dir}/${n}`, "utf8"));
    } catch {
      return undefined;
    }
  };
  if (file("manifest.json")) {
    const m = json("manifest.json");
    if (Array.isArray(m) && m.every((x) => typeof x === "object" && x && "Layers" in x)) return true;
  }
  if (file("repositories")) {
    const r = json("repositories");
    if (r && typeof r === "object" && !Array.isArray(r)) return true;
  }
  return false;
}
