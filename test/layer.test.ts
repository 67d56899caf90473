// Unpacking image layers (lib/layer.ts): what is kept, whiteouts in
// overlayfs form, compression, digests, and the archives that are refused.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync } from "node:fs";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { entryParts, sniff, unpackLayer } from "../lib/layer.ts";
import { makeTar, T0, type E } from "./tar.ts";

const skip = process.getuid?.() !== 0 ? "needs root (owners, device nodes, trusted.* xattrs)" : undefined;
if (skip) console.log(`# layer tests skipped: ${skip}`);

const sha = (b: Buffer): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

function getfattr(path: string | Buffer, name: string): string | undefined {
  // (a path that is not UTF-8 goes through the shell's printf, as an argument from here could not carry it)
  const arg = typeof path === "string" ? path : `$(printf '${[...path].map((b) => `\\${b.toString(8).padStart(3, "0")}`).join("")}')`;
  const r = spawnSync("sh", ["-c", `getfattr -h --only-values -n "$1" "${arg}"`, "sh", name], { encoding: "utf8" });
  return r.status === 0 ? r.stdout : undefined;
}

const latin1 = (s: string): Buffer => Buffer.from(s, "latin1");
/** The names in dir, as bytes (latin1 strings: one character per byte), sorted. */
const byteNames = (dir: string | Buffer): string[] => readdirSync(dir, { encoding: "buffer" }).map((b) => b.toString("latin1")).sort();

