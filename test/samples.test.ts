// The samples run for real: a Debian rootfs from debootstrap boots in minc.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { describe, test } from "node:test";
import { REPO, cannotBoot, hasTool, leftovers, minc } from "./helpers.ts";

const skip = cannotBoot() ?? (!hasTool("debootstrap") ? "needs debootstrap (make deps installs it)" : undefined);
if (skip) console.log(`# skipping the sample tests: ${skip}`);

describe("samples", { skip }, () => {
  test("build-debian-rootfs.sh makes a bookworm rootfs that minc runs (about 30 s: the packages come from Debian's mirror)", {
    timeout: 600_000,
  }, () => {
    const work = mkdtempSync("/tmp/minc-test-debian-");
    try {
      const b = spawnSync(`${REPO}/samples/scripts/build-debian-rootfs.sh`, ["--suite", "bookworm", `${work}/rootfs`], {
        encoding: "utf8",
        timeout: 590_000,
      });
      assert.equal(b.status, 0, b.stderr.slice(-2000));
      const r = minc(["-r", `${work}/rootfs`, "sh", "-c", "cat /etc/debian_version; echo $$"]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^12\.\d+\n1\n$/);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    assert.deepEqual(leftovers(), []);
  });

  test("bad arguments: exit 2", () => {
    const r = spawnSync(`${REPO}/samples/scripts/build-debian-rootfs.sh`, ["--suite", "buster", "/tmp/x"], {
      encoding: "utf8",
    });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /bookworm or trixie/);
  });
});
