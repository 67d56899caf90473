// containerd with ferret as its runtime: an instance of its own (a socket,
// root and state under this test's temp dir, the CRI plugin off), ctr's run,
// run -d, task exec, ps, kill and delete, with --runc-binary ferret. The
// image is the busybox rootfs, saved as an OCI archive by podman.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { PATIENCE, REPO, type Run, cannotBoot, hasTool, rootfs, waitFor } from "./helpers.ts";

const FERRET = `${REPO}/bin/ferret`;
const skip =
  cannotBoot() ??
  (["containerd", "ctr", "containerd-shim-runc-v2", "podman"].find((t) => !hasTool(t))
    ? "needs containerd and podman (apt-get install containerd podman)"
    : undefined);

let dir = "";
let daemon: ChildProcess | undefined;
/** A containerd namespace of this test's own: ferret's --root is /run/containerd/runc/NAMESPACE. */
const NS = `ferret-test-${process.pid}`;
/** (the name podman gives the imported image, which ctr imports it under) */
const IMAGE = "localhost/ferret-test-bbx:latest";

function ctr(args: string[]): Run {
  const r = spawnSync("ctr", ["-a", `${dir}/sock`, "-n", NS, ...args], { encoding: "utf8", timeout: PATIENCE });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** ferret's containers of this namespace that are left. */
function states(): string[] {
  const root = `/run/containerd/runc/${NS}`;
  return existsSync(root) ? readdirSync(root) : [];
}

describe("containerd with --runc-binary ferret", { skip }, () => {
  before(async () => {
    dir = mkdtempSync("/tmp/minc-test-containerd-");
    writeFileSync(
      `${dir}/config.toml`,
      [
        "version = 2",
        `root = "${dir}/root"`,
        `state = "${dir}/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        `  address = "${dir}/sock"`,
        "[ttrpc]",
        `  address = "${dir}/sock.ttrpc"`,
        "",
      ].join("\n"),
    );
    daemon = spawn("containerd", ["--config", `${dir}/config.toml`], { stdio: "ignore" });
    await waitFor("containerd's socket", () => existsSync(`${dir}/sock`));
    const store = `${dir}/podman`;
    const podman = (args: string[], input?: Buffer): Run => {
      const r = spawnSync(
        "podman",
        ["--root", `${store}/root`, "--runroot", `${store}/runroot`, "--tmpdir", `${store}/tmp`, ...args],
        { encoding: "utf8", input, timeout: 2 * PATIENCE },
      );
      return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
    };
    const tar = spawnSync("tar", ["-C", rootfs(), "-c", "."], { maxBuffer: 1 << 30 });
    assert.equal(podman(["import", "-", "ferret-test-bbx"], tar.stdout as unknown as Buffer).status, 0);
    const saved = podman(["save", "--format", "oci-archive", "-o", `${dir}/image.tar`, "ferret-test-bbx"]);
    assert.equal(saved.status, 0, saved.stderr);
    podman(["rmi", "-f", "ferret-test-bbx"]);
    spawnSync("umount", ["-R", `${store}/root/overlay`], { stdio: "ignore" });
    const imported = ctr(["images", "import", "--all-platforms", `${dir}/image.tar`]);
    assert.equal(imported.status, 0, imported.stderr);
  });

  after(async () => {
    const left = states();
    for (const id of left) spawnSync(FERRET, ["--root", `/run/containerd/runc/${NS}`, "delete", "--force", id]);
    ctr(["images", "rm", IMAGE]);
    daemon?.kill("SIGTERM");
    if (daemon && daemon.exitCode === null) await new Promise((resolve) => daemon!.once("exit", resolve));
    spawnSync("sh", ["-c", `grep -o " ${dir}/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r umount -l`]);
    rmSync(dir, { recursive: true, force: true });
    rmSync(`/run/containerd/runc/${NS}`, { recursive: true, force: true });
    assert.deepEqual(left, [], "ferret's state of containerd's containers is left");
  });

  test("ctr run --rm: the output and exit status of PID 1; nothing left", () => {
    const r = ctr(["run", "--rm", "--runc-binary", FERRET, IMAGE, "run-rm", "sh", "-c", "echo $$; exit 6"]);
    assert.equal(r.status, 6, r.stderr);
    assert.equal(r.stdout, "1\n");
    assert.deepEqual(states(), []);
  });

  test("ctr run -d, task exec, task ps, task kill, task delete", async () => {
    const d = ctr(["run", "-d", "--runc-binary", FERRET, IMAGE, "daemon", "sleep", "600"]);
    assert.equal(d.status, 0, d.stderr);
    const e = ctr(["task", "exec", "--exec-id", "x1", "daemon", "sh", "-c", "cat /proc/1/comm; exit 4"]);
    assert.equal(e.status, 4, e.stderr);
    assert.equal(e.stdout, "sleep\n");
    const ps = ctr(["task", "ps", "daemon"]);
    assert.equal(ps.status, 0, ps.stderr);
    assert.match(ps.stdout, /^\s*\d+\s/m);
    assert.equal(ctr(["task", "kill", "-s", "SIGKILL", "daemon"]).status, 0);
    await waitFor("the task to stop", () => /STOPPED/.test(ctr(["task", "ls"]).stdout), {
      saw: () => ctr(["task", "ls"]).stdout,
    });
    assert.equal(ctr(["task", "delete", "daemon"]).status, 0);
    assert.equal(ctr(["container", "delete", "daemon"]).status, 0);
    assert.deepEqual(states(), []);
  });
});
