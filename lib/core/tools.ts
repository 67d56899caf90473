// Tools a frontend needs from the host, found with `which` (the frontends
// start once per command, so its load time does not matter there; the boot
// backends use lib/core/run.ts's findInPath, which costs nothing to load).
import whichSync from "which";
import { MincError } from "./fail.ts";

/** The tool's path, or a one-line error naming the Debian package that has it. */
export function needTool(tool: string, pkg: string): string {
  const path = whichSync.sync(tool, { nothrow: true });
  if (!path) throw new MincError(`${tool}: not found (apt-get install ${pkg})`);
  return path;
}
