// A node:test reporter beside the usual one (see the Makefile's test target):
// at the end, the time each test file took and the whole run's wall time,
// so a file that grows slow is seen (times are printed, never asserted),
// then one plain closing line with the counts.
import { relative } from "node:path";

interface Event {
  type: string;
  data: {
    file?: string;
    nesting?: number;
    skip?: unknown;
    todo?: unknown;
    details?: { duration_ms?: number; type?: string };
  };
}

export default async function* timing(source: AsyncIterable<Event>): AsyncGenerator<string> {
  const started = Date.now();
  const perFile = new Map<string, number>();
  const count = { passed: 0, failed: 0, skipped: 0 };
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    const { file, nesting, details, skip, todo } = event.data;
    if (details?.type !== "suite") {
      if (skip !== undefined || todo !== undefined) count.skipped++;
      else if (event.type === "test:pass") count.passed++;
      else count.failed++;
    }
    if (file && nesting === 0) perFile.set(file, (perFile.get(file) ?? 0) + (details?.duration_ms ?? 0));
  }
  const rows = [...perFile].sort((a, b) => b[1] - a[1]);
  yield "\n# time per test file (its top-level tests), slowest first\n";
  for (const [file, ms] of rows) yield `# ${(ms / 1000).toFixed(1).padStart(7)} s  ${relative(process.cwd(), file)}\n`;
  yield `# wall time of the whole run: ${((Date.now() - started) / 1000).toFixed(1)} s\n`;
  yield `tests: ${count.passed} passed, ${count.failed} failed, ${count.skipped} skipped\n`;
}
