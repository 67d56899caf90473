// make install / install.sh put the programs under a PREFIX where they run.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { describe, test } from "node:test";
import { WAITER_SCRIPTS } from "../lib/core/libexec.ts";
import { REPO, RUNDIR, cannotBoot, cleanEnv, leftovers, rootfs } from "./helpers.ts";

const skip = cannotBoot();

function sh(cmd: string, env: NodeJS.ProcessEnv = {}): { status: number | null; out: string } {
  const r = spawnSync("sh", ["-c", cmd], { cwd: REPO, encoding: "utf8", env: cleanEnv(env) });
  return { status: r.status, out: r.stdout + r.stderr };
}

/** A test in an install prefix of its own, removed after it; nothing may be left on the host either. */
function inPrefix(body: (prefix: string) => void): void {
  const prefix = mkdtempSync("/tmp/minc-test-prefix-");
  try {
    body(prefix);
  } finally {
    rmSync(prefix, { recursive: true });
  }
  assert.deepEqual(leftovers(), []);
}

describe("installing", { skip }, () => {
  test("make install PREFIX=... gives a minc that boots; make uninstall removes it", () => {
    inPrefix((prefix) => {
      const i = sh(`make install PREFIX=${prefix}`);
      assert.equal(i.status, 0, i.out);
      assert.deepEqual(readdirSync(`${prefix}/bin`).sort(), ["ermine-breeder", "ferret", "marten", "minc", "polecat"]);
      assert.match(spawnSync(`${prefix}/bin/ferret`, ["--version"], { encoding: "utf8" }).stdout, /^ferret version /);
      assert.ok(existsSync(`${prefix}/libexec/minc-core`) && existsSync(`${prefix}/libexec/minc-waiter.sh`));
      const r = spawnSync(`${prefix}/bin/minc`, ["-r", rootfs(), "sh", "-c", "echo $$"], {
        encoding: "utf8",
        env: cleanEnv(),
        cwd: "/",
      });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, "1\n");
      const u = sh(`make uninstall PREFIX=${prefix} STOP_DENS=0`);
      assert.equal(u.status, 0, u.out);
      assert.deepEqual([...readdirSync(`${prefix}/bin`), ...readdirSync(`${prefix}/libexec`)], []);
    });
  });

  test("install.sh --minimum installs minc and its boot backends only; --uninstall removes them", () => {
    const prefix = mkdtempSync("/tmp/minc-test-prefix-");
    try {
      const i = sh("./install.sh --minimum", { PREFIX: prefix });
      assert.equal(i.status, 0, i.out);
      assert.deepEqual(readdirSync(`${prefix}/bin`), ["minc"]);
      assert.deepEqual(
        readdirSync(`${prefix}/libexec`).sort(),
        ["minc-cage", "minc-coat", "minc-core", "minc-exec", "minc-fork.sh", "minc-leash", ...WAITER_SCRIPTS].sort(),
      );
      const u = sh("./install.sh --uninstall", { PREFIX: prefix, STOP_DENS: "0" });
      assert.equal(u.status, 0, u.out);
      assert.deepEqual(readdirSync(`${prefix}/bin`), []);
      assert.equal(sh("./install.sh --bogus").status, 2);
    } finally {
      rmSync(prefix, { recursive: true });
    }
  });

  test("make install LIBEXECDIR=... records it: minc runs through a symlink and directly; kernels installed and uninstalled", () => {
    const prefix = mkdtempSync("/tmp/minc-test-prefix-");
    const libexec = `${prefix}/lib/mincs`;
    // Stand-ins for what ermine-breeder build makes (the UML kernel is a program).
    const ermine = `${prefix}/built-ermine`;
    mkdirSync(ermine);
    writeFileSync(`${ermine}/vmlinuz.um`, "kernel", { mode: 0o755 });
    writeFileSync(`${ermine}/initramfs.um`, "initramfs", { mode: 0o644 });
    try {
      const i = sh(`make install PREFIX=${prefix} LIBEXECDIR=${libexec} ERMINE_SRC=${ermine}`);
      assert.equal(i.status, 0, i.out);
      assert.ok(!existsSync(`${prefix}/libexec`));
      assert.ok(existsSync(`${libexec}/minc-exec`) && existsSync(`${libexec}/ermine/vmlinuz.um`));
      assert.equal(statSync(`${libexec}/ermine/vmlinuz.um`).mode & 0o777, 0o755);
      assert.equal(statSync(`${libexec}/ermine/initramfs.um`).mode & 0o777, 0o644);
      mkdirSync(`${prefix}/elsewhere`);
      symlinkSync(`${prefix}/bin/minc`, `${prefix}/elsewhere/minc`);
      for (const minc of [`${prefix}/elsewhere/minc`, `${prefix}/bin/minc`]) {
        const r = spawnSync(minc, ["-r", rootfs(), "echo", "hi"], { encoding: "utf8", env: cleanEnv(), cwd: "/" });
        assert.equal(r.status, 0, `${minc}: ${r.stderr}`);
        assert.equal(r.stdout, "hi\n");
      }
      const m = spawnSync(`${prefix}/bin/marten`, ["li"], { encoding: "utf8", env: cleanEnv(), cwd: "/" });
      assert.equal(m.status, 0, m.stderr);
      const u = sh(`make uninstall PREFIX=${prefix} LIBEXECDIR=${libexec} STOP_DENS=0`);
      assert.equal(u.status, 0, u.out);
      assert.deepEqual(readdirSync(libexec), []);
    } finally {
      rmSync(prefix, { recursive: true });
    }
    assert.deepEqual(leftovers(), []);
  });

  test("a minc whose backends are missing says so in one line, exit 2, and makes nothing", () => {
    inPrefix((prefix) => {
      mkdirSync(`${prefix}/bin`);
      copyFileSync(`${REPO}/bin/minc`, `${prefix}/bin/minc`);
      for (const root of [rootfs(), "someimage"]) {
        const r = spawnSync(`${prefix}/bin/minc`, ["-r", root, "echo", "hi"], {
          encoding: "utf8",
          env: cleanEnv(),
          cwd: "/",
        });
        assert.equal(r.status, 2, r.stderr);
        assert.equal(r.stdout, "");
        assert.match(
          r.stderr,
          /^minc: minc-exec, minc-waiter\.sh(, minc-waiter-\w+\.sh){4}(, minc-farm)?: missing in \S+\/libexec .*\n$/,
        );
        assert.equal(r.stderr.split("\n").length, 2, r.stderr);
        assert.deepEqual(
          readdirSync(RUNDIR).filter((f) => f.startsWith(`minc${r.pid}-`)),
          [],
        ); // (cleanEnv: its working dir would be there)
      }
    });
  });
});
