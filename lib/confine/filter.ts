// The seccomp filter of a minc container.
import { capName, DEFAULT_CAPS, HOST_NETWORK_CAPS } from "./caps.ts";
import type { Confinement } from "./policy.ts";
import { compileFilter, defaultProfile } from "./seccomp.ts";

// build.mjs compiles the default containers' filters into the bundle: compiling one costs about 4 ms of a start.
declare const __MINC_DEFAULT_FILTERS__: Record<string, string> | undefined;
const PREBUILT = typeof __MINC_DEFAULT_FILTERS__ === "object" ? __MINC_DEFAULT_FILTERS__ : undefined;

/**
 * Docker's default profile for the capabilities the command keeps, and
 * chroot besides: capsh chroots after the loader has loaded the filter (the
 * loader must run while the host's perl is still reachable), and the kernel
 * refuses chroot to the command anyway, without cap_sys_chroot.
 */
export function mincFilter(c: Confinement): Buffer {
  const kept = c.keep === "all" ? [] : c.keep.map(capName).filter((k) => !c.drop.map(capName).includes(k));
  const prebuilt = PREBUILT?.[kept.join(",")];
  if (prebuilt) return Buffer.from(prebuilt, "base64");
  return compiledFor(kept);
}

function compiledFor(caps: readonly string[]): Buffer {
  const profile = defaultProfile(caps);
  profile.syscalls = [...(profile.syscalls ?? []), { names: ["chroot"], action: "SCMP_ACT_ALLOW" }];
  return compileFilter(profile).filter;
}

/** The default containers' filters (own network, host's network), by their capabilities, as build.mjs puts them into the bundle. */
export function defaultFilters(): Record<string, string> {
  return Object.fromEntries(
    [DEFAULT_CAPS, HOST_NETWORK_CAPS].map((caps) => [caps.join(","), compiledFor(caps).toString("base64")]),
  );
}
