// make install / install.sh put the programs under a PREFIX where they run.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { describe, test } from "node:test";
import { REPO, cannotBoot, cleanEnv, leftovers, rootfs } from "./helpers.ts";

const skip = cannotBoot();

function sh(cmd: string, env: NodeJS.ProcessEnv = {}): { status: number | null; out: string } {
  const r = spawnSync("sh", ["-c", cmd], { cwd: REPO, encoding: "utf8", env: cleanEnv(env) });
  return { status: r.status, out: r.stdout + r.stderr };
}

describe("installing", { skip }, () => {
  test("make install PREFIX=... gives a minc that boots; make uninstall removes it", () => {
    const prefix = mkdtempSync("/tmp/minc-test-prefix-");
    try {
      const i = sh(`make install PREFIX=${prefix}`);
      assert.equal(i.status, 0, i.out);
      assert.deepEqual(readdirSync(`${prefix}/bin`).sort(), ["ermine-breeder", "marten", "minc", "polecat"]);
      assert.ok(existsSync(`${prefix}/libexec/minc-core`) && existsSync(`${prefix}/libexec/minc-waiter.sh`));
      const r = spawnSync(`${prefix}/bin/minc`, ["-r", rootfs(), "sh", "-c", "echo $$"], { encoding: "utf8", env: cleanEnv(), cwd: "/" });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, "1\n");
      const u = sh(`make uninstall PREFIX=${prefix} STOP_DENS=0`);
      assert.equal(u.status, 0, u.out);
      assert.deepEqual([...readdirSync(`${prefix}/bin`), ...readdirSync(`${prefix}/libexec`)], []);
    } finally {
      rmSync(prefix, { recursive: true });
    }
    assert.deepEqual(leftovers(), []);
  });

  test("install.sh --minimum installs minc and its boot backends only; --uninstall removes them", () => {
    const prefix = mkdtempSync("/tmp/minc-test-prefix-");
    try {
      const i = sh("./install.sh --minimum", { PREFIX: prefix });
      assert.equal(i.status, 0, i.out);
      assert.deepEqual(readdirSync(`${prefix}/bin`), ["minc"]);
      assert.deepEqual(readdirSync(`${prefix}/libexec`).sort(), ["minc-cage", "minc-coat", "minc-core", "minc-exec", "minc-fork.sh", "minc-leash", "minc-waiter.sh"]);
      const u = sh("./install.sh --uninstall", { PREFIX: prefix, STOP_DENS: "0" });
      assert.equal(u.status, 0, u.out);
      assert.deepEqual(readdirSync(`${prefix}/bin`), []);
      assert.equal(sh("./install.sh --bogus").status, 2);
    } finally {
      rmSync(prefix, { recursive: true });
    }
  });
});