describe("unpacking a layer", { skip }, () => {
  let tmp = "";
  let n = 0;
  const fresh = (): string => {
    const d = `${tmp}/dest${n++}`;
    mkdirSync(d);
    return d;
  };
  before(() => { tmp = mkdtempSync("/tmp/minc-test-layer-"); });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test("keeps files, directories, owners, modes, mtimes, links, devices, fifos and user xattrs", async () => {
    const layer = await makeTar([
      { name: "etc/", type: "directory", mode: 0o750, uid: 12, gid: 34, mtime: new Date(1_500_000_000_000) },
      { name: "etc/conf", data: "hello\n", mode: 0o640, uid: 1000, gid: 1001, pax: { "SCHILY.xattr.user.note": "kept" } },
      { name: "bin/suid", data: "x", mode: 0o4755 },
      { name: "link", type: "symlink", linkname: "/etc/conf", uid: 5, gid: 6 },
      { name: "hard", type: "link", linkname: "etc/conf" },
      { name: "dev/null", type: "character-device", devmajor: 1, devminor: 3, mode: 0o666 },
      { name: "pipe", type: "fifo", mode: 0o600 },
      { name: "deep/er/file", data: "implicit parents" },
    ]);
    const dest = fresh();
    const r = await unpackLayer(Readable.from([layer]), dest);
    assert.equal(r.diffId, sha(layer));
    assert.equal(r.digest, sha(layer));
    assert.equal(r.compression, "none");
    const conf = lstatSync(`${dest}/etc/conf`);
    assert.equal(readFileSync(`${dest}/etc/conf`, "utf8"), "hello\n");
    assert.equal(conf.mode & 0o7777, 0o640);
    assert.equal(conf.uid, 1000);
    assert.equal(conf.gid, 1001);
    assert.equal(conf.mtimeMs, T0.getTime());
    const etc = lstatSync(`${dest}/etc`);
    assert.equal(etc.mode & 0o7777, 0o750);
    assert.equal(etc.uid, 12);
    assert.equal(etc.mtimeMs, 1_500_000_000_000, "a directory's mtime is set after its files");
    assert.equal(lstatSync(`${dest}/bin/suid`).mode & 0o7777, 0o4755);
    assert.equal(readlinkSync(`${dest}/link`), "/etc/conf");
    assert.equal(lstatSync(`${dest}/link`).uid, 5);
    assert.equal(lstatSync(`${dest}/hard`).ino, conf.ino);
    const dev = lstatSync(`${dest}/dev/null`);
    assert.ok(dev.isCharacterDevice());
    assert.equal(dev.rdev, (1 << 8) | 3);
    assert.ok(lstatSync(`${dest}/pipe`).isFIFO());
    assert.equal(readFileSync(`${dest}/deep/er/file`, "utf8"), "implicit parents");
    assert.equal(getfattr(`${dest}/etc/conf`, "user.note"), "kept");
  });

  test("whiteouts become overlayfs whiteouts: a 0/0 character device, the opaque xattr", async () => {
    const layer = await makeTar([
      { name: ".wh.gone", data: "" },
      { name: "dir/", type: "directory" },
      { name: "dir/.wh..wh..opq", data: "" },
      { name: "dir/new", data: "new" },
      { name: "sub/.wh.old", data: "" },
      { name: ".wh..wh.plnk", type: "directory" },
      { name: "kept", data: "mine" },
      { name: ".wh.kept", data: "" },
    ]);
    const dest = fresh();
    const r = await unpackLayer(Readable.from([layer]), dest);
    assert.equal(r.whiteouts, 2);
    assert.equal(r.opaques, 1);
    for (const w of ["gone", "sub/old"]) {
      const st = lstatSync(`${dest}/${w}`);
      assert.ok(st.isCharacterDevice() && st.rdev === 0, `${w} is not a whiteout`);
    }
    assert.equal(getfattr(`${dest}/dir`, "trusted.overlay.opaque"), "y");
    assert.deepEqual(readdirSync(`${dest}/dir`), ["new"]);
    assert.equal(existsSync(`${dest}/.wh.gone`), false);
    assert.equal(existsSync(`${dest}/.wh..wh.plnk`), false);
    assert.equal(readFileSync(`${dest}/kept`, "utf8"), "mine", "a whiteout hides the lower layers' file, not this layer's");
  });

  test("overlayfs xattrs from the archive itself are not set", async () => {
    const layer = await makeTar([{ name: "d/", type: "directory", pax: { "SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.trusted.overlay.redirect": "/etc" } }]);
    const dest = fresh();
    await unpackLayer(Readable.from([layer]), dest);
    assert.equal(getfattr(`${dest}/d`, "trusted.overlay.opaque"), undefined);
    assert.equal(getfattr(`${dest}/d`, "trusted.overlay.redirect"), undefined);
  });

  test("gzip and zstd are recognized by their magic; the DiffID is of the plain tar, the digest of the blob", async () => {
    const layer = await makeTar([{ name: "f", data: "x".repeat(100_000) }]);
    for (const [kind, blob] of [["gzip", gzipSync(layer)], ["zstd", zstdCompressSync(layer)]] as const) {
      assert.equal(sniff(blob), kind);
      const dest = fresh();
      const r = await unpackLayer(Readable.from([blob]), dest, { diffId: sha(layer) });
      assert.equal(r.compression, kind);
      assert.equal(r.diffId, sha(layer));
      assert.equal(r.digest, sha(blob));
      assert.equal(r.size, blob.length);
      assert.equal(readFileSync(`${dest}/f`, "utf8").length, 100_000);
    }
  });

  test("a DiffID that does not match is an error", async () => {
    const layer = await makeTar([{ name: "f", data: "x" }]);
    await assert.rejects(unpackLayer(Readable.from([layer]), fresh(), { diffId: sha(Buffer.from("other")) }), /does not match its diff_id/);
  });

  test("corrupt input is an error: truncated gzip, not a tar at all", async () => {
    const layer = await makeTar([{ name: "big", data: Buffer.alloc(300_000, 7) }, { name: "after", data: "y" }]);
    const gz = gzipSync(layer);
    await assert.rejects(unpackLayer(Readable.from([gz.subarray(0, gz.length >> 1)]), fresh()), /decompress|tar/);
    await assert.rejects(unpackLayer(Readable.from([Buffer.alloc(4096, 0x41)]), fresh()), /not a valid tar/);
    await assert.rejects(unpackLayer(Readable.from([layer.subarray(0, 2000)]), fresh()), /not a valid tar/);
  });

  describe("refused archives write nothing outside the layer", () => {
    const cases: [string, (outside: string) => E[], RegExp][] = [
      ["a ../ path", () => [{ name: "ok", data: "" }, { name: "../escape", data: "pwned" }], /"\.\." component/],
      ["a ../ path deeper down", () => [{ name: "a/b/../../../escape", data: "pwned" }], /"\.\." component/],
      ["a ../ path among bytes that are not UTF-8", () => [{ name: latin1("\xe9/../../escape"), data: "pwned" }], /"\.\." component/],
      ["an absolute path", (o) => [{ name: `${o}/escape`, data: "pwned" }], /absolute path/],
      ["a file through a symlink to outside", (o) => [{ name: "evil", type: "symlink", linkname: o }, { name: "evil/escape", data: "pwned" }], /symbolic link evil/],
      ["a file through a relative symlink up", () => [{ name: "up", type: "symlink", linkname: "../.." }, { name: "up/escape", data: "pwned" }], /symbolic link up/],
      ["a directory through a symlink", (o) => [{ name: "evil", type: "symlink", linkname: o }, { name: "evil/escape/", type: "directory" }], /symbolic link evil/],
      ["a whiteout through a symlink", (o) => [{ name: "evil", type: "symlink", linkname: o }, { name: "evil/.wh.escape", data: "" }], /symbolic link evil/],
      ["an opaque marker through a symlink", (o) => [{ name: "evil", type: "symlink", linkname: o }, { name: "evil/.wh..wh..opq", data: "" }], /symbolic link evil/],
      ["a hardlink to outside", () => [{ name: "escape", type: "link", linkname: "../../etc/passwd" }], /points outside the layer/],
      ["a hardlink to an absolute path", () => [{ name: "escape", type: "link", linkname: "/etc/passwd" }], /points outside the layer/],
      ["a hardlink through a symlink", (o) => [{ name: "evil", type: "symlink", linkname: o }, { name: "escape", type: "link", linkname: "evil/target" }], /points through evil/],
      ["a hardlink to nothing of the layer", () => [{ name: "escape", type: "link", linkname: "etc/shadow" }], /not in the layer/],
    ];
    for (const [what, entries, message] of cases) {
      test(what, async () => {
        const base = `${tmp}/case${n++}`;
        const dest = `${base}/layer`;
        const outside = `${base}/outside`;
        mkdirSync(dest, { recursive: true });
        mkdirSync(outside);
        execFileSync("sh", ["-c", `echo secret > ${outside}/target`]);
        const layer = await makeTar(entries(outside));
        await assert.rejects(unpackLayer(Readable.from([layer]), dest), message);
        assert.deepEqual(readdirSync(outside), ["target"], "something was written outside the layer");
        assert.deepEqual(readdirSync(base).sort(), ["layer", "outside"]);
        assert.equal(readFileSync(`${outside}/target`, "utf8"), "secret\n");
      });
    }
  });

  test("names are kept as their bytes: two latin-1 names are two files, a UTF-8 name is kept too", async () => {
    const layer = await makeTar([
      { name: latin1("caf\xe9"), data: "e acute\n" },
      { name: latin1("caf\xe8"), data: "e grave\n" },
      { name: "utf8-pax-\u00e9t\u00e9", data: "pax\n" }, // (tar-stream writes non-ASCII names in a pax header, as UTF-8)
      { name: Buffer.from("utf8-ustar-\u00e9t\u00e9"), data: "ustar\n" },
    ]);
    const dest = fresh();
    const r = await unpackLayer(Readable.from([layer]), dest);
    assert.equal(r.entries, 4);
    assert.deepEqual(byteNames(dest), ["caf\xe8", "caf\xe9", Buffer.from("utf8-pax-\u00e9t\u00e9").toString("latin1"), Buffer.from("utf8-ustar-\u00e9t\u00e9").toString("latin1")].sort());
    assert.equal(readFileSync(Buffer.concat([Buffer.from(`${dest}/`), latin1("caf\xe9")]), "utf8"), "e acute\n");
    assert.equal(readFileSync(Buffer.concat([Buffer.from(`${dest}/`), latin1("caf\xe8")]), "utf8"), "e grave\n");
    assert.equal(readFileSync(`${dest}/utf8-pax-\u00e9t\u00e9`, "utf8"), "pax\n");
    assert.equal(readFileSync(`${dest}/utf8-ustar-\u00e9t\u00e9`, "utf8"), "ustar\n");
  });

  test("names that are not UTF-8 work for directories, links, fifos, whiteouts and opaque directories (an xattr)", async () => {
    const layer = await makeTar([
      { name: latin1("d\xe9/"), type: "directory", mode: 0o750 },
      { name: latin1("d\xe9/f\xe9"), data: "data\n" },
      { name: latin1("d\xe9/hard\xe9"), type: "link", linkname: latin1("d\xe9/f\xe9") },
      { name: latin1("sym\xe9"), type: "symlink", linkname: latin1("d\xe9/f\xe9") },
      { name: latin1("fifo\xe9"), type: "fifo" },
      { name: latin1(".wh.gone\xe9"), data: "" },
      { name: latin1("o\xe9/.wh..wh..opq"), data: "" },
    ]);
    const dest = fresh();
    const r = await unpackLayer(Readable.from([layer]), dest);
    assert.equal(r.whiteouts, 1);
    assert.equal(r.opaques, 1);
    const at = (name: string): Buffer => Buffer.concat([Buffer.from(`${dest}/`), latin1(name)]);
    assert.deepEqual(byteNames(dest), ["d\xe9", "fifo\xe9", "gone\xe9", "o\xe9", "sym\xe9"]);
    assert.deepEqual(byteNames(at("d\xe9")), ["f\xe9", "hard\xe9"]);
    assert.equal(lstatSync(at("d\xe9")).mode & 0o7777, 0o750);
    assert.equal(lstatSync(at("d\xe9/hard\xe9")).ino, lstatSync(at("d\xe9/f\xe9")).ino);
    assert.deepEqual(readlinkSync(at("sym\xe9"), { encoding: "buffer" }), latin1("d\xe9/f\xe9"));
    assert.ok(lstatSync(at("fifo\xe9")).isFIFO());
    const gone = lstatSync(at("gone\xe9"));
    assert.ok(gone.isCharacterDevice() && gone.rdev === 0, "not a whiteout");
    assert.equal(getfattr(at("o\xe9"), "trusted.overlay.opaque"), "y");
    assert.deepEqual(readdirSync(dest).filter((n) => n.startsWith(".minc-")), [], "a temporary name was left");
  });

  test("a pax path that is not UTF-8 is refused: tar-stream cannot give its bytes", async () => {
    const layer = await makeTar([{ name: "pax-caf\u00e9", data: "x" }]);
    // The pax record says path=pax-caf\xc3\xa9: make it path=pax-caf\xe9\xe9, as long, and not UTF-8.
    const at = layer.indexOf(Buffer.from("path=pax-caf\u00e9"));
    assert.ok(at > 0, "no pax path record");
    latin1("\xe9\xe9").copy(layer, at + "path=pax-caf".length);
    await assert.rejects(unpackLayer(Readable.from([layer]), fresh()), /pax path that is not UTF-8/);
  });

  test("a name too long for the file system is said so (ENAMETOOLONG), not taken for a broken archive", async () => {
    const layer = await makeTar([{ name: `dir/${"n".repeat(300)}`, data: "x" }]);
    await assert.rejects(unpackLayer(Readable.from([layer]), fresh()), (e: Error) => {
      assert.match(e.message, /cannot unpack "dir\/n+": name too long \(ENAMETOOLONG\)/);
      assert.doesNotMatch(e.message, /not a valid tar|Premature close/);
      return true;
    });
  });

  test("a full disk is said so (ENOSPC), not taken for a broken archive", async (t) => {
    const small = `${tmp}/small${n++}`;
    mkdirSync(small);
    if (spawnSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", small]).status !== 0) return t.skip("cannot mount a tmpfs");
    try {
      const layer = await makeTar([{ name: "big", data: Buffer.alloc(1 << 20, 7) }, { name: "after", data: "y" }]);
      await assert.rejects(unpackLayer(Readable.from([gzipSync(layer)]), `${small}/layer`), (e: Error) => {
        assert.match(e.message, /cannot unpack "big": no space left on device \(ENOSPC\)/);
        assert.doesNotMatch(e.message, /not a valid tar|Premature close|decompress/);
        return true;
      });
    } finally {
      spawnSync("umount", [small]);
      rmdirSync(small);
    }
  });

  test("entry paths: ./ prefixes are fine, .. and absolute ones are not", () => {
    assert.deepEqual(entryParts("./a/./b/"), ["a", "b"]);
    assert.deepEqual(entryParts("./"), []);
    assert.throws(() => entryParts("a/../b"), /\.\./);
    assert.throws(() => entryParts("/a"), /absolute/);
  });
});
