// Unpacking image layers (lib/store/layer.ts): what is kept, whiteouts in
// overlayfs form, compression, digests, and the archives that are refused.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { entryBytes, entryParts, sniff, unpackLayer, walkTar } from "../lib/store/layer.ts";
import { parsePaxRecords, PaxReader } from "../lib/store/pax.ts";
import { makeTar, paxRecords, T0, type E } from "./tar.ts";

const skip = process.getuid?.() !== 0 ? "needs root (owners, device nodes, trusted.* xattrs)" : undefined;
if (skip) console.log(`# layer tests skipped: ${skip}`);

const sha = (b: Buffer): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

function getfattr(path: string | Buffer, name: string): string | undefined {
  // (a path that is not UTF-8 goes through the shell's printf, as an argument from here could not carry it)
  const arg =
    typeof path === "string"
      ? path
      : `$(printf '${[...path].map((b) => `\\${b.toString(8).padStart(3, "0")}`).join("")}')`;
  const r = spawnSync("sh", ["-c", `getfattr -h --only-values -n "$1" "${arg}"`, "sh", name], { encoding: "utf8" });
  return r.status === 0 ? r.stdout : undefined;
}

/** An xattr's value in hex, as getfattr -e hex gives it ("0x..."). */
function getfattrHex(path: string | Buffer, name: string): string | undefined {
  const arg =
    typeof path === "string"
      ? path
      : `$(printf '${[...path].map((b) => `\\${b.toString(8).padStart(3, "0")}`).join("")}')`;
  const r = spawnSync("sh", ["-c", `getfattr -h -e hex -n "$1" "${arg}"`, "sh", name], { encoding: "utf8" });
  return r.status === 0 ? /=(0x[0-9a-f]*)$/m.exec(r.stdout)?.[1] : undefined;
}

const hasCommand = (name: string): boolean => spawnSync("sh", ["-c", `command -v ${name}`]).status === 0;

/**
 * security.capability xattrs as the kernel stores them, made with `setcap
 * CAPS F; getfattr -n security.capability -e hex F` (vfs_cap_data revision
 * 2, effective, then the permitted bits): cap_net_raw+ep (ping's, 1 << 13),
 * which happens to be valid UTF-8 (its bytes are all below 0x80), and
 * cap_setuid+ep (newuidmap's where it is not set-uid, 1 << 7), which is not:
 * tar-stream's text lost it.
 */
const CAP_NET_RAW = Buffer.from("0100000200200000000000000000000000000000", "hex");
const CAP_SETUID = Buffer.from("0100000280000000000000000000000000000000", "hex");

const latin1 = (s: string): Buffer => Buffer.from(s, "latin1");
/** A pax header ('x') for the next entry, with these records (or these bytes). */
const paxHeader = (records: Record<string, string | Buffer> | Buffer): E => ({
  name: "",
  type: "pax-header",
  data: Buffer.isBuffer(records) ? records : paxRecords(records),
});
/** A global pax header ('g'), for all the entries after it. */
const globalHeader = (records: Record<string, string | Buffer>): E => ({
  name: "",
  type: "pax-global-header",
  data: paxRecords(records),
});
/** The names in dir, as bytes (latin1 strings: one character per byte), sorted. */
const byteNames = (dir: string | Buffer): string[] =>
  readdirSync(dir, { encoding: "buffer" })
    .map((b) => b.toString("latin1"))
    .sort();

