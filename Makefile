# Weir: the two commands a new machine needs are `make run` and `make test`.

CARGO  ?= cargo
PYTHON ?= python3
VENV   := .venv
WEIR_CONFIG ?= examples/weir.toml

.PHONY: run test bench build check unit e2e guests clean

# Wasm components built from source for the tests: first-party plugins and the test guests.
PLUGINS := allowlist auth router redact cost
GUESTS := $(addprefix weir-plugin-,$(PLUGINS)) guest-misbehave guest-chunky guest-foreign
WASM   := target/wasm32-wasip2/plugin

## Build (release) and start the gateway with the example config and the built-in mock upstream.
run:
	rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	$(CARGO) build --release -p weir
	$(CARGO) build --locked --target wasm32-wasip2 --profile plugin $(addprefix -p weir-plugin-,$(PLUGINS))
	./target/release/weir serve --config $(WEIR_CONFIG)

## Install what the tests need and run every test: format, lints, unit tests, end-to-end tests through the SDKs.
test: check unit e2e

## Benchmarks (not part of `test`): starts everything on loopback, prints each measure against its budget.
bench:
	bash bench/run.sh

build:
	$(CARGO) build --release -p weir

check:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy --locked --target wasm32-wasip2 -p weir-sdk $(addprefix -p ,$(GUESTS)) -- -D warnings

unit:
	$(CARGO) test --workspace --locked

guests:
	rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	$(CARGO) build --locked --target wasm32-wasip2 --profile plugin $(addprefix -p ,$(GUESTS))
	mkdir -p target/guests
	for p in $(PLUGINS); do cp $(WASM)/weir_plugin_$$p.wasm target/guests/$$p.wasm; done
	for g in misbehave chunky foreign; do cp $(WASM)/guest_$$g.wasm target/guests/$$g.wasm; done
	# Two builds of one guest, for the hot-swap tests.
	for v in A B; do \
	  WEIR_GUEST_VERSION=$$v $(CARGO) build --locked --target wasm32-wasip2 --profile plugin -p guest-version && \
	  cp $(WASM)/guest_version.wasm target/guests/version-$$v.wasm; done

e2e: $(VENV)/.installed guests
	$(CARGO) build --workspace --locked
	WEIR_BIN=$(CURDIR)/target/debug/weir $(VENV)/bin/python -m pytest tests/e2e -q -p no:cacheprovider

$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

clean:
	$(CARGO) clean
	rm -rf $(VENV)
