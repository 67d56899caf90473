// V8's compile cache for our bundles.
//
// Each boot runs minc-exec, minc-core, minc-coat and minc-leash in minc's
// Node (its bundle holds them), and compiling them costs a few
// milliseconds every time. Node can keep
// the compiled code on disk (enableCompileCache) and check it against
// the source on the next load. Compiled code is code: it is only used from a
// directory that root alone can write, and only by root.
import { lstatSync, mkdirSync, statSync } from "node:fs";
import { enableCompileCache, flushCompileCache as flushToDisk, getCompileCacheDir } from "node:module";

const DIR = "/var/cache/mincs/node-compile-cache";

export function useCompileCache(): void {
  if (process.geteuid?.() !== 0 || getCompileCacheDir?.()) return; // (on already: NODE_COMPILE_CACHE)
  try {
    mkdirSync(DIR, { recursive: true, mode: 0o700 });
    for (let dir = DIR; dir !== "/"; dir = dir.slice(0, dir.lastIndexOf("/")) || "/") {
      const st = lstatSync(dir);
      // Not a symlink, root's, and no one else may write it.
      if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) return;
    }
    if ((statSync(DIR).mode & 0o077) !== 0) return;
    enableCompileCache(DIR);
  } catch {
    // no cache: only slower
  }
}

/** Before execve: what was compiled is written now, as no exit handler runs. */
export function flushCompileCache(): void {
  flushToDisk?.();
}
