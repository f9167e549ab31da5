# reaperd — build, test, install.
#
#   make run       install what is missing, build, run reaperd in the foreground
#   make test      install what is missing, build with warnings as errors, run the tests
#   make e2e       end-to-end tests under a real systemd in systemd-nspawn (root)
#   make install   release build into $(DESTDIR)$(PREFIX), units, config, man pages (hacking)
#   make deb       the Debian package (production install), checked by lintian, in build/deb
#
# Works as root or as a user with sudo (used only to install missing Debian packages).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
# apt-get must never run twice at once, and `run`/`test` rely on prerequisite order.
.NOTPARALLEL:

# swift from PATH, else the toolchain's own.
ifeq ($(origin SWIFT),undefined)
SWIFT := $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
endif
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/reaperd
# SwiftPM's build directory; override to keep several builds apart.
SCRATCH ?= .build
# Extra flags for every swift build/test, e.g. SWIFTFLAGS='--sanitize=address'.
SWIFTFLAGS ?=
# The interpreter for the pytest integration tests.
PYTHON ?= python3

SWIFTPM := --scratch-path $(SCRATCH) $(SWIFTFLAGS)
DEBUG_FLAGS := $(SWIFTPM) -Xswiftc -warnings-as-errors
# Full RELRO (relocations read-only, all symbols bound at start), as Debian's hardening
# asks of a daemon (lintian: hardening-no-bindnow).
RELEASE_FLAGS := $(SWIFTPM) -c release --static-swift-stdlib -Xlinker -z -Xlinker relro -Xlinker -z -Xlinker now

# Debian packages, by purpose. Each deps-* target installs its own list plus the build
# list, in one apt-get run.
BUILD_PKGS := libsystemd-dev pkg-config
# dnsmasq-base is the binary alone: the resolver test_resolve.py runs on loopback. Not the
# dnsmasq package, whose system service would take port 53 on every address at install.
TEST_PKGS := iproute2 nftables netcat-openbsd procps python3 python3-pytest redis-server bash-completion prometheus \
	dnsmasq-base haproxy
E2E_PKGS := systemd-container debootstrap debian-archive-keyring
BENCH_PKGS := haproxy socat redis-server redis-tools postgresql-15 strace
DEB_PKGS := debhelper dpkg-dev fakeroot lintian

ifeq ($(shell id -u),0)
SUDO :=
else
SUDO := $(shell command -v sudo 2>/dev/null)
endif

# $(call apt_install,PACKAGES): install those not yet installed; nothing else.
# One `apt-get update`, and only when something is missing.
define apt_install
	missing=""; \
	for p in $(1); do \
		status=$$(dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null || true); \
		[ "$$status" = "install ok installed" ] || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ] && [ -z "$(SUDO)" ]; then \
			echo "error: missing Debian packages:$$missing" >&2; \
			echo "error: installing them needs root or sudo; run as root, install sudo, or: apt-get install$$missing" >&2; \
			exit 1; \
		fi; \
		echo "Installing:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 \
			install --no-install-recommends $$missing; \
	fi
endef

.PHONY: all deps deps-test deps-e2e deps-bench deps-deb build release run test lint e2e e2e-clean \
	install uninstall deb clean bench fuzz fuzz-relay test-sanitize soak

all: build

deps:
	@$(call apt_install,$(BUILD_PKGS))

deps-test:
	@$(call apt_install,$(BUILD_PKGS) $(TEST_PKGS))

# The e2e harness also uses the test tools (python3, ps; nft for vanishing clients).
deps-e2e:
	@$(call apt_install,$(BUILD_PKGS) $(TEST_PKGS) $(E2E_PKGS))

deps-bench:
	@$(call apt_install,$(BUILD_PKGS) $(BENCH_PKGS))

deps-deb:
	@$(call apt_install,$(BUILD_PKGS) $(DEB_PKGS))

build: deps
	$(SWIFT) build $(DEBUG_FLAGS)

release: deps
	$(SWIFT) build $(RELEASE_FLAGS)

