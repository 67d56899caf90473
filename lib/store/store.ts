// The image store as the frontends see it: names that are not paths, and
// questions to minc-farm (the store's one keeper) about them.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { usageError } from "../core/fail.ts";
import { backend } from "../core/libexec.ts";
import { isRef } from "./names.ts";
import { quoteAll, shown } from "../core/trace.ts";

/**
 * A name or id of the image store, as opposed to a path: what is not there
 * as a file and reads as a reference (library/bbx, as the shell MINCS named
 * images, is one; /x, ./x and ../x are not).
 */
export function isStoreName(given: string): boolean {
  return !existsSync(given) && isRef(given);
}

/** Ask minc-farm; what it cannot find is the user's bad input, told in its own words. */
export function farm(...args: string[]): string {
  const argv = [backend("minc-farm"), ...args];
  shown(quoteAll(argv));
  const r = spawnSync(argv[0], args, { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
  if (r.status !== 0) {
    const why = (r.stderr || r.error?.message || "")
      .trim()
      .split("\n")
      .pop()!
      .replace(/^minc-farm: /, "");
    throw usageError(why || `failed: ${quoteAll(argv)}`);
  }
  return r.stdout.trim();
}
