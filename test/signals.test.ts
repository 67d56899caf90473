// Signals to minc reach the container, and nothing is left afterwards.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  watch,
  writeFileSync,
  type FSWatcher,
} from "node:fs";
import { after, describe, test, type TestContext } from "node:test";
import {
  MINC,
  PATIENCE,
  REPO,
  RUNDIR,
  allLeftovers,
  cannotBoot,
  cleanEnv,
  freePort,
  hasTool,
  leftovers,
  netLeftovers,
  rootfs,
  runtimeDirs,
  settled,
  signalled,
  sleep,
  start,
  waitFor,
  type Started,
} from "./helpers.ts";

const skip = cannotBoot();

/**
 * A minc watched through its boot, to be signalled at a moment of it named
 * by an event of the boot rather than by a delay, so that a sweep reaches
 * every part of the boot on a fast machine as on a slow one: the names its
 * working directory gets (the directory itself first, and its network
 * namespace), the step lines of its --debug trace, and "ready" from its
 * command once the container runs.
 */
interface Boot {
  run: Started;
  /** What the boot has made so far, in the order seen. */
  names: string[];
  /** The --debug lines that announce a step ("# ..."), so far. */
  steps: string[];
  /** When the command printed "ready" (ms after the start), if it has. */
  readyAt?: number;
  /** Resolves as soon as reached() holds, checked at each event; fails if minc ends first, or after PATIENCE. */
  at(what: string, reached: () => boolean): Promise<void>;
  /** What it saw, for a failure's message. */
  saw(): string;
  close(): void;
}

function watchBoot(args: string[]): Boot {
  const run = start(MINC, args, { stdio: ["ignore", "pipe", "pipe"] });
  const pid = run.child.pid!;
  const started = Date.now();
  const names: string[] = [];
  const steps: string[] = [];
  const checks = new Set<() => void>();
  const watchers: FSWatcher[] = [];
  let exited = false;
  let partial = "";
  const changed = (): void => {
    for (const check of checks) check();
  };
  const note = (name: string): void => {
    if (names.includes(name)) return;
    names.push(name);
    changed();
  };
  const watchDir = (dir: string, each: (name: string) => void): void => {
    try {
      const w = watch(dir, (_event, name) => {
        if (name) each(name);
      });
      w.on("error", () => {}); // (the working directory goes at the end)
      watchers.push(w);
      for (const name of readdirSync(dir)) each(name); // (made before the watch began)
    } catch {
      // gone already
    }
  };
  const prefix = `minc${pid}-`;
  watchDir(RUNDIR, (name) => {
    if (!name.startsWith(prefix) || names.some((n) => n.startsWith(RUNDIR))) return;
    names.unshift(`${RUNDIR}/${name}`);
    changed();
    watchDir(`${RUNDIR}/${name}`, note);
  });
  if (existsSync("/var/run/netns"))
    watchDir("/var/run/netns", (name) => {
      if (name === `minc${pid}`) note(`netns ${name}`);
    });
  const boot: Boot = {
    run,
    names,
    steps,
    at: (what, reached) =>
      new Promise<void>((res, rej) => {
        const timer = setTimeout(
          () => finish(new Error(`gave up after ${PATIENCE} ms waiting for ${what}; ${boot.saw()}`)),
          PATIENCE,
        );
        const finish = (error?: Error): void => {
          clearTimeout(timer);
          checks.delete(check);
          if (error) rej(error);
          else res();
        };
        const check = (): void => {
          if (reached()) finish();
          else if (exited) finish(new Error(`minc ended before ${what}; ${boot.saw()}`));
        };
        checks.add(check);
        check();
      }),
    saw: () =>
      `made: ${names.join(" ")}; ${steps.length} steps, the last: ${steps.at(-1) ?? "none"}; stdout ${JSON.stringify(run.stdout())}, stderr ${JSON.stringify(run.stderr().slice(-2000))}`,
    close: () => {
      for (const w of watchers) w.close();
    },
  };
  run.child.stdout!.on("data", () => {
    if (boot.readyAt === undefined && run.stdout().includes("ready")) boot.readyAt = Date.now() - started;
    changed();
  });
  run.child.stderr!.on("data", (d: Buffer) => {
    const lines = (partial + d.toString()).split("\n");
    partial = lines.pop()!;
    for (const line of lines) if (line.startsWith("# ")) steps.push(line);
    changed();
  });
  run.child.on("exit", () => {
    exited = true;
    changed();
  });
  return boot;
}