# No arguments: /etc/reaperd/reaperd.conf if present, else the embedded default
# (an echo listener on 127.0.0.1:7070).
run: build
	exec $(SCRATCH)/debug/reaperd

# Same flags as `build`, so the test run reuses its products. Parallelism is left to
# the suites themselves. Then the integration tests (pytest, Tests/integration), which
# start the real binaries from $(SCRATCH)/debug; Debian's python3-pytest is the fallback
# when $(PYTHON) has no pytest of its own.
test: deps-test build
	$(SWIFT) test $(DEBUG_FLAGS)
	@if [ -d Tests/integration ]; then \
		py="$(PYTHON)"; "$$py" -c 'import pytest' 2>/dev/null || py=/usr/bin/python3; \
		echo "REAPERD_BIN_DIR=$(abspath $(SCRATCH))/debug $$py -m pytest Tests/integration"; \
		REAPERD_BIN_DIR="$(abspath $(SCRATCH))/debug" "$$py" -m pytest Tests/integration; \
	fi

lint:
	@if [ -f .swift-format ]; then \
		echo "$(SWIFT) format lint --strict -r -p Sources Tests"; \
		$(SWIFT) format lint --strict -r -p Sources Tests; \
	else \
		echo "no .swift-format: nothing to lint against"; \
	fi

# Needs root (debootstrap, systemd-nspawn, nsenter). The first run builds a Debian 12
# rootfs into $${REAPERD_E2E_CACHE:-/var/cache/reaperd-e2e} (about 75 s); later runs
# reuse it. The release build happens inside the harness (`make install DESTDIR=`), so
# a build failure is reported as a failed check next to the container's own checks.
# The Debian package is built first (`deb`, same release build): scenario deb-lifecycle
# installs, reloads, removes and purges it in the container.
e2e: deps-e2e deb
	@if [ "$$(id -u)" = 0 ]; then \
		bash Tests/e2e/run.sh; \
	elif [ -n "$(SUDO)" ]; then \
		$(SWIFT) build $(RELEASE_FLAGS) || true; \
		$(SUDO) env REAPERD_E2E_CACHE="$${REAPERD_E2E_CACHE:-}" SWIFT="$(SWIFT)" SCRATCH="$(SCRATCH)" \
			SWIFTFLAGS="$(SWIFTFLAGS)" bash Tests/e2e/run.sh; \
	else \
		echo "error: make e2e needs root or sudo (systemd-nspawn)" >&2; exit 1; \
	fi

# Removes the cached e2e rootfs (rebuilt by the next make e2e).
e2e-clean:
	$(SUDO) rm -rf --one-file-system $${REAPERD_E2E_CACHE:-/var/cache/reaperd-e2e}

install: release
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(SCRATCH)/release/reaperd $(SCRATCH)/release/reaperctl $(DESTDIR)$(BINDIR)/
	install -d $(DESTDIR)$(UNITDIR)
	sed 's#/usr/local/bin/#$(BINDIR)/#g' systemd/reaperd.service >$(DESTDIR)$(UNITDIR)/reaperd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/reaperd.service
	sed 's#/usr/local/bin/#$(BINDIR)/#g' systemd/reaperd-adopt.service >$(DESTDIR)$(UNITDIR)/reaperd-adopt.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/reaperd-adopt.service
	install -m 0644 systemd/reaperd.socket $(DESTDIR)$(UNITDIR)/reaperd.socket
	install -d -m 0755 $(DESTDIR)$(CONFDIR)
	@if [ -e $(DESTDIR)$(CONFDIR)/reaperd.conf ]; then \
		echo "keeping existing $(DESTDIR)$(CONFDIR)/reaperd.conf (example: config/reaperd.conf)"; \
	else \
		echo "install -m 0644 config/reaperd.conf $(DESTDIR)$(CONFDIR)/reaperd.conf"; \
		install -m 0644 config/reaperd.conf $(DESTDIR)$(CONFDIR)/reaperd.conf; \
	fi
	@if [ -e $(DESTDIR)$(CONFDIR)/adopt.conf ]; then \
		echo "keeping existing $(DESTDIR)$(CONFDIR)/adopt.conf (example: config/adopt.conf)"; \
	else \
		echo "install -m 0644 config/adopt.conf $(DESTDIR)$(CONFDIR)/adopt.conf"; \
		install -m 0644 config/adopt.conf $(DESTDIR)$(CONFDIR)/adopt.conf; \
	fi
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 0644 contrib/bash-completion/reaperd contrib/bash-completion/reaperctl \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/
	install -d $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 man/reaperd.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 man/reaperd.8 man/reaperctl.8 $(DESTDIR)$(MANDIR)/man8/
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		echo "systemctl daemon-reload"; systemctl daemon-reload; \
		echo "now: systemctl enable --now reaperd"; \
	fi

