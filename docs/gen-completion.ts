// make completion: write docs/mincs.bash from minc's option
// table and the built marten's, polecat's and ermine-breeder's --help
// (docs/completion.ts).
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { DOC_REPO } from "./boot-doc.ts";
import { bashCompletion } from "./completion.ts";
import { yargsCommands } from "./man.ts";

function help(prog: string, ...args: string[]): string {
  const r = spawnSync(`${DOC_REPO}/bin/${prog}`, [...args, "--help"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${prog} ${args.join(" ")} --help failed: ${r.stderr}`);
  return r.stdout;
}

const marten = help("marten");
const martenCommands: Record<string, string> = {};
for (const c of yargsCommands(marten)) martenCommands[c] = help("marten", c);
const breeder = help("ermine-breeder");
const breederCommands: Record<string, string> = {};
for (const c of yargsCommands(breeder)) breederCommands[c] = help("ermine-breeder", c);
const out = process.argv[2] ?? `${DOC_REPO}/docs/mincs.bash`;
writeFileSync(out, bashCompletion({ marten, martenCommands, polecat: help("polecat"), breeder, breederCommands }));
console.log(`wrote ${out}`);
