# MINCS in TypeScript. `make` builds every entrypoint into an executable
# bundle beside its source; `make install` copies them under $(PREFIX).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec

FRONTENDS := minc marten polecat
BACKENDS := $(patsubst libexec/%.ts,%,$(wildcard libexec/minc-*.ts))
MINIMUM_BACKENDS := minc-exec minc-core minc-coat minc-leash minc-cage
SCRIPTS := minc-waiter.sh
SOURCES := $(wildcard bin/*.ts libexec/*.ts lib/*.ts) build.mjs package.json

# Which programs install/uninstall handle; MINIMUM=1 is install.sh --minimum.
ifeq ($(MINIMUM),1)
INSTALL_BIN := minc
INSTALL_LIBEXEC := $(MINIMUM_BACKENDS) $(SCRIPTS)
else
INSTALL_BIN := $(FRONTENDS)
INSTALL_LIBEXEC := $(BACKENDS) $(SCRIPTS)
endif

TESTS ?= test/*.test.ts

.PHONY: all build typecheck test install uninstall clean bench

all: build

build: .build-stamp

node_modules/.package-lock.json: package.json package-lock.json
	npm ci
	@touch $@

.build-stamp: node_modules/.package-lock.json $(SOURCES)
	node build.mjs
	@touch $@

typecheck: node_modules/.package-lock.json
	npx tsc --noEmit -p .

# Tests run one file at a time: they boot real containers and check that
# nothing is left behind, which concurrent files would blur.
test: build typecheck
	node --test --test-concurrency=1 $(TESTS)

bench: build
	bench/start.sh

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR)
	for f in $(INSTALL_BIN); do install -m 755 bin/$$f $(DESTDIR)$(BINDIR)/$$f; done
	for f in $(INSTALL_LIBEXEC); do install -m 755 libexec/$$f $(DESTDIR)$(LIBEXECDIR)/$$f; done

uninstall:
	for f in $(INSTALL_BIN); do rm -f $(DESTDIR)$(BINDIR)/$$f; done
	for f in $(INSTALL_LIBEXEC); do rm -f $(DESTDIR)$(LIBEXECDIR)/$$f; done

clean:
	rm -f .build-stamp $(addprefix bin/,$(FRONTENDS)) $(addprefix libexec/,$(BACKENDS))
