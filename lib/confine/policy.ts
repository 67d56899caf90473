// What confines a container: the one description minc's boot applies (and
// ferret builds from a bundle's config.json), whichever frontend asked.
import type { Settings } from "../core/settings.ts";
import { DEFAULT_CAPS, HOST_NETWORK_CAPS } from "./caps.ts";

export interface Confinement {
  /** The capabilities the command keeps (its bounding set); "all" keeps every one but those dropped below. */
  keep: readonly string[] | "all";
  /** Capabilities dropped whatever keep says (cap_sys_chroot always: capsh's chroot is no jail otherwise). */
  drop: readonly string[];
  /**
   * no_new_privs, a new session keyring and the seccomp filter, loaded
   * together just before the command (lib/confine/loader.ts). Off only
   * when privileged.
   */
  filtered: boolean;
  /** Files and directories of /proc and /sys hidden behind /dev/null or an empty read-only tmpfs. */
  masked: readonly string[];
  /** Parts of /proc and /sys bound read-only, beyond those every container has. */
  readonly: readonly string[];
  /** The root is mounted nodev: a device node an image ships does not open. */
  nodevRoot: boolean;
}

/**
 * Hidden as podman and Docker hide them: they show the host's memory
 * (kcore), keys, timers and scheduler of every process, or its firmware
 * and hardware, and some can be written to.
 */
export const MASKED_PATHS: readonly string[] = [
  "/proc/acpi",
  "/proc/asound",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
  "/sys/devices/virtual/powercap",
  "/sys/fs/selinux",
];

/** Read-only as Docker has them, beyond /proc's sys, sysrq-trigger, irq and bus (read-only in every container). */
export const READONLY_PATHS: readonly string[] = ["/proc/fs"];

/**
 * minc's confinement, from its settings: the default, --privileged (the
 * shell MINCS's), and --nocaps on either. A container without a network
 * namespace of its own (no --net) is on the host's network.
 */
export function mincConfinement(settings: Settings): Confinement {
  const drop = ["cap_sys_chroot", ...settings.MINC_DROPCAPS.split(",").filter((c) => c)];
  if (settings.MINC_PRIVILEGED)
    return { keep: "all", drop, filtered: false, masked: [], readonly: [], nodevRoot: false };
  return {
    keep: settings.MINC_NETNS ? DEFAULT_CAPS : HOST_NETWORK_CAPS,
    drop,
    filtered: true,
    masked: MASKED_PATHS,
    readonly: READONLY_PATHS,
    nodevRoot: true,
  };
}
