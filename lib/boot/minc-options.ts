// minc's options: one table that the parser, --help, the man page and the
// shell completion all read, so they cannot disagree.
//
// The parser walks the arguments like MINCS's while/case loop: options first,
// and the first word that is not an option starts the user's command, which
// passes through untouched. (yargs cannot stop at the command without a
// pre-scan that would itself be this parser, and it adds ~30 ms to every
// container start; marten and polecat use yargs.)
import { usageError } from "../core/fail.ts";
import type { Settings, SettingName } from "../core/settings.ts";

export interface OptionSpec {
  long: string;
  short?: string;
  /** Name of the argument, if the option takes one. */
  arg?: string;
  /** The argument may be left out (only --net does this). */
  optionalArg?: (next: string) => boolean;
  /** The MINC_* setting the option fills (lib/core/settings.ts), if any. */
  setting?: SettingName;
  help: string;
  group: "container" | "limits" | "network" | "special";
}

export const MINC_OPTIONS: readonly OptionSpec[] = [
  { long: "help", short: "h", help: "Show this help", group: "container" },
  { long: "version", help: "Show the version", group: "container" },
  { long: "keep", short: "k", help: "Keep the temporary directory", group: "container" },
  {
    long: "tempdir",
    short: "t",
    arg: "DIR",
    setting: "MINC_TMPDIR",
    help: "Use DIR as the working directory (implies -k); reuse it to see earlier writes (not while another container uses it)",
    group: "container",
  },
  {
    long: "direct",
    short: "D",
    setting: "MINC_DIRECT",
    help: "Use the rootdir itself, no overlay (the rootdir is never written by minc)",
    group: "container",
  },
  {
    long: "rootdir",
    short: "r",
    arg: "DIR",
    setting: "MINC_BASEDIR",
    help: "Use DIR as the lower layer of the root instead of /",
    group: "container",
  },
  {
    long: "bind",
    short: "b",
    arg: "HOSTPATH[:PATH]",
    setting: "MINC_RWBIND",
    help: "Bind HOSTPATH to PATH (absolute) in the container; repeatable",
    group: "container",
  },
  {
    long: "background",
    short: "B",
    setting: "MINC_BACKGROUND",
    help: "Run in the background; output goes to the working directory's log and debug",
    group: "container",
  },
  {
    long: "X11",
    short: "X",
    setting: "MINC_RWBIND",
    help: "Export the local X11 socket and $XAUTHORITY",
    group: "container",
  },
  {
    long: "name",
    arg: "NAME",
    setting: "MINC_UTSNAME",
    help: "Set NAME as the container's hostname",
    group: "container",
  },
  {
    long: "user",
    arg: "UID[:GID]",
    setting: "MINC_USERSPEC",
    help: "Run the command as UID and GID (numbers, or names from the rootfs)",
    group: "container",
  },
  { long: "usedev", setting: "MINC_USE_DEV", help: "Use devtmpfs for /dev (loop devices etc.)", group: "container" },
  { long: "debugfs", setting: "MINC_MNT_DEBUGFS", help: "Mount debugfs (for ftrace etc.)", group: "container" },
  {
    long: "nocaps",
    arg: "CAPS",
    setting: "MINC_DROPCAPS",
    help: "Drop these capabilities too (capsh syntax, e.g. cap_sys_admin,cap_net_raw)",
    group: "container",
  },
  {
    long: "privileged",
    setting: "MINC_PRIVILEGED",
    help: "Do not confine the container: keep every capability but cap_sys_chroot, no seccomp filter, no masks (as the shell MINCS)",
    group: "container",
  },
  {
    long: "pivot",
    setting: "MINC_PIVOT",
    help: "Use pivot_root instead of capsh (needs umount in the rootfs; keeps every capability, no seccomp filter)",
    group: "container",
  },
  {
    long: "cpu",
    short: "c",
    arg: "MASK",
    setting: "MINC_CPUMASK",
    help: "Run on the CPUs in this hex bitmask (taskset)",
    group: "limits",
  },
  {
    long: "mem-limit",
    arg: "SIZE",
    setting: "MINC_MEM_LIMIT",
    help: "Memory limit by cgroups (bytes, or with K, M, G)",
    group: "limits",
  },
  { long: "mem-swap", arg: "SIZE", setting: "MINC_MEM_SWAP", help: "Memory+swap limit by cgroups", group: "limits" },
  { long: "mem-kmem", arg: "SIZE", setting: "MINC_MEM_KMEM", help: "Kernel memory limit by cgroups", group: "limits" },
  {
    long: "cpu-shares",
    arg: "SHARE",
    setting: "MINC_CPU_SHARES",
    help: "CPU shares by cgroups, 2..262144 (default 1024)",
    group: "limits",
  },
  {
    long: "cpu-quota",
    arg: "USEC",
    setting: "MINC_CPU_QUOTA",
    help: "CPU quota in usec per 100000 by cgroups",
    group: "limits",
  },
  {
    long: "pid-max",
    arg: "MAX",
    setting: "MINC_PID_MAX",
    help: "Maximum number of processes by cgroups",
    group: "limits",
  },
  {
    long: "net",
    short: "n",
    arg: "MODE",
    optionalArg: (next) => /^(raw|dens)/.test(next),
    setting: "MINC_NETMODE",
    help: "Use a network namespace; MODE is raw[,IFNAME] (default: only lo; IFNAME is moved in) or dens (NAT)",
    group: "network",
  },
  {
    long: "port",
    short: "p",
    arg: "HOSTPORT[:PORT[:PROTO]]",
    setting: "MINC_PORT_MAP",
    help: "Map a host port to the container, tcp or udp (implies --net dens); repeatable",
    group: "network",
  },
  {
    long: "cross",
    arg: "ARCH",
    setting: "MINC_ARCH",
    help: "Run a rootfs of another arch with qemu-user (binfmt_misc)",
    group: "special",
  },
  { long: "arch", arg: "ARCH", setting: "MINC_ARCH", help: "Same as --cross", group: "special" },
  {
    long: "nopriv",
    arg: "DIR",
    setting: "MINC_NOPRIV",
    help: "Run as an ordinary user (user namespace) with DIR as the rootdir",
    group: "special",
  },
  {
    long: "qemu",
    setting: "MINC_QEMU",
    help: "Run the container in a qemu virtual machine (ermine kernel; MINC_QEMU_ACCEL=kvm|tcg)",
    group: "special",
  },
  { long: "um", setting: "MINC_QEMU", help: "Run the container in user-mode Linux (ermine kernel)", group: "special" },
  {
    long: "ftrace",
    arg: "SCRIPT",
    setting: "MINC_FTRACE",
    help: "Set the ftrace pid filter to the container and run SCRIPT (sh, in the tracing dir) to set it up",
    group: "special",
  },
  {
    long: "debug",
    setting: "MINC_DEBUG",
    help: "Print every step of the boot as shell lines on stderr",
    group: "container",
  },
];

