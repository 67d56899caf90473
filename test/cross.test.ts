// --cross/--arch: an arm64 rootfs on this host through qemu-user (binfmt_misc).
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { after, describe, test } from "node:test";
import { REPO, cannotBoot, leftovers, minc, signalled } from "./helpers.ts";

const BINFMT = "/proc/sys/fs/binfmt_misc";
function cannotCross(): string | undefined {
  if (!existsSync(`${BINFMT}/status`)) return "binfmt_misc is not mounted (make deps mounts it)";
  if (!existsSync(`${BINFMT}/qemu-aarch64`) || !/^enabled$/m.test(readFileSync(`${BINFMT}/qemu-aarch64`, "utf8"))) {
    return "qemu-aarch64 is not enabled in binfmt_misc (make deps: qemu-user-static binfmt-support)";
  }
  return undefined;
}
const skip = cannotBoot() ?? cannotCross();
if (skip) console.log(`# skipping the cross-arch tests: ${skip}`);

function arm64Rootfs(): string {
  const r = spawnSync(`${REPO}/samples/scripts/busybox-rootfs.sh`, [`${REPO}/test/.cache/rootfs-arm64`, "arm64"], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, `the arm64 fixture: ${r.stderr} (needs dpkg --add-architecture arm64; apt-get update)`);
  return r.stdout.trim();
}

describe("cross-arch containers", { skip }, () => {
  after(() => assert.deepEqual(leftovers(), []));

  test("--cross arm64 runs an arm64 busybox, with qemu-user bound in at its own path", () => {
    const interpreter = /^interpreter (\S+)$/m.exec(readFileSync(`${BINFMT}/qemu-aarch64`, "utf8"))![1];
    const r = minc([
      "--cross",
      "arm64",
      "-r",
      arm64Rootfs(),
      "sh",
      "-c",
      `uname -m; grep -c ' ${interpreter} ' /proc/self/mountinfo; echo $$`,
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n"), ["aarch64", "1", "1"]);
    const alias = minc(["--arch", "aarch64", "-r", arm64Rootfs(), "uname", "-m"]);
    assert.equal(alias.stdout, "aarch64\n");
  });

  test("SIGTERM ends a --cross container at once, exit 143, nothing left", async () => {
    // PID 1 is qemu-user, which handles every signal and, for a guest with no
    // handler, re-raises it on itself with the default action: dropped for PID 1.
    const r = await signalled(["sh", "-c", "echo ready; exec sleep 30"], "SIGTERM", [
      "--cross",
      "arm64",
      "-r",
      arm64Rootfs(),
    ]);
    assert.equal(r.status, 143);
    assert.deepEqual(leftovers(), []);
  });

  test("an unknown arch, or one binfmt_misc does not know: exit 2 with how to fix it", () => {
    const bogus = minc(["--cross", "vax", "-r", arm64Rootfs(), "true"]);
    assert.equal(bogus.status, 2);
    assert.match(bogus.stderr, /unknown arch/);
    const missing = ["s390x", "riscv64", "ppc64le", "arm"].find((a) => !existsSync(`${BINFMT}/qemu-${a}`));
    if (missing) {
      const r = minc(["--cross", missing, "-r", arm64Rootfs(), "true"]);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /not registered in binfmt_misc; run: apt-get install qemu-user-static/);
    }
  });
});
