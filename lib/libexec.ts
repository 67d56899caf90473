// Where the backends live: libexec/ beside bin/ (in the checkout and under
// $PREFIX alike), or the directory of a backend calling another.
import { basename, dirname, resolve } from "node:path";

export function libexecDir(): string {
  const here = dirname(process.argv[1]);
  return basename(here) === "libexec" ? here : resolve(here, "../libexec");
}

export function backend(name: string): string {
  return `${libexecDir()}/${name}`;
}
