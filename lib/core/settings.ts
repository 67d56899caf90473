// The MINC_* settings: every environment variable the programs read or pass
// on, in one table, each with its type and meaning.
//
// As in the shell MINCS, minc turns its options into these variables and the
// backends read nothing else; marten, polecat and some backends pass a few
// on too, and the user may set some. Each program parses them once
// (readSettings) into a typed object, and typed values become variables
// again with settingsEnv. Which option of minc fills a setting, the option
// itself says (lib/boot/minc-options.ts); `by` tells what sets the others.

/**
 * A setting as it is written in the environment:
 * - flag: on or off. On is written "1". Off is written "" (as sh's
 *   [ -n "$X" ] reads it, any other value is on), or "0" where only "1"
 *   is on (on: "1"). A few readers take any value but "" and "0" as on
 *   (on: "not 0").
 * - text: a string; unset is "".
 * - list: words, written with a blank between them (as the shell's unquoted
 *   $X splits them).
 */
export interface SettingSpec {
  kind: "flag" | "text" | "list";
  /** What it means, in a line. */
  help: string;
  /** What sets it, where no option of minc fills it. */
  by?: string;
  /** A flag: which values are on (by default any but ""). */
  on?: "1" | "not 0";
  /** One of the cgroup limits minc-cage writes (lib/cgroups/cage.ts). */
  cgroup?: true;
}

/**
 * What minc sets for every container, empty (or off) when not asked for, so
 * that the backends see minc's values rather than a caller's: the image's
 * MINC_WORKDIR and MINC_IMAGE_ENV excepted, which a caller that resolved the
 * image already passes through (the guest of minc --qemu). In this order
 * they are exported, and shown in the --debug trace.
 */
const BOOT = {
  MINC_DEBUG: {
    kind: "flag",
    help: "print every step as a shell line on stderr (--debug of minc, marten, polecat, ermine-breeder)",
  },
  MINC_BASEDIR: { kind: "text", help: "the root's lower layer: a directory, or an image's layers TOP:...:BOTTOM" },
  MINC_TMPDIR: {
    kind: "text",
    help: "the working directory: the root's mountpoint, its upper layer, the cleanup chain",
  },
  MINC_RWBIND: { kind: "list", help: "read-write binds HOSTPATH:PATH (-b, and -X's X11 socket)" },
  MINC_OPT_PTY: {
    kind: "flag",
    help: "set with --nopriv, as the shell MINCS set it (no backend reads it)",
    by: "minc --nopriv",
  },
  MINC_CPUMASK: { kind: "text", help: "the CPUs the container runs on, a hex mask for taskset" },
  MINC_NETNS: {
    kind: "text",
    help: "the container's network namespace, minc<PID>; without one it shares the host's network",
    by: "minc --net or --port",
  },
  MINC_NETMODE: { kind: "text", help: "the network: raw, raw,IFNAME (moved in) or dens (NAT by minc-dens)" },
  MINC_USE_DEV: { kind: "flag", help: "devtmpfs as /dev" },
  MINC_MNT_DEBUGFS: { kind: "flag", help: "mount debugfs" },
  MINC_UTSNAME: { kind: "text", help: "the container's hostname" },
  MINC_DIRECT: { kind: "flag", help: "the rootdir itself is the root, no overlay" },
  MINC_DROPCAPS: { kind: "text", help: "capabilities to drop too, as capsh takes them (cap_a,cap_b)" },
  MINC_PRIVILEGED: {
    kind: "flag",
    help: "no confinement: every capability but cap_sys_chroot, no seccomp filter, no masked paths (the shell MINCS)",
  },
  MINC_USERSPEC: { kind: "text", help: "UID[:GID] the command runs as (numbers, or names from the rootfs)" },
  MINC_MEM_LIMIT: { kind: "text", help: "cgroup memory limit: bytes, or with K, M, G", cgroup: true },
  MINC_MEM_SWAP: { kind: "text", help: "cgroup memory+swap limit", cgroup: true },
  MINC_MEM_KMEM: { kind: "text", help: "cgroup kernel memory limit", cgroup: true },
  MINC_CPU_SHARES: { kind: "text", help: "cgroup CPU shares, 2..262144", cgroup: true },
  MINC_CPU_QUOTA: { kind: "text", help: "cgroup CPU quota in usec per 100000", cgroup: true },
  MINC_PID_MAX: { kind: "text", help: "cgroup maximum number of processes", cgroup: true },
  MINC_CROSS_QEMU: {
    kind: "text",
    help: "the qemu-user interpreter (binfmt_misc) of a foreign rootfs, bound into the root",
    by: "minc --cross",
  },
  MINC_NOPRIV: { kind: "flag", help: "an unprivileged container, in a user namespace" },
  MINC_QEMU: { kind: "flag", help: "the container boots in a virtual machine (minc-moult)" },
  MINC_PORT_MAP: { kind: "list", help: "host ports mapped into the container, HOSTPORT[:PORT[:PROTO]]" },
  MINC_ARCH: {
    kind: "text",
    help: "the rootfs's arch (qemu's names; um for user-mode Linux); to marten's backends, the platform to pull or import (marten --arch)",
  },
  MINC_BACKGROUND: { kind: "flag", help: "run in the background, the output in the working directory's log" },
  MINC_PIVOT: { kind: "flag", on: "1", help: "pivot_root rather than capsh and chroot" },
  MINC_DEBUG_PREFIX: {
    kind: "list",
    help: "a command put in front of the dive, outside the new root",
    by: "minc-trapper (strace)",
  },
  MINC_SSHFS_HOST: {
    kind: "text",
    help: "[USER@]HOST of a rootdir sshfs://[USER@]HOST[:PORT]/PATH",
    by: "minc -r sshfs://...",
  },
  MINC_SSHFS_PORT: { kind: "text", help: "PORT of that rootdir", by: "minc -r sshfs://..." },
  MINC_SSHFS_PATH: { kind: "text", help: "PATH of that rootdir", by: "minc -r sshfs://..." },
  MINC_FTRACE: { kind: "text", help: "the script minc-hunt runs in the tracing directory" },
  MINC_WORKDIR: {
    kind: "text",
    help: "where the command starts: an image's working directory",
    by: "minc -r IMAGE or -t ID (the image's config), or minc's caller",
  },
  MINC_IMAGE_ENV: {
    kind: "text",
    help: "an image's environment, a JSON array of NAME=VALUE",
    by: "minc -r IMAGE or -t ID (the image's config), or minc's caller",
  },
} as const satisfies Record<string, SettingSpec>;

