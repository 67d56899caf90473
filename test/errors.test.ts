// Bad input: one line on stderr, exit 2, nothing left behind.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { REPO, cannotBoot, leftovers, minc, rootfs } from "./helpers.ts";

const skip = cannotBoot();

/** A --cpu mask with only the bit above the highest online CPU. */
function beyondOnlineCpus(): string {
  const online = readFileSync("/sys/devices/system/cpu/online", "utf8").trim();
  const highest = Math.max(...online.split(/[,-]/).map(Number));
  return (1n << BigInt(highest + 1)).toString(16);
}

describe("bad input", { skip }, () => {
  let empty = "";
  before(() => {
    empty = mkdtempSync("/tmp/minc-test-empty-");
    for (const odd of ['q"uote', "back\\slash", "a,b"]) mkdirSync(`${empty}/${odd}`);
  });
  after(() => {
    rmSync(empty, { recursive: true });
    assert.deepEqual(leftovers(), [], "a failed start left something behind");
  });

  const cases: [string, () => string[], RegExp][] = [
    ["an unknown option", () => ["--bogus", "ls"], /unknown option: --bogus/],
    ["a missing option argument", () => ["-r"], /--rootdir needs an argument/],
    ["an option argument that is another option", () => ["--name", "--debug", "ls"], /not valid|needs an argument/],
    [
      "a rootdir that does not exist",
      () => ["-r", "/no/such/rootfs", "ls"],
      /rootdir \/no\/such\/rootfs: no such directory/,
    ],
    ["a rootdir that is a file", () => ["-r", "/etc/hostname", "ls"], /not a directory/],
    [
      "a rootdir with a quote, which mount reads as quoting",
      () => ["-r", `${empty}/q"uote`, "ls"],
      /cannot be an overlay layer/,
    ],
    [
      "a rootdir with a backslash, which overlayfs reads as an escape",
      () => ["-r", `${empty}/back\\slash`, "ls"],
      /cannot be an overlay layer/,
    ],
    ["a bind source that does not exist", () => ["-r", rootfs(), "-b", "/no/such/file:/x", "ls"], /bind source/],
    [
      "a bind target that is not absolute",
      () => ["-r", rootfs(), "-b", "/etc/hostname:x", "ls"],
      /must be an absolute path/,
    ],
    ["an empty command with no shell in the rootfs", () => ["-r", empty], /no shell/],
    ["a bad --user", () => ["-r", rootfs(), "--user", "../x", "id"], /--user/],
    [
      "a --user name the rootfs does not know",
      () => ["-r", rootfs(), "--user", "nobody-here", "id"],
      /no user nobody-here/,
    ],
    ["a bad --name", () => ["-r", rootfs(), "--name", "a b", "true"], /--name/],
    ["a bad --cpu mask", () => ["-r", rootfs(), "-c", "xyz", "true"], /--cpu/],
    ["--qemu with --um", () => ["--qemu", "--um", "true"], /--qemu and --um: choose one/],
    ["-t with a directory that does not exist", () => ["-t", "/no/such/dir", "true"], /no such directory/],
    [
      "-t with a directory whose path has a comma (an overlay option separator)",
      () => ["-r", rootfs(), "-t", `${empty}/a,b`, "true"],
      /cannot hold an overlay's upper layer/,
    ],
    [
      "a bind with docker's :ro, which would bind read-write",
      () => ["-r", rootfs(), "-b", `${empty}:/mnt:ro`, "true"],
      /one ":" between HOSTPATH and PATH/,
    ],
    [
      "a --cpu mask of CPUs this host does not have",
      () => ["-r", rootfs(), "--cpu", beyondOnlineCpus(), "true"],
      /no CPU of this mask is online/,
    ],
  ];
  for (const [what, args, message] of cases) {
    test(`${what}: exit 2 and one line`, () => {
      const r = minc(args());
      assert.equal(r.status, 2, `${r.stdout}${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.deepEqual(leftovers(), []);
    });
  }

  test("-t with a directory on a read-only mount: exit 2 and one line, before anything is written", () => {
    const ro = `${empty}/ro`;
    mkdirSync(ro);
    spawnSync("mount", ["--bind", ro, ro]);
    try {
      spawnSync("mount", ["-o", "remount,bind,ro", ro]);
      const r = minc(["-r", rootfs(), "-t", ro, "true"]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /tempdir .*: not writable \(EROFS\)/);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    } finally {
      spawnSync("umount", ["-l", ro]);
    }
    assert.deepEqual(leftovers(), []);
  });

  test("ermine-breeder testrun --work with a directory that does not exist: exit 2 and one line, nothing made", () => {
    const work = `${empty}/no/such/work`;
    const r = spawnSync(`${REPO}/bin/ermine-breeder`, ["testrun", "--work", work], { encoding: "utf8" });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^ermine-breeder: --work .*: no such directory\n$/);
    assert.ok(!existsSync(`${empty}/no`), "the typo became a directory");
  });

  test("a command that does not exist in the rootfs: exit 127", () => {
    const r = minc(["-r", rootfs(), "/no/such/command"]);
    assert.equal(r.status, 127);
    assert.deepEqual(leftovers(), []);
  });

  test("--help and --version exit 0", () => {
    const h = minc(["--help"]);
    assert.equal(h.status, 0);
    for (const opt of [
      "--rootdir",
      "--tempdir",
      "--bind",
      "--background",
      "--nocaps",
      "--pivot",
      "--mem-limit",
      "--net",
      "--qemu",
    ]) {
      assert.match(h.stdout, new RegExp(opt));
    }
    assert.equal(minc(["--version"]).status, 0);
  });
});
