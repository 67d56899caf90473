// Output to pipes and files, stdin that is not a terminal, and a real pty.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { after, describe, test } from "node:test";
import { MINC, cannotBoot, cleanEnv, hasTool, leftovers, minc, rootfs } from "./helpers.ts";
import { quoteAll } from "../lib/core/trace.ts";

const skip = cannotBoot();
const noScript = !hasTool("script") ? "needs script (bsdutils)" : undefined;

describe("input and output", { skip }, () => {
  after(() => assert.deepEqual(leftovers(), [], "a container left something behind"));

  test("stdin from a pipe reaches the command, stdout to a pipe comes back", () => {
    const r = minc(["-r", rootfs(), "sh", "-c", "test -t 0 || echo not-a-tty; tr a-z A-Z"], { input: "piped in\n" });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "not-a-tty\nPIPED IN\n");
  });

  test("stdout and stderr to files", () => {
    const dir = mkdtempSync("/tmp/minc-test-io-");
    try {
      const cmd = `${quoteAll([MINC, "-r", rootfs(), "sh", "-c", "echo out; echo err >&2"])} > ${dir}/out 2> ${dir}/err < /dev/null`;
      const r = spawnSync("sh", ["-c", cmd], { env: cleanEnv() });
      assert.equal(r.status, 0);
      assert.equal(readFileSync(`${dir}/out`, "utf8"), "out\n");
      assert.equal(readFileSync(`${dir}/err`, "utf8"), "err\n");
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test("on a terminal, the command has it as stdin and as /dev/console", { skip: noScript }, () => {
    const inner = quoteAll([
      MINC,
      "-r",
      rootfs(),
      "sh",
      "-c",
      "test -t 0 && test -t 1 && echo TERMINAL; grep -c ' /dev/console ' /proc/self/mountinfo; stty size",
    ]);
    const r = spawnSync("script", ["-qec", inner, "/dev/null"], {
      encoding: "utf8",
      env: cleanEnv({ TERM: "dumb" }),
      input: "",
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /TERMINAL/);
    assert.match(r.stdout, /^1\r?$/m, "the terminal must be bound on /dev/console");
  });
});
