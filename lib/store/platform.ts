// Platforms (os/architecture/variant) as OCI names them, from the names
// users and uname give: one parser for marten, minc-farm and minc-smuggler.
import { usageError } from "../core/fail.ts";
import { readSettings } from "../core/settings.ts";

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

/** Each name a user or uname may give, as OCI's architecture and (default) variant. */
const ARCHES: Record<string, [string, string?]> = {
  amd64: ["amd64"],
  x86_64: ["amd64"],
  "x86-64": ["amd64"],
  x64: ["amd64"],
  arm64: ["arm64"],
  aarch64: ["arm64"],
  arm: ["arm", "v7"],
  armv7l: ["arm", "v7"],
  armv7: ["arm", "v7"],
  armel: ["arm", "v7"],
  armhf: ["arm", "v7"],
  armv6l: ["arm", "v6"],
  armv6: ["arm", "v6"],
  armv5l: ["arm", "v5"],
  armv5: ["arm", "v5"],
  ppc64le: ["ppc64le"],
  riscv64: ["riscv64"],
  s390x: ["s390x"],
  "386": ["386"],
  i386: ["386"],
  i686: ["386"],
  ia32: ["386"],
  mips64le: ["mips64le"],
  loong64: ["loong64"],
};

/** The names marten's --arch and MINC_ARCH take (the completion offers these). */
export const ARCH_NAMES: readonly string[] = Object.keys(ARCHES);

/** MINC_ARCH (ARCH or ARCH/VARIANT, an optional linux/ before) as an OCI platform; unknown is a usage error. */
export function parseArch(spec: string): Platform {
  const parts = spec
    .trim()
    .toLowerCase()
    .replace(/^linux\//, "")
    .split("/");
  const known = ARCHES[parts[0]];
  if (!known || parts.length > 2 || (parts.length === 2 && !/^v\d+$/.test(parts[1]))) {
    throw usageError(
      `unknown architecture ${JSON.stringify(spec)} (MINC_ARCH: amd64, arm64, arm[/v6|v7], ppc64le, riscv64, s390x, 386, ...)`,
    );
  }
  const variant = parts[1] ?? known[1];
  return { os: "linux", architecture: known[0], ...(variant ? { variant } : {}) };
}

/** The host's platform, as Node knows it. */
export function hostPlatform(): Platform {
  const arch = process.arch as string;
  if (arch === "arm") {
    const v = (process.config.variables as Record<string, unknown>).arm_version;
    return parseArch(v ? `arm/v${v}` : "arm");
  }
  if (arch === "ppc64") return parseArch("ppc64le");
  return parseArch(arch);
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}

/** The platform an image is picked for: MINC_ARCH (ARCH, ARCH/VARIANT or OS/ARCH[/VARIANT]) or the host's. */
export function wantedPlatform(arch = readSettings().MINC_ARCH): Platform {
  return arch ? parseArch(arch) : hostPlatform();
}
