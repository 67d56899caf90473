// Ermine: ermine-breeder builds a kernel and initramfs from Debian's
// packages, and minc --um / --qemu run a container in them. Real virtual
// machines: qemu runs under TCG where KVM cannot boot (10-20 s a run, a
// minute or more on a busy machine).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { release } from "node:os";
import { after, before, describe, test } from "node:test";
import {
  cannotBoot,
  cleanEnv,
  freePort,
  hasTool,
  leftovers,
  minc,
  MINC,
  REPO,
  rootfs,
  RUNDIR,
  settled,
  start,
} from "./helpers.ts";
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
  for (const [tool, pkg] of [
    ["qemu-system-x86_64", "qemu-system-x86"],
    ["cpio", "cpio"],
    ["linux.uml", "user-mode-linux"],
    ["apt-get", "apt"],
  ]) {
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
  if (r.error)
    throw new Error(
      `ermine-breeder ${args.join(" ")}: ${r.error.message}; stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`,
    );
  return r;
}

const vmEnv = () => cleanEnv({ MINC_ERMINE_DIR: DESTDIR, MINC_VM_TIMEOUT: "150" });

/** Host processes of a VM booted for one of this file's containers (qemu or UML with a RUNDIR/mincPID- share). */
function vmProcesses(only = ""): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      if (/(qemu-system|vmlinuz\.um)/.test(cmd) && cmd.includes(`${RUNDIR}/minc`) && cmd.includes(only))
        found.push(`${pid} ${cmd.slice(0, 80)}`);
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
  before(() => {
    config = configFile();
  });
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
      for (const f of [`vmlinuz.${arch}`, `initramfs.${arch}`])
        assert.ok(statSync(`${DESTDIR}/${f}`).size > 100_000, `${f} too small`);
    }
    const list = spawnSync("sh", ["-c", `gzip -dc ${DESTDIR}/initramfs.x86_64 | cpio -t --quiet`], {
      encoding: "utf8",
    }).stdout.split("\n");
    for (const f of ["init", "bin/busybox", "lib/modules/9p.ko", "lib/modules/9pnet_virtio.ko"])
      assert.ok(list.includes(f), `${f} not in the initramfs`);
  });

  test("ermine-breeder testrun boots them and runs run.sh from the work dir; its status is the exit status", {
    timeout: VM_MS,
  }, () => {
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
  test("ermine-breeder testrun, interrupted (TERM, INT, timeout(1)), stops its VM: exit 128+N, nothing left", {
    timeout: 3 * VM_MS,
  }, async () => {
    const work = mkdtempSync("/tmp/ermine-testrun-");
    // (a VM, or the unshare above it, with the work dir on its command line)
    const vmOf = (): string[] =>
      readdirSync("/proc")
        .filter((n) => /^\d+$/.test(n))
        .filter((pid) => {
          try {
            return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(work);
          } catch {
            return false;
          }
        });
    try {
      writeFileSync(`${work}/run.sh`, "echo inguest; sleep 300; exit 42\n");
      for (const [arch, how, status] of [
        ["um", "SIGTERM", 143],
        ["x86_64", "SIGINT", 130],
        ["um", "timeout", 124],
      ] as const) {
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

  test("minc --um: the command runs on the UML kernel with the container's name, and its status is minc's", {
    timeout: VM_MS,
  }, () => {
    const started = Date.now();
    const r = minc(["--um", "-r", rootfs(), "--name", "ermine-um", "sh", "-c", "uname -r; hostname; exit 3"], {
      env: vmEnv(),
      timeout: VM_MS,
    });
    console.log(`# minc --um: ${Date.now() - started} ms`);
    assert.equal(r.status, 3, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n"), [umlVersion(), "ermine-um"]);
  });

  test("minc --um -r IMAGE: the image's environment and working directory reach the command in the VM", {
    timeout: VM_MS,
  }, () => {
    const store = mkdtempSync("/tmp/minc-test-store-");
    const layout = mkdtempSync("/tmp/minc-test-layout-");
    try {
      const layer: Record<string, FileEntry> = {
        "bin/busybox": { content: readFileSync(`${rootfs()}/bin/busybox`), mode: 0o755 },
        "app/here": "",
      };
      for (const applet of ["sh", "echo", "pwd", "ls", "umount", "mount"])
        layer[`bin/${applet}`] = { symlink: "busybox" };
      buildImage(layout, "1", {
        layers: [layer],
        config: { Env: ["GREETING=from-the-image", "PATH=/bin"], WorkingDir: "/app" },
      });
      const env = { ...vmEnv(), MINCS_DIR: store };
      const imported = spawnSync(`${REPO}/bin/marten`, ["import", layout, "--name", "vmapp:1"], {
        encoding: "utf8",
        env,
      });
      assert.equal(imported.status, 0, imported.stderr);
      const r = minc(["--um", "-r", "vmapp:1", "sh", "-c", "echo $GREETING; pwd; ls"], { env, timeout: VM_MS });
      assert.equal(r.status, 0, r.stderr);
      // (the new container's id first, and the reuse line last, as the shell MINCS prints them)
      const lines = r.stdout.trim().split(/\r?\n/);
      assert.match(lines[0], /^[0-9a-f]{64}$/);
      assert.deepEqual(lines.slice(1), [
        "from-the-image",
        "/app",
        "here",
        `To reuse this, run: ${MINC} -t ${lines[0].slice(0, 12)}`,
      ]);
    } finally {
      rmSync(store, { recursive: true, force: true });
      rmSync(layout, { recursive: true, force: true });
    }
  });

  test("minc --um with a piped stdin: the command reads it to its end (a VM console has none)", {
    timeout: VM_MS,
  }, () => {
    const r = minc(["--um", "-r", rootfs(), "sh", "-c", "cat; echo done"], {
      env: vmEnv(),
      timeout: VM_MS,
      input: "line one\nline two\n",
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split(/\r?\n/), ["line one", "line two", "done"]);
  });

  test("minc --qemu: the rootfs's own file, on a kernel that is not the host's", { timeout: VM_MS }, () => {
    const started = Date.now();
    const r = minc(["--qemu", "-r", rootfs(), "sh", "-c", "cat /etc/passwd; uname -r"], {
      env: vmEnv(),
      timeout: VM_MS,
    });
    console.log(`# minc --qemu: ${Date.now() - started} ms`);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    const kernel = lines.pop()!;
    assert.equal(`${lines.join("\n")}\n`, readFileSync(`${rootfs()}/etc/passwd`, "utf8"));
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
    const r = minc(["--um", "-r", rootfs(), "sleep", "60"], {
      env: { ...vmEnv(), MINC_VM_TIMEOUT: "4" },
      timeout: VM_MS,
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /did not finish within 4 s/);
    assert.deepEqual(await vmsGone(), []);
  });

  test("a guest that dies without reporting a status is an error, not a hang", { timeout: VM_MS }, async () => {
    const broken = mkdtempSync("/tmp/ermine-broken-");
    try {
      // A kernel with an initramfs that has no init: it panics, and panic=-1 ends the VM.
      symlinkSync(`${DESTDIR}/vmlinuz.um`, `${broken}/vmlinuz.um`);
      writeFileSync(
        `${broken}/initramfs.um`,
        spawnSync("sh", ["-c", "echo . | cpio -o -H newc --quiet | gzip"]).stdout,
      );
      const r = minc(["--um", "-r", rootfs(), "true"], {
        env: { ...vmEnv(), MINC_ERMINE_DIR: broken },
        timeout: VM_MS,
      });
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
    for (const net of [
      ["--net", "dens"],
      ["-p", "8080:80"],
    ]) {
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

// ---- As MINCS's scripts call it (issue 18): its commands, options and shell config files ----

/** A directory of the test's own, removed at the end. */
function scratch(name: string): string {
  return mkdtempSync(`/tmp/ermine-${name}-`);
}

/** gzip -dc INITRAMFS | cpio -i --to-stdout FILE */
function fromInitramfs(initramfs: string, file: string): string {
  return spawnSync("sh", ["-c", 'gzip -dc "$1" | cpio -i --quiet --to-stdout "$2"', "sh", initramfs, file], {
    encoding: "utf8",
  }).stdout;
}

/**
 * Stand-ins for a kernel tree (a git repository, branch ermine-test) and a
 * busybox tree: Makefiles with the targets ermine-breeder calls, whose
 * "kernel" and "busybox" are the .config they were built with and the make
 * variables they saw. And flex and bison that do nothing, which a real
 * kernel build needs and these trees do not.
 */
function fakeSources(dir: string): { gitUrl: string; busybox: string; bin: string } {
  const linux = `${dir}/linux`;
  const busybox = `${dir}/busybox`;
  const bin = `${dir}/bin`;
  for (const d of [linux, busybox, bin]) mkdirSync(d);
  writeFileSync(
    `${linux}/Makefile`,
    [
      "O ?= .",
      "defconfig:",
      '\tprintf "CONFIG_FROM_DEFCONFIG=y\\n# CONFIG_HOOKED is not set\\nCONFIG_OVERLAY_FS=n\\n" > $(O)/.config',
      "olddefconfig:",
      '\techo "# olddefconfig ARCH=$(ARCH)" >> $(O)/.config',
      "bzImage:",
      "\tmkdir -p $(O)/arch/x86/boot",
      '\t{ cat $(O)/.config; echo "make: LLVM=$(LLVM) W=$(W)"; } > $(O)/arch/x86/boot/bzImage',
      "",
    ].join("\n"),
  );
  writeFileSync(
    `${busybox}/Makefile`,
    "defconfig:\n\techo CONFIG_FROM_DEFCONFIG=y > .config\nbusybox:\n\tcp .config busybox\n",
  );
  for (const tool of ["flex", "bison"]) writeFileSync(`${bin}/${tool}`, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
  const git = (...args: string[]) => {
    const r = spawnSync("git", ["-c", "user.name=t", "-c", "user.email=t@t", ...args], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
  };
  git("init", "-q", "-b", "ermine-test", linux);
  git("-C", linux, "add", "Makefile");
  git("-C", linux, "commit", "-q", "-m", "a stand-in kernel tree");
  git("clone", "-q", "--bare", linux, `${dir}/fake-linux.git`);
  rmSync(linux, { recursive: true });
  return { gitUrl: `file://${dir}/fake-linux.git`, busybox, bin };
}

/** ermine-breeder run asynchronously, so that this process can answer the guest meanwhile. */
function breederAsync(args: string[]) {
  return start(BREEDER, args, { env: cleanEnv() });
}

/** What a testrun --net may leave on the host: its netns, its lease. */
function netLeft(): string[] {
  const netns = spawnSync("ip", ["netns", "list"], { encoding: "utf8" })
    .stdout.split("\n")
    .filter((l) => l.startsWith("ermine-testrun-"));
  const lease = existsSync("/var/run/minc.lease")
    ? readFileSync("/var/run/minc.lease", "utf8")
        .split("\n")
        .filter((l) => l.includes("ermine-testrun-"))
    : [];
  return [...netns, ...lease];
}

describe("ermine-breeder as the shell MINCS's scripts call it", { skip }, () => {
  let config: string;
  before(() => {
    config = configFile();
  });
  after(() => {
    assert.deepEqual(vmProcesses(), [], "a virtual machine is still running");
    assert.deepEqual(netLeft(), [], "a testrun --net left its network");
  });

  test("no command means build; --config is a shell file, sourced: its variables and $TOPDIR take effect", () => {
    const dir = scratch("config");
    try {
      // Quoting, arithmetic and variables of the shell; -c as MINCS's short option; ARCH from the config.
      writeFileSync(
        `${dir}/my.conf`,
        [
          "# as a MINCS config: shell",
          `top="${dir}"`,
          'DESTDIR="$top/dest dir"',
          'WORKDIR="$top/work"',
          `DLDIR=${CACHE}/ermine-download`,
          "JOBS=$((1 + 1))",
          "ARCH=um",
          'echo "sourced with TOPDIR=$TOPDIR"',
          "user_configure_kernel() { kconfigs_y HOOKED; }",
          "",
        ].join("\n"),
      );
      const r = breeder(["-c", `${dir}/my.conf`]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^sourced with TOPDIR=${REPO}$`, "m"));
      assert.equal(readFileSync(`${dir}/dest dir/vmlinuz.um`).equals(readFileSync("/usr/bin/linux.uml")), true);
      assert.ok(statSync(`${dir}/dest dir/initramfs.um`).size > 100_000);
      assert.ok(existsSync(`${dir}/work/um`), "not built in the config's WORKDIR");
      // A hook a build from packages has no place for is said, not silently dropped.
      assert.match(r.stderr, /^ermine-breeder: notice: not used: user_configure_kernel: .*Debian's/m);

      // No arguments at all: TOPDIR/ermine.config, as MINCS read it (TOPDIR: above libexec/, here a copy of the program).
      const top = `${dir}/top`;
      for (const d of ["bin", "libexec"]) mkdirSync(`${top}/${d}`, { recursive: true });
      copyFileSync(BREEDER, `${top}/bin/ermine-breeder`);
      chmodSync(`${top}/bin/ermine-breeder`, 0o755);
      writeFileSync(`${top}/ermine.config`, `ARCH=um\nWORKDIR="$TOPDIR/work"\nDLDIR=${CACHE}/ermine-download\n`);
      const bare = spawnSync(`${top}/bin/ermine-breeder`, [], { encoding: "utf8", env: cleanEnv(), timeout: VM_MS });
      assert.equal(bare.status, 0, bare.stderr);
      assert.deepEqual(readdirSync(`${top}/libexec/ermine`).sort(), ["initramfs.um", "vmlinuz.um"]);
      assert.ok(existsSync(`${top}/work/um`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a bad config: one line and exit 2, whether missing or failing as sh sources it", () => {
    const dir = scratch("badconfig");
    try {
      const missing = breeder(["build", "--config", `${dir}/nothere`]);
      assert.equal(missing.status, 2);
      assert.equal(missing.stderr, `ermine-breeder: --config ${dir}/nothere: no such file\n`);
      writeFileSync(`${dir}/failing.conf`, "DESTDIR=/nowhere\nfalse\n");
      const failing = breeder(["build", "-c", `${dir}/failing.conf`]);
      assert.equal(failing.status, 2);
      assert.equal(failing.stderr, "ermine-breeder: --config failing.conf: sourcing it failed (sh exit 1)\n");
      assert.equal(existsSync("/nowhere"), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a source build runs the config's user_configure_kernel and user_configure_busybox where MINCS did (git LINUX_URL, LINUX_BRANCH, LLVM_OPT, CHECK_WARN)", () => {
    const dir = scratch("hooks");
    try {
      const fake = fakeSources(dir);
      writeFileSync(
        `${dir}/hooks.conf`,
        [
          `LINUX_URL=${fake.gitUrl}`,
          "LINUX_BRANCH=ermine-test",
          `BUSYBOX_URL=file:/${fake.busybox}`,
          `DESTDIR=${dir}/out`,
          `WORKDIR=${dir}/work`,
          `DLDIR=${CACHE}/ermine-download`,
          'LLVM_OPT="LLVM=1"',
          "CHECK_WARN=yes",
          "user_configure_kernel() {",
          "  kconfigs_y HOOKED",
          '  kconfig_string HOOK_OUTDIR "$1"',
          '  kconfig_string HOOK_PWD "$(pwd)"',
          "}",
          "user_configure_busybox() { kconfigs_y HOOKED_BUSYBOX; }",
          "",
        ].join("\n"),
      );
      const r = spawnSync(BREEDER, ["build", "--arch", "x86_64", "-c", `${dir}/hooks.conf`], {
        encoding: "utf8",
        env: cleanEnv({ PATH: `${fake.bin}:${process.env.PATH}` }),
        timeout: VM_MS,
      });
      assert.equal(r.status, 0, r.stderr);
      const kernel = readFileSync(`${dir}/out/vmlinuz.x86_64`, "utf8").split("\n");
      // After defconfig, with the build dir as $1 in the cloned tree; before what containers need (which wins) and olddefconfig.
      for (const line of [
        "CONFIG_FROM_DEFCONFIG=y",
        "CONFIG_HOOKED=y",
        `CONFIG_HOOK_OUTDIR="${dir}/work/x86_64/linux-build"`,
        `CONFIG_HOOK_PWD="${dir}/work/x86_64/linux"`,
        "CONFIG_OVERLAY_FS=y",
        "# olddefconfig ARCH=x86_64",
        "make: LLVM=1 W=1",
      ]) {
        assert.ok(kernel.includes(line), `${line} not in the kernel's .config: ${kernel.join("\n")}`);
      }
      assert.ok(!kernel.includes("# CONFIG_HOOKED is not set"));
      assert.ok(kernel.indexOf("CONFIG_HOOKED=y") < kernel.indexOf("CONFIG_OVERLAY_FS=y"));
      const busybox = fromInitramfs(`${dir}/out/initramfs.x86_64`, "bin/busybox").split("\n");
      for (const line of ["CONFIG_FROM_DEFCONFIG=y", "CONFIG_HOOKED_BUSYBOX=y", "CONFIG_STATIC=y"])
        assert.ok(busybox.includes(line), `${line} not in busybox's .config`);
      assert.doesNotMatch(r.stderr, /notice/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("--rebuild-kernel makes the kernel again (build alone keeps it); the initramfs without its modules stays", () => {
    const dir = scratch("rebuild-kernel");
    try {
      writeFileSync(`${dir}/c.conf`, `DESTDIR=${dir}/out\nWORKDIR=${dir}/work\nDLDIR=${CACHE}/ermine-download\n`);
      assert.equal(breeder(["build", "--arch", "um", "-c", `${dir}/c.conf`]).status, 0);
      writeFileSync(`${dir}/out/vmlinuz.um`, "not a kernel");
      const initramfs = statSync(`${dir}/out/initramfs.um`).mtimeMs;
      assert.equal(breeder(["build", "--arch", "um", "-c", `${dir}/c.conf`]).status, 0);
      assert.equal(readFileSync(`${dir}/out/vmlinuz.um`, "utf8"), "not a kernel");
      const r = breeder(["build", "--arch", "um", "-c", `${dir}/c.conf`, "--rebuild-kernel"]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(
        readFileSync(`${dir}/out/vmlinuz.um`).equals(readFileSync("/usr/bin/linux.uml")),
        "the kernel was not made again",
      );
      assert.equal(statSync(`${dir}/out/initramfs.um`).mtimeMs, initramfs);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("clean removes the work dir but the downloads; distclean removes all build made, downloads too", () => {
    const dir = scratch("distclean");
    try {
      // The downloads inside the work dir (the default place), seeded from the shared cache.
      mkdirSync(`${dir}/work/download`, { recursive: true });
      const deb = readdirSync(`${CACHE}/ermine-download`).find((f) => f.startsWith("busybox-static_"));
      assert.ok(deb, "no busybox-static .deb in the cache (the first build downloads it)");
      copyFileSync(`${CACHE}/ermine-download/${deb}`, `${dir}/work/download/${deb}`);
      writeFileSync(`${dir}/c.conf`, `DESTDIR=${dir}/out\nWORKDIR=${dir}/work\n`);
      assert.equal(breeder(["--arch", "um", "-c", `${dir}/c.conf`]).status, 0);
      assert.deepEqual(readdirSync(`${dir}/work`).sort(), ["download", "um"]);
      const clean = breeder(["clean", "-c", `${dir}/c.conf`]);
      assert.equal(clean.status, 0, clean.stderr);
      assert.deepEqual(readdirSync(`${dir}/work`), ["download"]);
      assert.deepEqual(readdirSync(`${dir}/work/download`), [deb]);
      assert.deepEqual(readdirSync(`${dir}/out`).sort(), ["initramfs.um", "vmlinuz.um"]);
      const distclean = breeder(["distclean", "-c", `${dir}/c.conf`]);
      assert.equal(distclean.status, 0, distclean.stderr);
      assert.deepEqual(readdirSync(dir), ["c.conf"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("selfbuild [DIR] builds as build does (no new root is needed), and says so; a DIR that is not there: exit 2", () => {
    const dir = scratch("selfbuild");
    try {
      writeFileSync(`${dir}/c.conf`, `DESTDIR=${dir}/out\nWORKDIR=${dir}/work\nDLDIR=${CACHE}/ermine-download\n`);
      const r = breeder(["selfbuild", dir, "--arch", "um", "-c", `${dir}/c.conf`]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(`^ermine-breeder: notice: selfbuild builds here, as build does: .*; ${dir} is not used\\n$`),
      );
      assert.deepEqual(readdirSync(`${dir}/out`).sort(), ["initramfs.um", "vmlinuz.um"]);
      const bad = breeder(["selfbuild", `${dir}/nothere`, "--arch", "um", "-c", `${dir}/c.conf`]);
      assert.equal(bad.status, 2);
      assert.equal(bad.stderr, `ermine-breeder: selfbuild ${dir}/nothere: no such directory\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("help shows the usage (exit 0); an unknown command: exit 2", () => {
    const help = breeder(["help"]);
    assert.equal(help.status, 0);
    for (const c of ["build", "selfbuild", "testrun", "clean", "distclean"])
      assert.match(help.stdout, new RegExp(`ermine-breeder ${c}`));
    const bad = breeder(["frobnicate"]);
    assert.equal(bad.status, 2);
    assert.equal(bad.stderr.split("\n").length, 2, bad.stderr);
  });

  test("testrun --cmdline ARGS reaches the guest kernel's /proc/cmdline; QEMU OPTIONS at the end go to qemu", {
    timeout: VM_MS,
  }, () => {
    const work = scratch("cmdline");
    try {
      writeFileSync(`${work}/run.sh`, "echo cmdline: $(cat /proc/cmdline)\necho cpus: $(nproc)\n");
      const um = breeder([
        "testrun",
        "--arch",
        "um",
        "-c",
        config,
        "--work",
        work,
        "--cmdline",
        "minc.test=hello ermine.word",
        "--timeout",
        "150",
      ]);
      assert.equal(um.status, 0, um.stderr);
      assert.match(um.stdout, /^cmdline: .* minc\.test=hello ermine\.word( |\r?$)/m);
      // (qemu's -smp 2 on this host, and then the one given)
      const qemu = breeder([
        "testrun",
        "--arch",
        "x86_64",
        "-c",
        config,
        "--work",
        work,
        "--cmdline",
        "minc.test=hello",
        "--timeout",
        "150",
        "-smp",
        "1",
      ]);
      assert.equal(qemu.status, 0, qemu.stderr);
      assert.match(qemu.stdout, /^cmdline: .* minc\.test=hello( |\r?$)/m);
      assert.match(qemu.stdout, /^cpus: 1\r?$/m);
      const refused = breeder(["testrun", "--arch", "um", "-c", config, "--work", work, "-smp", "1"]);
      assert.equal(refused.status, 2);
      assert.equal(refused.stderr, "ermine-breeder: -smp 1: options for qemu, but --arch um boots user-mode Linux\n");
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("testrun --net: the guest has a leased address on the dens network and reaches the host; nothing is left", {
    timeout: 2 * VM_MS,
  }, async () => {
    const work = scratch("net");
    const server = createServer((c) => c.end("hello-from-host\n"));
    try {
      const port = await freePort();
      await new Promise<void>((res) => server.listen(port, "0.0.0.0", res));
      writeFileSync(
        `${work}/run.sh`,
        [
          "ip -4 -o addr show dev eth0",
          "ip route show default",
          `bash -c 'exec 3<>/dev/tcp/192.168.139.1/${port} && read -r line <&3 && echo "got: $line"'`,
          "",
        ].join("\n"),
      );
      for (const arch of ["um", "x86_64"]) {
        const run = breederAsync([
          "testrun",
          "--arch",
          arch,
          "-c",
          config,
          "--work",
          work,
          "--net",
          "--timeout",
          "150",
        ]);
        assert.equal(await run.exit(VM_MS), 0, run.stderr());
        assert.match(run.stdout(), /eth0\s+inet 192\.168\.139\.\d+\/24/, `${arch}: ${run.stdout()}`);
        assert.match(run.stdout(), /^default via 192\.168\.139\.1 dev eth0/m, arch);
        assert.match(run.stdout(), /^got: hello-from-host\r?$/m, arch);
        assert.deepEqual(netLeft(), [], arch);
      }
      // Interrupted, it leaves nothing of the network either.
      writeFileSync(`${work}/run.sh`, "echo inguest; sleep 300\n");
      const run = breederAsync(["testrun", "--arch", "um", "-c", config, "--work", work, "--net"]);
      await run.printed("inguest", { ms: VM_MS });
      assert.notDeepEqual(netLeft(), []);
      run.child.kill("SIGTERM");
      assert.equal(await run.exit(VM_MS), 143);
      assert.deepEqual(netLeft(), []);
    } finally {
      server.close();
      rmSync(work, { recursive: true, force: true });
    }
  });
});