/**
 * Signal minc at moments of its boot: once events(boot) (what the boot has
 * made, or the steps its trace announced) counts k, for k = 0, 1, 2... until
 * the container runs, and then at that. After each, check() judges the
 * status and what is left. Returns how long the last boot took to run the
 * container.
 */
async function sweep(
  t: TestContext,
  args: string[],
  signal: NodeJS.Signals,
  events: (boot: Boot) => string[],
  check: (status: number, pid: number, when: string) => Promise<void>,
): Promise<number> {
  const moments: string[] = [];
  for (let k = 0; ; k++) {
    const boot = watchBoot(args);
    try {
      await boot.at(
        `event ${k} of the boot, or the container running`,
        () => events(boot).length >= k || boot.readyAt !== undefined,
      );
      const seen = events(boot);
      const running = seen.length < k;
      boot.run.child.kill(signal);
      const when = running
        ? "the container running"
        : seen.length === 0
          ? "its start"
          : seen.at(-1)!.replace(`${RUNDIR}/`, "");
      moments.push(when);
      await check(await boot.run.exit(), boot.run.child.pid!, `${signal} at ${when}`);
      if (running) {
        t.diagnostic(`${signal} at ${moments.length} moments: ${moments.map((m) => m.slice(0, 40)).join(" | ")}`);
        return boot.readyAt!;
      }
    } finally {
      boot.close();
    }
  }
}

/** Signal minc after random delays up to a little more than a boot takes here: only the invariants are checked. */
async function randomDelays(
  t: TestContext,
  args: string[],
  signal: NodeJS.Signals,
  bootMs: number,
  check: (status: number, pid: number, when: string) => Promise<void>,
): Promise<void> {
  const delays = Array.from({ length: 8 }, () => Math.round(Math.random() * bootMs * 1.2));
  t.diagnostic(`${signal} after ${delays.join(", ")} ms (a boot took ${bootMs} ms)`);
  for (const delay of delays) {
    const run = start(MINC, args, { stdio: ["ignore", "ignore", "ignore"] });
    await sleep(delay); // (a moment of the boot, whichever; not a wait for readiness)
    run.child.kill(signal);
    await check(await run.exit(), run.child.pid!, `${signal} after ${delay} ms`);
  }
}

