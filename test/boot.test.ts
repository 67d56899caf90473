// Real containers from the busybox rootfs: what the command sees inside.
import assert from "node:assert/strict";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { after, describe, test } from "node:test";
import { cannotBoot, cleanEnv, leftovers, minc, rootfs } from "./helpers.ts";

const skip = cannotBoot();

describe("minc boots a container", { skip }, () => {
  after(() => assert.deepEqual(leftovers(), [], "a container left something behind"));

  test("the command is PID 1 and sees no host process", () => {
    const r = minc(["-r", rootfs(), "ps", "-o", "pid,comm"]);
    assert.equal(r.status, 0, r.stderr);
    const rows = r.stdout
      .trim()
      .split("\n")
      .slice(1)
      .map((l) => l.trim().split(/\s+/));
    assert.deepEqual(rows, [["1", "ps"]], r.stdout);
  });

  test("the hostname inside is --name", () => {
    const r = minc(["-r", rootfs(), "--name", "box-42", "hostname"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), "box-42");
  });

  test("--user 1000:1234 runs the command as uid 1000, gid 1234, with no capabilities", () => {
    const r = minc([
      "-r",
      rootfs(),
      "--user",
      "1000:1234",
      "sh",
      "-c",
      "id -u; id -g; id -G; grep CapEff /proc/self/status",
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n"), ["1000", "1234", "1234", "CapEff:\t0000000000000000"]);
  });

  test("--user by name uses the rootfs's passwd and group", () => {
    const r = minc(["-r", rootfs(), "--user", "user:grp", "sh", "-c", "id -u; id -g"]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n"), ["1000", "1234"]);
  });

  test("-b HOST:/x makes a host file readable at /x, and a host dir at its own path", () => {
    const dir = mkdtempSync("/tmp/minc-test-bind-");
    try {
      writeFileSync(`${dir}/secret`, "from the host\n");
      const r = minc(["-r", rootfs(), "-b", `${dir}/secret:/x`, "-b", dir, "sh", "-c", `cat /x; ls ${dir}`]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, "from the host\nsecret\n");
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test("without -r, host / is the lower layer and writes land in the upper layer", () => {
    const marker = `/minc-test-upper-${process.pid}`;
    const r = minc(["-k", "sh", "-c", `cat /etc/os-release > /dev/null && echo written > ${marker}`]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(existsSync(marker), false, "the write reached the host's /");
    const tmpdir = /-t (\S+)/.exec(r.stdout)?.[1];
    assert.ok(tmpdir, `no reuse hint in: ${r.stdout}`);
    try {
      assert.equal(readFileSync(`${tmpdir}/storage${marker}`, "utf8"), "written\n");
    } finally {
      rmSync(tmpdir, { recursive: true });
    }
  });

  test("the exit status is the command's, and arguments pass through unsplit", () => {
    assert.equal(minc(["-r", rootfs(), "sh", "-c", "exit 3"]).status, 3);
    const r = minc(["-r", rootfs(), "printf", "[%s]", "a  b", "c'd", "$HOME", ""]);
    assert.equal(r.stdout, "[a  b][c'd][$HOME][]");
  });

  test("no MINC_* settings leak into the command's environment", () => {
    const r = minc(["-r", rootfs(), "env"]);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /^(MINC_|LIBMOUNT_MTAB)/m);
  });

  test("/proc is the container's, /proc/sys and /sys are read-only", () => {
    const r = minc([
      "-r",
      rootfs(),
      "sh",
      "-c",
      "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo proc-writable; " +
        // (sh's own glob, with no other process of the container running: ls | grep would race)
        "touch /sys/x 2>/dev/null && echo sys-writable; echo /proc/[0-9]*",
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), "/proc/1", "expected only the container's process: sh, PID 1");
  });

  test("cap_sys_chroot is dropped, and --nocaps drops more; cap_net_raw only with a network of its own", () => {
    const bounding = (extra: string[]): bigint => {
      const r = minc(["-r", rootfs(), ...extra, "grep", "CapBnd", "/proc/self/status"]);
      assert.equal(r.status, 0, r.stderr);
      return BigInt(`0x${r.stdout.split(/\s+/)[1]}`);
    };
    const has = (set: bigint, cap: bigint): boolean => ((set >> cap) & 1n) === 1n;
    const CAP_KILL = 5n,
      CAP_NET_RAW = 13n,
      CAP_SYS_CHROOT = 18n,
      CAP_SYS_ADMIN = 21n;
    for (const extra of [[], ["--privileged"]]) {
      const plain = bounding(extra);
      assert.ok(!has(plain, CAP_SYS_CHROOT), `${extra}: cap_sys_chroot`);
      assert.ok(has(plain, CAP_KILL), `${extra}: no cap_kill`);
      assert.equal(has(plain, CAP_SYS_ADMIN), extra.length > 0, `${extra}: cap_sys_admin`);
      assert.equal(has(plain, CAP_NET_RAW), extra.length > 0, `${extra}: cap_net_raw on the host's network`);
      assert.ok(!has(bounding([...extra, "--nocaps", "cap_kill"]), CAP_KILL), `${extra} --nocaps: cap_kill kept`);
    }
    assert.ok(has(bounding(["--net", "raw"]), CAP_NET_RAW), "no cap_net_raw with a network of its own");
  });

  test("--pivot: the command is PID 1 and the host's mounts are gone", () => {
    const r = minc(["--pivot", "-r", rootfs(), "sh", "-c", "echo $$; cat /proc/self/mountinfo"]);
    assert.equal(r.status, 0, r.stderr);
    const [pid, ...mounts] = r.stdout.trim().split("\n");
    assert.equal(pid, "1");
    assert.ok(
      mounts.every((m) => !/ \/\.orig| \/usr\/local/.test(m)),
      r.stdout,
    );
    assert.ok(mounts.length < 25, `the old root's mounts are still there:\n${r.stdout}`);
  });

  test("--pivot --user switches user too", () => {
    const r = minc(["--pivot", "-r", rootfs(), "--user", "1000:1234", "sh", "-c", "id -u; id -g"]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n"), ["1000", "1234"]);
  });

  test("/dev has only the harmless devices, a private devpts and /dev/shm", () => {
    const r = minc(["-r", rootfs(), "sh", "-c", "ls /dev; ls /dev/pts; echo x > /dev/shm/y && cat /dev/shm/y"]);
    assert.equal(r.status, 0, r.stderr);
    for (const dev of ["null", "zero", "urandom", "ptmx", "pts", "shm", "mqueue"])
      assert.match(r.stdout, new RegExp(`^${dev}$`, "m"));
    assert.doesNotMatch(r.stdout, /^(sda|vda|kmsg|mem)$/m);
    assert.match(r.stdout, /^ptmx\nx$/m, "devpts must be a new instance with no host ptys");
  });

  test("--cpu limits the CPUs the command runs on", () => {
    const r = minc(["-r", rootfs(), "-c", "1", "grep", "Cpus_allowed_list", "/proc/self/status"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Cpus_allowed_list:\s+0$/m);
  });

  test("--usedev gives the host's devices, --debugfs mounts debugfs", () => {
    const r = minc([
      "-r",
      rootfs(),
      "--usedev",
      "--debugfs",
      "sh",
      "-c",
      "ls /dev | grep -c '^loop'; grep -c ' /sys/kernel/debug ' /proc/self/mountinfo",
    ]);
    assert.equal(r.status, 0, r.stderr);
    const [loops, debugfs] = r.stdout.trim().split("\n").map(Number);
    assert.ok(loops > 0, "no loop devices under --usedev");
    assert.equal(debugfs, 1);
  });

  test("-X binds the X11 socket directory and $XAUTHORITY and passes $DISPLAY", () => {
    const made = !existsSync("/tmp/.X11-unix");
    const xauth = `${mkdtempSync("/tmp/minc-test-xauth-")}/Xauthority`;
    try {
      if (made) mkdirSync("/tmp/.X11-unix", { mode: 0o1777 });
      writeFileSync(xauth, "cookie\n");
      const env = { ...cleanEnv(), DISPLAY: ":42", XAUTHORITY: xauth };
      const r = minc(
        [
          "-r",
          rootfs(),
          "-X",
          "sh",
          "-c",
          `echo $DISPLAY; cat ${xauth}; grep -c ' /tmp/.X11-unix ' /proc/self/mountinfo`,
        ],
        { env },
      );
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split("\n"), [":42", "cookie", "1"]);
      const none = minc(["-r", rootfs(), "-X", "true"], { env: { ...cleanEnv(), DISPLAY: "" } });
      assert.equal(none.status, 2);
    } finally {
      if (made) rmSync("/tmp/.X11-unix", { recursive: true });
      rmSync(xauth.replace(/\/Xauthority$/, ""), { recursive: true });
    }
  });

  test("a mountpoint that is a symlink to nowhere (debootstrap --foreign's /proc -> /proc) is replaced, or skipped with --direct", () => {
    const copy = mkdtempSync("/tmp/minc-test-loop-");
    try {
      cpSync(rootfs(), copy, { recursive: true, verbatimSymlinks: true });
      rmSync(`${copy}/proc`, { recursive: true });
      symlinkSync("/proc", `${copy}/proc`);
      const r = minc(["-r", copy, "sh", "-c", "cat /proc/1/comm"]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, "cat\n");
      const d = minc(["--direct", "-r", copy, "sh", "-c", "test -e /proc/1 || echo no-proc"]);
      assert.equal(d.status, 0, d.stderr);
      assert.equal(d.stdout, "no-proc\n");
      assert.equal(readlinkSync(`${copy}/proc`), "/proc", "direct mode changed the rootdir");
    } finally {
      rmSync(copy, { recursive: true });
    }
  });
});
