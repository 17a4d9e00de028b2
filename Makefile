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
# Seconds per fuzz target: a short run in `make test`, a long one in `make fuzz`.
FUZZ_SMOKE_SECONDS ?= 25
FUZZ_SECONDS ?= 600
# Seconds of faults and load in `make soak` (`make test` runs the same suite for 40 s).
SOAK_SECONDS ?= 600

.PHONY: help deps build run test check soak fuzz-smoke fuzz lint fix doc clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install missing system prerequisites (libclang for the RocksDB bindings)
	@scripts/install-deps.sh

build: deps ## build the quorumkv binary (release)
	$(CARGO) build $(PROFILE) --bins

run: build ## start a local 3-node cluster on 127.0.0.1:7001-7003, data under ./data
	@BIN=$(BIN) deploy/local-cluster.sh

test: deps ## run every test: unit, property, end-to-end against real processes, fuzz (briefly)
	$(CARGO) build $(PROFILE) --workspace --bins
	@$(MAKE) --no-print-directory browser-deps validate-k8s
	$(CARGO) test $(PROFILE) --workspace -- --test-threads=$(TEST_THREADS)
	@$(MAKE) --no-print-directory fuzz-smoke

# Unit tests, property tests and the in-process simulations: no node process, no network.
check: deps ## the fast tests alone: unit, property, in-process (under 2 min with the build done)
	$(CARGO) test $(PROFILE) --workspace --lib --bins
	$(CARGO) test $(PROFILE) -p quorumkv-ring -p quorumkv-replica -p quorumkv-http-api --tests
	$(CARGO) test $(PROFILE) -p quorumkv-coordinator --test antientropy --test batching

soak: deps ## the fault suite for SOAK_SECONDS (default 600; the delete and restore workloads half, churn the whole) instead of its CI-sized run
	$(CARGO) build $(PROFILE) --workspace --bins
	QUORUMKV_SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test $(PROFILE) -p quorumkv-tests --test faults \
		-- --nocapture no_acknowledged_write_is_lost deletes_and_recreations_with_reaping \
		deletes_while_nodes_join_and_leave nodes_restored_from_copies

fuzz-smoke: deps ## run each fuzz target for FUZZ_SMOKE_SECONDS (installs cargo-fuzz if missing)
	@scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

fuzz: deps ## run each fuzz target for FUZZ_SECONDS, adding what it finds to fuzz/corpus
	@scripts/fuzz.sh $(FUZZ_SECONDS) --grow

lint: deps ## read-only checks: format, clippy, rustdoc, dependency direction
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy $(PROFILE) --workspace --all-targets -- -D warnings
	# The pure parts the fuzz targets build, without RocksDB.
	$(CARGO) clippy $(PROFILE) -p quorumkv-replica -p quorumkv-coordinator --no-default-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc $(PROFILE) --workspace --no-deps
	@scripts/check-layering.sh
	@scripts/check-doc-paths.py

fix: ## rewrite what the linters can fix
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml
	$(CARGO) clippy $(PROFILE) --workspace --all-targets --fix --allow-dirty --allow-staged

doc: deps ## build the API documentation
	$(CARGO) doc $(PROFILE) --workspace --no-deps

.PHONY: bench bench-quick bench-deps bench-transfer bench-memory microbench bench-ab profile upgrade-check

bench-deps: ## install what the benchmarks compare against (etcd)
	@scripts/install-bench-deps.sh

bench: deps bench-deps ## quorumkv vs etcd vs a bare HTTP server, 5 runs each (~18 min); table in BENCHMARKS.md
	$(CARGO) build $(PROFILE) --bins
	@scripts/bench.sh full

bench-quick: deps bench-deps ## the same matrix, 1 short run each, no value-size rows (under 3 min)
	$(CARGO) build $(PROFILE) --bins
	@scripts/bench.sh quick

bench-transfer: deps ## how fast a join and a leave move data (200k keys of 1 KiB; ~3 min)
	$(CARGO) build $(PROFILE) --bins
	@scripts/bench-transfer.sh

bench-memory: deps ## resident set over 20 min of writes to 5M keys; 5M vs 100k keys (~23 min)
	$(CARGO) build $(PROFILE) --bins
	@scripts/bench-memory.sh

bench-ab: deps ## CPU per operation of two builds side by side: make bench-ab A=old-binary B=new-binary [WORKLOAD=write|read]
	$(CARGO) build $(PROFILE) -p quorumkv-bench
	@scripts/bench-ab.sh $(A) $(B) $(or $(WORKLOAD),write)

profile: deps ## perf profile and flame graph of one node under the write (or WORKLOAD=read) load
	$(CARGO) build $(PROFILE) --bins
	@scripts/profile.sh 10 $(or $(WORKLOAD),write)

upgrade-check: deps ## a cluster's data from build OLD to build NEW: make upgrade-check OLD=old-binary NEW=new-binary
	@scripts/upgrade-check.sh $(OLD) $(NEW)

# `cargo bench` builds with the bench profile, which inherits release and reuses its
# artifacts (RocksDB included).
microbench: deps ## criterion micro-benchmarks: ring, clocks, records, store, coordinator (~3 min)
	$(CARGO) bench -p quorumkv-bench --benches

.PHONY: browser-deps validate-k8s

browser-deps: ## install headless Chromium for the browser test of the status page
	@scripts/install-browser.sh >/dev/null

validate-k8s: ## validate deploy/: Kubernetes schemas (offline), checkov on manifests and Dockerfile
	@scripts/validate-k8s.sh

clean: ## remove build output and local cluster data
	$(CARGO) clean
	rm -rf data
