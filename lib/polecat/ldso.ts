// Where the dynamic loader of a rootfs finds a library, worked out from the
// rootfs's own files, not by running its ldconfig or ld.so: DT_RPATH and
// DT_RUNPATH of the object, then the directories of /etc/ld.so.conf (and
// the files it includes), then the multiarch and default directories.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { multiarchTriplet, readElf, type ElfInfo } from "./elf.ts";
import { resolveInRoot } from "../boot/paths.ts";

const MAX_INCLUDES = 16;

/** The contents of a file inside the root, or "" if it is not there. */
function readInRoot(root: string, path: string): string {
  try {
    return readFileSync(resolveInRoot(root, path), "utf8");
  } catch {
    return "";
  }
}

/** The files a glob such as /etc/ld.so.conf.d/*.conf names inside the root ("*" and "?" in the last part only). */
function globInRoot(root: string, pattern: string): string[] {
  const dir = dirname(pattern);
  const base = pattern.slice(dir.length + 1);
  if (!/[*?[]/.test(base)) return [pattern];
  const re = new RegExp(
    `^${base
      .replace(/[.+^${}()|\\]/g, "\\$&")
      .replace(/\*/g, "[^/]*")
      .replace(/\?/g, "[^/]")}$`,
  );
  try {
    return readdirSync(resolveInRoot(root, dir))
      .filter((n) => re.test(n) && !n.startsWith("."))
      .sort()
      .map((n) => `${dir}/${n}`);
  } catch {
    return [];
  }
}

/**
 * The directories /etc/ld.so.conf lists, includes followed (relative ones
 * from /etc, as ldconfig does). A rootfs without it (packages extracted
 * with no libc-bin) gets what Debian's includes: /etc/ld.so.conf.d/*.conf.
 */
export function ldSoConfDirs(root: string): string[] {
  const main = readInRoot(root, "/etc/ld.so.conf") ? "/etc/ld.so.conf" : undefined;
  if (main) return confDirs(root, main, 0);
  return globInRoot(root, "/etc/ld.so.conf.d/*.conf").flatMap((f) => confDirs(root, f, 1));
}

function confDirs(root: string, file: string, depth: number): string[] {
  if (depth > MAX_INCLUDES) return [];
  const dirs: string[] = [];
  for (const raw of readInRoot(root, file).split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    if (!line) continue;
    const include = /^include\s+(.+)$/.exec(line);
    if (include) {
      for (const word of include[1].split(/\s+/)) {
        const pattern = word.startsWith("/") ? word : `/etc/${word}`;
        for (const f of globInRoot(root, pattern)) dirs.push(...confDirs(root, f, depth + 1));
      }
    } else if (line.startsWith("/")) {
      dirs.push(line.split(/[\s=]/)[0]);
    }
  }
  return dirs;
}

/** The directories searched after ld.so.conf's: multiarch first (Debian), then lib64 (64-bit), then lib. */
function defaultDirs(elf: ElfInfo): string[] {
  const triplet = multiarchTriplet(elf.machine);
  return [
    ...(triplet ? [`/lib/${triplet}`, `/usr/lib/${triplet}`] : []),
    ...(elf.bits === 64 ? ["/lib64", "/usr/lib64"] : []),
    "/lib",
    "/usr/lib",
  ];
}

/** $ORIGIN (the object's own directory) and $LIB in RPATH/RUNPATH entries. */
function expand(dir: string, objectPath: string, elf: ElfInfo): string {
  return dir
    .replace(/\$(ORIGIN|\{ORIGIN\})/g, dirname(objectPath))
    .replace(/\$(LIB|\{LIB\})/g, elf.bits === 64 ? "lib64" : "lib");
}

/** The search path for the libraries of one object (at objectPath inside the root), in the loader's order. */
export function searchPath(objectPath: string, elf: ElfInfo, confDirs: string[]): string[] {
  const own = (dirs: string[]): string[] =>
    dirs.map((d) => expand(d, objectPath, elf)).filter((d) => d.startsWith("/"));
  const dirs = [
    ...(elf.runpath.length === 0 ? own(elf.rpath) : []),
    ...own(elf.runpath),
    ...confDirs,
    ...defaultDirs(elf),
  ];
  return [...new Set(dirs)];
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * The path inside the root of the library NAME needed by an object, or
 * undefined: the first file of that name in the search path that is an ELF
 * object of the same class and machine (a 32-bit library of the same name
 * in /usr/lib is skipped for a 64-bit program, as the loader skips it).
 */
export function findLibrary(
  root: string,
  name: string,
  objectPath: string,
  elf: ElfInfo,
  confDirs: string[],
): string | undefined {
  if (name.includes("/")) return name.startsWith("/") ? name : undefined;
  for (const dir of searchPath(objectPath, elf, confDirs)) {
    const candidate = `${dir}/${name}`;
    const host = resolveInRoot(root, candidate);
    if (!isFile(host)) continue;
    const lib = readElf(host);
    if (lib && lib.bits === elf.bits && lib.machine === elf.machine) return candidate;
  }
  return undefined;
}
