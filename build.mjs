// Build every entrypoint into one executable bundle (the fastest to start):
// bin/minc.ts -> bin/minc, libexec/minc-core.ts -> libexec/minc-core, ...
import { build } from "esbuild";
import { chmodSync, readdirSync, readFileSync } from "node:fs";

const entries = [
  ...readdirSync("bin").filter((f) => f.endsWith(".ts")).map((f) => `bin/${f}`),
  ...readdirSync("libexec").filter((f) => f.endsWith(".ts")).map((f) => `libexec/${f}`),
];

// yargs asks for import.meta.url, which a CommonJS bundle has not got; only
// the frontends that use yargs pay for providing it.
const usesYargs = (entry) => /yargs/.test(readFileSync(entry, "utf8"));
const yargsFix = {
  define: { "import.meta.url": "__import_meta_url" },
  banner: { js: '#!/usr/bin/env node\nvar __import_meta_url = require("node:url").pathToFileURL(__filename).href;' },
};

await Promise.all(entries.map(async (entry) => {
  const outfile = entry.replace(/\.ts$/, "");
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: "node",
    target: "node24",
    // CommonJS: an extensionless file installed under /usr/local/bin has no
    // package.json beside it to say it is an ES module.
    format: "cjs",
    ...(usesYargs(entry) ? yargsFix : { banner: { js: "#!/usr/bin/env node" } }),
    legalComments: "none",
    logLevel: "warning",
  });
  chmodSync(outfile, 0o755);
}));
console.log(`built ${entries.length} entrypoints`);