describe("unpacking a layer", { skip }, () => {
  let tmp = "";
  let n = 0;
  const fresh = (): string => {
    const d = `${tmp}/dest${n++}`;
    mkdirSync(d);
    return d;
  };
  before(() => {
    tmp = mkdtempSync("/tmp/minc-test-layer-");
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test("keeps files, directories, owners, modes, mtimes, links, devices, fifos and user xattrs", async () => {
    const layer = await makeTar([
      { name: "etc/", type: "directory", mode: 0o750, uid: 12, gid: 34, mtime: new Date(1_500_000_000_000) },
      {
        name: "etc/conf",
        data: "hello\n",
        mode: 0o640,
        uid: 1000,
        gid: 1001,
        pax: { "SCHILY.xattr.user.note": "kept" },
      },
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
    assert.equal(
      readFileSync(`${dest}/kept`, "utf8"),
      "mine",
      "a whiteout hides the lower layers' file, not this layer's",
    );
  });

  test("overlayfs xattrs from the archive itself are not set", async () => {
    const layer = await makeTar([
      {
        name: "d/",
        type: "directory",
        pax: { "SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.trusted.overlay.redirect": "/etc" },
      },
    ]);
    const dest = fresh();
    await unpackLayer(Readable.from([layer]), dest);
    assert.equal(getfattr(`${dest}/d`, "trusted.overlay.opaque"), undefined);
    assert.equal(getfattr(`${dest}/d`, "trusted.overlay.redirect"), undefined);
  });

  test("gzip and zstd are recognized by their magic; the DiffID is of the plain tar, the digest of the blob", async () => {
    const layer = await makeTar([{ name: "f", data: "x".repeat(100_000) }]);
    for (const [kind, blob] of [
      ["gzip", gzipSync(layer)],
      ["zstd", zstdCompressSync(layer)],
    ] as const) {
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
    await assert.rejects(
      unpackLayer(Readable.from([layer]), fresh(), { diffId: sha(Buffer.from("other")) }),
      /does not match its diff_id/,
    );
  });

  test("corrupt input is an error: truncated gzip, not a tar at all", async () => {
    const layer = await makeTar([
      { name: "big", data: Buffer.alloc(300_000, 7) },
      { name: "after", data: "y" },
    ]);
    const gz = gzipSync(layer);
    await assert.rejects(unpackLayer(Readable.from([gz.subarray(0, gz.length >> 1)]), fresh()), /decompress|tar/);
    await assert.rejects(unpackLayer(Readable.from([Buffer.alloc(4096, 0x41)]), fresh()), /not a valid tar/);
    await assert.rejects(unpackLayer(Readable.from([layer.subarray(0, 2000)]), fresh()), /not a valid tar/);
  });

  describe("refused archives write nothing outside the layer", () => {
    const cases: [string, (outside: string) => E[], RegExp][] = [
      [
        "a ../ path",
        () => [
          { name: "ok", data: "" },
          { name: "../escape", data: "pwned" },
        ],
        /"\.\." component/,
      ],
      ["a ../ path deeper down", () => [{ name: "a/b/../../../escape", data: "pwned" }], /"\.\." component/],
      [
        "a ../ path among bytes that are not UTF-8",
        () => [{ name: latin1("\xe9/../../escape"), data: "pwned" }],
        /"\.\." component/,
      ],
      ["an absolute path", (o) => [{ name: `${o}/escape`, data: "pwned" }], /absolute path/],
      [
        "a file through a symlink to outside",
        (o) => [
          { name: "evil", type: "symlink", linkname: o },
          { name: "evil/escape", data: "pwned" },
        ],
        /symbolic link evil/,
      ],
      [
        "a file through a relative symlink up",
        () => [
          { name: "up", type: "symlink", linkname: "../.." },
          { name: "up/escape", data: "pwned" },
        ],
        /symbolic link up/,
      ],
      [
        "a directory through a symlink",
        (o) => [
          { name: "evil", type: "symlink", linkname: o },
          { name: "evil/escape/", type: "directory" },
        ],
        /symbolic link evil/,
      ],
      [
        "a whiteout through a symlink",
        (o) => [
          { name: "evil", type: "symlink", linkname: o },
          { name: "evil/.wh.escape", data: "" },
        ],
        /symbolic link evil/,
      ],
      [
        "an opaque marker through a symlink",
        (o) => [
          { name: "evil", type: "symlink", linkname: o },
          { name: "evil/.wh..wh..opq", data: "" },
        ],
        /symbolic link evil/,
      ],
      [
        "a hardlink to outside",
        () => [{ name: "escape", type: "link", linkname: "../../etc/passwd" }],
        /points outside the layer/,
      ],
      [
        "a hardlink to an absolute path",
        () => [{ name: "escape", type: "link", linkname: "/etc/passwd" }],
        /points outside the layer/,
      ],
      [
        "a hardlink through a symlink",
        (o) => [
          { name: "evil", type: "symlink", linkname: o },
          { name: "escape", type: "link", linkname: "evil/target" },
        ],
        /points through evil/,
      ],
      [
        "a hardlink to nothing of the layer",
        () => [{ name: "escape", type: "link", linkname: "etc/shadow" }],
        /not in the layer/,
      ],
      [
        "a ../ pax path that is not UTF-8",
        () => [paxHeader({ path: latin1("\xe9/../../escape") }), { name: "innocent", data: "pwned" }],
        /"\.\." component/,
      ],
      [
        "an absolute pax path",
        (o) => [paxHeader({ path: latin1(`${o}/escape\xe9`) }), { name: "innocent", data: "pwned" }],
        /absolute path/,
      ],
      [
        "a pax path through a symlink",
        (o) => [
          { name: "evil", type: "symlink", linkname: o },
          paxHeader({ path: latin1("evil/escape\xe9") }),
          { name: "innocent", data: "pwned" },
        ],
        /symbolic link evil/,
      ],
      [
        "a hardlink whose pax linkpath goes up",
        () => [
          paxHeader({ linkpath: latin1("\xe9/../../../etc/passwd") }),
          { name: "escape", type: "link", linkname: "innocent" },
        ],
        /points outside the layer/,
      ],
      [
        "a global pax path that goes up",
        () => [globalHeader({ path: "../escape" }), { name: "innocent", data: "pwned" }],
        /"\.\." component/,
      ],
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
    assert.deepEqual(
      byteNames(dest),
      [
        "caf\xe8",
        "caf\xe9",
        Buffer.from("utf8-pax-\u00e9t\u00e9").toString("latin1"),
        Buffer.from("utf8-ustar-\u00e9t\u00e9").toString("latin1"),
      ].sort(),
    );
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
    assert.deepEqual(
      readdirSync(dest).filter((n) => n.startsWith(".minc-")),
      [],
      "a temporary name was left",
    );
  });

  test("a pax path or linkpath that is not UTF-8 is kept as its bytes (Go's archive/tar writes them)", async () => {
    const layer = await makeTar([
      paxHeader({ path: latin1("pax-caf\xe9") }),
      { name: "ustar-name", data: "latin-1\n" },
      paxHeader({ path: latin1("pax-sym\xe9"), linkpath: latin1("pax-caf\xe9") }),
      { name: "ustar-sym", type: "symlink", linkname: "ustar-target" },
      paxHeader({ path: latin1("pax-hard\xe9"), linkpath: latin1("pax-caf\xe9") }),
      { name: "ustar-hard", type: "link", linkname: "ustar-name" },
    ]);
    const dest = fresh();
    const r = await unpackLayer(Readable.from([layer]), dest);
    assert.equal(r.entries, 3);
    const at = (name: string): Buffer => Buffer.concat([Buffer.from(`${dest}/`), latin1(name)]);
    assert.deepEqual(byteNames(dest), ["pax-caf\xe9", "pax-hard\xe9", "pax-sym\xe9"]);
    assert.equal(readFileSync(at("pax-caf\xe9"), "utf8"), "latin-1\n");
    assert.deepEqual(readlinkSync(at("pax-sym\xe9"), { encoding: "buffer" }), latin1("pax-caf\xe9"));
    assert.equal(lstatSync(at("pax-hard\xe9")).ino, lstatSync(at("pax-caf\xe9")).ino);
  });

  test("binary xattrs of pax headers are kept as their bytes: file capabilities (security.capability)", async (t) => {
    const layer = await makeTar([
      { name: "bin/", type: "directory" },
      paxHeader({ "SCHILY.xattr.security.capability": CAP_NET_RAW, "SCHILY.xattr.user.bin": latin1("\xff\x00\xfe") }),
      { name: "bin/ping", data: "#!/bin/sh\n", mode: 0o755, uid: 1, gid: 2 },
      paxHeader({ "SCHILY.xattr.security.capability": CAP_SETUID }),
      { name: "bin/newuidmap", data: "#!/bin/sh\n", mode: 0o755 },
      // bsdtar's form: the value in base64, the name %-escaped.
      paxHeader({
        "LIBARCHIVE.xattr.security.capability": CAP_SETUID.toString("base64"),
        "LIBARCHIVE.xattr.user.a%3Db%E9": Buffer.from("v").toString("base64"),
      }),
      { name: "bin/newgidmap", data: "#!/bin/sh\n", mode: 0o755 },
    ]);
    const dest = fresh();
    await unpackLayer(Readable.from([layer]), dest);
    if (!hasCommand("getcap")) t.diagnostic("no getcap (libcap2-bin): the capabilities are checked as bytes only");
    for (const [file, cap, shown] of [
      ["bin/ping", CAP_NET_RAW, /cap_net_raw=ep/],
      ["bin/newuidmap", CAP_SETUID, /cap_setuid=ep/],
      ["bin/newgidmap", CAP_SETUID, /cap_setuid=ep/],
    ] as const) {
      assert.equal(getfattrHex(`${dest}/${file}`, "security.capability"), `0x${cap.toString("hex")}`, file);
      if (hasCommand("getcap"))
        assert.match(execFileSync("getcap", [`${dest}/${file}`], { encoding: "utf8" }), shown, file);
    }
    assert.equal(lstatSync(`${dest}/bin/ping`).uid, 1, "the capability is set after the owner (chown drops it)");
    assert.equal(getfattrHex(`${dest}/bin/ping`, "user.bin"), "0xff00fe");
    const dump = execFileSync("getfattr", ["--absolute-names", "-d", "-m", "^user\\.", `${dest}/bin/newgidmap`], {
      encoding: "latin1",
    });
    assert.match(dump, /^user\.a\\075b\xe9="v"$/m, "the %-escaped name is its bytes (getfattr escapes the =)");
  });

  test("file capabilities written by GNU tar (--xattrs, posix format) are kept", async (t) => {
    if (!hasCommand("setcap")) return t.skip("no setcap (libcap2-bin)");
    const src = `${tmp}/gnutar${n++}`;
    mkdirSync(`${src}/bin`, { recursive: true });
    writeFileSync(`${src}/bin/ping`, "#!/bin/sh\n", { mode: 0o755 });
    writeFileSync(`${src}/bin/newuidmap`, "#!/bin/sh\n", { mode: 0o755 });
    execFileSync("setcap", ["cap_net_raw+ep", `${src}/bin/ping`]);
    execFileSync("setcap", ["cap_setuid+ep", `${src}/bin/newuidmap`]);
    const layer = execFileSync(
      "tar",
      ["--format=posix", "--xattrs", "--xattrs-include=*", "-C", src, "-cf", "-", "bin"],
      { maxBuffer: 1 << 20 },
    );
    assert.ok(layer.includes("SCHILY.xattr.security.capability="), "GNU tar wrote no capability record");
    const dest = fresh();
    await unpackLayer(Readable.from([layer]), dest);
    assert.equal(getfattrHex(`${dest}/bin/ping`, "security.capability"), `0x${CAP_NET_RAW.toString("hex")}`);
    assert.equal(getfattrHex(`${dest}/bin/newuidmap`, "security.capability"), `0x${CAP_SETUID.toString("hex")}`);
    assert.equal(
      lstatSync(`${dest}/bin/ping`).mtimeMs,
      Math.floor(lstatSync(`${src}/bin/ping`).mtimeMs),
      "a pax mtime with a fraction (to the millisecond)",
    );
  });

  test("a global pax header ('g') applies to all the entries after it; an entry's own records win", async () => {
    const layer = await makeTar([
      { name: "before", data: "0" },
      globalHeader({ "SCHILY.xattr.user.global": "everyone", uid: "4242", mtime: "1234567890.5" }),
      { name: "a", data: "1", uid: 7 },
      { name: "b", data: "2", pax: { "SCHILY.xattr.user.global": "b's own", uid: "77" } },
      globalHeader({ "SCHILY.xattr.user.global": "" }), // (an empty value removes a global record)
      { name: "c", data: "3" },
    ]);
    const dest = fresh();
    const r = await unpackLayer(Readable.from([layer]), dest);
    assert.equal(r.entries, 4);
    assert.equal(getfattr(`${dest}/before`, "user.global"), undefined);
    assert.equal(getfattr(`${dest}/a`, "user.global"), "everyone");
    assert.equal(getfattr(`${dest}/b`, "user.global"), "b's own");
    assert.equal(getfattr(`${dest}/c`, "user.global"), undefined);
    assert.deepEqual(
      ["before", "a", "b", "c"].map((f) => lstatSync(`${dest}/${f}`).uid),
      [0, 4242, 77, 4242],
    );
    assert.equal(lstatSync(`${dest}/a`).mtimeMs, 1_234_567_890_500);
    assert.equal(lstatSync(`${dest}/before`).mtimeMs, T0.getTime());
    assert.deepEqual(
      ["before", "a", "b", "c"].map((f) => readFileSync(`${dest}/${f}`, "utf8")),
      ["0", "1", "2", "3"],
    );
  });

  test("a malformed pax record (a wrong length) is an error, not a wrong name", async () => {
    for (const [records, why] of [
      ["99 path=x\n", /length 99 runs past the end/],
      ["11 path=abc\n", /length 11 does not end it at a newline/],
      ["13 path=abc\n", /length 13 (runs past|does not end)/],
      ["path=abc\n", /no length/],
      ["8 pathx\n", /no KEY=/],
      ["12 path=abc\n0 x\n", /does not end it at a newline|no length/],
    ] as const) {
      const dest = fresh();
      const layer = await makeTar([
        { name: "first", data: "1" },
        paxHeader(Buffer.from(records)),
        { name: "f", data: "x" },
      ]);
      await assert.rejects(unpackLayer(Readable.from([layer]), dest), (e: Error) => {
        assert.match(e.message, /^not a valid tar archive: bad pax record in the header at byte 1024/, records);
        assert.match(e.message, why, records);
        return true;
      });
      assert.deepEqual(
        readdirSync(dest).filter((f) => f !== "first"),
        [],
        records,
      );
    }
    const badUid = await makeTar([paxHeader({ uid: "0x10" }), { name: "f", data: "x" }]);
    await assert.rejects(unpackLayer(Readable.from([badUid]), fresh()), /entry "f" has a bad pax uid \("0x10"\)/);
  });

  test("a big layer streams: its data is on disk before the input ends; headers split across chunks", async () => {
    const MiB = 1 << 20;
    const size = 64 * MiB;
    // The headers of one big file (a pax header before it), its size patched in: the data comes after.
    const head = await makeTar([
      paxHeader({ "SCHILY.xattr.user.big": "yes", path: latin1("big\xe9") }),
      { name: "big", data: "" },
    ]);
    const big = 1024; // its ustar header, after the pax header and its records
    assert.equal(head.toString("latin1", big, big + 4), "big\0");
    head.write(`${size.toString(8).padStart(11, "0")}\0`, big + 124, "latin1");
    head.fill(0x20, big + 148, big + 156);
    head.write(
      `${head
        .subarray(big, big + 512)
        .reduce((a, b) => a + b, 0)
        .toString(8)
        .padStart(6, "0")}\0 `,
      big + 148,
      "latin1",
    );
    const dest = fresh();
    const file = Buffer.concat([Buffer.from(`${dest}/`), latin1("big\xe9")]);
    let onDisk = -1;
    async function* input(): AsyncGenerator<Buffer> {
      for (let at = 0; at < big + 512; at += 100) yield head.subarray(at, Math.min(at + 100, big + 512));
      const chunk = Buffer.alloc(MiB, 7);
      for (let i = 0; i < size / MiB; i++) {
        if (i === size / MiB - 1) onDisk = statSync(file).size;
        yield chunk;
      }
      yield Buffer.alloc(1024);
    }
    await unpackLayer(input(), dest);
    assert.equal(statSync(file).size, size);
    assert.ok(onDisk >= size / 2, `only ${onDisk} bytes were on disk before the last chunk came`);
    assert.equal(getfattr(file, "user.big"), "yes");
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
    if (spawnSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", small]).status !== 0)
      return t.skip("cannot mount a tmpfs");
    try {
      const layer = await makeTar([
        { name: "big", data: Buffer.alloc(1 << 20, 7) },
        { name: "after", data: "y" },
      ]);
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

describe("pax records as bytes (lib/store/pax.ts)", () => {
  test("records: LEN KEY=VALUE, values as bytes (newlines, '=' and bytes that are not UTF-8 in them)", () => {
    const r = parsePaxRecords(
      paxRecords({ path: latin1("caf\xe9"), "SCHILY.xattr.user.x": latin1("a=b\nc\xff\x00"), empty: "" }),
    );
    assert.deepEqual([...r.keys()], ["path", "SCHILY.xattr.user.x", "empty"]);
    assert.deepEqual(r.get("path"), latin1("caf\xe9"));
    assert.deepEqual(r.get("SCHILY.xattr.user.x"), latin1("a=b\nc\xff\x00"));
    assert.deepEqual(r.get("empty"), Buffer.alloc(0));
    assert.throws(() => parsePaxRecords(Buffer.from("0 \n")), /bad pax record/);
    assert.throws(() => parsePaxRecords(Buffer.from("5 =x\n")), /no KEY=/);
  });

  test("chunks pass through untouched, and any split of the stream gives each entry the same records", async () => {
    const layer = await makeTar([
      globalHeader({ comment: "global", "SCHILY.xattr.user.g": latin1("\xfe") }),
      { name: "d/", type: "directory" },
      paxHeader({ path: latin1("d/caf\xe9"), "SCHILY.xattr.security.capability": CAP_NET_RAW }),
      { name: "placeholder", data: "x".repeat(1000) },
      { name: `long/${"n".repeat(200)}`, data: "tar-stream's own pax path" },
      { name: "s", type: "symlink", linkname: `${"t".repeat(150)}` },
      { name: "empty", data: "" },
    ]);
    const seen = async (pieces: Buffer[]): Promise<string[]> => {
      const out: string[] = [];
      await walkTar(
        (async function* () {
          yield* pieces;
        })(),
        async (e) => {
          const records = [...e.pax].map(([k, v]) => `${k}=${v.toString("hex")}`).join(",");
          out.push(`${entryBytes(e, "name")} -> ${entryBytes(e, "linkname")} [${records}]`);
        },
      );
      return out;
    };
    const whole = await seen([layer]);
    assert.equal(whole.length, 5);
    assert.equal(
      whole[1],
      `d/caf\xe9 ->  [comment=${Buffer.from("global").toString("hex")},SCHILY.xattr.user.g=fe,path=${latin1("d/caf\xe9").toString("hex")},SCHILY.xattr.security.capability=${CAP_NET_RAW.toString("hex")}]`,
    );
    for (const step of [1, 7, 100, 511, 513, 1500]) {
      const pieces: Buffer[] = [];
      for (let at = 0; at < layer.length; at += step) pieces.push(layer.subarray(at, at + step));
      assert.deepEqual(await seen(pieces), whole, `in pieces of ${step} bytes`);
    }
    const reader = new PaxReader();
    const chunks = [layer.subarray(0, 700), layer.subarray(700)];
    const out: Buffer[] = [];
    for await (const c of reader.watch(
      (async function* () {
        yield* chunks;
      })(),
    ))
      out.push(c);
    assert.ok(
      out.length === 2 && out[0] === chunks[0] && out[1] === chunks[1],
      "the chunks were not passed on as they came",
    );
  });

  test("GNU tar's long names ('L', 'K') are not entries; sizes in base-256 are read", async () => {
    const src = mkdtempSync("/tmp/minc-test-pax-");
    try {
      const long = "n".repeat(150);
      writeFileSync(`${src}/${long}`, "long");
      execFileSync("ln", ["-s", "t".repeat(150), `${src}/sym`]);
      const gnu = execFileSync("tar", ["--format=gnu", "-C", src, "-cf", "-", long, "sym"]);
      const names: string[] = [];
      await walkTar(Readable.from([gnu]), async (e) => {
        names.push(`${entryBytes(e, "name")} -> ${entryBytes(e, "linkname")} ${e.pax.size}`);
      });
      assert.deepEqual(names, [`${long} ->  0`, `sym -> ${"t".repeat(150)} 0`]);
    } finally {
      rmSync(src, { recursive: true, force: true });
    }
    // An entry of 8 GiB and more (base-256 size): its data is counted past, the next header found.
    const layer = await makeTar([{ name: "huge", data: "" }, paxHeader({ path: "after" }), { name: "next", data: "" }]);
    const size = 2 ** 33 + 5;
    layer[124] = 0x80;
    layer.fill(0, 125, 136);
    layer.writeUIntBE(size, 130, 6);
    layer.fill(0x20, 148, 156);
    layer.write(
      `${layer
        .subarray(0, 512)
        .reduce((a, b) => a + b, 0)
        .toString(8)
        .padStart(6, "0")}\0 `,
      148,
      "latin1",
    );
    const reader = new PaxReader();
    const data = Buffer.alloc(64 << 20);
    const padded = Math.ceil(size / 512) * 512;
    async function* input(): AsyncGenerator<Buffer> {
      yield layer.subarray(0, 512);
      for (let left = padded; left > 0; left -= data.length) yield data.subarray(0, Math.min(left, data.length));
      yield layer.subarray(512);
    }
    for await (const c of reader.watch(input())) void c;
    assert.equal(reader.take(512).size, 0);
    assert.deepEqual(reader.take(512 + padded + 512 + 512 + 512).get("path"), Buffer.from("after"));
    assert.throws(() => reader.take(12345), /out of step/);
  });
});
