// ferret, the OCI runtime: bundles driven through its command line as the
// conformance suite and podman drive runc, and podman itself with
// --runtime ferret. Every container's state goes under a --root of this test
// file's own, and its cgroups under a cgroupsPath of its own.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname } from "node:path";
import { after, before, describe, test } from "node:test";
import { PATIENCE, REPO, type Run, cannotBoot, hasTool, rootfs, waitFor } from "./helpers.ts";

const FERRET = `${REPO}/bin/ferret`;
const skip = cannotBoot() ?? (hasTool("perl") ? undefined : "needs perl");

let dir = "";
let root = "";
/** The cgroup parent every container of this file goes under (cgroupsPath), so that none is another's. */
let cgroupParent = "";
let made = 0;

/**
 * Run ferret to its end. Its stdout and stderr are files: a container that
 * create leaves running holds them open (as a runtime's caller expects),
 * so pipes would not end.
 */
function ferret(args: string[]): Run {
  const out = `${dir}/out`;
  const err = `${dir}/err`;
  const fds = [openSync(out, "w"), openSync(err, "w")];
  try {
    const r = spawnSync(FERRET, ["--root", root, ...args], { stdio: ["ignore", fds[0], fds[1]], timeout: PATIENCE });
    if (r.error) throw r.error;
    return { status: r.status, signal: r.signal, stdout: readFileSync(out, "utf8"), stderr: readFileSync(err, "utf8") };
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

type Json = Record<string, unknown>;

/** A bundle of the busybox rootfs with `ferret spec`'s config.json, changed by edit; its id is fresh. */
function bundle(edit: (c: Json & { process: Json; linux: Json }) => void = () => {}): { id: string; dir: string } {
  const id = `ferret-test-${process.pid}-${++made}`;
  const b = `${dir}/${id}`;
  mkdirSync(b);
  const r = spawnSync(FERRET, ["spec", "--bundle", b], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const c = JSON.parse(readFileSync(`${b}/config.json`, "utf8"));
  c.root.path = rootfs();
  c.linux.cgroupsPath = `${cgroupParent}/${id}`;
  edit(c);
  writeFileSync(`${b}/config.json`, JSON.stringify(c));
  return { id, dir: b };
}

function state(id: string): Json {
  const r = ferret(["state", id]);
  assert.equal(r.status, 0, r.stderr);
  try {
    return JSON.parse(r.stdout);
  } catch {
    return assert.fail(`ferret state ${id} printed no JSON: stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr}`);
  }
}

/** What this file's containers left: state directories, cgroups. */
function leftovers(): string[] {
  const states = existsSync(root) ? readdirSync(root).map((id) => `${root}/${id}`) : [];
  const cgroups = readdirSync("/sys/fs/cgroup")
    .map((c) => `/sys/fs/cgroup/${c}${cgroupParent}`)
    .filter((p) => existsSync(p))
    .flatMap((p) =>
      readdirSync(p, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => `${p}/${e.name}`),
    );
  return [...states, ...cgroups];
}

describe("ferret", { skip }, () => {
  before(() => {
    dir = mkdtempSync("/tmp/minc-test-ferret-");
    chmodSync(dir, 0o711); // (root of a container's user namespace is no one on the host: it must pass through)
    root = `${dir}/state`;
    cgroupParent = `/ferret-tests-${process.pid}`;
  });
  after(() => {
    const left = leftovers();
    // Whatever a failed test left is removed before the verdict: no container stays on the host.
    for (const id of existsSync(root) ? readdirSync(root) : []) ferret(["delete", "--force", id]);
    rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(left, [], "a container left something behind");
  });

  test("run: the process is PID 1 with the config's hostname, args and environment; its exit status is ferret's", () => {
    const b = bundle((c) => {
      c.hostname = "ferret-box";
      c.process.args = ["sh", "-c", 'echo "$$ $(hostname) $GREETING $(pwd)"; exit 7'];
      (c.process.env as string[]).push("GREETING=hello");
      c.process.cwd = "/tmp";
    });
    const r = ferret(["run", "--bundle", b.dir, b.id]);
    assert.equal(r.status, 7, r.stderr);
    assert.equal(r.stdout, "1 ferret-box hello /tmp\n");
    assert.deepEqual(leftovers(), []);
  });

  test("--debug: the trace is a script; pasted into sh, it makes and runs the same container, and removes it", () => {
    const b = bundle((c) => {
      c.hostname = "traced";
      c.process.args = ["sh", "-c", "echo $$ $(hostname)"];
    });
    const traced = spawnSync(FERRET, ["--debug", "--root", root, "run", "--bundle", b.dir, b.id], {
      encoding: "utf8",
      timeout: PATIENCE,
    });
    assert.equal(traced.status, 0, traced.stderr);
    assert.equal(traced.stdout, "1 traced\n");
    const lines = traced.stderr.trim().split("\n");
    assert.ok(
      lines.every((l) => /^[#+] /.test(l)),
      `not a trace line:\n${lines.filter((l) => !/^[#+] /.test(l)).join("\n")}`,
    );
    assert.deepEqual(leftovers(), []);
    const script = lines
      .filter((l) => l.startsWith("+ "))
      .map((l) => l.slice(2))
      .join("\n");
    const replay = spawnSync("sh", ["-e"], { input: `${script}\n`, encoding: "utf8", timeout: PATIENCE });
    assert.equal(replay.status, 0, replay.stderr);
    assert.equal(replay.stdout, "1 traced\n");
    assert.deepEqual(leftovers(), []);
  });

  test("create, start, state, pause, resume, ps, kill, delete: the statuses a caller sees, the pid file, nothing left", async () => {
    const b = bundle((c) => {
      c.process.args = ["sleep", "600"];
    });
    const r = ferret(["create", "--bundle", b.dir, "--pid-file", `${dir}/${b.id}.pid`, b.id]);
    assert.equal(r.status, 0, r.stderr);
    const created = state(b.id);
    assert.equal(created.status, "created");
    assert.equal(Number(readFileSync(`${dir}/${b.id}.pid`, "utf8")), created.pid);
    // Created, the init waits before the user's program: it is not sleep yet.
    assert.notEqual(readFileSync(`/proc/${created.pid}/comm`, "utf8").trim(), "sleep");
    assert.equal(ferret(["start", b.id]).status, 0);
    const comm = (): string => readFileSync(`/proc/${created.pid}/comm`, "utf8").trim();
    await waitFor("the init to become sleep", () => comm() === "sleep", { saw: comm });
    assert.equal(state(b.id).status, "running");
    assert.equal(ferret(["pause", b.id]).status, 0);
    assert.equal(state(b.id).status, "paused");
    const freezer = `/sys/fs/cgroup/freezer${cgroupParent}/${b.id}/freezer.state`;
    assert.equal(readFileSync(freezer, "utf8").trim(), "FROZEN", "the kernel's freezer holds it");
    const ps = ferret(["ps", "--format", "json", b.id]);
    assert.equal(ps.status, 0, ps.stderr);
    assert.equal(ps.stdout, `[${created.pid}]\n`);
    assert.equal(ferret(["resume", b.id]).status, 0);
    assert.equal(state(b.id).status, "running");
    const listed = ferret(["list", "--format", "json"]);
    assert.equal(listed.status, 0, listed.stderr);
    assert.ok(
      (JSON.parse(listed.stdout) as Json[]).some((c) => c.id === b.id && c.status === "running"),
      listed.stdout,
    );
    const refused = ferret(["delete", b.id]);
    assert.notEqual(refused.status, 0, "a running container is not deleted without --force");
    assert.equal(ferret(["kill", b.id, "KILL"]).status, 0);
    await waitFor("the container to stop", () => state(b.id).status === "stopped", {
      saw: () => JSON.stringify(state(b.id)),
    });
    assert.equal(state(b.id).pid, 0);
    assert.equal(ferret(["delete", b.id]).status, 0);
    assert.notEqual(ferret(["state", b.id]).status, 0);
    assert.deepEqual(leftovers(), []);
  });

  test("delete --force of a paused container: it is thawed and killed, nothing left", async () => {
    const b = bundle((c) => {
      c.process.args = ["sleep", "600"];
    });
    assert.equal(ferret(["create", "--bundle", b.dir, b.id]).status, 0);
    const pid = state(b.id).pid as number;
    assert.equal(ferret(["start", b.id]).status, 0);
    assert.equal(ferret(["pause", b.id]).status, 0);
    const r = ferret(["delete", "--force", b.id]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(
      !existsSync(`/proc/${pid}`) || /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8")),
      "it still runs",
    );
    assert.deepEqual(leftovers(), []);
  });

  test("a new user namespace: its ids mapped as the config says, root inside is not root outside", () => {
    const b = bundle((c) => {
      (c.linux.namespaces as Json[]).push({ type: "user" });
      c.linux.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
      c.linux.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
      c.process.args = ["sh", "-c", "id -u; cat /proc/self/uid_map; grep -E '^(Uid|CapEff)' /proc/self/status"];
    });
    const r = ferret(["run", "--bundle", b.dir, b.id]);
    assert.equal(r.status, 0, r.stderr);
    const [uid, map] = r.stdout.split("\n");
    assert.equal(uid, "0");
    assert.deepEqual(map.trim().split(/\s+/), ["0", "100000", "65536"]);
    assert.deepEqual(leftovers(), []);
  });

  test("ferret create SIGKILLed half way: delete --force removes all of it", async () => {
    const b = bundle((c) => {
      c.process.args = ["sleep", "600"];
    });
    const out = openSync(`${dir}/${b.id}.out`, "w");
    const create = spawn(FERRET, ["--root", root, "create", "--bundle", b.dir, b.id], { stdio: ["ignore", out, out] });
    closeSync(out);
    // (the moment its init is written: what create has made by then is a container half made)
    await waitFor("create to write the init", () => existsSync(`${root}/${b.id}/init.sh`) || create.exitCode !== null);
    create.kill("SIGKILL");
    await new Promise((resolve) => create.once("exit", resolve));
    const r = ferret(["delete", "--force", b.id]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(leftovers(), []);
    const sleeping = spawnSync("pgrep", ["-f", `${root}/${b.id}/`], { encoding: "utf8" }).stdout.trim();
    assert.equal(sleeping, "", "a process of the container is left");
  });

  test("the config's confinement: bounding capabilities, no_new_privs, its seccomp profile, masked paths", () => {
    const b = bundle((c) => {
      c.process.args = [
        "sh",
        "-c",
        "grep -E 'CapBnd|NoNewPrivs' /proc/self/status; mkdir /tmp/d 2>/dev/null || echo mkdir-blocked; wc -c < /proc/timer_list",
      ];
      (c.process.capabilities as Json).bounding = ["CAP_KILL", "CAP_CHOWN"];
      c.linux.seccomp = {
        defaultAction: "SCMP_ACT_ALLOW",
        syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 1 }],
      };
      c.linux.maskedPaths = ["/proc/timer_list"];
    });
    const r = ferret(["run", "--bundle", b.dir, b.id]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /CapBnd:\s+0000000000000021\n/); // chown (0) and kill (5)
    assert.match(r.stdout, /NoNewPrivs:\s+1\n/);
    assert.match(r.stdout, /mkdir-blocked/);
    assert.match(r.stdout, /^0$/m, "/proc/timer_list is masked");
  });

  test("bad input: one line naming the problem, a non-zero exit, nothing made", () => {
    const cases: [string, (c: Json & { process: Json; linux: Json }) => void, RegExp][] = [
      ["a field that confines and is not supported", (c) => (c.linux.intelRdt = { closID: "x" }), /linux\.intelRdt/],
      ["a terminal", (c) => (c.process.terminal = true), /process\.terminal/],
      ["an unknown capability", (c) => ((c.process.capabilities as Json).bounding = ["CAP_NOPE"]), /CAP_NOPE/],
      ["a bad seccomp action", (c) => (c.linux.seccomp = { defaultAction: "SCMP_ACT_NOPE" }), /linux\.seccomp/],
      ["a sysctl of the host's", (c) => (c.linux.sysctl = { "kernel.core_pattern": "x" }), /kernel\.core_pattern/],
      [
        "a mount destination with ..",
        (c) => (c.mounts as Json[]).push({ destination: "/../x", type: "tmpfs" }),
        /\.\./,
      ],
    ];
    for (const [what, edit, says] of cases) {
      const b = bundle(edit);
      const r = ferret(["create", "--bundle", b.dir, b.id]);
      assert.notEqual(r.status, 0, what);
      assert.match(r.stderr, says, what);
      assert.equal(r.stderr.trim().split("\n").length, 1, `${what}: ${r.stderr}`);
    }
    writeFileSync(`${dir}/broken.json`, "{");
    mkdirSync(`${dir}/broken`);
    cpSync(`${dir}/broken.json`, `${dir}/broken/config.json`);
    const broken = ferret(["create", "--bundle", `${dir}/broken`, "broken"]);
    assert.equal(broken.status, 2);
    assert.match(broken.stderr, /not valid JSON/);
    for (const id of ["../x", "a/b", ""]) assert.equal(ferret(["state", id]).status, 2, `id ${JSON.stringify(id)}`);
    assert.deepEqual(leftovers(), []);
  });

  const noPodman = hasTool("podman") ? undefined : "needs podman (make test-deps)";
  test("podman run --runtime ferret: output, exit status, podman's capabilities and filter", {
    skip: noPodman,
  }, async () => {
    const store = `${dir}/podman`;
    const podman = (args: string[], input?: Buffer): Run => {
      const r = spawnSync(
        "podman",
        [
          "--root",
          `${store}/root`,
          "--runroot",
          `${store}/runroot`,
          "--tmpdir",
          `${store}/tmp`,
          "--storage-driver",
          "overlay",
          "--cgroup-manager",
          "cgroupfs",
          ...args,
        ],
        { encoding: "utf8", input, timeout: 2 * PATIENCE },
      );
      if (r.error) throw r.error;
      return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
    };
    // podman runs ferret with the default --root, /run/ferret: what it made there must be gone again.
    // (only the containers of this test's own podman store: their bundles are in it)
    const states = (): string[] =>
      (existsSync("/run/ferret") ? readdirSync("/run/ferret") : []).filter((id) => {
        try {
          return (JSON.parse(readFileSync(`/run/ferret/${id}/state.json`, "utf8")).bundle as string).startsWith(store);
        } catch {
          return false;
        }
      });
    const statesBefore = states();
    const tar = spawnSync("tar", ["-C", rootfs(), "-c", "."], { maxBuffer: 1 << 30 });
    assert.equal(tar.status, 0);
    assert.equal(podman(["import", "-", "ferret-test-bbx"], tar.stdout as unknown as Buffer).status, 0);
    try {
      const r = podman([
        "--runtime",
        FERRET,
        "run",
        "--rm",
        "--cgroup-parent",
        cgroupParent,
        "--network",
        "none",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
        "ferret-test-bbx",
        "sh",
        "-c",
        "echo $$; grep -E 'CapBnd|Seccomp:' /proc/self/status; exit 3",
      ]);
      assert.equal(r.status, 3, r.stderr);
      const [pid, bnd, seccomp] = r.stdout.trim().split("\n");
      assert.equal(pid, "1");
      assert.match(bnd, /CapBnd:\s+00000000800405fb/, "podman's default capabilities");
      assert.match(seccomp, /Seccomp:\s+2/, "podman's seccomp profile is loaded");
      assert.equal(podman(["ps", "-a", "-q"]).stdout.trim(), "", "--rm left a container");

      // run -d, exec (its exit status, in the container's PID namespace), pause/unpause, stop, rm
      const limits = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"];
      const d = podman(
        ["--runtime", FERRET, "run", "-d", "--cgroup-parent", cgroupParent, "--network", "none", ...limits].concat([
          "--pids-limit",
          "100",
          "ferret-test-bbx",
          "sh",
          "-c",
          "echo started; exec sleep 600",
        ]),
      );
      assert.equal(d.status, 0, d.stderr);
      const cid = d.stdout.trim();
      const inspect = (): string => podman(["inspect", "--format", "{{.State.Status}}", cid]).stdout.trim();
      const e = podman(["--runtime", FERRET, "exec", cid, "sh", "-c", "echo $$ $(cat /proc/1/comm); exit 5"]);
      assert.equal(e.status, 5, e.stderr);
      assert.match(e.stdout, /^\d+ sleep\n$/, "exec runs beside the container's PID 1");
      assert.equal(podman(["--runtime", FERRET, "pause", cid]).status, 0);
      assert.equal(inspect(), "paused");
      assert.equal(podman(["--runtime", FERRET, "unpause", cid]).status, 0);
      assert.equal(inspect(), "running");
      assert.equal(podman(["--runtime", FERRET, "stop", "-t", "1", cid]).status, 0);
      assert.equal(inspect(), "exited");
      assert.match(podman(["logs", cid]).stdout, /^started$/m);
      assert.equal(podman(["--runtime", FERRET, "rm", cid]).status, 0);
      // (podman's delete --force runs ferret with conmon's PATH, where the first node may be the system's older one)
      assert.deepEqual(
        states().filter((id) => !statesBefore.includes(id)),
        [],
        "ferret's state of podman's container is left",
      );
    } finally {
      podman(["rmi", "-f", "ferret-test-bbx"]);
      spawnSync("umount", ["-R", `${store}/root/overlay`], { stdio: "ignore" });
      rmSync(store, { recursive: true, force: true });
    }
    // podman's own cgroups for its conmon go under --cgroup-parent too (this test's): once its conmons are gone, removed
    const conmons = readdirSync("/sys/fs/cgroup")
      .map((c) => `/sys/fs/cgroup/${c}${cgroupParent}/conmon`)
      .filter((d) => existsSync(`${d}/cgroup.procs`));
    const procs = (d: string): string => readFileSync(`${d}/cgroup.procs`, "utf8").trim();
    await waitFor("podman's conmons to end", () => conmons.every((d) => !procs(d)), {
      saw: () => conmons.map((d) => `${d}: ${procs(d)}`).join("; "),
    });
    for (const d of conmons) {
      rmdirSync(d);
      if (readdirSync(dirname(d), { withFileTypes: true }).every((e) => !e.isDirectory())) rmdirSync(dirname(d));
    }
  });
});
