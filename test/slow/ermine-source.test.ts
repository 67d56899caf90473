// Slow, not in `make test`: ermine-breeder builds the kernel from source,
// Debian's linux-source tarball given as a file:// URL, then boots it.
//
//   apt-get install linux-source-6.1 flex bison libelf-dev libssl-dev bc
//   MINC_SLOW_TESTS=1 node --test test/slow/ermine-source.test.ts
//
// A defconfig-based x86_64 kernel takes a long while on 2 cores.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { test } from "node:test";
import { REPO } from "../helpers.ts";

const CACHE = `${REPO}/test/.cache`;
const tarball = existsSync("/usr/src")
  ? readdirSync("/usr/src").find((f) => /^linux-source-.*\.tar\.xz$/.test(f))
  : undefined;

function reason(): string | undefined {
  if (!process.env.MINC_SLOW_TESTS) return "slow: set MINC_SLOW_TESTS=1";
  if (!tarball) return "needs /usr/src/linux-source-*.tar.xz (apt-get install linux-source-6.1)";
  for (const tool of ["flex", "bison", "bc", "gcc", "make", "qemu-system-x86_64", "cpio"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) return `needs ${tool}`;
  }
  return undefined;
}

const skip = reason();
if (skip) console.log(`# skipping the source build: ${skip}`);

test("ermine-breeder build from Debian's linux-source (file://), then testrun boots it", {
  skip,
  timeout: 4 * 3600_000,
}, () => {
  const dest = `${CACHE}/ermine-source`;
  const config = `${CACHE}/ermine-source.config`;
  writeFileSync(
    config,
    `LINUX_URL=file:///usr/src/${tarball}\nDESTDIR=${dest}\nWORKDIR=${CACHE}/ermine-source-work\nDLDIR=${CACHE}/ermine-download\n`,
  );
  const started = Date.now();
  const b = spawnSync(`${REPO}/bin/ermine-breeder`, ["build", "--config", config], {
    stdio: ["ignore", "pipe", "inherit"],
    encoding: "utf8",
  });
  console.log(`# source build: ${Math.round((Date.now() - started) / 1000)} s`);
  assert.equal(b.status, 0);
  const work = mkdtempSync("/tmp/ermine-source-");
  try {
    writeFileSync(`${work}/run.sh`, "uname -v; grep -w 9p /proc/filesystems; exit 7\n");
    const r = spawnSync(
      `${REPO}/bin/ermine-breeder`,
      ["testrun", "--config", config, "--work", work, "--timeout", "300"],
      { encoding: "utf8", env: { ...process.env, MINC_QEMU_ACCEL: "tcg" } },
    );
    assert.equal(r.status, 7, r.stderr);
    assert.match(r.stdout, /9p/);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