/** What the other programs pass on to the backends, and what the user may set. */
const OTHERS = {
  // The boot's own, and the user's for it (minc-hunt, minc-exec, minc-moult, lib/ermine/ermine.ts)
  MINC_PID: {
    kind: "text",
    help: "the container's PID 1 as the host numbers it (minc-hunt's filter)",
    by: "minc-core",
  },
  MINC_SSHFS_OPTS: {
    kind: "text",
    help: "sshfs -o options for -r sshfs://, like IdentityFile=/path,Compression=yes",
    by: "the user",
  },
  MINC_VM_TIMEOUT: {
    kind: "text",
    help: "seconds after which minc --qemu or --um kills the VM (default: no limit)",
    by: "the user",
  },
  MINC_QEMU_ACCEL: {
    kind: "text",
    help: "kvm or tcg for minc --qemu (default: KVM where it can boot a kernel)",
    by: "the user",
  },
  MINC_ERMINE_DIR: {
    kind: "text",
    help: "where the VM kernels and initramfses are (default: libexec/ermine)",
    by: "the user",
  },
  // polecat's traced run (minc-trapper)
  MINC_IGNORE_STATE: {
    kind: "flag",
    on: "1",
    help: "minc-trapper packs what a failing command used",
    by: "polecat --ignore-state",
  },
  // The image store (minc-farm)
  MINC_LONG_ID: { kind: "flag", help: "minc-farm lists long ids", by: "marten lc -l, li -l" },
  MINC_IMPORT_NAME: {
    kind: "text",
    help: "the name of the image minc-farm imports",
    by: "marten import --name, marten pull",
  },
  MINC_IMPORT_UUID: {
    kind: "text",
    help: "the id of a directory minc-farm imports",
    by: "the user (as with the shell MINCS)",
  },
  MINC_BASE_UUID: {
    kind: "text",
    help: "the image below a directory minc-farm imports",
    by: "the user (as with the shell MINCS)",
  },
  MINC_IMPORT_UNPACKED: {
    kind: "flag",
    on: "1",
    help: "the OCI layout minc-farm imports has its layers unpacked already",
    by: "marten pull",
  },
  // Pulls from a registry (minc-smuggler)
  MINC_PULL_USER: { kind: "text", help: "user:password for the registry", by: "marten pull --user" },
  MINC_PULL_INSECURE: {
    kind: "flag",
    on: "not 0",
    help: "allow plain HTTP to a registry not on the loopback",
    by: "marten pull --insecure",
  },
  MINC_PULL_CACHE: {
    kind: "text",
    help: "a directory of blobs (DIR/blobs/sha256) not downloaded again; new ones are added",
    by: "the user",
  },
  MINC_PULL_HAVE: {
    kind: "text",
    help: "an image store's images/: layers already there are not downloaded",
    by: "marten pull",
  },
  MINC_PULL_UNPACK: {
    kind: "flag",
    help: "unpack each layer as soon as it is here, while the others download",
    by: "marten pull",
  },
  // The dens network (minc-dens)
  MINC_DENS_LEASE: {
    kind: "text",
    help: "minc-dens's lease file (default /var/run/minc.lease)",
    by: "the user (the tests)",
  },
  MINC_DENS_IPTABLES: { kind: "text", help: "iptables, iptables-nft or iptables-legacy for minc-dens", by: "the user" },
  // The shell scripts' own (minc-fork.sh, minc-waiter.sh)
  MINC_WAITER_PID: {
    kind: "text",
    help: "the waiter's PID, for minc-fork.sh to check that the waiter is its parent",
    by: "minc-waiter.sh",
  },
  MINC_GUARD_PID: {
    kind: "text",
    help: "minc's guard's PID, for the waiter alone: it sends the guard a URG once in charge",
    by: "minc (startGuard); minc-exec gives it to the waiter only",
  },
} as const satisfies Record<string, SettingSpec>;

