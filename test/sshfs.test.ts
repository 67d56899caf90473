// minc -r sshfs://[USER@]HOST[:PORT]/PATH: a rootfs on another machine.
//
// The "other machine" is an sshd on 127.0.0.1 with its own config, host key
// and authorized key, serving a copy of the busybox rootfs; minc is told the
// client key through MINC_SSHFS_OPTS.
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { once } from "node:events";
import { after, before, describe, test } from "node:test";
import { cannotBoot, cleanEnv, hasTool, leftovers, minc, rootfs, sleep } from "./helpers.ts";

function why(): string | undefined {
  const boot = cannotBoot();
  if (boot) return boot;
  if (!existsSync("/usr/sbin/sshd")) return "needs sshd (apt-get install openssh-server)";
  for (const tool of ["sshfs", "ssh-keygen"]) {
    if (!hasTool(tool)) return `needs ${tool} (apt-get install sshfs openssh-client)`;
  }
  if (!existsSync("/dev/fuse")) return "needs /dev/fuse";
  return undefined;
}

const skip = why();
let dir = "";
let port = 0;
let sshd: ChildProcess | undefined;

function sshfsMounts(): string[] {
  return readFileSync("/proc/self/mounts", "utf8").split("\n").filter((l) => /\bfuse\.sshfs\b/.test(l) && l.includes("/minc"));
}

function env(): NodeJS.ProcessEnv {
  return cleanEnv({ MINC_SSHFS_OPTS: `IdentityFile=${dir}/client,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR` });
}

async function startSshd(): Promise<void> {
  mkdirSync("/run/sshd", { recursive: true }); // sshd's privilege separation dir
  for (const key of ["host", "client"]) spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/${key}`]);
  cpSync(`${dir}/client.pub`, `${dir}/authorized_keys`);
  port = 20000 + (process.pid % 20000);
  writeFileSync(`${dir}/sshd_config`, [
    `Port ${port}`, "ListenAddress 127.0.0.1", `HostKey ${dir}/host`, `AuthorizedKeysFile ${dir}/authorized_keys`,
    "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
    "StrictModes no", `PidFile ${dir}/sshd.pid`, "Subsystem sftp internal-sftp", "",
  ].join("\n"));
  sshd = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", `${dir}/sshd_config`], { stdio: "ignore" });
  for (let i = 0; i < 50 && spawnSync("bash", ["-c", `exec 3<>/dev/tcp/127.0.0.1/${port}`]).status !== 0; i++) await sleep(100);
}

describe("an sshfs rootdir", { skip }, () => {
  before(async () => {
    dir = mkdtempSync("/tmp/minc-sshfs-");
    cpSync(rootfs(), `${dir}/rootfs`, { recursive: true, verbatimSymlinks: true });
    writeFileSync(`${dir}/rootfs/marker`, "remote marker\n");
    await startSshd();
  });
  after(async () => {
    // sshd removes its pid file as it exits; Node's rmSync, meeting a file
    // that vanishes under it, stops and reports success with the rest left.
    if (sshd && sshd.exitCode === null && sshd.signalCode === null) {
      const gone = once(sshd, "exit");
      sshd.kill();
      await gone;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("boots from the remote rootfs, its absolute symlinks intact; writes stay local; the mount goes", () => {
    const r = minc(["-r", `sshfs://root@127.0.0.1:${port}${dir}/rootfs`, "sh", "-c", "cat /marker; readlink /bin/sh; echo local > /written; echo $$"], { env: env() });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "remote marker\n/bin/busybox\n1\n");
    assert.ok(!existsSync(`${dir}/rootfs/written`), "the remote rootfs is the lower layer: not written");
    assert.deepEqual(sshfsMounts(), []);
    assert.deepEqual(leftovers(), []);
  });

  test("an unreachable host fails with sshfs's reason and leaves nothing", () => {
    const r = minc(["-r", "sshfs://root@127.0.0.1:1/nowhere", "true"], { env: env() });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /cannot mount the rootdir sshfs:\/\/root@127\.0\.0\.1:1\/nowhere/);
    assert.deepEqual(sshfsMounts(), []);
    assert.deepEqual(leftovers(), []);
  });

  test("a malformed sshfs URL is a usage error", () => {
    for (const bad of ["sshfs://", "sshfs://host:99999/x", "sshfs://us er@host/x", "sshfs://host/a,b"]) {
      const r = minc(["-r", bad, "true"], { env: env() });
      assert.equal(r.status, 2, `${bad}: ${r.stderr}`);
      assert.match(r.stderr, /not an sshfs:\/\/\[USER@\]HOST\[:PORT\]\/PATH/);
    }
    assert.deepEqual(leftovers(), []);
  });
});
