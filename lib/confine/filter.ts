// The seccomp filter of a minc container.
import type { Confinement } from "./policy.ts";
import { compileFilter, defaultProfile } from "./seccomp.ts";

/**
 * Docker's default profile for the capabilities the command keeps, and
 * chroot besides: capsh chroots after the loader has loaded the filter (the
 * loader must run while the host's perl is still reachable), and the kernel
 * refuses chroot to the command anyway, without cap_sys_chroot.
 */
export function mincFilter(c: Confinement): Buffer {
  const profile = defaultProfile(c.keep === "all" ? [] : c.keep);
  profile.syscalls = [...(profile.syscalls ?? []), { names: ["chroot"], action: "SCMP_ACT_ALLOW" }];
  return compileFilter(profile).filter;
}
