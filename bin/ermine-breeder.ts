// ermine-breeder: make the kernel and initramfs that minc --qemu and --um boot.
//
//   ermine-breeder build [--arch ARCH] [--config FILE]... [--rebuild] [--repack]
//   ermine-breeder testrun [--arch ARCH] [--work DIR] [--timeout SECONDS]
//   ermine-breeder clean [--config FILE]...
//
// Like MINCS's ermine-breeder it writes vmlinuz.ARCH and initramfs.ARCH into
// libexec/ermine/ (or DESTDIR). Two ways to the kernel: assembled from
// Debian's packages (the default: the kernel image and the modules that
// reach a 9p share, busybox-static), or built from source when LINUX_URL is
// configured (a URL, a file:// tarball such as Debian's linux-source, or a
// directory), with the kernel options a container needs (namespaces,
// cgroups, overlayfs, 9p over virtio). User-mode Linux's kernel is Debian's
// /usr/bin/linux.uml unless built from source. The initramfs is busybox, those
// modules, and the guest's init (lib/ermine.ts), which runs the host's own
// programs from a read-only share, so the initramfs stays small.
//
// A config file holds KEY=VALUE lines (later files win): LINUX_URL,
// BUSYBOX_URL, KCONFIG (a file of CONFIG_X=V lines merged last), DESTDIR,
// WORKDIR, DLDIR, KERNEL_PACKAGE, BUSYBOX_PACKAGE, JOBS, CROSS_COMPILE (the
// toolchain prefix for a kernel of another arch).
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { basename, resolve } from "node:path";
import yargs from "yargs";
import { bootGuest, checkGuest, ermineDir, guestArch, GUEST_MODULES, guestInit, hostGuestArch, initramfsOf, kernelOf, type GuestArch } from "../lib/ermine.ts";
import { MincError, main, settleLater, usageError } from "../lib/fail.ts";
import { capture, copyFile, mkdirs, run } from "../lib/run.ts";
import { needTool } from "../lib/tools.ts";
import { quote, quoteAll, shown, step } from "../lib/trace.ts";
import { VERSION } from "../lib/version.ts";

interface Config {
  LINUX_URL: string;
  BUSYBOX_URL: string;
  KCONFIG: string;
  DESTDIR: string;
  WORKDIR: string;
  DLDIR: string;
  KERNEL_PACKAGE: string;
  BUSYBOX_PACKAGE: string;
  JOBS: string;
  CROSS_COMPILE: string;
}

const DEFAULT_WORKDIR = "/var/tmp/ermine-breeder";

function defaults(): Config {
  return {
    LINUX_URL: "", BUSYBOX_URL: "", KCONFIG: "",
    DESTDIR: ermineDir(), WORKDIR: DEFAULT_WORKDIR, DLDIR: "",
    KERNEL_PACKAGE: "linux-image-amd64", BUSYBOX_PACKAGE: "busybox-static",
    JOBS: String(cpus().length), CROSS_COMPILE: "",
  };
}

