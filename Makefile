# Weir: the two commands a new machine needs are `make run` and `make test`.

CARGO  ?= cargo
PYTHON ?= python3
VENV   := .venv
WEIR_CONFIG ?= examples/weir.toml

.PHONY: run test bench fuzz build dist plugins check unit e2e guests polyglot clean need-redis need-wasm need-npm need-musl need-clang-wasi wasmtime-fix

# Wasm components built from source for the tests: first-party plugins and the test guests.
PLUGINS := allowlist auth router redact cost ratelimit cache
GUESTS := $(addprefix weir-plugin-,$(PLUGINS)) guest-misbehave guest-chunky guest-foreign guest-legacy guest-conformance
WASM   := target/wasm32-wasip2/plugin

# Python and JavaScript guests, built from source with componentize-py (pip, into $(VENV)) and componentize-js (npm,
# into tools/node_modules): the conformance plugin in each language and the two example policies.
COMPONENTIZE_PY := $(VENV)/bin/componentize-py
COMPONENTIZE_JS := tools/node_modules/.bin/componentize-js
# The Python conformance plugin is also built against 0.2.0 (its source runs on both), so that contract version keeps
# a real component in the suite.
POLYGLOT := target/guests/conformance-python.wasm target/guests/conformance-js.wasm \
            target/guests/conformance-python-0.2.wasm target/guests/guard.wasm target/guests/tier-router.wasm

## Build (release) and start the gateway with the example config and the built-in mock upstream.
# The built-in mock's test cloud credentials, for examples/cloud.toml (they grant nothing anywhere else).
run: export WEIR_DEMO_AWS_ACCESS_KEY_ID ?= AKIAWEIRMOCKEXAMPLE1
run: export WEIR_DEMO_AWS_SECRET_ACCESS_KEY ?= weirMockSecretKey/DoNotUse+EXAMPLEKEY00000
run: export WEIR_DEMO_AZURE_KEY ?= weir-mock-azure-key
run: build plugins
	./target/release/weir serve --config $(WEIR_CONFIG)

## Install what the tests need and run every test: format, lints, unit tests, end-to-end tests through the SDKs.
test: check unit e2e

## Benchmarks (not part of `test`): starts everything on loopback, prints each measure against its budget.
bench:
	bash bench/run.sh

## Coverage-guided fuzzing (not part of `test`, which replays the corpus): each target in fuzz/fuzz_targets/ for
## FUZZ_SECS seconds under cargo-fuzz (libFuzzer, address sanitizer), reading fuzz/corpus/<target>/ and writing new
## inputs to target/fuzz-corpus/<target>/. cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets our stable
## toolchain accept them. A crash is saved under fuzz/artifacts/<target>/: add it to fuzz/corpus/ once fixed.
FUZZ_SECS ?= 120
FUZZ_TARGETS := sse answer request config plugin translate eventstream sigv4
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t && \
	  RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(CURDIR)/target/fuzz $(CARGO) fuzz run --fuzz-dir fuzz $$t \
	    target/fuzz-corpus/$$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECS) -rss_limit_mb=4096 || exit 1; \
	done

build:
	$(CARGO) build --release --locked -p weir

## A static, stripped binary to ship: dist/weir-x86_64-linux-musl and its .sha256. musl-gcc (Debian's musl-tools)
## compiles the C inside ring and mimalloc for the musl target; mimalloc stays the allocator (musl's own is slow).
DIST_TARGET := x86_64-unknown-linux-musl
DIST_BIN    := dist/weir-x86_64-linux-musl
dist: need-musl
	$(CARGO) build --locked --profile dist --target $(DIST_TARGET) -p weir
	mkdir -p dist
	cp target/$(DIST_TARGET)/dist/weir $(DIST_BIN).tmp
	mv $(DIST_BIN).tmp $(DIST_BIN)
	cd dist && sha256sum $(notdir $(DIST_BIN)) > $(notdir $(DIST_BIN)).sha256
	@ls -l $(DIST_BIN); cat $(DIST_BIN).sha256

## The first-party plugins, as Wasm components in target/wasm32-wasip2/plugin/.
plugins: need-wasm
	$(CARGO) build --locked --target wasm32-wasip2 --profile plugin $(addprefix -p weir-plugin-,$(PLUGINS))

check: need-wasm
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy --locked --target wasm32-wasip2 -p weir-sdk $(addprefix -p ,$(GUESTS)) -- -D warnings

# The plugin runtime's unit tests run real components: the test guests are built first.
unit: need-redis guests
	$(CARGO) test --workspace --locked

# Everything `make test` needs is installed by its own prerequisite, so a fresh machine with only rustup's host
# toolchain, Python 3 and apt gets there (.ci/run removes the cheap ones first to prove it). `rustup target add` is
# idempotent, but listing first keeps an installed target from costing a network round trip.
need-wasm:
	@rustup target list --installed | grep -qx wasm32-wasip2 || { echo "== adding the wasm32-wasip2 Rust target"; \
	  rustup target add wasm32-wasip2; }

