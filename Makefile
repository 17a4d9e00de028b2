# The front door of quorumkv. `make run` and `make test` are all a fresh machine needs:
# both install missing system prerequisites first (scripts/install-deps.sh).
#
# One build profile (release) serves everything: RocksDB's C++ takes about a quarter of an
# hour to compile on two cores, and every profile compiles it again.

SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target
PROFILE := --release
BIN := $(CARGO_TARGET_DIR)/release/quorumkv
# End-to-end tests start 3-node clusters; a few at a time fit two cores.
TEST_THREADS ?= 4

.PHONY: help deps build run test lint fix doc clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install missing system prerequisites (libclang for the RocksDB bindings)
	@scripts/install-deps.sh

build: deps ## build the quorumkv binary (release)
	$(CARGO) build $(PROFILE) --bins

run: build ## start a local 3-node cluster on 127.0.0.1:7001-7003, data under ./data
	@BIN=$(BIN) deploy/local-cluster.sh

test: deps ## run every test: unit, property and end-to-end against real processes
	$(CARGO) build $(PROFILE) --workspace --bins
	$(CARGO) test $(PROFILE) --workspace -- --test-threads=$(TEST_THREADS)

lint: deps ## read-only checks: format, clippy, rustdoc, dependency direction
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(PROFILE) --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc $(PROFILE) --workspace --no-deps
	@scripts/check-layering.sh

fix: ## rewrite what the linters can fix
	$(CARGO) fmt --all
	$(CARGO) clippy $(PROFILE) --workspace --all-targets --fix --allow-dirty --allow-staged

doc: deps ## build the API documentation
	$(CARGO) doc $(PROFILE) --workspace --no-deps

clean: ## remove build output and local cluster data
	$(CARGO) clean
	rm -rf data