/** KEY=VALUE lines, read as data (never run as shell); later files win. */
function readConfig(files: string[]): Config {
  const config = defaults();
  for (const file of files) {
    if (!existsSync(file)) throw usageError(`--config ${file}: no such file`);
    readFileSync(file, "utf8").split("\n").forEach((line, i) => {
      const text = line.trim();
      if (text === "" || text.startsWith("#")) return;
      const m = /^([A-Z_]+)=(.*)$/.exec(text);
      if (!m || !(m[1] in config)) throw usageError(`${file}:${i + 1}: not a KEY=VALUE line of a known key: ${text}`);
      (config as unknown as Record<string, string>)[m[1]] = m[2].replace(/^(["'])(.*)\1$/, "$2");
    });
  }
  if (!config.DLDIR) config.DLDIR = `${config.WORKDIR}/download`;
  return config;
}

/** Run a command in a directory, shown as a subshell line. */
function runIn(dir: string, argv: string[]): void {
  shown(`(cd ${quote(dir)} && ${quoteAll(argv)})`);
  const r = spawnSync(argv[0], argv.slice(1), { cwd: dir, stdio: ["ignore", "inherit", "inherit"] });
  if (r.error || r.status !== 0) throw new MincError(`failed: ${quoteAll(argv)} in ${dir} (${r.error?.message ?? `exit ${r.status}`})`);
}

function fresh(dir: string): string {
  if (existsSync(dir)) {
    shown(`rm -rf ${quote(dir)}`);
    rmSync(dir, { recursive: true, force: true });
  }
  mkdirs(dir);
  return dir;
}

// ---- Package mode ---------------------------------------------------------

/** A metapackage such as linux-image-amd64 depends on the real image, linux-image-6.1.0-N-amd64. */
function realKernelPackage(name: string): string {
  const depends = capture(["apt-cache", "depends", "--no-recommends", "--no-suggests", name]);
  const real = /Depends: (linux-image-[0-9][^\s]*)/.exec(depends)?.[1];
  return real ?? name;
}

/** The .deb of a package in the download dir, fetched with apt-get download unless already there. */
function debOf(config: Config, pkg: string): string {
  mkdirs(config.DLDIR);
  const find = () => readdirSync(config.DLDIR).find((f) => f.startsWith(`${pkg.replace(/:.*/, "")}_`) && f.endsWith(".deb"));
  let deb = find();
  if (!deb) {
    step(`Download ${pkg} (apt-get download; run apt-get update if it is unknown)`);
    runIn(config.DLDIR, ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg]);
    deb = find();
    if (!deb) throw new MincError(`apt-get download ${pkg} left no .deb in ${config.DLDIR}`);
  }
  return `${config.DLDIR}/${deb}`;
}

function unpackDeb(deb: string, into: string): string {
  fresh(into);
  run(["dpkg-deb", "-x", deb, into]);
  return into;
}

function kernelFromPackage(config: Config, work: string, kernel: string): void {
  step(`Take the kernel from Debian's package ${config.KERNEL_PACKAGE}`);
  const pkg = realKernelPackage(config.KERNEL_PACKAGE);
  const dir = unpackDeb(debOf(config, pkg), `${work}/kernel-package`);
  const vmlinuz = readdirSync(`${dir}/boot`).find((f) => f.startsWith("vmlinuz-"));
  if (!vmlinuz) throw new MincError(`${pkg} has no /boot/vmlinuz-*`);
  copyFile(`${dir}/boot/${vmlinuz}`, kernel);
}

function umKernelFromPackage(kernel: string): void {
  step("User-mode Linux's kernel is Debian's /usr/bin/linux.uml (hostfs and initrd built in)");
  if (!existsSync("/usr/bin/linux.uml")) throw new MincError("/usr/bin/linux.uml: missing (apt-get install user-mode-linux)");
  copyFile("/usr/bin/linux.uml", kernel);
  chmodSync(kernel, 0o755);
}

/** The 9p modules of the package's kernel, decompressed where they are .ko.xz or .ko.zst. */
function modulesFromPackage(work: string, rootfs: string): void {
  const tree = `${work}/kernel-package/lib/modules`;
  if (!existsSync(tree)) return;
  step("Copy the modules that reach a 9p share over virtio (the guest's init loads them in this order)");
  const files = readdirSync(tree, { recursive: true }) as string[];
  mkdirs(`${rootfs}/lib/modules`);
  for (const name of GUEST_MODULES) {
    const found = files.find((f) => new RegExp(`(^|/)${name}\\.ko(\\.xz|\\.zst)?$`).test(f));
    if (!found) throw new MincError(`the kernel package has no module ${name}`);
    const to = `${rootfs}/lib/modules/${name}.ko`;
    if (found.endsWith(".ko")) copyFile(`${tree}/${found}`, to);
    else {
      const tool = found.endsWith(".xz") ? "xz" : "zstd";
      shown(`${tool} -dc ${quote(`${tree}/${found}`)} > ${quote(to)}`);
      writeFileSync(to, spawnSync(tool, ["-dc", `${tree}/${found}`]).stdout);
    }
  }
}

function busyboxFromPackage(config: Config, work: string, rootfs: string): void {
  step(`Take busybox from Debian's package ${config.BUSYBOX_PACKAGE}`);
  const dir = unpackDeb(debOf(config, config.BUSYBOX_PACKAGE), `${work}/busybox-package`);
  copyFile(`${dir}/bin/busybox`, `${rootfs}/bin/busybox`);
}

// ---- Source mode ----------------------------------------------------------

/** The kernel options a container needs, as MINCS set them on top of defconfig. */
const KCONFIG_BASE = ["NET", "NET_CORE", "NETDEVICES", "TTY", "INET", "BINFMT_ELF", "BINFMT_SCRIPT", "BLK_DEV_INITRD", "DEVTMPFS", "TMPFS", "UNIX"];
const KCONFIG_MINC = ["OVERLAY_FS", "NAMESPACES", "UTS_NS", "IPC_NS", "USER_NS", "PID_NS", "NET_NS",
  "CGROUPS", "EVENTFD", "CGROUP_DEVICE", "CPUSETS", "CGROUP_CPUACCT", "PAGE_COUNTER", "MEMCG",
  "CGROUP_PERF", "CGROUP_SCHED", "CGROUP_HUGETLB", "FAIR_GROUP_SCHED", "CGROUP_PIDS", "CGROUP_FREEZER",
  "CFS_BANDWIDTH", "BLK_CGROUP", "EXPORTFS"];
const KCONFIG_UM = ["HOSTFS", "PTY_CHAN", "NULL_CHAN", "TTY_CHAN", "BINFMT_MISC", "BLOCK", "BLK_DEV"];
const KCONFIG_VIRTIO = ["VIRTUALIZATION", "HYPERVISOR_GUEST", "PARAVIRT", "KVM_GUEST", "PCI", "PCI_MSI", "VIRTIO",
  "VIRTIO_PCI", "VIRTIO_CONSOLE", "NETWORK_FILESYSTEMS", "NET_9P", "NET_9P_VIRTIO", "9P_FS", "9P_FS_POSIX_ACL",
  "PCI_HOST_GENERIC", "HW_RANDOM", "HW_RANDOM_VIRTIO"];
const KCONFIG_SERIAL: Record<string, string[]> = {
  x86_64: ["SERIAL_8250", "SERIAL_8250_CONSOLE"], i386: ["SERIAL_8250", "SERIAL_8250_CONSOLE"],
  arm: ["ARM_AMBA", "SERIAL_AMBA_PL011", "SERIAL_AMBA_PL011_CONSOLE"], arm64: ["ARM_AMBA", "SERIAL_AMBA_PL011", "SERIAL_AMBA_PL011_CONSOLE"],
};

/** The kernel's ARCH= for an ermine arch. */
function kbuildArch(arch: string): string {
  return arch === "x86_64" || arch === "i386" ? "x86" : arch;
}

/** Unpack a source (http(s) URL, file:// or plain path to a tarball, or a directory) into dir; return the tree. */
function fetchSource(config: Config, url: string, dir: string): string {
  let path = url.replace(/^file:\/\//, "");
  if (/^https?:\/\//.test(url)) {
    mkdirs(config.DLDIR);
    path = `${config.DLDIR}/${basename(new URL(url).pathname)}`;
    if (!existsSync(path)) run(["curl", "-fL", "-o", path, url]);
  }
  if (!existsSync(path)) throw usageError(`${url}: no such file or directory`);
  if (isDir(path)) return path;
  if (existsSync(`${dir}/Makefile`)) return dir; // unpacked by an earlier build
  fresh(dir);
  run(["tar", "-xf", path, "-C", dir, "--strip-components=1", "--no-same-owner"]);
  return dir;
}

function isDir(path: string): boolean {
  try {
    readdirSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Set CONFIG_KEY=value in a .config, replacing what was there. */
function setKconfig(dotconfig: string, settings: Map<string, string>): void {
  const keep = readFileSync(dotconfig, "utf8").split("\n").filter((l) => {
    const key = /^(?:# )?CONFIG_([A-Za-z0-9_]+)[= ]/.exec(l)?.[1];
    return !key || !settings.has(key);
  });
  const added = [...settings].map(([k, v]) => `CONFIG_${k}=${v}`);
  shown(`# set in ${dotconfig}: ${added.join(" ")}`);
  writeFileSync(dotconfig, [...keep, ...added].join("\n") + "\n");
}

function kconfigFragment(file: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const kv = /^CONFIG_([A-Za-z0-9_]+)=(.*)$/.exec(line.trim());
    if (kv) m.set(kv[1], kv[2]);
  }
  return m;
}

function kernelFromSource(config: Config, guest: GuestArch, work: string, kernel: string): void {
  needTool("make", "make"); needTool("gcc", "gcc"); needTool("flex", "flex"); needTool("bison", "bison"); needTool("bc", "bc");
  step(`Build the kernel from ${config.LINUX_URL}`);
  const src = fetchSource(config, config.LINUX_URL, `${work}/linux`);
  const out = `${work}/linux-build`;
  mkdirs(out);
  const make = ["make", "-C", src, `O=${out}`, `ARCH=${kbuildArch(guest.arch)}`, ...(config.CROSS_COMPILE ? [`CROSS_COMPILE=${config.CROSS_COMPILE}`] : [])];
  run([...make, "defconfig"]);
  step("Add what containers need: namespaces, cgroups, overlayfs, and 9p over virtio (hostfs for um)");
  const wanted = [...KCONFIG_BASE, ...KCONFIG_MINC, ...(guest.arch === "um" ? KCONFIG_UM : KCONFIG_VIRTIO), ...(KCONFIG_SERIAL[guest.arch] ?? [])];
  const settings = new Map(wanted.map((k) => [k, "y"]));
  settings.set("DEFAULT_HOSTNAME", '"ermine"');
  if (guest.arch === "um") settings.set("BLK_DEV_UBD", "n");
  if (config.KCONFIG) for (const [k, v] of kconfigFragment(config.KCONFIG)) settings.set(k, v);
  setKconfig(`${out}/.config`, settings);
  run([...make, "olddefconfig"]);
  const image = guest.arch === "um" ? "vmlinux" : guest.arch === "arm64" ? "Image.gz" : guest.arch === "arm" ? "zImage" : "bzImage";
  run([...make, `-j${config.JOBS}`, image]);
  const built = guest.arch === "um" ? `${out}/vmlinux` : `${out}/arch/${kbuildArch(guest.arch)}/boot/${image}`;
  copyFile(built, kernel);
  if (guest.arch === "um") run(["strip", kernel]);
}

function busyboxFromSource(config: Config, work: string, rootfs: string): void {
  step(`Build a static busybox from ${config.BUSYBOX_URL}`);
  const src = fetchSource(config, config.BUSYBOX_URL, `${work}/busybox`);
  runIn(src, ["make", "defconfig"]);
  setKconfig(`${src}/.config`, new Map([["STATIC", "y"]]));
  runIn(src, ["make", `-j${config.JOBS}`, "busybox"]);
  copyFile(`${src}/busybox`, `${rootfs}/bin/busybox`);
}

// ---- The initramfs --------------------------------------------------------

function makeRootfs(work: string): string {
  step("Lay out the initramfs: busybox, the modules, the guest's init");
  const rootfs = fresh(`${work}/initramfs`);
  mkdirs(...["bin", "dev", "proc", "sys", "host", "lib/modules"].map((d) => `${rootfs}/${d}`));
  return rootfs;
}

function writeInit(rootfs: string): void {
  step("The guest's init: mount the shares, run run.sh on the console, report its status, power off");
  shown(`cat > ${quote(`${rootfs}/init`)} <<'EOF' ... EOF  # lib/ermine.ts guestInit()`);
  writeFileSync(`${rootfs}/init`, guestInit(), { mode: 0o755 });
}

function pack(rootfs: string, initramfs: string): void {
  needTool("cpio", "cpio");
  step("Pack it as a gzipped newc cpio archive");
  const tmp = `${initramfs}.tmp`;
  const line = `cd ${quote(rootfs)} && find . | cpio -o -H newc --quiet | gzip -9 > ${quote(tmp)}`;
  shown(`(${line})`);
  const r = spawnSync("sh", ["-c", line], { stdio: ["ignore", "inherit", "inherit"] });
  if (r.status !== 0) throw new MincError(`packing the initramfs failed (exit ${r.status})`);
  renameSync(tmp, initramfs);
}

// ---- Commands ---------------------------------------------------------------

interface BuildFlags { rebuild: boolean; repack: boolean }

function build(guest: GuestArch, config: Config, flags: BuildFlags): number {
  const started = Date.now();
  const work = `${config.WORKDIR}/${guest.arch}`;
  const kernel = kernelOf(config.DESTDIR, guest.arch);
  const initramfs = initramfsOf(config.DESTDIR, guest.arch);
  if (flags.rebuild) {
    step("--rebuild: start over (work dir and outputs)");
    for (const p of [work, kernel, initramfs]) rmSync(p, { recursive: true, force: true });
  }
  if (flags.repack) {
    step("--repack: pack the initramfs again");
    rmSync(initramfs, { force: true });
  }
  mkdirs(config.DESTDIR, work);
  const fromSource = config.LINUX_URL !== "";
  if (guest.arch !== "um" && !fromSource && guest.arch !== hostGuestArch()) {
    throw usageError(`--arch ${guest.arch}: the package mode builds for this host (${hostGuestArch()}) and um; set LINUX_URL in a --config for a source build`);
  }
  if (existsSync(kernel)) step(`(${kernel} is there: kept; --rebuild makes it again)`);
  else if (fromSource) kernelFromSource(config, guest, work, kernel);
  else if (guest.arch === "um") umKernelFromPackage(kernel);
  else kernelFromPackage(config, work, kernel);
  if (existsSync(initramfs)) {
    step(`(${initramfs} is there: kept; --repack packs it again)`);
  } else {
    const rootfs = makeRootfs(work);
    if (config.BUSYBOX_URL) busyboxFromSource(config, work, rootfs);
    else busyboxFromPackage(config, work, rootfs);
    if (!fromSource && guest.arch !== "um") modulesFromPackage(work, rootfs);
    writeInit(rootfs);
    pack(rootfs, initramfs);
  }
  process.stdout.write(`${kernel}\n${initramfs}\n(${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
  return 0;
}

function clean(config: Config): number {
  step("Remove the work dir (downloads and unpacked trees); the kernels and initramfses stay");
  shown(`rm -rf ${quote(config.WORKDIR)}`);
  rmSync(config.WORKDIR, { recursive: true, force: true });
  return 0;
}

/** Boot the kernel and initramfs with DIR shared; the guest runs DIR/run.sh (or offers a console). */
function testrun(guest: GuestArch, config: Config, work: string | undefined, timeout: number): Promise<number> {
  const share = resolve(work ?? `${config.WORKDIR}/testrun`);
  // A --work given must be there: a typo would otherwise become a new, empty directory (and no run.sh).
  if (work !== undefined && !existsSync(share)) throw usageError(`--work ${work}: no such directory`);
  if (!existsSync(share)) mkdirSync(share, { recursive: true });
  checkGuest(guest, config.DESTDIR);
  return bootGuest(guest, config.DESTDIR, { share, timeoutSeconds: timeout, ownPidNamespace: true });
}

main(() => {
  let status = 0;
  yargs(process.argv.slice(2)).scriptName("ermine-breeder").version(VERSION).strict()
    .usage("ermine-breeder - build the kernel and initramfs for minc --qemu and --um\nUsage: ermine-breeder <command> [options]")
    .option("arch", { type: "string", describe: "x86_64 (default: the host's), um, or another arch with LINUX_URL" })
    .option("config", { type: "string", array: true, describe: "KEY=VALUE config file; repeatable, later wins" })
    .option("debug", { type: "boolean", describe: "Show every step as shell lines" })
    .middleware((a) => { if (a.debug) process.env.MINC_DEBUG = "1"; })
    .alias("h", "help").fail((msg, err) => { throw usageError(err?.message ?? msg); })
    .demandCommand(1, "a command: build, testrun or clean")
    .command("build", "Build vmlinuz.ARCH and initramfs.ARCH (from packages, or from LINUX_URL)", (y) => y
      .option("rebuild", { type: "boolean", describe: "Start over: remove the work dir and the outputs" })
      .option("repack", { type: "boolean", describe: "Pack the initramfs again" }),
    (a) => { status = build(guestArch(a.arch ?? hostGuestArch()), readConfig(a.config ?? []), { rebuild: !!a.rebuild, repack: !!a.repack }); })
    .command("testrun", "Boot them with DIR shared; the guest runs DIR/run.sh; its exit status is ours", (y) => y
      .option("work", { type: "string", describe: "The shared directory (default WORKDIR/testrun)" })
      .option("timeout", { type: "number", default: 0, describe: "Kill the guest after SECONDS (0: never)" }),
    (a) => { settleLater(testrun(guestArch(a.arch ?? hostGuestArch()), readConfig(a.config ?? []), a.work, a.timeout)); })
    .command("clean", "Remove the work dir", {}, (a) => { status = clean(readConfig((a.config as string[] | undefined) ?? [])); })
    .parseSync();
  return status;
});
