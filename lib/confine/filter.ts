// The seccomp filter of a minc container.
import { capName, DEFAULT_CAPS } from "./caps.ts";
import type { Confinement } from "./policy.ts";
import { compileFilter, defaultProfile } from "./seccomp.ts";

// build.mjs compiles the default container's filter into the bundle: compiling it costs about 4 ms of every start.
declare const __MINC_DEFAULT_FILTER__: string | undefined;
const PREBUILT = typeof __MINC_DEFAULT_FILTER__ === "string" ? __MINC_DEFAULT_FILTER__ : undefined;

/**
 * Docker's default profile for the capabilities the command keeps, and
 * chroot besides: capsh chroots after the loader has loaded the filter (the
 * loader must run while the host's perl is still reachable), and the kernel
 * refuses chroot to the command anyway, without cap_sys_chroot.
 */
export function mincFilter(c: Confinement): Buffer {
  const kept = c.keep === "all" ? [] : c.keep.map(capName).filter((k) => !c.drop.map(capName).includes(k));
  if (PREBUILT && kept.join(",") === DEFAULT_CAPS.join(",")) return Buffer.from(PREBUILT, "base64");
  return compiledFor(kept);
}

function compiledFor(caps: readonly string[]): Buffer {
  const profile = defaultProfile(caps);
  profile.syscalls = [...(profile.syscalls ?? []), { names: ["chroot"], action: "SCMP_ACT_ALLOW" }];
  return compileFilter(profile).filter;
}

/** The default container's filter, as build.mjs puts it into the bundle. */
export function defaultFilterBase64(): string {
  return compiledFor(DEFAULT_CAPS).toString("base64");
}