need-musl:
	@rustup target list --installed | grep -qx $(DIST_TARGET) || { echo "== adding the $(DIST_TARGET) Rust target"; \
	  rustup target add $(DIST_TARGET); }
	@command -v musl-gcc >/dev/null || { echo "== installing musl-tools"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq musl-tools >/dev/null; }

# componentize-js runs on Node.js (18+); Debian's nodejs and npm when missing.
need-npm:
	@command -v npm >/dev/null || { echo "== installing Node.js and npm"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }

# The kv conformance tests and the shared-state e2e tests start their own redis-server on a free port: Debian's
# package, installed here when missing (as .ci/run installs npm).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
need-redis:
	@command -v redis-server >/dev/null || { echo "== installing redis-server"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

# `weir plugin build` of a C project (tests/e2e/test_authoring.py) compiles with clang's wasm32-wasi target and a WASI
# libc: Debian's packages, installed here when missing.
C_WASI := clang lld wasi-libc libclang-rt-dev-wasm32
need-clang-wasi:
	@dpkg -s $(C_WASI) >/dev/null 2>&1 || { echo "== installing $(C_WASI)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(C_WASI) >/dev/null; }

# Whether a wasmtime with the slot-reset fix resolves yet (see plugin/engine.rs); informational.
wasmtime-fix:
	@bash tools/wasmtime-fix.sh

guests: need-wasm
	$(CARGO) build --locked --target wasm32-wasip2 --profile plugin $(addprefix -p ,$(GUESTS))
	mkdir -p target/guests
	for p in $(PLUGINS); do cp $(WASM)/weir_plugin_$$p.wasm target/guests/$$p.wasm; done
	for g in misbehave chunky foreign legacy; do cp $(WASM)/guest_$$g.wasm target/guests/$$g.wasm; done
	cp $(WASM)/guest_conformance.wasm target/guests/conformance-rust.wasm
	# Two builds of one guest, for the hot-swap tests.
	for v in A B; do \
	  WEIR_GUEST_VERSION=$$v $(CARGO) build --locked --target wasm32-wasip2 --profile plugin -p guest-version && \
	  cp $(WASM)/guest_version.wasm target/guests/version-$$v.wasm; done

polyglot: $(POLYGLOT)

# componentize-py <module dir> <module> <out> [<contract version>]; written to a temporary name first so a failed
# build leaves nothing.
CONTRACT := 0.3.0
define componentize_py
	mkdir -p target/guests
	$(COMPONENTIZE_PY) -d wit/v$(or $(4),$(CONTRACT)) -w plugin componentize -p $(1) $(2) -o $(3).tmp
	mv $(3).tmp $(3)
endef
define componentize_js
	mkdir -p target/guests
	$(COMPONENTIZE_JS) $(1) --wit wit/v$(CONTRACT) -n plugin -d http fetch-event -o $(2).tmp
	mv $(2).tmp $(2)
endef

target/guests/conformance-python.wasm: tests/conformance/python/app.py wit/v$(CONTRACT)/plugin.wit $(VENV)/.installed
	$(call componentize_py,tests/conformance/python,app,$@)
target/guests/conformance-python-0.2.wasm: tests/conformance/python/app.py wit/v0.2.0/plugin.wit $(VENV)/.installed
	$(call componentize_py,tests/conformance/python,app,$@,0.2.0)
target/guests/guard.wasm: examples/python-guard/app.py wit/v$(CONTRACT)/plugin.wit $(VENV)/.installed
	$(call componentize_py,examples/python-guard,app,$@)
target/guests/conformance-js.wasm: tests/conformance/js/app.js wit/v$(CONTRACT)/plugin.wit tools/node_modules/.installed
	$(call componentize_js,tests/conformance/js/app.js,$@)
target/guests/tier-router.wasm: examples/js-router/app.js wit/v$(CONTRACT)/plugin.wit tools/node_modules/.installed
	$(call componentize_js,examples/js-router/app.js,$@)

tools/node_modules/.installed: tools/package.json tools/package-lock.json | need-npm
	# `npm install`, not `npm ci`: npm leaves other platforms' optional packages out of the lock, which `ci` rejects.
	npm install --prefix tools --no-audit --no-fund --loglevel=error
	touch $@

# The coding agents the e2e tests drive through the gateway (Claude Code, Codex CLI): npm packages, pinned.
tools/agents/node_modules/.installed: tools/agents/package.json tools/agents/package-lock.json | need-npm
	npm install --prefix tools/agents --no-audit --no-fund --loglevel=error
	touch $@

e2e: $(VENV)/.installed guests polyglot need-redis need-clang-wasi dist tools/agents/node_modules/.installed
	$(CARGO) build --workspace --locked
	WEIR_BIN=$(CURDIR)/target/debug/weir WEIR_DIST_BIN=$(CURDIR)/$(DIST_BIN) $(VENV)/bin/python -m pytest tests/e2e -q -p no:cacheprovider

$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

clean:
	$(CARGO) clean
	rm -rf $(VENV) dist