# The Debian package (debian/, README "Production install"): dpkg-buildpackage builds the
# release binaries through `make release` and `make install` with the packaged paths
# (debian/rules), and dh_builddeb leaves reaperd_VERSION_ARCH.deb (and its -dbgsym .ddeb,
# .buildinfo, .changes) in $(DEB_DIR) instead of the parent directory. Then lintian on
# the .deb: an error or a warning fails (those that remain are overridden, each with its
# reason, in debian/reaperd.lintian-overrides). Unsigned: signing is the release's job.
DEB_DIR := build/deb

deb: deps-deb
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)
	REAPERD_DEB_DIR=$(abspath $(DEB_DIR)) SWIFT="$(SWIFT)" SCRATCH="$(SCRATCH)" \
		dpkg-buildpackage -b -us -uc \
		--buildinfo-option=-u$(abspath $(DEB_DIR)) --buildinfo-file=$(abspath $(DEB_DIR))/reaperd.buildinfo \
		--changes-option=-u$(abspath $(DEB_DIR)) --changes-file=$(abspath $(DEB_DIR))/reaperd.changes
	@deb=$$(ls $(DEB_DIR)/reaperd_*.deb); \
	echo "lintian --fail-on error,warning --info $$deb"; \
	lintian --fail-on error,warning --info "$$deb"; \
	echo "built $$deb"

# Leaves $(CONFDIR)/reaperd.conf: it is the operator's.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/reaperd $(DESTDIR)$(BINDIR)/reaperctl
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/reaperd \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/reaperctl
	rm -f $(DESTDIR)$(UNITDIR)/reaperd.service $(DESTDIR)$(UNITDIR)/reaperd.socket \
		$(DESTDIR)$(UNITDIR)/reaperd-adopt.service
	rm -f $(DESTDIR)$(MANDIR)/man5/reaperd.conf.5 \
		$(DESTDIR)$(MANDIR)/man8/reaperd.8 $(DESTDIR)$(MANDIR)/man8/reaperctl.8
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		echo "systemctl daemon-reload"; systemctl daemon-reload; \
	fi

clean:
	rm -rf $(SCRATCH)

# reaperd against HAProxy and a direct connection on loopback (README "Benchmarks").
# Release build in $(SCRATCH) (e.g. SCRATCH=/tmp/bench-build to leave .build alone);
# BENCH_ARGS goes to bench/bench.py, e.g. BENCH_ARGS='--runs 1 --only throughput,rate'.
# Root (nft for the vanishing clients); about 8 minutes on 2 cores. Results in bench/results/.
bench: deps-bench release
	@$(call apt_install,nftables iproute2 procps python3 gcc libc6-dev)
	REAPERD=$(SCRATCH)/release/reaperd bash bench/run.sh $(BENCH_ARGS)
	python3 bench/adopt.py --reaperd $(SCRATCH)/release/reaperd
	python3 bench/realclients.py --reaperd $(SCRATCH)/release/reaperd

