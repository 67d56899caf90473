// The pieces that need no container: option parsing, quoting, paths in a root.
import assert from "node:assert/strict";
import {
  chmodSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { spawnSync } from "node:child_process";
import { describe, test } from "node:test";
import { parseMincArgs } from "../lib/boot/minc-options.ts";
import { resolveInRoot } from "../lib/boot/paths.ts";
import { userOf } from "../lib/boot/rootfs.ts";
import { printfLines } from "../lib/core/run.ts";
import { quote, quoteAll } from "../lib/core/trace.ts";
import { treeDigest } from "../lib/store/tree.ts";
import { VERSION } from "../lib/core/version.ts";
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

  test("every word pastes back as itself; one with a newline inside stays on one line", () => {
    const words = [
      "plain",
      "",
      "a b",
      "it's",
      '$HOME `id` \\ "q"',
      "two\nlines",
      "it's\n$x\n\nthree",
      "ends with a newline\n",
      "\nstarts with one",
    ];
    for (const word of words) {
      const r = spawnSync("sh", ["-c", `printf %s ${quote(word)}`], { encoding: "utf8" });
      assert.equal(r.stdout, word, JSON.stringify(word));
    }
    assert.ok(!quote("two\nlines").includes("\n"), "one line");
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

test("a file write as the trace shows it prints the same bytes when sh runs it (backslashes, quotes, several lines)", () => {
  for (const content of [
    "plain\n",
    "a\\tb\\c \\\\ %s '\"$x`\n",
    "two\nlines\n",
    "no newline at the end",
    "two lines,\nno newline at the end",
  ]) {
    const r = spawnSync("sh", ["-c", printfLines(content)], { encoding: "utf8" });
    assert.equal(r.stdout, content, JSON.stringify(content));
  }
});

test("an imported tree's id: the same tree, the same id; any change marten would store, another", () => {
  const dir = mkdtempSync("/tmp/minc-tree-");
  try {
    const a = `${dir}/a`;
    mkdirSync(`${a}/sub`, { recursive: true });
    writeFileSync(`${a}/sub/f`, "content\n");
    symlinkSync("sub/f", `${a}/link`);
    linkSync(`${a}/sub/f`, `${a}/hard`);
    const base = treeDigest(a);
    assert.match(base, /^sha256:[0-9a-f]{64}$/);
    spawnSync("cp", ["-a", a, `${dir}/b`]);
    assert.equal(treeDigest(`${dir}/b`), base, "cp -a: the same times, links, modes and owners");
    const changed = (what: string, change: () => void): void => {
      change();
      assert.notEqual(treeDigest(a), base, what);
    };
    // Two trees that differ only in the bytes of a name that is not UTF-8 (both read as "caf\ufffd").
    const latin1Tree = (name: string): string => {
      const t = new Date(0),
        tree = `${dir}/${name.charCodeAt(3).toString(16)}`;
      mkdirSync(tree);
      writeFileSync(Buffer.from(`${tree}/${name}`, "latin1"), "");
      utimesSync(Buffer.from(`${tree}/${name}`, "latin1"), t, t);
      utimesSync(tree, t, t);
      return treeDigest(tree);
    };
    assert.notEqual(latin1Tree("caf\xe9"), latin1Tree("caf\xe8"), "names as bytes");
    changed("a file's mode", () => chmodSync(`${a}/sub/f`, 0o600));
    chmodSync(`${a}/sub/f`, 0o644);
    changed("an xattr", () => spawnSync("setfattr", ["-n", "user.mincs", "-v", "1", `${a}/sub/f`]));
    spawnSync("setfattr", ["-x", "user.mincs", `${a}/sub/f`]);
    changed("a file's bytes, same size", () => {
      const t = new Date(0);
      writeFileSync(`${a}/sub/f`, "CONTENT\n");
      utimesSync(`${a}/sub/f`, t, t);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
