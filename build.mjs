// Build every entrypoint into one executable bundle (the fastest to start):
// bin/minc.ts -> bin/minc, libexec/minc-core.ts -> libexec/minc-core, ...
import { build } from "esbuild";
import { chmodSync, readdirSync, readFileSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";

const entries = [
  ...readdirSync("bin")
    .filter((f) => f.endsWith(".ts"))
    .map((f) => `bin/${f}`),
  ...readdirSync("libexec")
    .filter((f) => f.endsWith(".ts"))
    .map((f) => `libexec/${f}`),
];

// yargs asks for import.meta.url, which a CommonJS bundle has not got; only
// the frontends that use yargs pay for providing it.
const usesYargs = (entry) => /yargs/.test(readFileSync(entry, "utf8"));
const yargsFix = {
  define: { "import.meta.url": "__import_meta_url" },
  banner: { js: '#!/usr/bin/env node\nvar __import_meta_url = require("node:url").pathToFileURL(__filename).href;' },
};

// yargs imports cliui and string-width only to lay out --help and error
// text, but their module bodies build an Intl.Segmenter and \p{RGI_Emoji}
// regular expressions, about 20 ms of every frontend's start (measured with
// --cpu-prof). Their imports from yargs's platform shim become small
// functions that load the real module the first time they are called: esbuild
// wraps a module that is require()d in a lazy initialiser.
const LAZY = /^(cliui|string-width)$/;
const lazyHelpLayout = {
  name: "lazy-help-layout",
  setup(b) {
    b.onResolve({ filter: LAZY }, async (args) => {
      if (!/[\\/]yargs[\\/]lib[\\/]platform-shims[\\/]/.test(args.importer) || args.pluginData?.real) return undefined;
      const real = await b.resolve(args.path, {
        resolveDir: args.resolveDir,
        kind: args.kind,
        pluginData: { real: true },
      });
      if (real.errors.length) return { errors: real.errors };
      return { path: real.path, namespace: "lazy", pluginData: { real: real.path } };
    });
    b.onLoad({ filter: /.*/, namespace: "lazy" }, (args) => ({
      contents: `let real;\nexport default function lazy(...args) {\n  real ??= require(${JSON.stringify(args.pluginData.real)}).default;\n  return real(...args);\n}\n`,
      resolveDir: dirname(args.pluginData.real),
      loader: "js",
    }));
  },
};

// ferret is run by other programs (podman's conmon, containerd's shim) with a
// PATH of their own, where the first node may be the system's older one: a
// line of sh runs /usr/local/bin/node (where make deps puts Node 24) if it is
// there, else the PATH's (about 1 ms); to Node that line is a string and a comment.
const FERRET_SHEBANG = [
  "#!/bin/sh",
  `':' //; [ -x /usr/local/bin/node ] && exec /usr/local/bin/node "$0" "$@"; exec node "$0" "$@"`,
].join("\n");

// A backend (libexec/minc-*.ts) exports its main, and runs when it is the
// program: its executable is this wrapper around it. Another program that
// runs it in its own Node imports the same main (lib/core/run.ts).
const started = (entry) => ({
  contents: `import { main } from "./${basename(entry)}";\nimport { start } from "../lib/core/fail.ts";\nstart(main);\n`,
  resolveDir: resolve(dirname(entry)),
  sourcefile: `${basename(entry, ".ts")} (started)`,
  loader: "ts",
});

// The default containers' seccomp filters, compiled now rather than at every start (lib/confine/filter.ts).
const { defaultFilters } = await import("./lib/confine/filter.ts");
const prebuilt = { __MINC_DEFAULT_FILTERS__: JSON.stringify(defaultFilters()) };

await Promise.all(
  entries.map(async (entry) => {
    const outfile = entry.replace(/\.ts$/, "");
    await build({
      ...(entry.startsWith("libexec/") ? { stdin: started(entry) } : { entryPoints: [entry] }),
      outfile,
      bundle: true,
      platform: "node",
      target: "node24",
      // CommonJS: an extensionless file installed under /usr/local/bin has no
      // package.json beside it to say it is an ES module.
      format: "cjs",
      ...(usesYargs(entry)
        ? yargsFix
        : { banner: { js: entry === "bin/ferret.ts" ? FERRET_SHEBANG : "#!/usr/bin/env node" } }),
      define: { ...(usesYargs(entry) ? yargsFix.define : {}), ...prebuilt },
      legalComments: "none",
      plugins: [lazyHelpLayout],
      logLevel: "warning",
    });
    chmodSync(outfile, 0o755);
  }),
);
console.log(`built ${entries.length} entrypoints`);
