// ermine-breeder: make the kernel and initramfs that minc --qemu and --um boot.
//
//   ermine-breeder [build] [--arch ARCH|all] [-c|--config FILE]... [--rebuild] [--repack] [--rebuild-kernel]
//   ermine-breeder selfbuild [DIR] [build options]
//   ermine-breeder testrun [--arch ARCH] [--work DIR] [--net] [--cmdline ARGS] [--timeout SECONDS] [QEMU OPTIONS...]
//   ermine-breeder clean | distclean [--config FILE]...
//
// Like MINCS's ermine-breeder it writes vmlinuz.ARCH and initramfs.ARCH into
// libexec/ermine/ (or DESTDIR), and takes the same commands (no command
// means build). Two ways to the kernel: assembled from Debian's packages
// (the default: the kernel image and the modules that reach a 9p share and
// the virtio network card, busybox-static), or built from source when
// LINUX_URL is configured (a URL, a git repository, a file: tarball such as
// Debian's linux-source, or a directory), with the kernel options a
// container needs (namespaces, cgroups, overlayfs, 9p over virtio).
// User-mode Linux's kernel is Debian's /usr/bin/linux.uml unless built from
// source. The initramfs is busybox, those modules, and the guest's init
// (lib/ermine/ermine.ts), which runs the host's own programs from a read-only
// share, so the initramfs stays small.
//
// A config file is a shell file, sourced as MINCS sourced it (later files
// win; without one, TOPDIR/ermine.config if there is one): sh sources it in
// a shell of its own and prints back the variables we use, and its hook
// functions user_configure_kernel and user_configure_busybox run where a
// source build configures the kernel and busybox (the config is sourced
// again there, with MINCS's kconfig_set, kconfigs_y/n/m, kconfig_string and
// merge_config). The variables: LINUX_URL, LINUX_BRANCH (a git one's
// branch), BUSYBOX_URL, KCONFIG (a file of CONFIG_X=V lines merged last),
// FORCE_KCONFIG, BUILD_MOD, BUILD_NET, INCREMENTAL, CHECK_WARN, LLVM_OPT,
// DESTDIR, WORKDIR, DLDIR, KERNEL_PACKAGE, BUSYBOX_PACKAGE, JOBS,
// CROSS_COMPILE (the toolchain prefix for a kernel of another arch), ARCH.
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { cpus } from "node:os";
import { basename, resolve } from "node:path";
import yargs from "yargs";
import {
  bootGuest,
  checkGuest,
  ermineDir,
  guestArch,
  GUEST_MODULES,
  GUEST_NET_MODULES,
  guestInit,
  hostGuestArch,
  initramfsOf,
  kernelOf,
  plugGuest,
  type GuestArch,
} from "../lib/ermine/ermine.ts";
import { MincError, start, usageError } from "../lib/core/fail.ts";
import { libexecDir } from "../lib/core/libexec.ts";
import { capture, copyFile, mkdirs, run, runInThisNode } from "../lib/core/run.ts";
import { needTool } from "../lib/core/tools.ts";
import { progname, quote, quoteAll, shown, step } from "../lib/core/trace.ts";
import { VERSION } from "../lib/core/version.ts";
import { main as mincDens } from "../libexec/minc-dens.ts";

// minc-dens del (testrun --net) runs in this Node, not in a Node of its own.
runInThisNode({ "minc-dens": mincDens });

/** What a config file may set, with the defaults it starts from. */
interface Config {
  LINUX_URL: string;
  LINUX_BRANCH: string;
  BUSYBOX_URL: string;
  KCONFIG: string;
  FORCE_KCONFIG: string;
  BUILD_MOD: string;
  BUILD_NET: string;
  INCREMENTAL: string;
  CHECK_WARN: string;
  LLVM_OPT: string;
  DESTDIR: string;
  WORKDIR: string;
  DLDIR: string;
  KERNEL_PACKAGE: string;
  BUSYBOX_PACKAGE: string;
  JOBS: string;
  CROSS_COMPILE: string;
  ARCH: string;
}

/** What MINCS's configs may set for parts this build does not have (the guest runs the host's capsh, ip and iptables). */
const UNUSED_KEYS = ["LIBCAP_URL", "IPTABLES_URL", "IPROUTE2_URL", "UM_LINUX_URL"] as const;

const HOOKS = ["user_configure_kernel", "user_configure_busybox"] as const;
type Hook = (typeof HOOKS)[number];

interface Settings {
  config: Config;
  /** The config files, absolute, in order: sourced again to run a hook. */
  files: string[];
  /** The hook functions they define. */
  hooks: Set<Hook>;
  /** The variables sourced, as the shell running a hook starts with them. */
  env: Record<string, string>;
}

const DEFAULT_WORKDIR = "/var/tmp/ermine-breeder";

/** Where MINCS's tree would be: bin/ and libexec/ are in it (a config may say $TOPDIR). */
function topDir(): string {
  return resolve(libexecDir(), "..");
}

