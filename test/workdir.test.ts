// The working directory: removed, kept (-k), reused (-t), and --direct.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { after, describe, test } from "node:test";
import { cannotBoot, leftovers, minc, rootfs, runtimeDirs } from "./helpers.ts";

const skip = cannotBoot();

describe("the working directory", { skip }, () => {
  after(() => assert.deepEqual(leftovers(), [], "a container left something behind"));

  test("without -k or -t nothing is left in the runtime dir", () => {
    const before = runtimeDirs();
    const r = minc(["-r", rootfs(), "sh", "-c", "echo x > /root/y"]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(runtimeDirs(), before);
  });

  test("-k keeps it and says how to reuse it; -t reuses it and sees earlier writes", () => {
    const r = minc(["-k", "-r", rootfs(), "sh", "-c", "echo remembered > /root/note"]);
    assert.equal(r.status, 0, r.stderr);
    const hint = /To reuse this, run: minc -r (\S+) -t (\S+)/.exec(r.stderr);
    assert.ok(hint, `no reuse hint in: ${r.stderr}`);
    const tmpdir = hint[2];
    try {
      assert.equal(hint[1], rootfs());
      assert.equal(readFileSync(`${tmpdir}/storage/root/note`, "utf8"), "remembered\n");
      const again = minc(["-r", rootfs(), "-t", tmpdir, "cat", "/root/note"]);
      assert.equal(again.status, 0, again.stderr);
      assert.equal(again.stdout, "remembered\n");
      assert.ok(existsSync(tmpdir), "-t must keep the directory");
      assert.equal(existsSync(`${tmpdir}/pid`), false, "the pid file outlived the container");
    } finally {
      rmSync(tmpdir, { recursive: true });
    }
  });

  test("-t remembers the --name given before", () => {
    const tmpdir = mkdtempSync("/tmp/minc-test-t-");
    try {
      assert.equal(minc(["-r", rootfs(), "-t", tmpdir, "--name", "first", "true"]).status, 0);
      const r = minc(["-r", rootfs(), "-t", tmpdir, "hostname"]);
      assert.equal(r.stdout.trim(), "first");
    } finally {
      rmSync(tmpdir, { recursive: true });
    }
  });

  test("--direct never writes into the rootdir, but the command may", () => {
    const copy = mkdtempSync("/tmp/minc-test-direct-");
    try {
      cpSync(rootfs(), copy, { recursive: true, verbatimSymlinks: true });
      const listing = (): string => execFileSync("find", [copy, "-printf", "%p %y %m %s %T@\\n"], { encoding: "utf8" });
      const before = listing();
      const r = minc(["--direct", "-r", copy, "ps", "-o", "pid,comm"]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^\s*1 ps$/m);
      assert.equal(listing(), before, "minc changed the rootdir in direct mode");
      const w = minc(["-D", "-r", copy, "sh", "-c", "echo mine > /root/direct-write"]);
      assert.equal(w.status, 0, w.stderr);
      assert.equal(readFileSync(`${copy}/root/direct-write`, "utf8"), "mine\n");
    } finally {
      rmSync(copy, { recursive: true });
    }
  });

  test("--direct refuses a bind target missing from the rootdir, leaving nothing", () => {
    const r = minc(["-D", "-r", rootfs(), "-b", "/etc/hostname:/no/such/place", "true"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /does not exist in the rootdir/);
    assert.equal(existsSync(`${rootfs()}/no`), false);
  });
});
