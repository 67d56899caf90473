// The boot minc-core writes down ahead (lib/boot/bootscript.ts): sh runs it as
// PID 1, and the container is the one minc-core makes when it boots inside.
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import { cannotBoot, ended, leftovers, minc, rootfs } from "./helpers.ts";

const skip = cannotBoot();

/** The container's mounts as it sees them: mountpoint, type and options, sorted. */
const MOUNTS = "cut -d' ' -f2-4 /proc/mounts | sort";

/** Run in the background (-B -k), which minc-core boots inside itself; return the log once it is done. */
async function bootedInside(args: string[]): Promise<{ log: string; dir: string }> {
  const r = minc(["-B", "-k", ...args]);
  assert.equal(r.status, 0, r.stderr);
  const dir = /See (\S+)\/log for output/.exec(r.stdout)?.[1];
  assert.ok(dir, r.stdout);
  await ended(dir); // (its waiter holds the lock to the end: the log is whole then)
  return { log: readFileSync(`${dir}/log`, "utf8"), dir };
}

/** Run script in a container of rootdir with -t work, --privileged: a confined container may not umount. */
function unconfinedIn(rootdir: string, work: string, script: string): ReturnType<typeof minc> {
  return minc(["--privileged", "-r", rootdir, "-t", work, "sh", "-c", script]);
}

describe("the boot written down ahead", { skip }, () => {
  after(() => assert.deepEqual(leftovers(), [], "a container left something behind"));

  test("makes the same container as minc-core booting inside: mounts, PID 1, hostname", async () => {
    const written = minc(["-k", "--name", "same", "-r", rootfs(), "sh", "-c", `${MOUNTS}; echo pid $$; hostname`]);
    assert.equal(written.status, 0, written.stderr);
    const dir = /minc -r \S+ -t (\S+)/.exec(written.stdout)?.[1] ?? "";
    try {
      assert.ok(existsSync(`${dir}/minc-core.sh`), `no minc-core.sh in ${dir}: ${written.stderr}`);
      const script = readFileSync(`${dir}/minc-core.sh`, "utf8");
      assert.match(script, /^mount -a -T /m, "its mounts are made by mount -a");
      assert.match(script, /^exec \S+\/env --default-signal=INT,QUIT \S*perl -e .* \S*capsh /m);
      assert.doesNotMatch(script, /libexec\/minc-(core|leash|coat)\b/, "no Node backend runs in the new namespaces");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const inside = await bootedInside([
      "--name",
      "same",
      "-r",
      rootfs(),
      "sh",
      "-c",
      `${MOUNTS}; echo pid $$; hostname`,
    ]);
    try {
      assert.ok(!existsSync(`${inside.dir}/minc-core.sh`), "-B wrote the boot down");
      const same = (out: string): string => out.replace(/minc\d+-\w{6}/g, "minc<pid>-<random>"); // (each its own working dir)
      assert.equal(same(written.stdout.replace(/^To reuse this, run: .*\n/m, "")), same(inside.log)); // (-B says no reuse line, as the shell MINCS)
      assert.match(written.stdout, /^pid 1\nsame\nTo reuse this, run: /m);
    } finally {
      rmSync(inside.dir, { recursive: true, force: true });
    }
  });

  test("sees the root's layers before they are mounted: a whiteout hides a file, a symlink leads inside the root", () => {
    const copy = mkdtempSync("/tmp/minc-test-layers-");
    const work = mkdtempSync("/tmp/minc-test-work-");
    try {
      cpSync(rootfs(), copy, { recursive: true, verbatimSymlinks: true });
      rmSync(`${copy}/etc/resolv.conf`, { force: true });
      writeFileSync(`${copy}/etc/hosts`, "# the rootfs's own\n");
      symlinkSync("/run/resolv.conf", `${copy}/etc/resolv.conf`); // as with systemd-resolved: absolute, inside
      // The first run removes /etc/hosts: a whiteout in the upper layer of -t WORK.
      const first = unconfinedIn(copy, work, "umount /etc/hosts && rm /etc/hosts && echo removed");
      assert.equal(first.status, 0, first.stderr);
      assert.equal(first.stdout, "removed\n");
      // The second run must see no /etc/hosts (not the lower one), make it, and bind the container's own on it.
      const second = minc([
        "-r",
        copy,
        "-t",
        work,
        "--name",
        "layers",
        "sh",
        "-c",
        "grep -q layers /etc/hosts && echo own-hosts; cat /run/resolv.conf",
      ]);
      assert.equal(second.status, 0, second.stderr);
      assert.equal(second.stdout, `own-hosts\n${readFileSync(`${work}/resolv.conf`, "utf8")}`);
      assert.equal(readFileSync(`${copy}/etc/hosts`, "utf8"), "# the rootfs's own\n", "the rootdir was written");
    } finally {
      rmSync(copy, { recursive: true, force: true });
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("a file it saw in a lower layer under a directory an upper layer made opaque: the mountpoint is made when the mount misses it", () => {
    const copy = mkdtempSync("/tmp/minc-test-opaque-");
    const work = mkdtempSync("/tmp/minc-test-work-");
    try {
      cpSync(rootfs(), copy, { recursive: true, verbatimSymlinks: true });
      writeFileSync(`${copy}/etc/hosts`, "# the rootfs's own\n");
      // /etc removed and made again: overlayfs marks it opaque (an xattr) in the upper layer, hiding the rootfs's /etc/hosts.
      const first = unconfinedIn(
        copy,
        work,
        "umount /etc/hosts /etc/resolv.conf && rm -rf /etc && mkdir /etc && echo remade",
      );
      assert.equal(first.status, 0, first.stderr);
      assert.equal(first.stdout, "remade\n");
      const second = minc([
        "-r",
        copy,
        "-t",
        work,
        "--name",
        "opaque",
        "sh",
        "-c",
        "grep -q opaque /etc/hosts && echo own-hosts; ls /etc",
      ]);
      assert.equal(second.status, 0, second.stderr);
      assert.equal(second.stdout, "own-hosts\nhosts\nresolv.conf\n");
    } finally {
      rmSync(copy, { recursive: true, force: true });
      rmSync(work, { recursive: true, force: true });
    }
  });
});