describe("signals", { skip }, () => {
  after(async () => assert.deepEqual(await settled(allLeftovers), [], "a container left something behind"));

  for (const [signal, status] of [
    ["SIGTERM", 143],
    ["SIGINT", 130],
  ] as const) {
    test(`${signal} ends a container whose PID 1 does not handle it, exit ${status}, nothing left`, async () => {
      const r = await signalled(["sh", "-c", "echo ready; exec sleep 60"], signal);
      assert.equal(r.status, status);
      assert.deepEqual(leftovers(), []);
    });
  }

  test("a PID 1 that handles SIGTERM gets it and decides the exit status", async () => {
    const r = await signalled(["sh", "-c", "trap 'echo caught; exit 7' TERM; echo ready; sleep 60 & wait"], "SIGTERM");
    assert.equal(r.status, 7);
    assert.match(r.stdout, /caught/);
    assert.deepEqual(leftovers(), []);
  });

  test("a PID 1 that handles SIGTERM by re-raising it with the default action ends by it, exit 143", async () => {
    // (the kernel drops what PID 1 sends itself: the waiter must see the handler go and give the default action)
    const r = await signalled(
      ["sh", "-c", "trap 'trap - TERM; kill -TERM $$' TERM; echo ready; while :; do sleep 0.1; done"],
      "SIGTERM",
    );
    assert.equal(r.status, 143);
    assert.deepEqual(leftovers(), []);
  });

  test("SIGTERM during the boot stops it and cleans up, whenever it comes", async (t) => {
    // At every step of the boot (minc's Node, its guard, the exec into the
    // waiter, the written-down boot): a TERM caught by Node just before an
    // exec was once lost. The steps are those --debug announces, and,
    // without --debug, the files the boot makes in its working directory;
    // then random moments, whatever this machine's speed.
    const command = ["sh", "-c", "echo ready; exec sleep 10"];
    const stopped = async (status: number, _pid: number, when: string): Promise<void> => {
      assert.notEqual(status, 0, `${when}: the container ran on to its end`);
      assert.deepEqual(await settled(leftovers), [], when);
    };
    await sweep(t, ["--debug", "-r", rootfs(), ...command], "SIGTERM", (boot) => boot.steps, stopped);
    const bootMs = await sweep(t, ["-r", rootfs(), ...command], "SIGTERM", (boot) => boot.names, stopped);
    await randomDelays(t, ["-r", rootfs(), ...command], "SIGTERM", bootMs, stopped);
  });

  test("SIGKILL of minc during the boot and after it: its guard cleans up (working dir, network namespace)", async (t) => {
    // The command is named after this test process, so that no other's matches it.
    const mark = `59.${process.pid}`;
    const command = ["--net", "-r", rootfs(), "sh", "-c", `echo ready; exec sleep ${mark}`];
    const cleaned = async (_status: number, pid: number, when: string): Promise<void> => {
      const mine = (): string[] => [
        ...runtimeDirs().filter((d) => d.includes(`/minc${pid}-`)),
        ...netLeftovers([`minc${pid}`]),
      ];
      assert.deepEqual(await settled(mine), [], when);
      assert.equal(spawnSync("pgrep", ["-f", `sleep ${mark}`]).status, 1, `${when}: the container runs on`);
    };
    const bootMs = await sweep(t, command, "SIGKILL", (boot) => boot.names, cleaned);
    await randomDelays(t, command, "SIGKILL", bootMs, cleaned);
  });

  test("minc-fork.sh does not start a container whose waiter is gone (SIGKILLed before setpriv tied the two)", () => {
    const fork = `${REPO}/libexec/minc-fork.sh`;
    const orphaned = spawnSync("sh", [fork, "echo", "started"], {
      encoding: "utf8",
      env: { ...cleanEnv(), MINC_WAITER_PID: "1" },
    });
    assert.equal(orphaned.status, 1);
    assert.equal(orphaned.stdout, "");
    assert.match(orphaned.stderr, /waiter is gone; the container is not started/);
    // Its parent here is the sh that passes its own pid, as the waiter does; the variable goes no further.
    const tied = spawnSync(
      "sh",
      ["-c", `MINC_WAITER_PID=$$ sh ${fork} sh -c 'echo started "\${MINC_WAITER_PID-unset}"'`],
      { encoding: "utf8", env: cleanEnv() },
    );
    assert.equal(tied.status, 0, tied.stderr);
    assert.equal(tied.stdout, "started unset\n");
  });

  /**
   * The guard played alone: a sleep stands for minc (its PID is the guard's
   * argument), and body acts on both. At the end both are killed, and DIR goes.
   */
  async function withGuard(
    dir: string,
    body: (guard: Started, minc: Started) => Promise<void>,
    o: { tied?: boolean; env?: NodeJS.ProcessEnv } = {},
  ): Promise<void> {
    const minc = start("sleep", ["600"], { stdio: "ignore" });
    const tied = o.tied === false ? [] : ["tied"];
    const guard = start("sh", [`${REPO}/libexec/minc-waiter.sh`, "--guard", String(minc.child.pid), ...tied], {
      stdio: ["pipe", "ignore", "pipe"],
      ...(o.env ? { env: o.env } : {}),
    });
    try {
      await body(guard, minc);
    } finally {
      minc.child.kill("SIGKILL");
      guard.child.kill("SIGKILL");
      guard.child.kill("SIGCONT"); // (a stopped guard takes its SIGKILL once it runs again)
      await minc.exit();
      await guard.exit();
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** minc dies: its stand-in is SIGKILLed, and gone. */
  const dies = async (minc: Started): Promise<void> => {
    minc.child.kill("SIGKILL");
    await minc.exit();
  };

  test("a guard waiting for its waiter's end makes its wake-up FIFO outside the working directory", async () => {
    // (made there, a late guard's FIFO kept a user's rm -rf of a kept directory from removing it)
    const dir = mkdtempSync(`${RUNDIR}/minc-guard-`);
    writeFileSync(`${dir}/lock`, "");
    writeFileSync(`${dir}/cleanup`, "");
    await withGuard(dir, async (guard, minc) => {
      writeFileSync(`${dir}/waiter`, `${minc.child.pid}\n`); // (handed over to minc itself, as in the foreground)
      guard.child.stdin!.end(`dir ${dir}\n`);
      const fifo = (): string => {
        try {
          return readlinkSync(`/proc/${guard.child.pid}/fd/7`);
        } catch {
          return "";
        }
      };
      await waitFor("the guard to open its wake-up FIFO (fd 7)", () => fifo() !== "", { saw: fifo });
      assert.ok(!fifo().startsWith(`${dir}/`), `the FIFO was made in the working directory: ${fifo()}`);
    });
  });

  test("minc SIGKILLed between its mktemp (and the lock made with it) and telling the guard the name: the guard removes it", async () => {
    // Played with the guard alone: told only "made TEMPLATE", it finds TEMPLATE?????? holding the lock.
    const template = `${RUNDIR}/minc-guard${process.pid}-`;
    const dir = mkdtempSync(template);
    writeFileSync(`${dir}/lock`, "");
    await withGuard(dir, async (guard, minc) => {
      guard.child.stdin!.end(`made ${template}\n`);
      await dies(minc);
      assert.equal(await guard.exit(), 0);
      if (existsSync(dir)) assert.fail(`the guard left the directory minc made: ${readdirSync(dir).join(" ")}`);
    });
  });

  test("minc SIGKILLed between making its waiter file and writing its PID there: the guard still cleans up", async () => {
    // The waiter writes TMPDIR/waiter with `echo $$ >`: the file exists, empty, for a moment.
    // Played here with the guard alone, a sleep standing for minc, and a chain that removes the directory.
    const dir = mkdtempSync(`${RUNDIR}/minc-guard-`);
    writeFileSync(`${dir}/cleanup`, `rm -rf ${dir}\n`);
    await withGuard(dir, async (guard, minc) => {
      guard.child.stdin!.end(`dir ${dir}\n`);
      writeFileSync(`${dir}/waiter`, "");
      await dies(minc);
      assert.equal(await guard.exit(), 0);
      if (existsSync(dir))
        assert.fail(`the guard took the empty waiter file for a handover: ${readdirSync(dir).join(" ")}`);
    });
  });

  /** The guard (PID) is in its wait for the handover: its poll's sleep is its child. */
  const polling = (pid: number) => (): boolean => {
    let kids: string[];
    try {
      kids = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
    } catch {
      return false;
    }
    return kids.some((kid) => {
      try {
        return readFileSync(`/proc/${kid}/cmdline`, "utf8").startsWith("sleep\0");
      } catch {
        return false;
      }
    });
  };

  test("a container that ends, and is cleaned up, between two looks of its guard: not cleaned up twice, a kept directory stays", async () => {
    // The waiter writes its file, runs the chain (which removes the file) and exits, all while
    // the guard is not scheduled: played with the guard alone, SIGSTOPped in its wait, a sleep
    // standing for minc, and the real waiter on a directory kept as with -k.
    const template = `${RUNDIR}/minc-guard-`;
    const dir = mkdtempSync(template);
    writeFileSync(`${dir}/lock`, ""); // (as minc makes it with the directory)
    writeFileSync(`${dir}/cleanup`, "echo 'To reuse this, run: minc -t DIR'\n"); // (-k: the chain keeps the directory)
    const env = { ...cleanEnv(), MINC_DEBUG: "1" };
    await withGuard(
      dir,
      async (guard, minc) => {
        const gpid = guard.child.pid!;
        guard.child.stdin!.end(`made ${template}\ndir ${dir}\n`);
        await waitFor("the guard to wait for the handover", polling(gpid), { saw: guard.stderr });
        guard.child.kill("SIGSTOP");
        const waiter = spawnSync("sh", [`${REPO}/libexec/minc-waiter.sh`, dir, "true"], {
          encoding: "utf8",
          env: { ...cleanEnv(), MINC_GUARD_PID: String(gpid) },
        });
        assert.equal(waiter.status, 0, waiter.stderr);
        assert.ok(!existsSync(`${dir}/waiter`), "the waiter's chain removed its file");
        await dies(minc); // (minc is the waiter: gone with it)
        guard.child.kill("SIGCONT");
        assert.equal(await guard.exit(), 0);
        assert.ok(existsSync(dir), "the guard removed the kept directory, after the waiter had cleaned up");
        assert.doesNotMatch(guard.stderr(), /the container has ended/, "the guard ran the chain again");
      },
      { tied: false, env },
    );
  });

  test("a guard told a directory without a lock file does not make one (minc may be removing that directory)", async () => {
    const dir = mkdtempSync(`${RUNDIR}/minc-guard-`);
    await withGuard(dir, async (guard, minc) => {
      guard.child.stdin!.end(`dir ${dir}\n`);
      await waitFor("the guard to wait for the handover", polling(guard.child.pid!), { saw: guard.stderr });
      assert.ok(!existsSync(`${dir}/lock`), "the guard made the lock file");
      await dies(minc);
      assert.equal(await guard.exit(), 0);
      assert.deepEqual(readdirSync(dir), []);
    });
  });

  test("the guard does not keep the user's directory busy: a umount right after minc ends, or is SIGKILLed, works", async () => {
    const dir = mkdtempSync("/tmp/minc-test-cwd-");
    const umountNow = (what: string): void => {
      const u = spawnSync("umount", [dir], { encoding: "utf8" });
      assert.equal(u.status, 0, `${what}: ${u.stderr}`);
    };
    try {
      for (let i = 0; i < 5; i++) {
        assert.equal(spawnSync("mount", ["-t", "tmpfs", "tmpfs", dir]).status, 0);
        assert.equal(
          spawnSync(MINC, ["-r", rootfs(), "true"], { cwd: dir, env: cleanEnv(), stdio: "ignore" }).status,
          0,
        );
        umountNow(`run ${i}`);
      }
      assert.equal(spawnSync("mount", ["-t", "tmpfs", "tmpfs", dir]).status, 0);
      const run = start(MINC, ["-r", rootfs(), "sh", "-c", "echo ready; exec sleep 60"], {
        cwd: dir,
        stdio: ["ignore", "pipe", "pipe"],
      });
      await run.printed("ready");
      run.child.kill("SIGKILL");
      await run.exit();
      umountNow("after SIGKILL");
      assert.deepEqual(await settled(leftovers), []);
    } finally {
      spawnSync("umount", ["-l", dir]); // (lazily: a failed test must not leave it mounted)
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const netTools = ["ip", "iptables", "nsenter"].every(hasTool);
  const v1 = ["memory", "pids"].every((c) => existsSync(`/sys/fs/cgroup/${c}/cgroup.procs`));
  const why = !netTools ? "needs ip, iptables, nsenter" : !v1 ? "needs cgroup v1 memory and pids" : undefined;
  test("SIGKILL of minc while its container runs: the guard runs the cleanup chain (cage, network, port map, working dir)", {
    skip: why,
  }, async () => {
    assert.deepEqual(await allLeftovers(), [], "left by an earlier test");
    const mark = `58.${process.pid}`;
    const run = start(
      MINC,
      [
        "--mem-limit",
        "64M",
        "--pid-max",
        "50",
        "--net",
        "dens",
        "-p",
        `${await freePort()}:80`,
        "-r",
        rootfs(),
        "sh",
        "-c",
        `echo ready; exec sleep ${mark}`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await run.printed("ready");
    const running = await allLeftovers();
    for (const what of [new RegExp(`^${RUNDIR}/minc\\d+-`), /mincv/, /minc:minc\d+/, /\/mincs\/minc\d+/]) {
      assert.ok(
        running.some((x) => what.test(x)),
        `while it runs: ${what} in ${running.join(", ")}`,
      );
    }
    run.child.kill("SIGKILL");
    await run.exit();
    assert.deepEqual(await settled(allLeftovers), []);
    assert.equal(spawnSync("pgrep", ["-f", `sleep ${mark}`]).status, 1, "the container's command still runs");
  });

  test("Ctrl-C (INT to the whole process group) while minc-dens works: a quiet stop, exit 130, nothing left", {
    skip: why,
  }, async () => {
    // minc-dens waits for its lock, held here meanwhile, so the INT finds it
    // at work, as a Ctrl-C can; the lock goes once the INT is sent, as
    // another minc's minc-dens lets it go (the cleanup needs it too).
    const lock = "/var/run/minc-dens.lock";
    const holder = start("flock", [lock, "sh", "-c", "echo locked; exec cat > /dev/null"], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let run: Started | undefined;
    try {
      await holder.printed("locked");
      // detached: a process group of its own, as a terminal's foreground job has.
      run = start(MINC, ["--net", "dens", "-r", rootfs(), "sleep", "30"], {
        stdio: ["ignore", "ignore", "pipe"],
        detached: true,
      });
      const group = run.child.pid!;
      const saw = (): string => {
        const ps = spawnSync("ps", ["-o", "pid=,args=", "-g", String(group)], { encoding: "utf8" })
          .stdout.trim()
          .replace(/\s+/g, " ");
        return `blocked on it: ${
          blockedOn(lock)
            .map((p) => `${p} (group ${groupOf(p)})`)
            .join(" ") || "none"
        }; minc's group ${group}: ${ps}; its stderr ${JSON.stringify(run!.stderr())}`;
      };
      await waitFor(`minc-dens to wait for ${lock}`, () => blockedOn(lock).some((pid) => groupOf(pid) === group), {
        saw,
      });
      process.kill(-group, "SIGINT");
      holder.child.stdin!.end();
      assert.equal(await run.exit(), 130, run.stderr());
      assert.equal(run.stderr(), "", "a Ctrl-C is no failure");
    } finally {
      holder.child.stdin!.end();
      await holder.exit();
      if (run && run.child.exitCode === null && run.child.signalCode === null) {
        run.child.kill("SIGTERM"); // (a failed test must not leave it running)
        await run.exit();
      }
    }
    assert.deepEqual(await settled(allLeftovers), []);
  });
});

/** The processes waiting for a flock of FILE (/proc/locks: "->" lines, indented deeper for those queued behind another waiter). */
function blockedOn(file: string): number[] {
  const { dev, ino } = statOf(file);
  return readFileSync("/proc/locks", "utf8")
    .split("\n")
    .map((l) => /^\d+:\s+-> FLOCK\s+\w+\s+\w+\s+(\d+) ([0-9a-f]+):([0-9a-f]+):(\d+) /.exec(l))
    .filter((m) => m && parseInt(m[2], 16) === dev.major && parseInt(m[3], 16) === dev.minor && Number(m[4]) === ino)
    .map((m) => Number(m![1]));
}

function statOf(file: string): { dev: { major: number; minor: number }; ino: number } {
  const [ino, major, minor] = spawnSync("stat", ["-c", "%i %Hd %Ld", file], { encoding: "utf8" })
    .stdout.trim()
    .split(" ")
    .map(Number);
  return { dev: { major, minor }, ino };
}

/** The process group of PID (0 when it is gone). */
function groupOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
  } catch {
    return 0;
  }
}
