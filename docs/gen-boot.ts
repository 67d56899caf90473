// make docs: boot minc for real and fill docs/boot.md's trace excerpts
// (the prose stays as written). The work is docs/boot-doc.ts, which
// test/docs.test.ts runs too.
import { readFileSync, writeFileSync } from "node:fs";
import { DOC_REPO, regenerate } from "./boot-doc.ts";

const path = `${DOC_REPO}/docs/boot.md`;
const before = readFileSync(path, "utf8");
const after = regenerate(before);
if (after !== before) writeFileSync(path, after);
console.log(after === before ? `${path}: up to date` : `${path}: excerpts updated`);
