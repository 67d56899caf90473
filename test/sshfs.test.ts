// minc -r sshfs://[USER@]HOST[:PORT]/PATH: a rootfs on another machine.
//
// The "other machine" is an sshd on 127.0.0.1 with its own config, host key
// and authorized key, serving a copy of the busybox rootfs; minc is told the
// client key through MINC_SSHFS_OPTS.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import {
  cannotBoot,
  cleanEnv,
  freePort,
  hasTool,
  leftovers,
  minc,
  RUNDIR,
  rootfs,
  start,
  type Started,
} from "./helpers.ts";

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
let sshd: Started | undefined;

/** sshfs mounts of this file's containers (minc mounts it in the working dir). */
function sshfsMounts(): string[] {
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .filter((l) => /\bfuse\.sshfs\b/.test(l) && l.includes(`${RUNDIR}/`));
}

function env(): NodeJS.ProcessEnv {
  return cleanEnv({
    MINC_SSHFS_OPTS: `IdentityFile=${dir}/client,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR`,
  });
}

async function startSshd(): Promise<void> {
  mkdirSync("/run/sshd", { recursive: true }); // sshd's privilege separation dir
  for (const key of ["host", "client"])
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/${key}`]);
  cpSync(`${dir}/client.pub`, `${dir}/authorized_keys`);
  // A port free now may be taken before sshd binds it (another test, a
  // user's program): then sshd says so and ends, and we try another.
  for (let attempt = 1; ; attempt++) {
    port = await freePort("tcp");
    writeFileSync(
      `${dir}/sshd_config`,
      [
        `Port ${port}`,
        "ListenAddress 127.0.0.1",
        `HostKey ${dir}/host`,
        `AuthorizedKeysFile ${dir}/authorized_keys`,
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        `PidFile ${dir}/sshd.pid`,
        "Subsystem sftp internal-sftp",
        "",
      ].join("\n"),
    );
    sshd = start("/usr/sbin/sshd", ["-D", "-e", "-f", `${dir}/sshd_config`]);
    // -e: its log on stderr, where it says when it listens (or why it cannot).
    try {
      await sshd.printed(`Server listening on 127.0.0.1 port ${port}`, { stream: "stderr" });
      return;
    } catch (e) {
      if (attempt >= 3 || !/Address already in use/.test(sshd.stderr())) throw e;
      await sshd.exit();
    }
  }
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
    if (sshd && sshd.child.exitCode === null && sshd.child.signalCode === null) {
      sshd.child.kill();
      await sshd.exit();
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("boots from the remote rootfs, its absolute symlinks intact; writes stay local; the mount goes", () => {
    const r = minc(
      [
        "-r",
        `sshfs://root@127.0.0.1:${port}${dir}/rootfs`,
        "sh",
        "-c",
        "cat /marker; readlink /bin/sh; echo local > /written; echo $$",
      ],
      { env: env() },
    );
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
