// The --debug trace of a real boot: phases, programs and the key lines.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { after, describe, test } from "node:test";
import { MINC, RUNDIR, cannotBoot, leftovers, minc, rootfs, settled, start, waitFor } from "./helpers.ts";

/** This test file's runtime dir, where minc makes its working dirs, in a regex. */
const base = RUNDIR.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

const skip = cannotBoot();

describe("the --debug trace", { skip }, () => {
  after(() => assert.deepEqual(leftovers(), [], "a container left something behind"));

  test("shows the five phases in order, each headed by its program, with real values", () => {
    const r = minc(["--debug", "-r", rootfs(), "--name", "traced", "ps"]);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assert.ok(
      lines.every((l) => l.startsWith("# ") || l.startsWith("+ ")),
      `not a trace line:\n${lines.filter((l) => !/^[#+] /.test(l)).join("\n")}`,
    );

    const heads = lines
      .filter((l) => l.startsWith("# ==== "))
      .map((l) => /# ==== (\S+): (?:phase (\d)\/5)?/.exec(l)!.slice(1, 3).join(" ").trim());
    assert.deepEqual(heads, [
      "minc 1",
      "minc-exec 2",
      "minc-exec 3",
      "minc-waiter",
      "minc-core 4",
      "minc-coat 4",
      "minc-leash 5",
      "minc-waiter",
    ]);

    const tmpdir = new RegExp(`^\\+ export MINC_TMPDIR=(${base}/minc\\d+-\\w{6})$`, "m").exec(r.stderr)?.[1];
    assert.ok(tmpdir, "no MINC_TMPDIR line");
    const expect = [
      new RegExp(`^\\+ mkdir -m 700 ${tmpdir} +# \\(a new name, as mktemp -d ${base}/minc\\d+-XXXXXX makes one\\)$`),
      new RegExp(`^\\+ printf '%s\\\\n' 'rm -rf --one-file-system ${tmpdir}' >> ${tmpdir}/cleanup$`),
      /^\+ exec \S+\/libexec\/minc-exec ps$/,
      new RegExp(`^\\+ \\S+/libexec/minc-core --write-down ${tmpdir}/minc-core.sh ps$`),
      new RegExp(
        `^\\+ exec /bin/sh \\S+/libexec/minc-waiter.sh ${tmpdir} (setpriv --pdeathsig KILL )?unshare -iump --propagation private /bin/sh \\S+/libexec/minc-fork.sh /bin/sh ${tmpdir}/minc-core.sh$`,
      ),
      new RegExp(`^\\+ echo "\\$\\$" > ${tmpdir}/waiter$`),
      new RegExp(`^\\+ echo \\d+ > ${tmpdir}/pid$`),
      /^\+ (echo|printf '%s\\n') traced > \/proc\/sys\/kernel\/hostname$/,
      new RegExp(
        `^\\+ mount -t overlay -o lowerdir=${rootfs()},upperdir=${tmpdir}/storage,workdir=${tmpdir}/work,nodev overlay ${tmpdir}/root$`,
      ),
      new RegExp(`^\\+ mount -t proc -o nosuid,nodev,noexec proc ${tmpdir}/root/proc$`),
      new RegExp(`^\\+ exec \\S+/libexec/minc-leash ${tmpdir}/root ps$`),
      new RegExp(`^\\+ echo [A-Za-z0-9+/=]+ \\| base64 -d > ${tmpdir}/seccomp.bpf$`),
      new RegExp(
        `^\\+ exec \\S+/env --default-signal=INT,QUIT \\S*perl -e .* ${tmpdir}/seccomp.bpf \\S*capsh --chroot=${tmpdir}/root --drop=\\S*cap_sys_chroot\\S* --inh= (--shell=/bin/sh )?-- -c 'exec "\\$0" "\\$@"' ps$`,
      ),
      /^# ==== minc-waiter: the container has ended/,
      new RegExp(`^\\+ rm -rf --one-file-system ${tmpdir}$`),
    ];
    let at = 0;
    for (const re of expect) {
      const found = lines.findIndex((l, i) => i >= at && re.test(l));
      assert.ok(found >= 0, `missing, or out of order: ${re}\n${r.stderr}`);
      at = found + 1;
    }
    // Every step has its comment: each "+ " line follows a comment or another "+ " line of the same step.
    assert.ok(lines[0].startsWith("# ==== minc:"));
    // The command's own output is not mixed into the trace.
    assert.match(r.stdout, /^\s*PID/);
  });

  test("pasted into sh, the trace boots the same container and cleans up after it", async () => {
    // Phase 1 is minc's own lines; its exec of minc-exec then does the rest again, as in the boot.
    const traced = minc([
      "--debug",
      "-r",
      rootfs(),
      "--name",
      "pasted",
      "/bin/sh",
      "-c",
      'echo "in $(hostname) as $$"',
    ]);
    assert.equal(traced.status, 0, traced.stderr);
    const script = traced.stderr
      .split("\n")
      .filter((l) => l.startsWith("+ "))
      .map((l) => l.slice(2))
      .join("\n");
    // The pasted lines make the same directory again: the traced run's guard must be gone first,
    // or it would take the new cleanup chain for its own (as no run but a pasted trace can do).
    const pid = new RegExp(`^\\+ export MINC_TMPDIR=${base}/minc(\\d+)-`, "m").exec(traced.stderr)?.[1];
    assert.ok(pid, `no MINC_TMPDIR line in ${base}:\n${traced.stderr}`);
    const guard = (): string =>
      spawnSync("pgrep", ["-af", `minc-waiter.sh --guard ${pid} `], { encoding: "utf8" }).stdout.trim();
    await waitFor(`the traced run's guard (of minc ${pid}) to be gone`, () => guard() === "", { saw: guard });
    const pasted = spawnSync("sh", ["-c", script], { encoding: "utf8", timeout: 60_000 });
    assert.equal(pasted.status, 0, pasted.stderr);
    assert.equal(pasted.stdout, "in pasted as 1\n");
    assert.equal(traced.stdout, pasted.stdout);
  });

  test("every '+ ' line is valid sh, with a working dir whose path has a quote and a blank (plain and --pivot)", () => {
    const dir = mkdtempSync("/tmp/minc-test-it's a dir-");
    try {
      for (const extra of [[], ["--pivot"]]) {
        const r = minc(["--debug", ...extra, "-r", rootfs(), "-t", dir, "true"]);
        assert.equal(r.status, 0, r.stderr);
        const bad = r.stderr
          .split("\n")
          .filter((l) => l.startsWith("+ "))
          .filter((l) => spawnSync("sh", ["-n", "-c", l.slice(2)]).status !== 0);
        assert.deepEqual(bad, [], `not valid sh (${extra.join(" ") || "plain"})`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the trace of a pivot_root boot shows pivot_root and the detach", () => {
    const r = minc(["--debug", "--pivot", "-r", rootfs(), "true"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^\+ pivot_root \. \.$/m);
    assert.match(r.stderr, /^\+ umount -l \.$/m);
    assert.match(r.stderr, /^\+ exec true$/m);
  });

  test("without --debug minc prints nothing of its own", () => {
    const r = minc(["-r", rootfs(), "true"]);
    assert.equal(r.status, 0);
    assert.equal(r.stderr, "");
    assert.equal(r.stdout, "");
  });
  test("a trace reader that goes away (minc --debug 2>&1 | head) stops the trace, not the boot: nothing left", async (t) => {
    // Cut the reader after a quarter, half, three quarters of the trace: the
    // programs writing it then (minc's Node, the waiter, the written-down
    // boot) must go on to the command and its cleanup, not die half way.
    const command = ["--debug", "-r", rootfs(), "sh", "-c", "exit 7"];
    const whole = minc(command);
    assert.equal(whole.status, 7, whole.stderr);
    const total = whole.stderr.trim().split("\n").length;
    for (const part of [1, 0.25, 0.5, 0.75].map((f) => Math.max(1, Math.round(total * f)))) {
      const run = start(MINC, command, { stdio: ["ignore", "ignore", "pipe"] });
      let seen = 0;
      run.child.stderr!.on("data", (d: Buffer) => {
        seen += d.toString().split("\n").length - 1;
        if (seen >= part) run.child.stderr!.destroy(); // (the reader goes; later writes meet EPIPE)
      });
      assert.equal(await run.exit(), 7, `the reader gone after ${part} of ${total} lines`);
      assert.deepEqual(await settled(leftovers), [], `the reader gone after ${part} of ${total} lines`);
    }
    t.diagnostic(`a trace of ${total} lines, cut at 1, 1/4, 1/2, 3/4`);
  });
});
