// Ermine: ermine-breeder builds a kernel and initramfs from Debian's
// packages, and minc --um / --qemu run a container in them. Real virtual
// machines: qemu runs under TCG where KVM cannot boot (10-20 s a run, a
// minute or more on a busy machine).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { release } from "node:os";
import { after, before, describe, test } from "node:test";
import { cannotBoot, cleanEnv, hasTool, leftovers, minc, MINC, REPO, rootfs, RUNDIR, settled, start } from "./helpers.ts";
import { buildImage, type FileEntry } from "./registry-fixture.ts";

const BREEDER = `${REPO}/bin/ermine-breeder`;
const CACHE = `${REPO}/test/.cache`;
const DESTDIR = `${CACHE}/ermine`;
const VM_MS = 180_000;
/** How long a VM may take to boot and start its command (TCG on a busy machine). */
const BOOT_MS = 150_000;
/** How long the host processes of a VM killed or powered off may take to be gone. */
const GONE_MS = 30_000;

function missing(): string | undefined {
  const boot = cannotBoot();
  if (boot) return boot;
  for (const [tool, pkg] of [["qemu-system-x86_64", "qemu-system-x86"], ["cpio", "cpio"], ["linux.uml", "user-mode-linux"], ["apt-get", "apt"]]) {
    if (!hasTool(tool)) return `needs ${tool} (apt-get install ${pkg})`;
  }
  if (process.arch !== "x64") return "the package mode is tested on x86_64";
  return undefined;
}

const skip = missing();
if (skip) console.log(`# skipping the ermine tests: ${skip}`);

/** The test's config: outputs and work under test/.cache, downloads kept across --rebuild. */
function configFile(): string {
  const file = `${CACHE}/ermine.config`;
  writeFileSync(file, `DESTDIR=${DESTDIR}\nWORKDIR=${CACHE}/ermine-work\nDLDIR=${CACHE}/ermine-download\n`);
  return file;
}

function breeder(args: string[], timeout = VM_MS) {
  const r = spawnSync(BREEDER, args, { encoding: "utf8", timeout, env: cleanEnv() });
  if (r.error) throw new Error(`ermine-breeder ${args.join(" ")}: ${r.error.message}; stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`);
  return r;
}

const vmEnv = () => cleanEnv({ MINC_ERMINE_DIR: DESTDIR, MINC_VM_TIMEOUT: "150" });

/** Host processes of a VM booted for one of this file's containers (qemu or UML with a RUNDIR/mincPID- share). */
function vmProcesses(only = ""): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      if (/(qemu-system|vmlinuz\.um)/.test(cmd) && cmd.includes(`${RUNDIR}/minc`) && cmd.includes(only)) found.push(`${pid} ${cmd.slice(0, 80)}`);
    } catch {
      // gone
    }
  }
  return found;
}

/** What check() still finds once the VM's processes had time to go: SIGKILLed, one may still be exiting when minc ends. */
const vmsGone = (check: () => string[] = vmProcesses) => settled(check, GONE_MS);

function umlVersion(): string {
  return spawnSync("/usr/bin/linux.uml", ["--version"], { encoding: "utf8" }).stdout.trim();
}