function defaults(arch: string | undefined): Config {
  return {
    LINUX_URL: "",
    LINUX_BRANCH: "master",
    BUSYBOX_URL: "",
    KCONFIG: "",
    FORCE_KCONFIG: "",
    BUILD_MOD: "no",
    BUILD_NET: "no",
    INCREMENTAL: "no",
    CHECK_WARN: "no",
    LLVM_OPT: "",
    DESTDIR: ermineDir(),
    WORKDIR: DEFAULT_WORKDIR,
    DLDIR: `${DEFAULT_WORKDIR}/download`,
    KERNEL_PACKAGE: "linux-image-amd64",
    BUSYBOX_PACKAGE: "busybox-static",
    JOBS: String(cpus().length),
    CROSS_COMPILE: "",
    ARCH: arch ?? "",
  };
}

/**
 * MINCS's helpers for the hooks, in $OUTDIR/.config: kconfig_set NAME VALUE
 * replaces CONFIG_NAME's line (set or "is not set"); kconfig_string quotes
 * the value; kconfigs_y/_n/_m set each NAME given; merge_config FILE sets
 * each CONFIG_NAME=VALUE line of FILE.
 */
const KCONFIG_HELPERS = `
kconfig_set() {
  sed -i "/^\\(# \\)\\{0,1\\}CONFIG_$1[= ]/d" "$OUTDIR/.config"
  printf 'CONFIG_%s=%s\\n' "$1" "$2" >> "$OUTDIR/.config"
}
kconfig_string() { kconfig_set "$1" "\\"$2\\""; }
kconfigs_y() { for __k; do kconfig_set "$__k" y; done; }
kconfigs_n() { for __k; do kconfig_set "$__k" n; done; }
kconfigs_m() { for __k; do kconfig_set "$__k" m; done; }
merge_config() {
  while IFS= read -r __line || [ -n "$__line" ]; do
    case $__line in CONFIG_*=*) __line=\${__line#CONFIG_}; kconfig_set "\${__line%%=*}" "\${__line#*=}" ;; esac
  done < "$1"
}
`;

/** The shell that sources the config files given as its arguments, as MINCS did (set -e). */
const SOURCE_CONFIGS = `set -e
${KCONFIG_HELPERS}
for __ermine_config in "$@"; do . "$__ermine_config"; done
`;

/** Then prints back, on fd 3, each variable we use as NAME=VALUE and each hook defined, NUL-terminated. */
function printBack(keys: readonly string[]): string {
  return `for __ermine_key in ${keys.join(" ")}; do
  eval "__ermine_value=\\\${$__ermine_key-}"
  printf '%s=%s\\0' "$__ermine_key" "$__ermine_value" >&3
done
for __ermine_hook in ${HOOKS.join(" ")}; do
  if command -v "$__ermine_hook" >/dev/null 2>&1; then printf 'hook=%s\\0' "$__ermine_hook" >&3; fi
done
`;
}

/**
 * Source the config files (or TOPDIR/ermine.config without one) in sh, with
 * the defaults set (and MINCS's TOPDIR and LIBEXEC), and read back what they
 * set. The paths reach sh as arguments, never as script text.
 */
function readConfig(given: string[], arch: string | undefined): Settings {
  let files = given.map((f) => resolve(f));
  for (const [i, file] of files.entries()) {
    if (!existsSync(file) || statSync(file).isDirectory()) throw usageError(`--config ${given[i]}: no such file`);
  }
  const fallback = `${topDir()}/ermine.config`;
  if (given.length === 0 && existsSync(fallback)) files = [fallback];
  const start = defaults(arch);
  const env: Record<string, string> = {
    ...(start as unknown as Record<string, string>),
    TOPDIR: topDir(),
    LIBEXEC: libexecDir(),
  };
  for (const key of UNUSED_KEYS) env[key] = "";
  const keys = [...Object.keys(start), ...UNUSED_KEYS];
  const hooks = new Set<Hook>();
  if (files.length > 0) {
    shown(files.map((f) => `. ${quote(f)}`).join("; "));
    const r = spawnSync("/bin/sh", ["-c", SOURCE_CONFIGS + printBack(keys), progname(), ...files], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "inherit", "inherit", "pipe"],
    });
    if (r.error) throw new MincError(`cannot run /bin/sh: ${r.error.message}`);
    const names = files.map((f) => basename(f)).join(", ");
    if (r.status !== 0) throw usageError(`--config ${names}: sourcing it failed (sh exit ${r.status ?? r.signal})`);
    for (const item of (r.output[3] as Buffer).toString("utf8").split("\0")) {
      const eq = item.indexOf("=");
      if (eq < 0) continue;
      const [key, value] = [item.slice(0, eq), item.slice(eq + 1)];
      if (key === "hook") hooks.add(value as Hook);
      else env[key] = value;
    }
  }
  const config = Object.fromEntries(Object.keys(start).map((k) => [k, env[k]])) as unknown as Config;
  // DLDIR follows a WORKDIR a config moved, unless it set DLDIR too.
  if (config.DLDIR === start.DLDIR && config.WORKDIR !== start.WORKDIR) config.DLDIR = `${config.WORKDIR}/download`;
  env.DLDIR = config.DLDIR;
  if (!/^[1-9][0-9]*$/.test(config.JOBS)) throw usageError(`JOBS=${config.JOBS}: a number of jobs`);
  for (const key of ["DESTDIR", "WORKDIR", "DLDIR"] as const) {
    if (!config[key]) throw usageError(`${key} is empty`);
  }
  const unused = UNUSED_KEYS.filter((k) => env[k]);
  if (unused.length)
    notice(
      `${unused.join(", ")}: not used: the guest runs the host's capsh, ip and iptables through its share, and um's kernel is Debian's or LINUX_URL's`,
    );
  return { config, files, hooks, env };
}

