// make man: write docs/minc.1, docs/marten.1 and docs/polecat.1 from the
// definitions --help prints (lib/man.ts); marten's and polecat's come from
// the built programs' --help.
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { DOC_REPO } from "../lib/boot-doc.ts";
import { mincManPage, yargsCommands, yargsManPage } from "../lib/man.ts";

function help(prog: string, ...args: string[]): string {
  const r = spawnSync(`${DOC_REPO}/bin/${prog}`, [...args, "--help"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${prog} ${args.join(" ")} --help failed: ${r.stderr}`);
  return r.stdout;
}

const outDir = process.argv[2] ?? `${DOC_REPO}/docs`;
writeFileSync(`${outDir}/minc.1`, mincManPage());
const marten = help("marten");
const subs: Record<string, string> = {};
for (const c of yargsCommands(marten)) subs[c] = help("marten", c);
writeFileSync(`${outDir}/marten.1`, yargsManPage("marten", marten, subs, [
  ".SH FILES", ".TP", "\\fI${MINCS_DIR:\\-/var/lib/mincs}\\fR",
  "The image store: images/<id>/ and containers/<id>/ (MINCS_DIR may also be set in /etc/mincs.conf).",
  ".SH SEE ALSO", "\\fBminc\\fR(1), \\fBpolecat\\fR(1)",
]));
writeFileSync(`${outDir}/polecat.1`, yargsManPage("polecat", help("polecat"), {}, [
  ".SH BUGS", "polecat is not implemented yet (issue #6).",
  ".SH SEE ALSO", "\\fBminc\\fR(1), \\fBmarten\\fR(1)",
]));
console.log(`wrote ${outDir}/minc.1 marten.1 polecat.1`);