describe("ermine-breeder and minc in a virtual machine", { skip }, () => {
  let config: string;
  before(() => { config = configFile(); });
  after(async () => {
    assert.deepEqual(await settled(leftovers), [], "a container left something behind");
    assert.deepEqual(await vmsGone(), [], "a virtual machine is still running");
  });

  test("ermine-breeder build (packages) makes vmlinuz and initramfs for x86_64 and um", { timeout: 600_000 }, () => {
    for (const arch of ["x86_64", "um"]) {
      const started = Date.now();
      const r = breeder(["build", "--arch", arch, "--config", config, "--rebuild"], 600_000);
      assert.equal(r.status, 0, r.stderr);
      console.log(`# ermine-breeder build --arch ${arch} --rebuild: ${Date.now() - started} ms`);
      for (const f of [`vmlinuz.${arch}`, `initramfs.${arch}`]) assert.ok(statSync(`${DESTDIR}/${f}`).size > 100_000, `${f} too small`);
    }
    const list = spawnSync("sh", ["-c", `gzip -dc ${DESTDIR}/initramfs.x86_64 | cpio -t --quiet`], { encoding: "utf8" }).stdout.split("\n");
    for (const f of ["init", "bin/busybox", "lib/modules/9p.ko", "lib/modules/9pnet_virtio.ko"]) assert.ok(list.includes(f), `${f} not in the initramfs`);
  });

  test("ermine-breeder testrun boots them and runs run.sh from the work dir; its status is the exit status", { timeout: VM_MS }, () => {
    const work = mkdtempSync("/tmp/ermine-testrun-");
    try {
      writeFileSync(`${work}/run.sh`, "echo guest kernel $(uname -r)\nexit 5\n");
      for (const arch of ["um", "x86_64"]) {
        const started = Date.now();
        const r = breeder(["testrun", "--arch", arch, "--config", config, "--work", work, "--timeout", "150"]);
        console.log(`# ermine-breeder testrun --arch ${arch}: ${Date.now() - started} ms`);
        assert.equal(r.status, 5, r.stderr);
        const kernel = /guest kernel (\S+)/.exec(r.stdout)?.[1];
        assert.ok(kernel && kernel !== release(), `not the guest's kernel: ${r.stdout}`);
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  // Three VMs, each up to BOOT_MS to start run.sh.
  test("ermine-breeder testrun, interrupted (TERM, INT, timeout(1)), stops its VM: exit 128+N, nothing left", { timeout: 3 * VM_MS }, async () => {
    const work = mkdtempSync("/tmp/ermine-testrun-");
    // (a VM, or the unshare above it, with the work dir on its command line)
    const vmOf = (): string[] => readdirSync("/proc").filter((n) => /^\d+$/.test(n)).filter((pid) => {
      try { return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(work); } catch { return false; }
    });
    try {
      writeFileSync(`${work}/run.sh`, "echo inguest; sleep 300; exit 42\n");
      for (const [arch, how, status] of [["um", "SIGTERM", 143], ["x86_64", "SIGINT", 130], ["um", "timeout", 124]] as const) {
        const args = ["testrun", "--arch", arch, "--config", config, "--work", work];
        // timeout(1) signals its whole process group when its time is up,
        // which its SIGALRM stands for: sent once the guest runs run.sh, it
        // times out then, however long the VM took to boot.
        const run = how === "timeout" ? start("timeout", ["3600", BREEDER, ...args]) : start(BREEDER, args);
        try {
          await run.printed("inguest", { ms: BOOT_MS });
          run.child.kill(how === "timeout" ? "SIGALRM" : how);
          // (as a shell sees it: it ends by the signal itself)
          assert.equal(await run.exit(), status, `${arch} ${how}: ${run.stderr()}`);
        } finally {
          // (a failure above: let it stop its VM; timeout(1) passes TERM on)
          if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill("SIGTERM");
        }
        assert.deepEqual(await vmsGone(vmOf), [], `${arch} ${how}: the VM is still running`);
        assert.deepEqual(readdirSync(work), ["run.sh"], `${arch} ${how}: left in the work dir`);
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("minc --um: the command runs on the UML kernel with the container's name, and its status is minc's", { timeout: VM_MS }, () => {
    const started = Date.now();
    const r = minc(["--um", "-r", rootfs(), "--name", "ermine-um", "sh", "-c", "uname -r; hostname; exit 3"], { env: vmEnv(), timeout: VM_MS });
    console.log(`# minc --um: ${Date.now() - started} ms`);
    assert.equal(r.status, 3, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n"), [umlVersion(), "ermine-um"]);
  });

  test("minc --um -r IMAGE: the image's environment and working directory reach the command in the VM", { timeout: VM_MS }, () => {
    const store = mkdtempSync("/tmp/minc-test-store-");
    const layout = mkdtempSync("/tmp/minc-test-layout-");
    try {
      const layer: Record<string, FileEntry> = { "bin/busybox": { content: readFileSync(`${rootfs()}/bin/busybox`), mode: 0o755 }, "app/here": "" };
      for (const applet of ["sh", "echo", "pwd", "ls", "umount", "mount"]) layer[`bin/${applet}`] = { symlink: "busybox" };
      buildImage(layout, "1", { layers: [layer], config: { Env: ["GREETING=from-the-image", "PATH=/bin"], WorkingDir: "/app" } });
      const env = { ...vmEnv(), MINCS_DIR: store };
      const imported = spawnSync(`${REPO}/bin/marten`, ["import", layout, "--name", "vmapp:1"], { encoding: "utf8", env });
      assert.equal(imported.status, 0, imported.stderr);
      const r = minc(["--um", "-r", "vmapp:1", "sh", "-c", "echo $GREETING; pwd; ls"], { env, timeout: VM_MS });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split(/\r?\n/), ["from-the-image", "/app", "here"]);
    } finally {
      rmSync(store, { recursive: true, force: true });
      rmSync(layout, { recursive: true, force: true });
    }
  });

  test("minc --um with a piped stdin: the command reads it to its end (a VM console has none)", { timeout: VM_MS }, () => {
    const r = minc(["--um", "-r", rootfs(), "sh", "-c", "cat; echo done"], { env: vmEnv(), timeout: VM_MS, input: "line one\nline two\n" });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split(/\r?\n/), ["line one", "line two", "done"]);
  });

  test("minc --qemu: the rootfs's own file, on a kernel that is not the host's", { timeout: VM_MS }, () => {
    const started = Date.now();
    const r = minc(["--qemu", "-r", rootfs(), "sh", "-c", "cat /etc/passwd; uname -r"], { env: vmEnv(), timeout: VM_MS });
    console.log(`# minc --qemu: ${Date.now() - started} ms`);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    const kernel = lines.pop()!;
    assert.equal(lines.join("\n") + "\n", readFileSync(`${rootfs()}/etc/passwd`, "utf8"));
    assert.notEqual(kernel, release());
    assert.match(kernel, /^\d+\.\d+/);
  });

  test("minc --um --debug shows the VM steps as shell lines", { timeout: VM_MS }, () => {
    const r = minc(["--debug", "--um", "-r", rootfs(), "true"], { env: vmEnv(), timeout: VM_MS });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^# ==== minc-moult: phase 5\/5/m);
    // (this file's RUNDIR: /run/minc-tests-XXXXXX, nothing to escape)
    assert.match(r.stderr, new RegExp(`^\\+ printf .* > ${RUNDIR}/minc\\d+-\\w+/run\\.sh$`, "m"));
    assert.match(r.stderr, /^\+ \S+\/vmlinuz\.um mem=\S+ initrd=\S+initramfs\.um .*minc\.share=/m);
  });

  test("a VM that outlives MINC_VM_TIMEOUT is killed: an error, nothing left", { timeout: VM_MS }, async () => {
    const r = minc(["--um", "-r", rootfs(), "sleep", "60"], { env: { ...vmEnv(), MINC_VM_TIMEOUT: "4" }, timeout: VM_MS });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /did not finish within 4 s/);
    assert.deepEqual(await vmsGone(), []);
  });

  test("a guest that dies without reporting a status is an error, not a hang", { timeout: VM_MS }, async () => {
    const broken = mkdtempSync("/tmp/ermine-broken-");
    try {
      // A kernel with an initramfs that has no init: it panics, and panic=-1 ends the VM.
      symlinkSync(`${DESTDIR}/vmlinuz.um`, `${broken}/vmlinuz.um`);
      writeFileSync(`${broken}/initramfs.um`, spawnSync("sh", ["-c", "echo . | cpio -o -H newc --quiet | gzip"]).stdout);
      const r = minc(["--um", "-r", rootfs(), "true"], { env: { ...vmEnv(), MINC_ERMINE_DIR: broken }, timeout: VM_MS });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /the virtual machine ended .* without the command's exit status/);
      assert.deepEqual(await vmsGone(), []);
    } finally {
      rmSync(broken, { recursive: true, force: true });
    }
  });

  test("^C (SIGINT to minc) ends the qemu VM and the container: nothing left", { timeout: VM_MS }, async () => {
    const run = start(MINC, ["--qemu", "-r", rootfs(), "sh", "-c", "echo ready; sleep 100"], { env: vmEnv() });
    try {
      // This minc's VM (its share is RUNDIR/minc<PID>-...), not one of an earlier test still going.
      const ours = (): string[] => vmProcesses(`/minc${run.child.pid}-`);
      // ^C while the command runs in the guest.
      await run.printed("ready", { ms: BOOT_MS });
      assert.notDeepEqual(ours(), [], "no VM of this minc");
      run.child.kill("SIGINT");
      assert.equal(await run.exit(), 130, run.stderr());
    } finally {
      if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill("SIGTERM"); // (a failure above)
    }
    assert.deepEqual(await vmsGone(), []);
    assert.deepEqual(await settled(leftovers), []);
  });

  test("networking in a VM is refused clearly (exit 2)", () => {
    for (const net of [["--net", "dens"], ["-p", "8080:80"]]) {
      const r = minc(["--qemu", ...net, "-r", rootfs(), "true"], { env: vmEnv() });
      assert.equal(r.status, 2);
      assert.match(r.stderr, /networking .* is not supported in a virtual machine yet/);
    }
  });

  test("a missing ermine kernel says how to build it", () => {
    const r = minc(["--um", "-r", rootfs(), "true"], { env: { ...vmEnv(), MINC_ERMINE_DIR: "/nonexistent" } });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /vmlinuz\.um: missing; run: ermine-breeder build --arch um/);
    assert.equal(existsSync("/nonexistent"), false);
  });
});
