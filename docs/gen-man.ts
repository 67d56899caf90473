// make man: write docs/minc.1, docs/marten.1, docs/polecat.1,
// docs/ermine-breeder.1 and docs/ferret.1 from the definitions --help prints
// (docs/man.ts); all but minc's come from the built programs' --help.
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { DOC_REPO } from "./boot-doc.ts";
import { mincManPage, plainManPage, yargsCommands, yargsManPage } from "./man.ts";

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
writeFileSync(
  `${outDir}/marten.1`,
  yargsManPage("marten", marten, subs, [
    ".SH FILES",
    ".TP",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, shown as such in the man page
    "\\fI${MINCS_DIR:\\-/var/lib/mincs}\\fR",
    "The image store: images/<id>/ and containers/<id>/ (MINCS_DIR may also be set in /etc/mincs.conf).",
    ".SH SEE ALSO",
    "\\fBminc\\fR(1), \\fBpolecat\\fR(1)",
  ]),
);
writeFileSync(
  `${outDir}/polecat.1`,
  yargsManPage("polecat", help("polecat"), {}, [
    ".SH FILES",
    ".TP",
    "\\fI/opt/mincs\\fR",
    "Inside the image of a self-executable file: the packed minc and the backends that boot it.",
    ".TP",
    "\\fI/tmp/polecat\\-XXXXXX\\fR",
    "polecat's working directory (storage/ is the image); a running file mounts its image on /tmp/polecat\\-run\\-XXXXXX/image.",
    ".TP",
    "\\fIOUTPUT\\fR's directory, \\fI.NAME.XXXXXX.partial\\fR",
    "The output while it is written (claimed before anything runs, renamed over the output when done; gone if the build fails).",
    ".SH SIGNALS",
    "A Ctrl\\-C at the terminal during the traced run (INT to the whole process group, the container too) ends the command's test run,",
    "and what it used is packed. TERM, HUP, an INT sent to polecat alone (told apart within a second), and any of them at another stage",
    "abort the build: the running stage gets the signal, the partial output and the working directory are removed, and polecat ends by the signal.",
    ".SH EXAMPLES",
    "polecat \\-o ps.sh ROOTFS ps; ./ps.sh",
    ".br",
    "polecat \\-s samples/polecat/httpd \\-o httpd.sh ROOTFS",
    ".SH SEE ALSO",
    "\\fBminc\\fR(1), \\fBmarten\\fR(1), \\fBstrace\\fR(1), \\fBmksquashfs\\fR(1)",
  ]),
);
const breeder = help("ermine-breeder");
const breederSubs: Record<string, string> = {};
for (const c of yargsCommands(breeder)) breederSubs[c] = help("ermine-breeder", c);
writeFileSync(
  `${outDir}/ermine-breeder.1`,
  yargsManPage("ermine-breeder", breeder, breederSubs, [
    ".SH FILES",
    ".TP",
    "\\fIlibexec/ermine/vmlinuz.ARCH\\fR, \\fIlibexec/ermine/initramfs.ARCH\\fR",
    "The kernel and initramfs minc \\-\\-qemu and \\-\\-um boot (DESTDIR in a config file moves them).",
    ".TP",
    "\\fICONF_FILE\\fR of \\-\\-config, else \\fITOPDIR/ermine.config\\fR",
    "A shell file, sourced by sh as MINCS's ermine\\-breeder sourced it (later files win; TOPDIR is the directory above libexec/).",
    "It may set LINUX_URL (a source build), LINUX_BRANCH, BUSYBOX_URL, KCONFIG, FORCE_KCONFIG, BUILD_MOD, BUILD_NET, INCREMENTAL,",
    "CHECK_WARN, LLVM_OPT, DESTDIR, WORKDIR, DLDIR, KERNEL_PACKAGE, BUSYBOX_PACKAGE, JOBS, CROSS_COMPILE and ARCH, and define",
    "user_configure_kernel and user_configure_busybox, which a source build runs after make defconfig",
    "(with kconfig_set, kconfig_string, kconfigs_y, kconfigs_n, kconfigs_m and merge_config, which edit $OUTDIR/.config).",
    ".SH EXAMPLES",
    "ermine\\-breeder build; minc \\-\\-qemu \\-r ROOTFS uname \\-r",
    ".br",
    "ermine\\-breeder build \\-\\-arch um",
    ".br",
    'ermine\\-breeder testrun \\-\\-net \\-\\-cmdline "loglevel=7" \\-\\-work DIR   # DIR/run.sh runs in the guest',
    ".SH SEE ALSO",
    "\\fBminc\\fR(1), \\fBqemu\\-system\\-x86_64\\fR(1)",
  ]),
);
writeFileSync(
  `${outDir}/ferret.1`,
  plainManPage("ferret", "the OCI runtime of MINCS", help("ferret"), [
    ".SH FILES",
    ".TP",
    "\\fI/run/ferret/ID\\fR (\\-\\-root)",
    "A container's state: state.json, its init (init.sh), the dive and its plan, the seccomp filter; delete removes it, and its cgroups.",
    ".SH EXAMPLES",
    "podman \\-\\-runtime /usr/local/bin/ferret run \\-\\-rm IMAGE COMMAND",
    ".br",
    "mkdir b && cd b && ferret spec && (edit config.json: root.path) && ferret run ID",
    ".SH SEE ALSO",
    "\\fBminc\\fR(1), \\fBpodman\\fR(1), \\fBrunc\\fR(8)",
  ]),
);
console.log(`wrote ${outDir}/minc.1 marten.1 polecat.1 ermine-breeder.1 ferret.1`);
