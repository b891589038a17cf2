# Weir: the two commands a new machine needs are `make run` and `make test`.

CARGO  ?= cargo
PYTHON ?= python3
VENV   := .venv
WEIR_CONFIG ?= examples/weir.toml

.PHONY: run test build check unit e2e clean

## Build (release) and start the gateway with the example config and the built-in mock upstream.
run:
	$(CARGO) build --release -p weir
	./target/release/weir serve --config $(WEIR_CONFIG)

## Install what the tests need and run every test: format, lints, unit tests, end-to-end tests through the SDKs.
test: check unit e2e

build:
	$(CARGO) build --release -p weir

check:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked

e2e: $(VENV)/.installed
	$(CARGO) build -p weir --locked
	WEIR_BIN=$(CURDIR)/target/debug/weir $(VENV)/bin/python -m pytest tests/e2e -q -p no:cacheprovider

$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

clean:
	$(CARGO) clean
	rm -rf $(VENV)