export const SETTINGS: Readonly<Record<SettingName, SettingSpec>> = { ...BOOT, ...OTHERS };

type Table = typeof BOOT & typeof OTHERS;
export type SettingName = keyof Table;
export type BootSetting = keyof typeof BOOT;
/** The cgroup limits: the settings marked cgroup. */
export type LimitSetting = { [N in SettingName]: Table[N] extends { cgroup: true } ? N : never }[SettingName];

type ValueOf<S> = S extends { kind: "flag" } ? boolean : S extends { kind: "list" } ? string[] : string;
/** The settings, typed: a flag is a boolean, a list an array of words, the rest strings ("" when unset). */
export type Settings = { -readonly [N in SettingName]: ValueOf<Table[N]> };
/** What minc exports for every container, typed. */
export type BootSettings = Pick<Settings, BootSetting>;
/** The settings as environment variables. */
export type SettingsEnv = { [N in SettingName]?: string };

function namesOf<T extends object>(table: T): (keyof T & string)[] {
  return Object.keys(table) as (keyof T & string)[];
}

export const SETTING_NAMES: readonly SettingName[] = namesOf(SETTINGS);
/** What minc exports for every container (see BOOT). */
export const BOOT_SETTINGS: readonly BootSetting[] = namesOf(BOOT);
export const LIMIT_SETTINGS: readonly LimitSetting[] = SETTING_NAMES.filter(
  (n): n is LimitSetting => SETTINGS[n].cgroup === true,
);

export function isSettingName(name: string): name is SettingName {
  return Object.hasOwn(SETTINGS, name);
}

type Value = Settings[SettingName];

function parsedValue(spec: SettingSpec, text = ""): Value {
  switch (spec.kind) {
    case "flag":
      if (spec.on === "1") return text === "1";
      return text !== "" && !(spec.on === "not 0" && text === "0");
    case "list":
      return text.split(/\s+/).filter((w) => w !== "");
    case "text":
      return text;
  }
}

function textOf(spec: SettingSpec, value: Value): string {
  if (typeof value === "boolean") return value ? "1" : spec.on === "1" ? "0" : "";
  return Array.isArray(value) ? value.join(" ") : value;
}

/** The settings of an environment (by default this process's), parsed once: all of them, or those named. */
export function readSettings(env?: Readonly<Record<string, string | undefined>>): Settings;
export function readSettings<N extends SettingName>(
  env: Readonly<Record<string, string | undefined>>,
  names: readonly N[],
): Pick<Settings, N>;
export function readSettings(
  env: Readonly<Record<string, string | undefined>> = process.env,
  names: readonly SettingName[] = SETTING_NAMES,
): Partial<Settings> {
  return Object.fromEntries(names.map((name) => [name, parsedValue(SETTINGS[name], env[name])])) as Partial<Settings>;
}

/** Settings as the environment variables the backends read, in the order given; those left out are not set. */
export function settingsEnv(settings: Partial<Settings>): SettingsEnv {
  const env: SettingsEnv = {};
  for (const [name, value] of Object.entries(settings)) {
    if (value !== undefined && isSettingName(name)) env[name] = textOf(SETTINGS[name], value);
  }
  return env;
}
