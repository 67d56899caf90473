// The mount table of this mount namespace, from /proc/self/mountinfo.
import { readFileSync } from "node:fs";

export interface Mount {
  /** Where it is mounted (octal escapes such as \040 undone). */
  point: string;
  /** The filesystem type: overlay, cgroup2, tracefs, ... */
  type: string;
  /** The filesystem's own options (for cgroup v1: its controllers). */
  superOptions: string[];
}

const unoctal = (s: string): string =>
  s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function mounts(): Mount[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .flatMap((line) => {
      const [left, right] = line.split(" - ");
      if (!right) return [];
      const [type, , superOptions = ""] = right.split(" ");
      return [{ point: unoctal(left.split(" ")[4] ?? ""), type, superOptions: superOptions.split(",") }];
    });
}
