// docs/architecture.md stays true: every path it names exists, and it names
// every folder of lib/ and every backend of libexec/.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { test } from "node:test";
import { REPO } from "./helpers.ts";

const page = readFileSync(`${REPO}/docs/architecture.md`, "utf8");
/** What the page writes as code: `lib/core/run.ts`, `minc-exec`, ... */
const named = new Set([...page.matchAll(/`([^`\s]+)`/g)].map((m) => m[1]));

test("every path docs/architecture.md names is there", () => {
  const paths = [...named].filter((n) => /^(bin|lib|libexec|docs|test|bench|samples)\//.test(n));
  assert.ok(paths.length > 10, `too few paths found: ${paths.join(" ")}`);
  assert.deepEqual(
    paths.filter((p) => !existsSync(`${REPO}/${p}`)),
    [],
  );
});

test("docs/architecture.md names every folder of lib/ and every backend of libexec/", () => {
  const folders = readdirSync(`${REPO}/lib`)
    .filter((f) => statSync(`${REPO}/lib/${f}`).isDirectory())
    .map((f) => `lib/${f}/`);
  const backends = readdirSync(`${REPO}/libexec`)
    .filter((f) => /^minc-[a-z]+\.ts$/.test(f))
    .map((f) => f.replace(/\.ts$/, ""));
  assert.deepEqual(
    [...folders, ...backends].filter((n) => !named.has(n)),
    [],
  );
});
