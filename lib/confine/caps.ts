// Capabilities by name, as capsh and the OCI runtime spec name them.
import { readFileSync } from "node:fs";

/** The kernel's capabilities by number (linux/capability.h); capsh takes these names. */
export const CAPABILITIES = [
  "cap_chown",
  "cap_dac_override",
  "cap_dac_read_search",
  "cap_fowner",
  "cap_fsetid",
  "cap_kill",
  "cap_setgid",
  "cap_setuid",
  "cap_setpcap",
  "cap_linux_immutable",
  "cap_net_bind_service",
  "cap_net_broadcast",
  "cap_net_admin",
  "cap_net_raw",
  "cap_ipc_lock",
  "cap_ipc_owner",
  "cap_sys_module",
  "cap_sys_rawio",
  "cap_sys_chroot",
  "cap_sys_ptrace",
  "cap_sys_pacct",
  "cap_sys_admin",
  "cap_sys_boot",
  "cap_sys_nice",
  "cap_sys_resource",
  "cap_sys_time",
  "cap_sys_tty_config",
  "cap_mknod",
  "cap_lease",
  "cap_audit_write",
  "cap_audit_control",
  "cap_setfcap",
  "cap_mac_override",
  "cap_mac_admin",
  "cap_syslog",
  "cap_wake_alarm",
  "cap_block_suspend",
  "cap_audit_read",
  "cap_perfmon",
  "cap_bpf",
  "cap_checkpoint_restore",
] as const;

/** Docker's and podman's default set (moby's oci/caps/defaults.go). */
export const DOCKER_DEFAULT_CAPS: readonly string[] = [
  "cap_chown",
  "cap_dac_override",
  "cap_fsetid",
  "cap_fowner",
  "cap_mknod",
  "cap_net_raw",
  "cap_setgid",
  "cap_setuid",
  "cap_setfcap",
  "cap_setpcap",
  "cap_net_bind_service",
  "cap_sys_chroot",
  "cap_kill",
  "cap_audit_write",
];

/**
 * What a container keeps by default: Docker's set, less cap_sys_chroot
 * (root inside could chroot its way out of capsh's chroot, as MINCS always
 * knew) and cap_mknod (no device cgroup stands behind /dev here, so a node
 * it made could open a host disk).
 */
export const DEFAULT_CAPS: readonly string[] = DOCKER_DEFAULT_CAPS.filter(
  (c) => c !== "cap_sys_chroot" && c !== "cap_mknod",
);

/**
 * The default for a container on the host's network (no --net): without
 * cap_net_raw too, as its packet sockets would see all the host's traffic.
 */
export const HOST_NETWORK_CAPS: readonly string[] = DEFAULT_CAPS.filter((c) => c !== "cap_net_raw");

/** The highest capability number this kernel knows (an older kernel has fewer, a newer more than the table). */
function lastCap(): number {
  try {
    return Number(readFileSync("/proc/sys/kernel/cap_last_cap", "utf8"));
  } catch {
    return CAPABILITIES.length - 1;
  }
}

/** Normalise CAP_SYS_ADMIN, sys_admin and cap_sys_admin to capsh's cap_sys_admin. */
export function capName(name: string): string {
  const lower = name.trim().toLowerCase();
  return lower.startsWith("cap_") ? lower : `cap_${lower}`;
}

/** Every capability of this kernel not in keep, as capsh's --drop takes them (by number past the table). */
export function capsOtherThan(keep: readonly string[]): string[] {
  const kept = new Set(keep.map(capName));
  const drop: string[] = [];
  for (let n = 0; n <= lastCap(); n++) {
    const name = CAPABILITIES[n] ?? String(n);
    if (!kept.has(name)) drop.push(name);
  }
  return drop;
}