function yes(value: string): boolean {
  return value === "yes";
}

function notice(message: string): void {
  process.stderr.write(`${progname()}: notice: ${message}\n`);
}

/**
 * Run a config's hook where MINCS called it: the config files sourced
 * again in a shell that starts in dir, with OUTDIR set (the .config the
 * kconfig helpers edit) and ARCH, CROSS_COMPILE and the config's variables
 * in its environment.
 */
function runHook(s: Settings, hook: Hook, dir: string, vars: Record<string, string>): void {
  if (!s.hooks.has(hook)) return;
  step(`The config's ${hook}, as MINCS ran it: in ${dir}, with OUTDIR=${vars.OUTDIR}`);
  shown(
    `(cd ${quote(dir)} && ${s.files.map((f) => `. ${quote(f)}`).join(" && ")} && ${hook}${hook === "user_configure_kernel" ? ' "$OUTDIR"' : ""})`,
  );
  const script = `${SOURCE_CONFIGS}cd "$__ermine_dir"
case $__ermine_hook in
  user_configure_kernel) user_configure_kernel "$OUTDIR" ;;
  user_configure_busybox) user_configure_busybox ;;
esac
`;
  const r = spawnSync("/bin/sh", ["-c", script, progname(), ...s.files], {
    env: { ...process.env, ...s.env, ...vars, __ermine_dir: dir, __ermine_hook: hook },
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (r.error) throw new MincError(`cannot run /bin/sh: ${r.error.message}`);
  if (r.status !== 0) throw new MincError(`the config's ${hook} failed (exit ${r.status ?? r.signal})`);
}

/** Run a command in a directory, shown as a subshell line. */
function runIn(dir: string, argv: string[]): void {
  shown(`(cd ${quote(dir)} && ${quoteAll(argv)})`);
  const r = spawnSync(argv[0], argv.slice(1), { cwd: dir, stdio: ["ignore", "inherit", "inherit"] });
  if (r.error || r.status !== 0)
    throw new MincError(`failed: ${quoteAll(argv)} in ${dir} (${r.error?.message ?? `exit ${r.status}`})`);
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
  const find = () =>
    readdirSync(config.DLDIR).find((f) => f.startsWith(`${pkg.replace(/:.*/, "")}_`) && f.endsWith(".deb"));
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

/** The kernel package, unpacked in the work dir: its kernel and the modules the initramfs takes. */
function unpackKernelPackage(config: Config, work: string): string {
  const pkg = realKernelPackage(config.KERNEL_PACKAGE);
  return unpackDeb(debOf(config, pkg), `${work}/kernel-package`);
}

function kernelFromPackage(config: Config, work: string, kernel: string): void {
  step(`Take the kernel from Debian's package ${config.KERNEL_PACKAGE}`);
  const dir = unpackKernelPackage(config, work);
  const vmlinuz = readdirSync(`${dir}/boot`).find((f) => f.startsWith("vmlinuz-"));
  if (!vmlinuz) throw new MincError(`${config.KERNEL_PACKAGE} has no /boot/vmlinuz-*`);
  copyFile(`${dir}/boot/${vmlinuz}`, kernel);
}

function umKernelFromPackage(kernel: string): void {
  step("User-mode Linux's kernel is Debian's /usr/bin/linux.uml (hostfs and initrd built in)");
  if (!existsSync("/usr/bin/linux.uml"))
    throw new MincError("/usr/bin/linux.uml: missing (apt-get install user-mode-linux)");
  copyFile("/usr/bin/linux.uml", kernel);
  chmodSync(kernel, 0o755);
}

/**
 * The modules that reach a 9p share over virtio (required), and those of the
 * virtio network card (where the kernel has them as modules), decompressed
 * where they are .ko.xz or .ko.zst.
 */
function modulesFromPackage(config: Config, work: string, rootfs: string): void {
  let tree = `${work}/kernel-package/lib/modules`;
  // (clean removed the unpacked package, and the kernel was kept: unpack it again for the modules.)
  if (!existsSync(tree)) tree = `${unpackKernelPackage(config, work)}/lib/modules`;
  if (!existsSync(tree)) return;
  step(
    "Copy the modules that reach a 9p share and the network card over virtio (the guest's init loads them in this order)",
  );
  const files = readdirSync(tree, { recursive: true }) as string[];
  mkdirs(`${rootfs}/lib/modules`);
  for (const name of [...GUEST_MODULES, ...GUEST_NET_MODULES]) {
    const found = files.find((f) => new RegExp(`(^|/)${name}\\.ko(\\.xz|\\.zst)?$`).test(f));
    if (!found) {
      if (GUEST_MODULES.includes(name)) throw new MincError(`the kernel package has no module ${name}`);
      continue; // (built in, or no network card: testrun --net says so in the guest)
    }
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
const KCONFIG_BASE = [
  "NET",
  "NET_CORE",
  "NETDEVICES",
  "TTY",
  "INET",
  "BINFMT_ELF",
  "BINFMT_SCRIPT",
  "BLK_DEV_INITRD",
  "DEVTMPFS",
  "TMPFS",
  "UNIX",
];
const KCONFIG_MINC = [
  "OVERLAY_FS",
  "NAMESPACES",
  "UTS_NS",
  "IPC_NS",
  "USER_NS",
  "PID_NS",
  "NET_NS",
  "CGROUPS",
  "EVENTFD",
  "CGROUP_DEVICE",
  "CPUSETS",
  "CGROUP_CPUACCT",
  "PAGE_COUNTER",
  "MEMCG",
  "CGROUP_PERF",
  "CGROUP_SCHED",
  "CGROUP_HUGETLB",
  "FAIR_GROUP_SCHED",
  "CGROUP_PIDS",
  "CGROUP_FREEZER",
  "CFS_BANDWIDTH",
  "BLK_CGROUP",
  "EXPORTFS",
];
/** BUILD_NET=yes: what containers with a network of their own need inside the guest (veth, bridge, NAT). */
const KCONFIG_NET = [
  "VETH",
  "IPV6",
  "BRIDGE",
  "NETFILTER",
  "NETFILTER_ADVANCED",
  "NETFILTER_XTABLES",
  "NETFILTER_INGRESS",
  "NETFILTER_NETLINK",
  "BRIDGE_NF_EBTABLES",
  "IP_NF_NAT",
  "IP_NF_IPTABLES",
  "IP_NF_FILTER",
  "IP_NF_TARGET_REDIRECT",
  "IP_NF_TARGET_MASQUERADE",
  "NF_NAT",
  "NF_CONNTRACK",
  "NF_TABLES",
  "NFT_NAT",
  "NFT_MASQ",
  "NFT_REDIR",
  "NETFILTER_XT_CONNMARK",
  "NETFILTER_XT_NAT",
  "NETFILTER_XT_MATCH_CONNTRACK",
  "NETFILTER_XT_MATCH_ADDRTYPE",
  "NETFILTER_XT_MATCH_STATE",
  "NETFILTER_XT_MATCH_COMMENT",
];
const KCONFIG_UM = [
  "HOSTFS",
  "PTY_CHAN",
  "NULL_CHAN",
  "TTY_CHAN",
  "BINFMT_MISC",
  "BLOCK",
  "BLK_DEV",
  "UML_NET",
  "UML_NET_TUNTAP",
];
const KCONFIG_VIRTIO = [
  "VIRTUALIZATION",
  "HYPERVISOR_GUEST",
  "PARAVIRT",
  "KVM_GUEST",
  "PCI",
  "PCI_MSI",
  "VIRTIO",
  "VIRTIO_PCI",
  "VIRTIO_CONSOLE",
  "VIRTIO_NET",
  "NETWORK_FILESYSTEMS",
  "NET_9P",
  "NET_9P_VIRTIO",
  "9P_FS",
  "9P_FS_POSIX_ACL",
  "PCI_HOST_GENERIC",
  "HW_RANDOM",
  "HW_RANDOM_VIRTIO",
];
const KCONFIG_SERIAL: Record<string, string[]> = {
  x86_64: ["SERIAL_8250", "SERIAL_8250_CONSOLE"],
  i386: ["SERIAL_8250", "SERIAL_8250_CONSOLE"],
  arm: ["ARM_AMBA", "SERIAL_AMBA_PL011", "SERIAL_AMBA_PL011_CONSOLE"],
  arm64: ["ARM_AMBA", "SERIAL_AMBA_PL011", "SERIAL_AMBA_PL011_CONSOLE"],
};

/** The kernel's directory under arch/ for an ermine arch. */
function kbuildArch(arch: string): string {
  return arch === "x86_64" || arch === "i386" ? "x86" : arch;
}

/** A git repository as MINCS told them: a git: URL, or one ending in .git. */
function isGitUrl(url: string): boolean {
  return /^git:\/\//.test(url) || /\.git\/?$/.test(url);
}

/**
 * Unpack a source into dir and return the tree: a git repository (cloned,
 * the branch given), an http(s)/ftp URL of a tarball (downloaded into
 * DLDIR), a file: URL or a path of a tarball, or of a directory (used as it is).
 */
function fetchSource(config: Config, url: string, dir: string, branch = ""): string {
  if (isGitUrl(url)) {
    if (existsSync(`${dir}/Makefile`)) return dir; // cloned by an earlier build
    needTool("git", "git");
    fresh(dir);
    run(["git", "clone", "-q", "--depth=1", ...(branch ? ["-b", branch] : []), url, dir]);
    return dir;
  }
  // (file:/PATH, file://PATH and file:///PATH: MINCS's configs wrote file:/$WORKDIR/...)
  let path = url.replace(/^file:\/*/, "/");
  if (/^(https?|ftp):\/\//.test(url)) {
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
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Set CONFIG_KEY=value in a .config, replacing what was there. */
function setKconfig(dotconfig: string, settings: Map<string, string>): void {
  const keep = readFileSync(dotconfig, "utf8")
    .split("\n")
    .filter((l) => {
      const key = /^(?:# )?CONFIG_([A-Za-z0-9_]+)[= ]/.exec(l)?.[1];
      return !key || !settings.has(key);
    });
  const added = [...settings].map(([k, v]) => `CONFIG_${k}=${v}`);
  shown(`# set in ${dotconfig}: ${added.join(" ")}`);
  writeFileSync(dotconfig, `${[...keep, ...added].join("\n")}\n`);
}

function kconfigFragment(file: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const kv = /^CONFIG_([A-Za-z0-9_]+)=(.*)$/.exec(line.trim());
    if (kv) m.set(kv[1], kv[2]);
  }
  return m;
}

/** The kernel's make, for the tree src built in out: ARCH, the cross toolchain and LLVM_OPT's words. */
function kernelMake(config: Config, guest: GuestArch, src: string, out: string): string[] {
  return [
    "make",
    "-C",
    src,
    `O=${out}`,
    `ARCH=${guest.arch}`,
    ...(config.CROSS_COMPILE ? [`CROSS_COMPILE=${config.CROSS_COMPILE}`] : []),
    ...config.LLVM_OPT.split(/\s+/).filter((w) => w),
  ];
}

function kernelSource(config: Config, work: string): string {
  return fetchSource(config, config.LINUX_URL, `${work}/linux`, isGitUrl(config.LINUX_URL) ? config.LINUX_BRANCH : "");
}

function kernelFromSource(s: Settings, guest: GuestArch, work: string, kernel: string): void {
  const config = s.config;
  needTool("make", "make");
  needTool("gcc", "gcc");
  needTool("flex", "flex");
  needTool("bison", "bison");
  needTool("bc", "bc");
  step(`Build the kernel from ${config.LINUX_URL}`);
  const src = kernelSource(config, work);
  const out = `${work}/linux-build`;
  mkdirs(out);
  const make = kernelMake(config, guest, src, out);
  if (config.FORCE_KCONFIG) {
    step(
      `FORCE_KCONFIG: ${config.FORCE_KCONFIG} is the .config${yes(config.BUILD_MOD) ? "" : " (modules off: =m made =n, BUILD_MOD is not yes)"}`,
    );
    const text = readFileSync(config.FORCE_KCONFIG, "utf8");
    shown(`cp ${quote(config.FORCE_KCONFIG)} ${quote(`${out}/.config`)}`);
    writeFileSync(`${out}/.config`, yes(config.BUILD_MOD) ? text : text.replace(/=m$/gm, "=n"));
  } else {
    run([...make, "defconfig"]);
    runHook(s, "user_configure_kernel", src, {
      OUTDIR: out,
      KERNEL_DIR: src,
      KBUILD_DIR: out,
      ARCH: guest.arch,
      CROSS_COMPILE: config.CROSS_COMPILE,
    });
    step(
      "Add what containers need: namespaces, cgroups, overlayfs, and 9p and a network card over virtio (hostfs for um)",
    );
    const wanted = [
      ...KCONFIG_BASE,
      ...KCONFIG_MINC,
      ...(yes(config.BUILD_NET) ? KCONFIG_NET : []),
      ...(guest.arch === "um" ? KCONFIG_UM : KCONFIG_VIRTIO),
      ...(KCONFIG_SERIAL[guest.arch] ?? []),
    ];
    const settings = new Map(wanted.map((k) => [k, "y"]));
    settings.set("DEFAULT_HOSTNAME", '"ermine"');
    if (guest.arch === "um") settings.set("BLK_DEV_UBD", "n");
    if (config.KCONFIG) for (const [k, v] of kconfigFragment(config.KCONFIG)) settings.set(k, v);
    setKconfig(`${out}/.config`, settings);
  }
  run([...make, "olddefconfig"]);
  const image =
    guest.arch === "um" ? "vmlinux" : guest.arch === "arm64" ? "Image.gz" : guest.arch === "arm" ? "zImage" : "bzImage";
  run([
    ...make,
    `-j${config.JOBS}`,
    image,
    ...(yes(config.BUILD_MOD) ? ["modules"] : []),
    ...(yes(config.CHECK_WARN) ? ["W=1"] : []),
  ]);
  const built = guest.arch === "um" ? `${out}/vmlinux` : `${out}/arch/${kbuildArch(guest.arch)}/boot/${image}`;
  copyFile(built, kernel);
  if (guest.arch === "um") run(["strip", kernel]);
}

/** BUILD_MOD=yes: the source build's modules go into the initramfs, as MINCS's modules_install did. */
function modulesFromSource(config: Config, guest: GuestArch, work: string, rootfs: string): void {
  step("BUILD_MOD=yes: install the kernel's modules into the initramfs");
  run([
    ...kernelMake(config, guest, kernelSource(config, work), `${work}/linux-build`),
    "modules_install",
    `INSTALL_MOD_PATH=${rootfs}`,
  ]);
}

function busyboxFromSource(s: Settings, work: string, rootfs: string): void {
  const config = s.config;
  step(`Build a static busybox from ${config.BUSYBOX_URL}`);
  const src = fetchSource(config, config.BUSYBOX_URL, `${work}/busybox`);
  runIn(src, ["make", "defconfig"]);
  runHook(s, "user_configure_busybox", src, { OUTDIR: src });
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
  shown(`cat > ${quote(`${rootfs}/init`)} <<'EOF' ... EOF  # lib/ermine/ermine.ts guestInit()`);
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

interface BuildFlags {
  rebuild: boolean;
  repack: boolean;
  rebuildKernel: boolean;
}

/** --arch: one arch, or all: each this build can make (the host's and um; another needs LINUX_URL and its own CROSS_COMPILE). */
function archesOf(given: string | undefined, config: Config): GuestArch[] {
  const name = given ?? (config.ARCH || hostGuestArch());
  if (name !== "all") return [guestArch(name)];
  notice(
    `--arch all: ${hostGuestArch()} and um (another arch needs a source build of its own: LINUX_URL and CROSS_COMPILE, with --arch ARCH)`,
  );
  return [guestArch(hostGuestArch()), guestArch("um")];
}

/** What a config asked for that a build from Debian's packages has no place for: said once, not silently dropped. */
function packageModeNotices(s: Settings, fromSource: boolean): void {
  const c = s.config;
  const start = defaults(undefined);
  if (!fromSource) {
    const unused = (
      [
        "FORCE_KCONFIG",
        "BUILD_MOD",
        "BUILD_NET",
        "INCREMENTAL",
        "CHECK_WARN",
        "LLVM_OPT",
        "LINUX_BRANCH",
        "KCONFIG",
      ] as const
    )
      .filter((k) => c[k] !== start[k])
      .map((k) => `${k}=${c[k]}`);
    if (s.hooks.has("user_configure_kernel")) unused.push("user_configure_kernel");
    if (unused.length)
      notice(
        `not used: ${unused.join(", ")}: they configure a kernel built from source (LINUX_URL); this one is Debian's ${c.KERNEL_PACKAGE}`,
      );
  }
  if (!c.BUSYBOX_URL && s.hooks.has("user_configure_busybox")) {
    notice(
      `not used: user_configure_busybox: it configures a busybox built from source (BUSYBOX_URL); this one is Debian's ${c.BUSYBOX_PACKAGE}`,
    );
  }
}

function build(s: Settings, arches: GuestArch[], flags: BuildFlags): number {
  const config = s.config;
  const fromSource = config.LINUX_URL !== "";
  for (const guest of arches) {
    if (guest.arch !== "um" && !fromSource && guest.arch !== hostGuestArch()) {
      throw usageError(
        `--arch ${guest.arch}: the package mode builds for this host (${hostGuestArch()}) and um; set LINUX_URL in a --config for a source build`,
      );
    }
  }
  packageModeNotices(s, fromSource);
  for (const guest of arches) buildOne(s, guest, flags);
  return 0;
}

function buildOne(s: Settings, guest: GuestArch, flags: BuildFlags): void {
  const config = s.config;
  const started = Date.now();
  const work = `${config.WORKDIR}/${guest.arch}`;
  const kernel = kernelOf(config.DESTDIR, guest.arch);
  const initramfs = initramfsOf(config.DESTDIR, guest.arch);
  const fromSource = config.LINUX_URL !== "";
  // The initramfs carries modules of this very kernel: made again with it.
  const modulesInside = fromSource ? yes(config.BUILD_MOD) : guest.arch !== "um";
  if (flags.rebuild) {
    step("--rebuild: start over (work dir and outputs)");
    for (const p of [work, kernel, initramfs]) rmSync(p, { recursive: true, force: true });
  }
  if (flags.rebuildKernel) {
    step(
      `--rebuild-kernel: make the kernel again${modulesInside ? ", and the initramfs, which holds its modules" : ""}`,
    );
    const stale = [
      kernel,
      ...(modulesInside ? [initramfs] : []),
      ...(fromSource && !yes(config.INCREMENTAL) ? [`${work}/linux-build`] : []),
    ];
    for (const p of stale) {
      shown(`rm -rf ${quote(p)}`);
      rmSync(p, { recursive: true, force: true });
    }
  }
  if (flags.repack) {
    step("--repack: pack the initramfs again");
    rmSync(initramfs, { force: true });
  }
  mkdirs(config.DESTDIR, work);
  if (existsSync(kernel)) step(`(${kernel} is there: kept; --rebuild-kernel makes it again)`);
  else if (fromSource) kernelFromSource(s, guest, work, kernel);
  else if (guest.arch === "um") umKernelFromPackage(kernel);
  else kernelFromPackage(config, work, kernel);
  if (existsSync(initramfs)) {
    step(`(${initramfs} is there: kept; --repack packs it again)`);
  } else {
    const rootfs = makeRootfs(work);
    if (config.BUSYBOX_URL) busyboxFromSource(s, work, rootfs);
    else busyboxFromPackage(config, work, rootfs);
    if (!fromSource && guest.arch !== "um") modulesFromPackage(config, work, rootfs);
    if (fromSource && yes(config.BUILD_MOD)) modulesFromSource(config, guest, work, rootfs);
    writeInit(rootfs);
    pack(rootfs, initramfs);
  }
  process.stdout.write(`${kernel}\n${initramfs}\n(${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
}

/** rm -rf, shown; never the root directory (an empty or "/" setting in a config). */
function removeAll(path: string): void {
  if (resolve(path) === "/") throw usageError(`${path}: refusing to remove the root directory`);
  if (!existsSync(path)) return;
  shown(`rm -rf ${quote(path)}`);
  rmSync(path, { recursive: true, force: true });
}

/** Remove dir but what keep is inside it (the downloads inside the work dir). */
function removeAllBut(dir: string, keep: string): void {
  if (!keep.startsWith(`${dir}/`)) return removeAll(dir);
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir)) {
    const path = `${dir}/${entry}`;
    if (path === keep) continue;
    if (keep.startsWith(`${path}/`)) removeAllBut(path, keep);
    else removeAll(path);
  }
}

function clean(config: Config): number {
  step("Remove the work dir (unpacked packages and trees, builds); the downloads and the kernels and initramfses stay");
  removeAllBut(resolve(config.WORKDIR), resolve(config.DLDIR));
  return 0;
}

/** Everything build made: the work dir, the downloads, and the kernels and initramfses in DESTDIR (which goes too if that leaves it empty). */
function distclean(config: Config): number {
  step("Remove the work dir, the downloads, and the kernels and initramfses built");
  removeAll(config.WORKDIR);
  removeAll(config.DLDIR);
  const dest = config.DESTDIR;
  if (existsSync(dest)) {
    for (const f of readdirSync(dest).filter((f) => /^(vmlinuz|initramfs)\.[a-z0-9_]+(\.tmp)?$/.test(f)))
      removeAll(`${dest}/${f}`);
    if (readdirSync(dest).length === 0) {
      shown(`rmdir ${quote(dest)}`);
      rmdirSync(dest);
    }
  }
  return 0;
}

/** selfbuild [DIR]: MINCS built in a new debootstrapped root; this build needs none. */
function selfbuild(s: Settings, dir: string | undefined): void {
  if (dir !== undefined && !isDir(dir)) throw usageError(`selfbuild ${dir}: no such directory`);
  const fromSource = s.config.LINUX_URL !== "";
  notice(
    `selfbuild builds here, as build does: ${fromSource ? "a source build uses this host's toolchain" : "Debian's packages need no toolchain"}` +
      ` (ermine-breeder runs on Node.js, which a new debootstrapped root has not)${dir !== undefined ? `; ${dir} is not used` : ""}`,
  );
}

interface TestrunOptions {
  work?: string;
  timeout: number;
  net: boolean;
  cmdline?: string;
  qemuOptions: string[];
}

/** Boot the kernel and initramfs with DIR shared; the guest runs DIR/run.sh (or offers a console). */
async function testrun(guest: GuestArch, config: Config, o: TestrunOptions): Promise<number> {
  const share = resolve(o.work ?? `${config.WORKDIR}/testrun`);
  if (o.qemuOptions.length && !guest.qemu) {
    throw usageError(`${quoteAll(o.qemuOptions)}: options for qemu, but --arch um boots user-mode Linux`);
  }
  // A --work given must be there: a typo would otherwise become a new, empty directory (and no run.sh).
  if (o.work !== undefined && !existsSync(share)) throw usageError(`--work ${o.work}: no such directory`);
  checkGuest(guest, config.DESTDIR);
  if (!existsSync(share)) mkdirSync(share, { recursive: true });
  const cmdline = (o.cmdline ?? "").split(/\s+/).filter((w) => w);
  const plugged = o.net ? plugGuest(`ermine-testrun-${process.pid}`) : undefined;
  try {
    return await bootGuest(guest, config.DESTDIR, {
      share,
      timeoutSeconds: o.timeout,
      ownPidNamespace: true,
      cmdline,
      net: plugged?.net,
      qemuOptions: o.qemuOptions,
    });
  } finally {
    plugged?.unplug();
  }
}

/** testrun's options take a value (the rest are flags). */
const TESTRUN_VALUES = ["--arch", "--work", "--timeout", "--cmdline", "--config", "-c"];
const TESTRUN_FLAGS = ["--net", "--debug", "--help", "-h", "--version"];

/**
 * The command line, and the qemu options at the end of a testrun's: as in
 * MINCS, the first word after testrun that is not one of its options (or
 * what follows --) starts them.
 */
function splitQemuOptions(argv: string[]): [string[], string[]] {
  let i = 0;
  // (The command: the first word that is neither an option nor an option's value.)
  while (i < argv.length && argv[i].startsWith("-")) i += TESTRUN_VALUES.includes(argv[i]) ? 2 : 1;
  if (argv[i] !== "testrun") return [argv, []];
  for (i++; i < argv.length; i++) {
    const word = argv[i];
    if (word === "--") return [argv.slice(0, i), argv.slice(i + 1)];
    if (TESTRUN_VALUES.includes(word)) i++;
    else if (!TESTRUN_FLAGS.includes(word) && !TESTRUN_VALUES.includes(word.replace(/=.*/, ""))) break;
  }
  return [argv.slice(0, i), argv.slice(i)];
}

start(() => {
  let status = 0;
  let testing: Promise<number> | undefined; // (testrun is the one command that works asynchronously)
  const [args, qemuOptions] = splitQemuOptions(process.argv.slice(2));
  // (The global options, in every command's arguments.)
  const configOf = (a: Record<string, unknown>) =>
    readConfig((a.config as string[] | undefined) ?? [], a.arch as string | undefined);
  const archOf = (a: Record<string, unknown>) => a.arch as string | undefined;
  const buildOptions = <T>(y: import("yargs").Argv<T>) =>
    y
      .option("rebuild", { type: "boolean", describe: "Start over: remove the work dir and the outputs" })
      .option("repack", { type: "boolean", describe: "Pack the initramfs again" })
      .option("rebuild-kernel", {
        type: "boolean",
        describe: "Make the kernel again (and the initramfs when it holds the kernel's modules)",
      });
  const flagsOf = (a: { rebuild?: boolean; repack?: boolean; "rebuild-kernel"?: boolean }): BuildFlags => ({
    rebuild: !!a.rebuild,
    repack: !!a.repack,
    rebuildKernel: !!a["rebuild-kernel"],
  });
  const parser = yargs(args)
    .scriptName("ermine-breeder")
    .version(VERSION)
    .strict()
    .usage(
      "ermine-breeder - build the kernel and initramfs for minc --qemu and --um\nUsage: ermine-breeder [command] [options]",
    )
    .option("arch", {
      type: "string",
      describe: "x86_64 (default: the host's), um, all (both), or another arch with LINUX_URL",
    })
    .option("config", {
      alias: "c",
      type: "string",
      array: true,
      describe: "A config file (shell, sourced); repeatable, later wins",
    })
    .option("debug", { type: "boolean", describe: "Show every step as shell lines" })
    .middleware((a) => {
      if (a.debug) process.env.MINC_DEBUG = "1";
    })
    .alias("h", "help")
    .fail((msg, err) => {
      throw usageError(err?.message ?? msg);
    })
    .command(
      ["build", "$0"],
      "Build vmlinuz.ARCH and initramfs.ARCH, from packages or from LINUX_URL (the default command)",
      buildOptions,
      (a) => {
        const s = configOf(a);
        status = build(s, archesOf(archOf(a), s.config), flagsOf(a));
      },
    )
    .command(
      "selfbuild [dir]",
      "MINCS's build in a new root: the same as build here (DIR is not used)",
      (y) => buildOptions(y).positional("dir", { type: "string", describe: "MINCS's root to build in (not used)" }),
      (a) => {
        const s = configOf(a);
        selfbuild(s, a.dir);
        status = build(s, archesOf(archOf(a), s.config), flagsOf(a));
      },
    )
    .command(
      "testrun",
      "Boot them with DIR shared; the guest runs DIR/run.sh; its exit status is ours (QEMU OPTIONS at the end go to qemu)",
      (y) =>
        y
          .option("work", { type: "string", describe: "The shared directory (default WORKDIR/testrun)" })
          .option("net", {
            type: "boolean",
            describe: "A network card on the dens network (minc-dens: a leased address, NAT)",
          })
          .option("cmdline", { type: "string", describe: "More words for the guest kernel's command line" })
          .option("timeout", { type: "number", default: 0, describe: "Kill the guest after SECONDS (0: never)" }),
      (a) => {
        const s = configOf(a);
        const arch = archOf(a) ?? (s.config.ARCH || hostGuestArch());
        if (arch === "all") throw usageError("--arch all: testrun boots one arch");
        testing = testrun(guestArch(arch), s.config, {
          work: a.work,
          timeout: a.timeout,
          net: !!a.net,
          cmdline: a.cmdline,
          qemuOptions,
        });
      },
    )
    .command("clean", "Remove the work dir (the downloads stay)", {}, (a) => {
      status = clean(configOf(a).config);
    })
    .command("distclean", "Remove the work dir, the downloads, and the kernels and initramfses built", {}, (a) => {
      status = distclean(configOf(a).config);
    })
    .command("help", "Show this message", {}, () => {
      parser.showHelp("log");
    });
  parser.parseSync();
  return testing ?? status;
});