# libFuzzer + AddressSanitizer targets in Tests/fuzz: the INI parser and validator (config),
# control-socket requests (control), metrics HTTP requests (metrics). Tests/fuzz/build.sh builds
# an instrumented ReaperCore in $(FUZZ_SCRATCH) and links one executable per target; then
# Tests/fuzz/run.sh replays each target's saved crashes (Tests/fuzz/regressions/TARGET) and
# fuzzes it for FUZZ_SECONDS from a temporary copy of Tests/fuzz/corpus/TARGET. Any crash fails;
# its input is saved under Tests/fuzz/regressions/TARGET. FUZZ_TARGETS picks targets (default
# all), e.g. `make fuzz FUZZ_TARGETS=config FUZZ_SECONDS=600`.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_SCRATCH ?= $(abspath $(SCRATCH))/fuzz

fuzz: deps
	SWIFT="$(SWIFT)" FUZZ_SCRATCH="$(FUZZ_SCRATCH)" bash Tests/fuzz/build.sh $(FUZZ_TARGETS)
	SWIFT="$(SWIFT)" FUZZ_SCRATCH="$(FUZZ_SCRATCH)" FUZZ_SECONDS="$(FUZZ_SECONDS)" \
		bash Tests/fuzz/run.sh $(FUZZ_TARGETS)

# The randomized relay test (Tests/ReaperCoreTests/Relay) with more seeds than make test's 240:
# `make fuzz-relay SEEDS=5000`, from FIRST_SEED; `make fuzz-relay SEED=N` replays one seed.
SEEDS ?= 2000
FIRST_SEED ?= 1
fuzz-relay: deps
	REAPERD_RELAY_SEEDS="$(SEEDS)" REAPERD_RELAY_FIRST_SEED="$(FIRST_SEED)" $(if $(SEED),REAPERD_RELAY_SEED="$(SEED)" REAPERD_RELAY_VERBOSE=1) \
		$(SWIFT) test $(DEBUG_FLAGS) --filter RelayScriptTests

# Sanitizers (issue 6): Tests/sanitize/run.sh builds with --sanitize=address into $(ASAN_SCRATCH),
# runs swift test there and the integration suite against those binaries (then searches every
# daemon's stderr for sanitizer reports); then builds with --sanitize=thread into $(TSAN_SCRATCH)
# and runs swift test and the integration suites where worker threads meet (test_workers, relay,
# lifecycle, operator; TSAN_INTEGRATION=1 runs every suite). SANITIZE_PYTEST_ARGS goes to pytest.
ASAN_SCRATCH ?= $(abspath $(SCRATCH))/asan
TSAN_SCRATCH ?= $(abspath $(SCRATCH))/tsan
TSAN_INTEGRATION ?= 0
SANITIZE_PYTEST_ARGS ?=

test-sanitize: deps-test
	SWIFT="$(SWIFT)" SWIFTFLAGS="$(SWIFTFLAGS)" PYTHON="$(PYTHON)" ASAN_SCRATCH="$(ASAN_SCRATCH)" \
		TSAN_SCRATCH="$(TSAN_SCRATCH)" TSAN_INTEGRATION="$(TSAN_INTEGRATION)" \
		SANITIZE_PYTEST_ARGS="$(SANITIZE_PYTEST_ARGS)" bash Tests/sanitize/run.sh

# Soak (issue 6): Tests/soak/soak.py runs one reaperd (the debug build) under mixed churn for
# SOAK_MINUTES (default 2; SOAK_MINUTES=10 for the full run), then checks that descriptors, RSS
# and counters are back at the post-warm-up baseline. Root (nft makes the vanishing clients).
SOAK_MINUTES ?= 2

soak: deps-test build
	@py="$(PYTHON)"; "$$py" -c 'import pytest' 2>/dev/null || py=/usr/bin/python3; \
	echo "SOAK_MINUTES=$(SOAK_MINUTES) REAPERD_BIN_DIR=$(abspath $(SCRATCH))/debug $$py Tests/soak/soak.py"; \
	SOAK_MINUTES="$(SOAK_MINUTES)" REAPERD_BIN_DIR="$(abspath $(SCRATCH))/debug" "$$py" Tests/soak/soak.py