/** --cross/--arch ARCH: qemu's names for the arches MINCS knew, and the usual aliases (the completion offers these). */
export const CROSS_ARCHES: Readonly<Record<string, string>> = {
  amd64: "x86_64",
  x86_64: "x86_64",
  arm: "arm",
  armv7l: "arm",
  armel: "arm",
  armhf: "arm",
  arm64: "aarch64",
  aarch64: "aarch64",
  ppc64: "ppc64le",
  ppc64le: "ppc64le",
  ppc64el: "ppc64le",
  riscv64: "riscv64",
  s390x: "s390x",
};

/** The option that fills a setting (the first, where two do: --cross and --arch). */
export function optionFor(setting: SettingName): OptionSpec | undefined {
  return MINC_OPTIONS.find((o) => o.setting === setting);
}

/** How a message names a setting: by its option (--mem-limit), or as itself where no option fills it. */
export function optionName(setting: SettingName): string {
  const option = optionFor(setting);
  return option ? `--${option.long}` : setting;
}

/**
 * The options that give another minc these settings again, in the order
 * named: a flag's option if it is on, an option with its value if that is
 * not empty (minc-moult: the guest's minc repeats the host's boot).
 */
export function optionsFor(settings: Partial<Settings>, names: readonly SettingName[]): string[] {
  return names.flatMap((name) => {
    const option = optionFor(name);
    if (!option) throw new Error(`no option of minc fills ${name}`);
    const value = settings[name];
    if (value === true) return [`--${option.long}`];
    return typeof value === "string" && value !== "" ? [`--${option.long}`, value] : [];
  });
}

export interface ParsedArgs {
  /** Option values by long name; repeatable ones collect every value. */
  values: Map<string, string[]>;
  command: string[];
}

const byLong = new Map(MINC_OPTIONS.map((o) => [o.long, o]));
const byShort = new Map(MINC_OPTIONS.filter((o) => o.short).map((o) => [o.short!, o]));

function lookup(word: string): { spec: OptionSpec; inline?: string } {
  if (word.startsWith("--")) {
    const eq = word.indexOf("=");
    const name = eq < 0 ? word.slice(2) : word.slice(2, eq);
    const spec = byLong.get(name);
    if (spec) return { spec, inline: eq < 0 ? undefined : word.slice(eq + 1) };
  } else {
    const spec = byShort.get(word.slice(1));
    if (spec) return { spec };
  }
  throw usageError(`unknown option: ${word} (see minc --help)`);
}

export function parseMincArgs(argv: readonly string[]): ParsedArgs {
  const values = new Map<string, string[]>();
  let i = 0;
  while (i < argv.length) {
    const word = argv[i];
    if (word === "--") {
      i++;
      break;
    }
    if (!word.startsWith("-") || word === "-") break;
    i++;
    const { spec, inline } = lookup(word);
    let value = "";
    if (spec.arg) {
      if (inline !== undefined) value = inline;
      else if (spec.optionalArg) {
        if (i < argv.length && spec.optionalArg(argv[i])) value = argv[i++];
      } else if (i < argv.length) value = argv[i++];
      else throw usageError(`option --${spec.long} needs an argument ${spec.arg}`);
      if (value === "" && !spec.optionalArg) throw usageError(`option --${spec.long} needs an argument ${spec.arg}`);
    } else if (inline !== undefined) {
      throw usageError(`option --${spec.long} takes no argument`);
    }
    values.set(spec.long, [...(values.get(spec.long) ?? []), value]);
  }
  return { values, command: argv.slice(i) };
}

/** The groups of options, in the order --help and the man page show them. */
export const OPTION_GROUPS: Record<OptionSpec["group"], string> = {
  container: "Container options",
  limits: "Resource limits",
  network: "Network",
  special: "Special hosts and guests",
};

export function mincUsage(): string {
  const out = [
    "minc - run a command in a new container",
    "Usage: minc [options] [command [argument...]]",
    "With no command, minc runs $SHELL (or /bin/sh) of the rootfs.",
  ];
  for (const [group, title] of Object.entries(OPTION_GROUPS)) {
    out.push("", `${title}:`);
    for (const o of MINC_OPTIONS.filter((x) => x.group === group)) {
      const names =
        (o.short ? `-${o.short}, ` : "    ") +
        `--${o.long}` +
        (o.arg ? (o.optionalArg ? ` [${o.arg}]` : ` ${o.arg}`) : "");
      out.push(`  ${names.padEnd(34)} ${o.help}`);
    }
  }
  return `${out.join("\n")}\n`;
}
