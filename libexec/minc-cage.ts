// minc-cage: the container's cage of cgroups (resource limits).
//
//   minc-cage --prepare PID   make the cgroups the MINC_* limits ask for and
//                             print the command that removes them again
//
// minc-exec calls it only when a limit is set. The limits themselves are
// issue #3; until then a limit is refused, never silently ignored.
import { main, usageError } from "../lib/fail.ts";

const LIMITS = ["MINC_MEM_LIMIT", "MINC_MEM_SWAP", "MINC_MEM_KMEM", "MINC_CPU_SHARES", "MINC_CPU_QUOTA", "MINC_PID_MAX"];

main(() => {
  const [cmd, pid] = process.argv.slice(2);
  if (cmd !== "--prepare" || !/^\d+$/.test(pid ?? "")) throw usageError("usage: minc-cage --prepare PID");
  const asked = LIMITS.filter((k) => process.env[k]);
  if (asked.length > 0) throw usageError(`cgroup limits (${asked.join(", ")}) are not implemented yet (issue #3)`);
  return 0;
});
