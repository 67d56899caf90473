// The pieces that need no container: option parsing, quoting, paths in a root.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { describe, test } from "node:test";
import { parseMincArgs } from "../lib/minc-options.ts";
import { resolveInRoot } from "../lib/paths.ts";
import { userOf } from "../lib/rootfs.ts";
import { quote, quoteAll } from "../lib/trace.ts";
import { VERSION } from "../lib/version.ts";
import { REPO } from "./helpers.ts";

describe("option parsing", () => {
  test("options stop at the command, which passes through untouched", () => {
    const p = parseMincArgs(["-r", "/x", "-b", "a:/b", "--bind=c", "-k", "ls", "-l", "--name", "x"]);
    assert.deepEqual(p.values.get("rootdir"), ["/x"]);
    assert.deepEqual(p.values.get("bind"), ["a:/b", "c"]);
    assert.deepEqual(p.values.get("keep"), [""]);
    assert.deepEqual(p.command, ["ls", "-l", "--name", "x"]);
  });
  test("-- ends the options", () => {
    assert.deepEqual(parseMincArgs(["-k", "--", "-weird"]).command, ["-weird"]);
  });
  test("--net takes a MODE only when one follows", () => {
    assert.deepEqual(parseMincArgs(["-n", "ip", "a"]).values.get("net"), [""]);
    assert.deepEqual(parseMincArgs(["-n", "ip", "a"]).command, ["ip", "a"]);
    assert.deepEqual(parseMincArgs(["--net", "dens", "ip"]).values.get("net"), ["dens"]);
    assert.deepEqual(parseMincArgs(["-n", "raw,eth1", "ip"]).values.get("net"), ["raw,eth1"]);
  });
  test("errors: unknown options, missing arguments, arguments to flags", () => {
    assert.throws(() => parseMincArgs(["-Z"]), /unknown option/);
    assert.throws(() => parseMincArgs(["-kD", "ls"]), /unknown option/);
    assert.throws(() => parseMincArgs(["--rootdir"]), /needs an argument/);
    assert.throws(() => parseMincArgs(["--keep=1"]), /takes no argument/);
  });
});

describe("shell quoting in the trace", () => {
  test("plain words stay plain, others are single-quoted so they paste back", () => {
    assert.equal(quote("/var/run/minc1-ab"), "/var/run/minc1-ab");
    assert.equal(quote(""), "''");
    assert.equal(quote("a b"), "'a b'");
    assert.equal(quote("it's"), "'it'\\''s'");
    assert.equal(quoteAll(["sh", "-c", "exit 3"]), "sh -c 'exit 3'");
  });
});

describe("paths inside a rootfs", () => {
  test("symlinks resolve inside the root, never out of it", () => {
    const root = mkdtempSync("/tmp/minc-test-root-");
    try {
      mkdirSync(`${root}/etc`);
      mkdirSync(`${root}/run`);
      symlinkSync("/", `${root}/escape`);
      symlinkSync("../../../../..", `${root}/up`);
      symlinkSync("../run/resolv.conf", `${root}/etc/resolv.conf`);
      symlinkSync("/etc", `${root}/etc2`);
      symlinkSync("loop", `${root}/loop`);
      assert.equal(resolveInRoot(root, "/escape/etc/passwd"), `${root}/etc/passwd`);
      assert.equal(resolveInRoot(root, "/up/etc"), `${root}/etc`);
      assert.equal(resolveInRoot(root, "/../../etc/shadow"), `${root}/etc/shadow`);
      assert.equal(resolveInRoot(root, "/etc/resolv.conf"), `${root}/run/resolv.conf`);
      assert.equal(resolveInRoot(root, "/etc2/hosts"), `${root}/etc/hosts`);
      assert.equal(resolveInRoot(root, "/"), root);
      assert.throws(() => resolveInRoot(root, "/loop"), /too many symbolic links/);
    } finally {
      rmSync(root, { recursive: true });
    }
  });
  test("--user names come from the rootfs's passwd and group", () => {
    const root = mkdtempSync("/tmp/minc-test-users-");
    try {
      mkdirSync(`${root}/etc`);
      writeFileSync(`${root}/etc/passwd`, "root:x:0:0::/root:/bin/sh\nann:x:1001:1500::/home/ann:/bin/sh\n");
      writeFileSync(`${root}/etc/group`, "root:x:0:\nstaff:x:50:\n");
      assert.deepEqual(userOf(root, "ann"), { uid: 1001, gid: 1500 });
      assert.deepEqual(userOf(root, "ann:staff"), { uid: 1001, gid: 50 });
      assert.deepEqual(userOf(root, "1001"), { uid: 1001, gid: 1500 });
      assert.deepEqual(userOf(root, "4242"), { uid: 4242, gid: 4242 });
      assert.deepEqual(userOf(root, "4242:7"), { uid: 4242, gid: 7 });
      assert.throws(() => userOf(root, "bob"), /no user bob/);
      assert.throws(() => userOf(root, "ann:wheel"), /no group wheel/);
    } finally {
      rmSync(root, { recursive: true });
    }
  });
});

test("the version is package.json's", () => {
  assert.equal(VERSION, JSON.parse(readFileSync(`${REPO}/package.json`, "utf8")).version);
});
