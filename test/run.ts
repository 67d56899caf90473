// The test run of `make test`: the files that share nothing with others run
// two at a time (each looks only at what it made: test/helpers.ts), then
// those that need the host to themselves run one after another. One report
// (node's spec reporter, then test/timing.ts's times and closing line), and
// a non-zero exit when a test failed.
//
//   node test/run.ts [FILE...]     (default: every test/*.test.ts)
import { readdirSync } from "node:fs";
import { basename, resolve } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { run } from "node:test";
import { spec } from "node:test/reporters";
import timing from "./timing.ts";

/**
 * Files that change what every container on the host shares, so nothing
 * else may run beside them: dens.test.ts takes the dens network down
 * (minc-dens stop) when no other container uses it; load.test.ts starts
 * hundreds of containers, whose load is what it tests; ftrace.test.ts
 * points the host's single tracing instance at its container; oci.test.ts
 * runs the conformance suite's 58 programs, whose load would slow a VM's
 * boot beside it past its bound.
 */
const ALONE = new Set(["dens.test.ts", "load.test.ts", "ftrace.test.ts", "oci.test.ts"]);

const dir = resolve(import.meta.dirname);
const files =
  process.argv.length > 2
    ? process.argv.slice(2).map((f) => resolve(f))
    : readdirSync(dir)
        .filter((f) => f.endsWith(".test.ts"))
        .sort()
        .map((f) => `${dir}/${f}`);
const together = files.filter((f) => !ALONE.has(basename(f)));
const alone = files.filter((f) => ALONE.has(basename(f)));

async function* events(): AsyncGenerator<unknown> {
  if (together.length) yield* run({ files: together, concurrency: 2 });
  if (alone.length) yield* run({ files: alone, concurrency: 1 });
}

let failed = false;
const source = Readable.from(events());
source.on("data", (e: { type: string }) => {
  if (e.type === "test:fail") failed = true;
});
const toSpec = new PassThrough({ objectMode: true });
const toTiming = new PassThrough({ objectMode: true });
source.pipe(toSpec);
source.pipe(toTiming);
// (Both read the events as they come: a reader left for later would stall the other.)
const summary = (async (): Promise<string> => {
  let text = "";
  for await (const chunk of timing(toTiming)) text += chunk;
  return text;
})();
await pipeline(toSpec, new spec(), process.stdout, { end: false });
process.stdout.write(await summary);
process.exitCode = failed ? 1 : 0;
