// minc-farm: the store of images and containers, its subcommands and
// outputs, lookups by name and id prefix, commit, locking and staging, and
// a store laid out by the shell MINCS.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { after, before, describe, test } from "node:test";
import { alive, chainId, mincsDirFromConfig, storeDir } from "../lib/store/farm.ts";
import { checkName, checkRef, isRef, sameName } from "../lib/store/names.ts";
import { inOverlayOf, REPO, rootfs, waitFor } from "./helpers.ts";

const FARM = `${REPO}/libexec/minc-farm`;
const skip = process.getuid?.() !== 0 ? "needs root (overlay mounts, owners, device nodes)" : undefined;
if (skip) console.log(`# minc-farm tests skipped: ${skip}`);

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

let tmp = "";
let store = "";

function env(extra: NodeJS.ProcessEnv = {}, dir = store): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, MINCS_DIR: dir, ...extra };
  for (const k of ["MINC_DEBUG", "MINC_LONG_ID", "MINC_IMPORT_UUID", "MINC_IMPORT_NAME", "MINC_BASE_UUID", "MINC_ARCH"])
    if (!(k in extra)) delete e[k];
  return e;
}

function farmRun(args: string[], extra: NodeJS.ProcessEnv = {}, dir = store): Result {
  const r = spawnSync(FARM, args, { encoding: "utf8", env: env(extra, dir), timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function farm(args: string[], extra: NodeJS.ProcessEnv = {}, dir = store): string {
  const r = farmRun(args, extra, dir);
  assert.equal(r.status, 0, `minc-farm ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.replace(/\n$/, "");
}

function fails(r: Result, status: number, message: RegExp): void {
  assert.equal(r.status, status, `exit ${r.status}: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
}

function sh(script: string): string {
  const r = spawnSync("sh", ["-c", script], { encoding: "utf8", env: env() });
  assert.equal(r.status, 0, `${script}: ${r.stderr}`);
  return r.stdout;
}

/** Mount the image's layers (imagestack) as an overlay in a private mount namespace and run a script in it. */
function inOverlay(ref: string, script: string, dir = store): string {
  return inOverlayOf(farm(["imagestack", ref], {}, dir), script, tmp);
}

const HEX64 = /^[0-9a-f]{64}$/;

const SYSTEM_STORE = "/var/lib/mincs";

describe("minc-farm", { skip }, () => {
  let busybox = "";
  const systemStore = existsSync(SYSTEM_STORE);
  before(() => {
    tmp = mkdtempSync("/tmp/minc-test-farm-");
    store = `${tmp}/store`;
  });
  after(() => {
    rmSync(tmp, { recursive: true, force: true });
    assert.equal(existsSync(SYSTEM_STORE), systemStore, "a test touched /var/lib/mincs");
  });

  test("import DIR: a layer of the directory, named by MINC_IMPORT_NAME, listed as MINCS lists", () => {
    const r = farmRun(["import", rootfs()], { MINC_IMPORT_NAME: "busybox" });
    assert.equal(r.status, 0, r.stderr);
    busybox = r.stdout.trim();
    assert.match(busybox, HEX64);
    const dir = `${store}/images/${busybox}`;
    assert.deepEqual(readdirSync(dir).sort(), ["name", "root", "storage"]);
    assert.equal(readlinkSync(`${dir}/storage`), "root");
    assert.equal(readFileSync(`${dir}/name`, "utf8"), "busybox\n");
    assert.equal(readlinkSync(`${dir}/root/bin/sh`), "/bin/busybox");
    assert.equal(lstatSync(`${dir}/root/tmp`).mode & 0o7777, 0o1777);
    const list = farm(["li"]).split("\n");
    assert.equal(list[0], "ID\t\tSIZE\tNAME");
    assert.match(list[1], new RegExp(`^${busybox.slice(0, 12)}\\t[0-9.]+[KMG]?\\tbusybox$`));
    const long = farm(["images"], { MINC_LONG_ID: "1" }).split("\n");
    assert.equal(long[0], `ID${"\t".repeat(9)}SIZE\tNAME`);
    assert.match(long[1], new RegExp(`^${busybox}\\t`));
    assert.equal(farm(["idir", "busybox"]), dir);
    assert.equal(farm(["pull", "busybox"]), busybox);
    assert.equal(farm(["imagestack", "busybox"]), `${dir}/root`);
    assert.equal(farm(["config", "busybox"]), "", "a directory has no config");
    assert.deepEqual(readdirSync(`${store}/.staging`), []);
  });

  test("a reader that is gone (minc SIGKILLed, `| head`): no word on stderr, exit 141 as sh's commands by SIGPIPE", () => {
    // minc-farm starts once the reader has closed its end (it says so in a file), not before: its output meets no reader.
    const closed = `${tmp}/reader-closed`;
    const r = spawnSync(
      "sh",
      [
        "-c",
        `(until [ -e "$1" ]; do sleep 0.01; done; ${FARM} li; echo "status $?" >&2) | (exec 0<&-; : >"$1"; sleep 0.3)`,
        "sh",
        closed,
      ],
      { encoding: "utf8", env: env(), timeout: 60_000 },
    );
    assert.equal(r.stderr, "status 141\n");
  });

  test("import of the same content again: the same id, nothing new", () => {
    const r = farmRun(["import", rootfs()]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), busybox);
    assert.match(r.stderr, /is already imported/);
    assert.equal(readdirSync(`${store}/images`).length, 1);
  });

  test("import of a symlink to a tree, with or without a slash: the tree, by its content; names that are not UTF-8 kept as bytes", () => {
    const tree = `${tmp}/odd-tree`;
    mkdirSync(tree);
    const latin1 = (name: string): Buffer => Buffer.from(`${tree}/${name}`, "latin1");
    writeFileSync(latin1("caf\xe9"), "e acute\n");
    writeFileSync(latin1("caf\xe8"), "e grave\n");
    symlinkSync(tree, `${tmp}/odd-link`);
    const id = farm(["import", `${tmp}/odd-link`]);
    assert.match(id, HEX64);
    const names = readdirSync(`${store}/images/${id}/root`, { encoding: "buffer" })
      .map((n) => n.toString("latin1"))
      .sort();
    assert.deepEqual(names, ["caf\xe8", "caf\xe9"], "both names, byte for byte");
    const again = farmRun(["import", `${tmp}/odd-link/`]);
    assert.equal(again.stdout.trim(), id, "the same content through the link, with a slash");
    assert.match(again.stderr, /is already imported/);
    writeFileSync(`${tree}/new`, "");
    const changed = farm(["import", `${tmp}/odd-link/`]);
    assert.notEqual(changed, id, "a change of the tree behind the link is a new image");
    assert.ok(existsSync(`${store}/images/${changed}/root/new`));
    for (const image of [id, changed]) farm(["rmi", image]);
  });

  test("MINC_IMPORT_UUID and MINC_BASE_UUID, as MINCS's marten set them", () => {
    const extra = `${tmp}/extra`;
    mkdirSync(`${extra}/etc`, { recursive: true });
    writeFileSync(`${extra}/etc/motd`, "layered\n");
    const id = "ab".repeat(32);
    assert.equal(
      farm(["import", extra], { MINC_IMPORT_UUID: id, MINC_BASE_UUID: "busybox", MINC_IMPORT_NAME: "layered:1" }),
      id,
    );
    assert.equal(readFileSync(`${store}/images/${id}/baseid`, "utf8"), `${busybox}\n`);
    assert.equal(farm(["imagestack", "layered:1"]), `${store}/images/${id}/root:${store}/images/${busybox}/root`);
    assert.equal(
      inOverlay("layered:1", "cat etc/motd; test -x bin/busybox && echo busybox-too"),
      "layered\nbusybox-too\n",
    );
    // Any id safe as a directory name, as MINCS's marten took any string; what is not is refused, saying why.
    for (const bad of ["../evil", "a/b", ".hidden", "-x", "a:b", "a b", "x".repeat(256)]) {
      fails(
        farmRun(["import", extra], { MINC_IMPORT_UUID: bad }),
        2,
        /MINC_IMPORT_UUID .* cannot be an id: it names a directory of the store/,
      );
    }
    assert.ok(!existsSync(`${store}/evil`) && !existsSync(`${store}/images/a`), "a refused id touched the store");
    assert.equal(farm(["import", extra], { MINC_IMPORT_UUID: "my-rootfs_1.0", MINC_BASE_UUID: id }), "my-rootfs_1.0");
    assert.equal(
      farm(["imagestack", "my-rootfs_1.0"]),
      `${store}/images/my-rootfs_1.0/root:${store}/images/${id}/root:${store}/images/${busybox}/root`,
    );
    assert.match(farm(["li"]), /^my-rootfs_1/m);
    farm(["rmi", "my-rootfs_1.0"]);
    fails(farmRun(["import", extra], { MINC_IMPORT_NAME: "../evil" }), 2, /MINC_IMPORT_NAME "\.\.\/evil" is not valid/);
    fails(farmRun(["import", extra], { MINC_BASE_UUID: "nothing-here" }), 1, /no such image: nothing-here/);
  });

  test("fork, dir, baseid, lc; commit of the container's writes, whiteouts included; a container of the new image sees them", () => {
    const c = farm(["fork", "busybox"]);
    assert.match(c, HEX64);
    const dir = `${store}/containers/${c}`;
    assert.equal(farm(["dir", c.slice(0, 8)]), dir);
    assert.deepEqual(readdirSync(dir).sort(), ["baseid", "root"]);
    assert.equal(farm(["baseid", c]), busybox);
    assert.match(farm(["lc"]), new RegExp(`^ID\\t\\tPID\\tNAME\\n(.*\\n)*${c.slice(0, 12)}\\t\\t<noname>$`, "m"));
    fails(farmRun(["commit", c]), 1, /has no storage yet/);
    // What a run of minc in it leaves: storage/ (the upper layer), utsname.
    mkdirSync(`${dir}/storage/root`, { recursive: true });
    writeFileSync(`${dir}/storage/root/note`, "written in the container\n");
    sh(`mkdir -p ${dir}/storage/etc && mknod ${dir}/storage/etc/group c 0 0`);
    writeFileSync(`${dir}/utsname`, "mybox\n");
    assert.equal(farm(["dir", "mybox"]), dir);
    const img = farm(["commit", "mybox"]);
    assert.match(img, HEX64);
    assert.equal(readFileSync(`${store}/images/${img}/baseid`, "utf8"), `${busybox}\n`);
    assert.equal(
      readFileSync(`${store}/images/${img}/name`, "utf8"),
      "mybox\n",
      "named after the container, as MINCS did",
    );
    assert.equal(farm(["imagestack", img.slice(0, 12)]).split(":").length, 2);
    const seen = inOverlay(
      "mybox",
      "chroot . /bin/sh -c 'cat /root/note; test -e /etc/group || echo group-deleted; cat /etc/passwd | head -n 1'",
    );
    assert.equal(seen, "written in the container\ngroup-deleted\nroot:x:0:0:root:/root:/bin/sh\n");
    // A new container of the committed image: its stack is the committed layer over busybox.
    const c2 = farm(["fork", "mybox"]);
    assert.equal(farm(["baseid", c2]), img);
    assert.equal(farm(["config", c2]), "");
  });

  test("bind and unbind mount a container's root (minc-coat); rm of a mounted container unmounts it", () => {
    const c = farm(["fork", "layered:1"]);
    const dir = `${store}/containers/${c}`;
    const out = sh(
      `unshare -m sh -c '${FARM} bind ${c} && cat ${dir}/root/etc/motd && echo hi > ${dir}/root/new && ${FARM} unbind ${c} && test ! -e ${dir}/root/new && echo unbound && ${FARM} bind ${c} >/dev/null && ${FARM} rm ${c} && echo removed'`,
    );
    assert.equal(out, `${c}\nlayered\nunbound\nremoved\n`);
    assert.equal(existsSync(dir), false);
  });

  test("lookups: exact names, NAME:latest, unique id prefixes; ambiguous and missing ones are errors", () => {
    const dir = `${tmp}/tiny`;
    mkdirSync(dir);
    writeFileSync(`${dir}/x`, "x");
    const a = `cafe${"0".repeat(59)}1`;
    const b = `cafe${"0".repeat(59)}2`;
    farm(["import", dir], { MINC_IMPORT_UUID: a, MINC_IMPORT_NAME: "plain" });
    farm(["import", dir], { MINC_IMPORT_UUID: b, MINC_IMPORT_NAME: "tagged:latest" });
    const amb = farmRun(["idir", "cafe"]);
    fails(amb, 1, /image cafe is ambiguous: it matches/);
    assert.match(amb.stderr, new RegExp(`${a}, ${b}`));
    assert.equal(farm(["pull", a]), a);
    assert.equal(farm(["pull", "plain:latest"]), a);
    assert.equal(farm(["pull", "tagged"]), b);
    fails(farmRun(["pull", "nothing"]), 1, /no such image: nothing/);
    fails(farmRun(["dir", "nothing"]), 1, /no such container: nothing/);
    fails(farmRun(["idir", "../etc"]), 2, /not a valid name or id/);
    fails(farmRun(["idir", "-x"]), 2, /not a valid name or id/);
    fails(farmRun(["idir"]), 2, /IMID missing/);
    fails(farmRun(["bogus"]), 2, /unknown command bogus/);
    fails(farmRun(["renamei", "plain", "a/b"]), 2, /name "a\/b" is not valid/);
    fails(farmRun(["renamei", "plain", "tagged"]), 2, /tagged is already used by image/);
    fails(farmRun(["import", `${tmp}/no-such-dir`]), 2, /no such file or directory/);
    farm(["rmi", a]);
    farm(["rmi", "tagged"]);
    fails(farmRun(["pull", "cafe"]), 1, /no such image: cafe/);
  });

  test("a name never stands for another id: ids and id starts are refused as names; a full id is that image, a name that starts an id is ambiguous", () => {
    const ids = `${tmp}/ids-store`;
    const dirOf = (content: string): string => {
      const d = mkdtempSync(`${tmp}/content-`);
      writeFileSync(`${d}/x`, content);
      return d;
    };
    const a = farm(["import", dirOf("a")], { MINC_IMPORT_NAME: "keepme" }, ids);
    const b = farm(["import", dirOf("b")], {}, ids);
    const c = dirOf("c");
    fails(farmRun(["renamei", "keepme", b], {}, ids), 2, /name "[0-9a-f]{64}" is not valid: 64 hex digits are an id/);
    fails(farmRun(["renamei", "keepme", `${b}:latest`], {}, ids), 2, /64 hex digits are an id/);
    fails(
      farmRun(["renamei", "keepme", b.slice(0, 12)], {}, ids),
      2,
      new RegExp(`is the start of the id of image ${b}`),
    );
    fails(
      farmRun(["renamei", b, `${a.slice(0, 5)}:latest`], {}, ids),
      2,
      new RegExp(`is the start of the id of image ${a}`),
    );
    fails(
      farmRun(["import", c], { MINC_IMPORT_NAME: b.slice(0, 7) }, ids),
      2,
      new RegExp(`is the start of the id of image ${b}`),
    );
    assert.deepEqual(readdirSync(`${ids}/images`).sort(), [a, b].sort(), "a refused name imports nothing");
    farm(["renamei", b, `${a.slice(0, 5)}:v1`], {}, ids); // (not NAME:latest: no reference means it)
    assert.equal(farm(["pull", a.slice(0, 5)], {}, ids), a);

    // Names as a shell MINCS or an older store may hold them.
    writeFileSync(`${ids}/images/${a}/name`, `${b}\n`);
    assert.equal(farm(["pull", b], {}, ids), b, "a full id is that image, whatever names say");
    writeFileSync(`${ids}/images/${a}/name`, `${b.slice(0, 12)}\n`);
    const amb = farmRun(["idir", b.slice(0, 12)], {}, ids);
    fails(
      amb,
      1,
      new RegExp(`image ${b.slice(0, 12)} is ambiguous: it is the name of ${a} and the start of the id of ${b}`),
    );
    farm(["rmi", b], {}, ids);
    assert.deepEqual(readdirSync(`${ids}/images`), [a], "rmi of B's id removed B, not the image named after it");
    assert.equal(farm(["pull", b.slice(0, 12)], {}, ids), a, "with B gone, the name is unambiguous");

    // Containers alike.
    const c1 = farm(["fork", a], {}, ids);
    const c2 = farm(["fork", a], {}, ids);
    fails(farmRun(["rename", c1, c2], {}, ids), 2, /64 hex digits are an id/);
    fails(
      farmRun(["rename", c1, c2.slice(0, 12)], {}, ids),
      2,
      new RegExp(`is the start of the id of container ${c2}`),
    );
    writeFileSync(`${ids}/containers/${c1}/utsname`, `${c2}\n`);
    assert.equal(farm(["dir", c2], {}, ids), `${ids}/containers/${c2}`);
    farm(["rm", c2], {}, ids);
    assert.deepEqual(
      readdirSync(`${ids}/containers`),
      [c1],
      "rm of c2's id removed c2, not the container named after it",
    );

    // A commit is named after the container's hostname, unless that is the start of an image id.
    writeFileSync(`${ids}/containers/${c1}/utsname`, `${a.slice(0, 6)}\n`);
    mkdirSync(`${ids}/containers/${c1}/storage`);
    writeFileSync(`${ids}/containers/${c1}/storage/new`, "new\n");
    const r = farmRun(["commit", c1], {}, ids);
    assert.equal(r.status, 0, r.stderr);
    const img = r.stdout.trim();
    assert.match(
      r.stderr,
      new RegExp(
        `^minc-farm: warning: name "${a.slice(0, 6)}" is the start of the id of image ${a}.*; image ${img.slice(0, 12)} is stored without it\n$`,
      ),
    );
    assert.equal(existsSync(`${ids}/images/${img}/name`), false);
  });

  test("rm refuses a running container, rmi an image something depends on", () => {
    const c = farm(["fork", "busybox"]);
    writeFileSync(`${store}/containers/${c}/pid`, `${process.pid}\n`);
    assert.match(farm(["lc"]), new RegExp(`^${c.slice(0, 12)}\\t${process.pid}\\t<noname>$`, "m"));
    fails(farmRun(["rm", c]), 1, /is running/);
    fails(farmRun(["rmi", "busybox"]), 1, /is used by the containers/);
    const dead = spawnSync("true").pid!;
    writeFileSync(`${store}/containers/${c}/pid`, `${dead}\n`);
    farm(["rm", c]);
    assert.equal(existsSync(`${store}/containers/${c}`), false);
    for (const other of readdirSync(`${store}/containers`)) farm(["rm", other]);
    fails(farmRun(["rmi", "busybox"]), 1, /is the base of the images/);
  });

  test("two imports at once, of the same and of different directories", async () => {
    const dirs = ["c1", "c2"].map((n) => {
      const d = `${tmp}/${n}`;
      cpSync(rootfs(), d, { recursive: true, verbatimSymlinks: true });
      writeFileSync(`${d}/which`, n);
      return d;
    });
    const run = (dir: string): Promise<Result> =>
      new Promise((resolve) => {
        const child = spawn(FARM, ["import", dir], { env: env() });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (c: Buffer) => {
          stdout += c;
        });
        child.stderr.on("data", (c: Buffer) => {
          stderr += c;
        });
        child.on("close", (status) => resolve({ status, stdout, stderr }));
      });
    const before = readdirSync(`${store}/images`).length;
    const rs = await Promise.all([run(dirs[0]), run(dirs[0]), run(dirs[1]), run(dirs[1]), run(dirs[0])]);
    for (const r of rs) assert.equal(r.status, 0, r.stderr);
    const ids = rs.map((r) => r.stdout.trim());
    assert.equal(new Set(ids).size, 2);
    assert.equal(ids[0], ids[1]);
    assert.equal(ids[2], ids[3]);
    assert.equal(readdirSync(`${store}/images`).length, before + 2);
    assert.equal(readFileSync(`${store}/images/${ids[2]}/root/which`, "utf8"), "c2");
    assert.deepEqual(readdirSync(`${store}/.staging`), []);
  });

  test("a staging directory of a process that is gone is removed by the next import", () => {
    const dead = spawnSync("true").pid!;
    const stale = `${store}/.staging/${dead}-import-0123456789ab`;
    mkdirSync(`${stale}/root/deep`, { recursive: true });
    writeFileSync(`${stale}/root/deep/f`, "half an import");
    const mine = `${store}/.staging/${process.pid}-import-0123456789ab`;
    mkdirSync(mine);
    const dir = `${tmp}/stale-test`;
    mkdirSync(dir);
    farm(["import", dir]);
    assert.deepEqual(
      readdirSync(`${store}/.staging`),
      [`${process.pid}-import-0123456789ab`],
      "a live process's staging directory must stay",
    );
    rmSync(mine, { recursive: true });
  });

  test("marten import interrupted by INT, TERM or HUP mid-copy: its cp ends, no staging directory, no image", async () => {
    const big = `${tmp}/big`;
    mkdirSync(big);
    // 128 MB: the copy and the digest take well over 100 ms; the signal comes
    // within a poll (25 ms) of the staging directory's appearance.
    for (let i = 0; i < 16; i++) writeFileSync(`${big}/f${i}`, randomBytes(8 << 20));
    const inStore = (dir: string): string[] =>
      existsSync(`${store}/${dir}`) ? readdirSync(`${store}/${dir}`).sort() : [];
    const images = inStore("images");
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
      const child = spawn(`${REPO}/bin/marten`, ["import", big], { env: env(), stdio: ["ignore", "pipe", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (c: Buffer) => {
        stderr += c;
      });
      const ended = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
        child.on("close", (code, signal) => resolve([code, signal])),
      );
      await waitFor(`${sig}: the import's staging directory`, () => inStore(".staging").length > 0, {
        saw: () => stderr,
      });
      child.kill(sig);
      const [code, signal] = await ended;
      assert.equal(signal, sig, `${sig}: exit ${code}: ${stderr}`);
      assert.match(stderr, new RegExp(`interrupted by ${sig}; nothing kept`));
      assert.deepEqual(inStore(".staging"), [], sig);
      assert.deepEqual(inStore("images"), images, `${sig}: no image went in`);
      const copies = spawnSync("pgrep", ["-f", `cp -a -- ${big}`], { encoding: "utf8" }).stdout;
      assert.equal(copies, "", `${sig}: the copy still runs`);
    }
  });

  test("--debug (MINC_DEBUG=1) shows each step and command", () => {
    const dir = `${tmp}/traced`;
    mkdirSync(dir);
    writeFileSync(`${dir}/t`, "t");
    const r = farmRun(["import", dir], { MINC_DEBUG: "1" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^# Copy .* into the staging directory while its id is computed/m);
    assert.match(r.stderr, /^\+ cp -a -- .*\/traced .*\/\.staging\/\d+-import-[0-9a-f]+\/root &$/m);
    assert.match(r.stderr, /^\+ flock -w 300 3$/m);
    assert.match(r.stderr, /^\+ mv .*\/\.staging\/\S+ .*\/images\/[0-9a-f]{64}$/m);
  });

  test("a store laid out by the shell MINCS is read and run; this one's files are as the shell MINCS writes them", () => {
    const shell = `${tmp}/shell-store`;
    const id1 = "1".repeat(64);
    const id2 = "2".repeat(64);
    const cid = "3".repeat(64);
    // As the shell minc-farm's import, deliver and marten's rename did it.
    mkdirSync(`${shell}/images/${id1}`, { recursive: true });
    cpSync(rootfs(), `${shell}/images/${id1}/root`, { recursive: true, verbatimSymlinks: true });
    symlinkSync("root", `${shell}/images/${id1}/storage`);
    writeFileSync(`${shell}/images/${id1}/name`, "shellimg\n");
    mkdirSync(`${shell}/images/${id2}/root/etc`, { recursive: true });
    writeFileSync(`${shell}/images/${id2}/root/etc/motd`, "from the shell store\n");
    symlinkSync("root", `${shell}/images/${id2}/storage`);
    writeFileSync(`${shell}/images/${id2}/baseid`, `${id1}\n`);
    mkdirSync(`${shell}/containers/${cid}/root`, { recursive: true });
    writeFileSync(`${shell}/containers/${cid}/baseid`, `${id2}\n`);
    writeFileSync(`${shell}/containers/${cid}/utsname`, "shellbox\n");

    const li = farm(["li"], {}, shell);
    assert.match(li, /^111111111111\t\S+\tshellimg$/m);
    assert.match(li, /^222222222222\t\S+\t\(noname\)$/m);
    assert.match(farm(["lc"], {}, shell), /^333333333333\t\tshellbox$/m);
    assert.equal(farm(["imagestack", "2222"], {}, shell), `${shell}/images/${id2}/root:${shell}/images/${id1}/root`);
    assert.equal(farm(["baseid", "shellbox"], {}, shell), id2);
    assert.equal(inOverlay("22", "chroot . /bin/cat /etc/motd", shell), "from the shell store\n");
    fails(farmRun(["rmi", "shellimg"], {}, shell), 1, /is the base of the images/);
    mkdirSync(`${shell}/containers/${cid}/storage`);
    writeFileSync(`${shell}/containers/${cid}/storage/committed`, "yes\n");
    const img = farm(["commit", "shellbox"], {}, shell);
    assert.equal(inOverlay(img, "cat committed etc/motd", shell), "yes\nfrom the shell store\n");

    // What this minc-farm wrote, in the shell MINCS's own form.
    const dir = `${shell}/images/${img}`;
    assert.deepEqual(readdirSync(dir).sort(), ["baseid", "name", "root", "storage"]);
    assert.equal(readlinkSync(`${dir}/storage`), "root");
    assert.equal(readFileSync(`${dir}/baseid`, "utf8"), `${id2}\n`);
    assert.equal(readFileSync(`${dir}/name`, "utf8"), "shellbox\n");
    assert.deepEqual(readdirSync(shell).sort(), [".lock", ".staging", "containers", "images"]);
  });
});

describe("the store's pieces", () => {
  test("MINCS_DIR from the environment, else from /etc/mincs.conf (read, not run), else /var/lib/mincs", () => {
    const dir = mkdtempSync("/tmp/minc-test-conf-");
    try {
      const conf = `${dir}/mincs.conf`;
      writeFileSync(
        conf,
        "# comment\nMINCS_DIR=/srv/first\nexport MINCS_DIR='/srv/mincs' # the store\nOTHER=$(rm -rf /)\n",
      );
      assert.equal(storeDir({}, conf), "/srv/mincs");
      assert.equal(storeDir({ MINCS_DIR: "/from/env/" }, conf), "/from/env");
      assert.equal(storeDir({}, `${dir}/none`), "/var/lib/mincs");
      assert.equal(mincsDirFromConfig('MINCS_DIR="/quoted"'), "/quoted");
      assert.equal(mincsDirFromConfig("MINCS_DIR=$(evil)"), undefined);
      assert.equal(mincsDirFromConfig("MINCS_DIR=`evil`"), undefined);
      assert.throws(() => storeDir({ MINCS_DIR: "relative" }), /absolute/);
      assert.throws(() => storeDir({ MINCS_DIR: "/a:b" }), /cannot hold overlay layers/);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test("ChainIDs as the OCI image spec defines them", () => {
    const d1 = `sha256:${"a".repeat(64)}`;
    const d2 = `sha256:${"b".repeat(64)}`;
    assert.equal(chainId(undefined, d1), "a".repeat(64));
    // printf 'sha256:aaa... sha256:bbb...' | sha256sum
    const expected = spawnSync(
      "sh",
      ["-c", `printf '%s' 'sha256:${"a".repeat(64)} ${d2}' | sha256sum | cut -d' ' -f1`],
      { encoding: "utf8" },
    ).stdout.trim();
    assert.equal(chainId("a".repeat(64), d2), expected);
  });

  test("names: a sane charset, no /, no .., no leading . or -; NAME is NAME:latest", () => {
    for (const good of ["alpine", "alpine:3.20", "my_img-1.0", "app@x", "A+b"]) assert.equal(checkName(good), good);
    for (const bad of ["", "a/b", "..", "a..b", ".hidden", "-opt", "a b", "x\n", "é"])
      assert.throws(() => checkName(bad), /not valid/);
    assert.ok(sameName("alpine", "alpine:latest"));
    assert.ok(!sameName("alpine", "alpine:3"));
  });

  test("names are never ids (64 hex digits before an optional :TAG, as Docker refuses); a shorter hex name is syntax-valid", () => {
    const id = "0123456789abcdef".repeat(4);
    for (const bad of [id, `${id}:latest`, `${id}:v1`]) assert.throws(() => checkName(bad), /64 hex digits are an id/);
    for (const good of [id.slice(0, 63), `${id}x`, "cafe", `x:${id}`]) assert.equal(checkName(good), good);
  });

  test("references: ids, id starts, names, and names with / as the shell MINCS stored them; nothing path-like", () => {
    for (const good of [
      "cafe",
      "a".repeat(64),
      "alpine:3.20",
      "library/bbx",
      "library/bbx:latest",
      "registry:5000/a/b",
      "localhost/x:t",
    ]) {
      assert.ok(isRef(good), good);
      assert.equal(checkRef(good, "image"), good);
    }
    for (const bad of [
      "",
      "/x",
      "/library/bbx",
      "./x",
      "../x",
      "x/..",
      "a/../b",
      "a//b",
      "x/",
      "a/.b",
      "a/-b",
      "a b",
      `a/${"b".repeat(400)}`,
    ]) {
      assert.ok(!isRef(bad), bad);
      assert.throws(() => checkRef(bad, "image"), /no image given|not a valid name or id/);
    }
  });

  test("a process that is gone is not alive; this one is", () => {
    assert.ok(alive(process.pid));
    assert.ok(!alive(spawnSync("true").pid!));
    assert.ok(!alive(0));
  });
});
