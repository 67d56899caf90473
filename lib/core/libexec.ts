// Where the backends and the frontends live. `make install` writes the
// directories it installs to into the installed bundles (sed on the
// placeholders below), as the shell install.sh fixed LIBEXEC= at install
// time: a symlinked minc or a LIBEXECDIR= elsewhere then needs no guess, and
// costs no system call. In the checkout (or a copy made by hand) they stay
// placeholders, and the guess is libexec/ beside bin/, from the program's
// real path (minc may be reached through a symlink), or the directory of a
// backend calling another.
import { accessSync, constants, realpathSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import { usageError } from "./fail.ts";

// (Checked by their first character, not by equality, which sed would change too.)
const INSTALLED_LIBEXECDIR = "@MINCS_LIBEXECDIR@";
const INSTALLED_BINDIR = "@MINCS_BINDIR@";

/** What make install recorded, or undefined while it is still the placeholder. */
function recorded(dir: string): string | undefined {
  return dir.startsWith("/") ? resolve(dir) : undefined;
}

const programDirs = new Map<string, string>();

/**
 * The directory of this program's real file, once per program (a backend
 * exec'd in this Node is another). After pivot_root the path is not there
 * any more: then it is taken as it was given.
 */
function programDir(): string {
  const program = process.argv[1];
  let dir = programDirs.get(program);
  if (dir === undefined) {
    try {
      dir = dirname(realpathSync.native(program));
    } catch {
      dir = dirname(resolve(program));
    }
    programDirs.set(program, dir);
  }
  return dir;
}

export function libexecDir(): string {
  const fixed = recorded(INSTALLED_LIBEXECDIR);
  if (fixed) return fixed;
  const here = programDir();
  return basename(here) === "libexec" ? here : resolve(here, "../libexec");
}

/**
 * The waiter, minc's guard and the watcher are one sh program,
 * minc-waiter.sh, which sources the part they share and its role's own
 * from beside it.
 */
export const WAITER_SCRIPTS = [
  "minc-waiter.sh",
  "minc-waiter-common.sh",
  "minc-waiter-guard.sh",
  "minc-waiter-wait.sh",
  "minc-waiter-watch.sh",
];

export function backend(name: string): string {
  return `${libexecDir()}/${name}`;
}

/** A frontend (minc, for polecat's images and the VM's guest): bin/ beside libexec/ unless installed elsewhere. */
export function frontend(name: string): string {
  return `${recorded(INSTALLED_BINDIR) ?? resolve(libexecDir(), "../bin")}/${name}`;
}

/**
 * Fail in one line, before anything is made, when a backend is missing (a
 * broken or partial install): the boot would stop half-way otherwise.
 */
export function checkBackends(names: readonly string[]): void {
  const missing = names.filter((name) => {
    try {
      accessSync(backend(name), name.endsWith(".sh") ? constants.R_OK : constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length > 0) {
    throw usageError(
      `${missing.join(", ")}: missing in ${libexecDir()} (MINCS is not installed completely; run make install)`,
    );
  }
}
