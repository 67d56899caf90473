// -B: minc returns at once; the container runs on and cleans up after itself.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import { cannotBoot, ended, leftovers, minc, rootfs, waitFor } from "./helpers.ts";

const skip = cannotBoot();

/** What a working directory holds now, for a failed wait's message. */
function contents(dir: string): string {
  return existsSync(dir) ? `${dir}: ${readdirSync(dir).join(" ")}` : `${dir} is gone`;
}

function readOr(path: string, none = ""): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return none;
  }
}

/** The processes whose command line has this text. */
function pgrep(text: string): string {
  return spawnSync("pgrep", ["-af", text], { encoding: "utf8" }).stdout.trim();
}

describe("background mode", { skip }, () => {
  after(() => assert.deepEqual(leftovers(), [], "a container left something behind"));

  test("-B returns while the container runs on, logs the output, and cleans the working dir at the end", async () => {
    // The command waits for a file the test makes only once minc -B has
    // returned: had minc waited for the container, it would not return (and
    // minc() would fail at its bound); the command seeing the file shows it ran on.
    const gate = mkdtempSync("/tmp/minc-test-gate-");
    let running = ""; // (its working dir, once minc -B said it)
    try {
      const command = `echo from-the-background; ps -o pid,comm; echo waiting; while [ ! -e ${gate}/go ]; do sleep 0.05; done; echo seen > ${gate}/seen`;
      const r = minc(["-B", "-r", rootfs(), "-b", gate, "sh", "-c", command]);
      assert.equal(r.status, 0, r.stderr);
      const dir = /See (\S+)\/log for output/.exec(r.stdout)?.[1];
      assert.ok(dir, r.stdout);
      running = dir;
      const log = `${dir}/log`;
      await waitFor(`${log} to say the command waits`, () => readOr(log).includes("waiting\n"), {
        saw: () => `${contents(dir)}; log ${JSON.stringify(readOr(log))}`,
      });
      assert.ok(existsSync(`${dir}/pid`), `the container is not running: ${contents(dir)}`);
      const seen = readOr(log);
      assert.match(seen, /from-the-background/);
      assert.match(seen, /^\s*1 sh$/m);
      writeFileSync(`${gate}/go`, "");
      await waitFor(`${dir} to be removed at the container's end`, () => !existsSync(dir), {
        saw: () => contents(dir),
      });
      assert.equal(
        readOr(`${gate}/seen`, "(none)"),
        "seen\n",
        "the command did not see the file made after minc -B returned",
      );
    } finally {
      writeFileSync(`${gate}/go`, ""); // (the container ends, should the test have failed before)
      if (running) await ended(running);
      rmSync(gate, { recursive: true, force: true });
    }
  });

  test("-B: a waiter SIGKILLed while its container runs is cleaned up after by its watcher", async () => {
    const r = minc(["-B", "-r", rootfs(), "sleep", "587"]); // (longer than any wait here: a container that ran on would be seen)
    assert.equal(r.status, 0, r.stderr);
    const dir = /See (\S+)\/log for output/.exec(r.stdout)?.[1];
    assert.ok(dir, r.stdout);
    await waitFor(
      `the container of ${dir} to start`,
      () => readOr(`${dir}/pid`).endsWith("\n") && readOr(`${dir}/waiter`).endsWith("\n"),
      { saw: () => contents(dir) },
    );
    const pid = Number(readFileSync(`${dir}/pid`, "utf8"));
    const command = (): string => readOr(`/proc/${pid}/cmdline`).replaceAll("\0", " ").trim(); // ("" once it is gone, or a zombie)
    try {
      // (the PID is the container's from its boot on, which execs the command at its end)
      await waitFor(`the container's PID ${pid} to run the command`, () => command() === "sleep 587", { saw: command });
      // (its watcher is tied to the waiter once setpriv has execed sh)
      const watcher = `minc-waiter.sh --watch ${dir}`;
      await waitFor(
        "the watcher to run",
        () =>
          pgrep(watcher)
            .split("\n")
            .some((l) => / \/bin\/sh \S+minc-waiter\.sh --watch /.test(l)),
        { saw: () => pgrep(watcher) },
      );
      process.kill(Number(readFileSync(`${dir}/waiter`, "utf8")), "SIGKILL");
      await waitFor(`${dir} to be removed`, () => !existsSync(dir), { saw: () => contents(dir) });
      await waitFor(`the container's command (PID ${pid}) to be gone`, () => command() !== "sleep 587", {
        saw: command,
      });
      await waitFor("the watcher to be gone", () => pgrep(watcher) === "", { saw: () => pgrep(watcher) });
    } finally {
      // (only when the test failed: a container that ran on, or a waiter not yet killed)
      if (command() === "sleep 587") process.kill(pid, "SIGKILL");
      const waiter = Number(readOr(`${dir}/waiter`, "0"));
      if (waiter && readOr(`/proc/${waiter}/cmdline`).includes(`minc-waiter.sh\0${dir}`))
        process.kill(waiter, "SIGTERM");
    }
  });

  test("-B -k keeps the log", async () => {
    const r = minc(["-B", "-k", "-r", rootfs(), "echo", "kept"]);
    assert.equal(r.status, 0, r.stderr);
    const dir = /See (\S+)\/log for output/.exec(r.stdout)?.[1];
    assert.ok(dir, r.stdout);
    try {
      await ended(dir);
      assert.equal(readOr(`${dir}/log`, "(none)"), "kept\n");
      assert.ok(!existsSync(`${dir}/pid`), `the pid file outlived the container: ${contents(dir)}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
