# ztgate — developer entry points. `make help` lists the targets.
# Privileged targets (test, demo, deps) are meant to be run as root: `sudo make test`.

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# sudo resets PATH (secure_path): fall back to the official install location of Go.
ifeq ($(shell command -v go 2>/dev/null),)
export PATH := /usr/local/go/bin:$(PATH)
endif

GO          ?= go
GOFMT       ?= gofmt
BIN_DIR     ?= bin
BINARY      ?= $(BIN_DIR)/ztgate

# Tests: extra flags (e.g. GOTESTFLAGS='-v -run TestFoo' or '-p 1'), overall timeout, log file.
# ZTGATE_REQUIRE_PRIV is passed through untouched when the caller sets it (CI sets it to 1 so
# that privileged tests fail instead of skipping).
GOTESTFLAGS ?=
TEST_TIMEOUT ?= 30m
TEST_PKGS   ?= ./...
TEST_LOG    ?= $(BIN_DIR)/test.log

# Fuzzing: each entry is PACKAGE:FuzzTarget; each runs for FUZZTIME. Add targets here.
FUZZTIME    ?= 30s
FUZZ_TARGETS ?= \
	./policy:FuzzParse \
	./policy:FuzzEditor \
	./policy:FuzzJSONFastPath \
	./bpf:FuzzDifferential \
	./bpf:FuzzSequence

# BPF code generation. bpf2go reads extra clang flags from BPF2GO_CFLAGS; we pass the multiarch
# include directory (asm/types.h lives in /usr/include/<triplet> on Debian/Ubuntu) so that the
# build is not tied to x86_64.
MULTIARCH   := $(shell gcc -print-multiarch 2>/dev/null)
ifneq ($(MULTIARCH),)
BPF2GO_CFLAGS ?= -I/usr/include/$(MULTIARCH)
endif
export BPF2GO_CFLAGS
# The committed object depends on the compiler's version: `make generate` uses this clang, and
# refuses any other major version (Debian 12's clang-14 is what CI and the committed files use).
CLANG_MAJOR ?= 14
BPF2GO_CC   ?= clang-$(CLANG_MAJOR)
export BPF2GO_CC
BPF_DIR     := bpf
BENCH_BPF_DIR := bench/bpf
GENERATED   := $(BPF_DIR)/ztgate_bpfel.go $(BPF_DIR)/ztgate_bpfel.o \
	$(BENCH_BPF_DIR)/ztgatecold_bpfel.go $(BENCH_BPF_DIR)/ztgatecold_bpfel.o

# Benchmarks: the peers they compare against (Debian packages) and where the JSON goes.
# BENCHFLAGS go to ztgate-bench, e.g. '-live-sender afpacket' (the live section's sender: auto
# picks the kernel's live frames where the kernel allows them, else AF_PACKET) or '-sections live'.
BENCH_DEPS  := xdp-tools nftables iptables
BENCH_JSON  ?= $(BIN_DIR)/bench.json
BENCHFLAGS  ?=

# Debian/Ubuntu packages needed to build the BPF program and run the tests (the benchmark
# sections' quick runs are tests too, so their peers are here). The metrics are linted with
# client_golang's promlint, so no promtool is needed; clang-format checks the C in `make lint`.
DEPS        := make gcc libc6-dev linux-libc-dev git clang llvm libbpf-dev bpftool iproute2 clang-format $(BENCH_DEPS)
EXTRA_DEPS  ?=

.PHONY: help deps check-clang generate check-generated build test fuzz demo bench bench-quick fmt vet staticcheck \
	clang-format style shellcheck lint clean

help: ## list the targets
	@echo "ztgate make targets (privileged ones need root: sudo make TARGET):"
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "} {printf "  %-16s %s\n", $$1, $$2}'
	@echo "variables: GOTESTFLAGS='$(GOTESTFLAGS)' TEST_TIMEOUT=$(TEST_TIMEOUT) FUZZTIME=$(FUZZTIME)"
	@echo "           FUZZ_TARGETS='$(strip $(FUZZ_TARGETS))'"
	@echo "           BPF2GO_CFLAGS='$(BPF2GO_CFLAGS)' EXTRA_DEPS='$(EXTRA_DEPS)'"

deps: ## (root) install build/test deps with apt-get (+ Go from go.dev if missing/too old)
	bash scripts/install-deps.sh $(DEPS) $(EXTRA_DEPS)
	bash scripts/install-go.sh

check-clang: ## check that BPF2GO_CC is the pinned clang major version (CLANG_MAJOR)
	@version=$$($(BPF2GO_CC) --version 2>/dev/null | sed -nE '1s/.*clang version ([0-9]+)\..*/\1/p'); \
	if [[ "$$version" != "$(CLANG_MAJOR)" ]]; then \
		echo "check-clang: FAIL: $(BPF2GO_CC) is clang '$${version:-missing}', the committed object needs clang $(CLANG_MAJOR)"; \
		echo "check-clang: install it (make deps) or set BPF2GO_CC to a clang $(CLANG_MAJOR) binary"; \
		exit 1; \
	fi; \
	echo "check-clang: ok: $(BPF2GO_CC) is clang $(CLANG_MAJOR)"

generate: check-clang ## regenerate the BPF object and Go bindings (bpf2go + the pinned clang)
	@echo "generate: go generate ./$(BPF_DIR)/ ./$(BENCH_BPF_DIR)/ (BPF2GO_CC=$(BPF2GO_CC) BPF2GO_CFLAGS='$(BPF2GO_CFLAGS)')"
	$(GO) generate ./$(BPF_DIR)/ ./$(BENCH_BPF_DIR)/

check-generated: generate ## regenerate and fail if the committed generated files differ
	@changes=$$(git status --porcelain --untracked-files=all -- $(BPF_DIR) $(BENCH_BPF_DIR) | \
		grep -E '_bpfe[lb]\.(go|o)$$' || true); \
	if [[ -n "$$changes" ]]; then \
		echo "check-generated: FAIL: the generated BPF files differ from the committed ones:"; \
		echo "$$changes"; \
		git --no-pager diff --stat -- $(BPF_DIR) $(BENCH_BPF_DIR); \
		echo "check-generated: run 'make generate' and commit $(GENERATED)"; \
		echo "check-generated: (they must be built with clang $(CLANG_MAJOR), as CI does)"; \
		exit 1; \
	fi; \
	echo "check-generated: ok: $(GENERATED) match their sources"

build: ## build bin/ztgate
	$(GO) build -o $(BINARY) ./cmd/ztgate

test: ## (root) go vet, then the full test suite (privileged tests need root)
	@if [[ $$(id -u) -ne 0 ]]; then \
		echo "test: WARNING: not root: privileged tests will skip (or fail with ZTGATE_REQUIRE_PRIV=1); use 'sudo make test'"; \
	else \
		bash scripts/ensure-bpffs.sh; \
	fi
	@echo "test: ZTGATE_REQUIRE_PRIV=$${ZTGATE_REQUIRE_PRIV:-<unset>}"
	$(GO) vet $(TEST_PKGS)
	@mkdir -p $(dir $(TEST_LOG))
	@echo "$(GO) test $(GOTESTFLAGS) -count=1 -timeout $(TEST_TIMEOUT) $(TEST_PKGS)"
	@status=0; \
	$(GO) test $(GOTESTFLAGS) -count=1 -timeout $(TEST_TIMEOUT) $(TEST_PKGS) 2>&1 | tee $(TEST_LOG) || status=$$?; \
	bash scripts/go-test-summary.sh $(TEST_LOG); \
	exit $$status

fuzz: ## run each fuzz target in FUZZ_TARGETS for FUZZTIME
	@for entry in $(FUZZ_TARGETS); do \
		pkg=$${entry%%:*}; target=$${entry##*:}; \
		listed=$$($(GO) test -list "^$$target\$$" "$$pkg"); \
		if ! grep -qx "$$target" <<<"$$listed"; then \
			echo "fuzz: FAIL: no fuzz target $$target in $$pkg"; exit 1; \
		fi; \
		echo "fuzz: $$pkg $$target for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) "$$pkg"; \
	done

demo: build ## (root) the walkthrough: lab network, bin/ztgate agent + CLI, attacks; writes bin/demo-events.pcap
	@if [[ $$(id -u) -ne 0 ]]; then echo "demo: needs root: sudo make demo"; exit 1; fi
	@bash scripts/ensure-bpffs.sh
	$(GO) run ./cmd/ztgate-demo -ztgate $(BINARY) -pcap $(BIN_DIR)/demo-events.pcap

bench: build ## (root) the benchmark suite (~7 min): table with ratios and target verdicts, JSON in BENCH_JSON
	@if [[ $$(id -u) -ne 0 ]]; then echo "bench: needs root: sudo make bench"; exit 1; fi
	@bash scripts/ensure-bpffs.sh
	bash scripts/install-deps.sh $(BENCH_DEPS)
	$(GO) run ./cmd/ztgate-bench -ztgate $(BINARY) -json $(BENCH_JSON) $(BENCHFLAGS)

bench-quick: build ## (root) the benchmark suite with reduced sizes (< 2 min): proves it runs, asserts no timing
	@if [[ $$(id -u) -ne 0 ]]; then echo "bench-quick: needs root: sudo make bench-quick"; exit 1; fi
	@bash scripts/ensure-bpffs.sh
	bash scripts/install-deps.sh $(BENCH_DEPS)
	$(GO) run ./cmd/ztgate-bench -quick -ztgate $(BINARY) -json $(BIN_DIR)/bench-quick.json $(BENCHFLAGS)

fmt: ## check formatting (gofmt -l lists nothing)
	@files=$$($(GOFMT) -l .); \
	if [[ -n "$$files" ]]; then \
		echo "fmt: FAIL: these files need gofmt -w:"; echo "$$files"; exit 1; \
	fi; \
	echo "fmt: ok"

vet: ## go vet
	$(GO) vet ./...

staticcheck: ## staticcheck (go tool; checks chosen in staticcheck.conf)
	$(GO) tool staticcheck ./...
	@echo "staticcheck: ok"

C_SOURCES   := $(shell git ls-files 'bpf/*.c' 'bpf/*.h' 'bench/bpf/*.c' 2>/dev/null)
CLANG_FORMAT ?= clang-format

clang-format: ## check the C sources' formatting against .clang-format (fix: clang-format -i FILE)
	@if ! command -v $(CLANG_FORMAT) >/dev/null 2>&1; then \
		echo "clang-format: FAIL: $(CLANG_FORMAT) not installed (make deps)"; exit 1; \
	fi
	$(CLANG_FORMAT) --dry-run -Werror $(C_SOURCES)
	@echo "clang-format: ok"

style: ## the rules no formatter checks: line length, no issue numbers, timings or outside paths in comments
	bash scripts/check-style.sh
	@echo "style: ok"

shellcheck: ## shellcheck the scripts (skipped when shellcheck is not installed)
	@if command -v shellcheck >/dev/null 2>&1; then \
		shellcheck .ci/run scripts/*.sh && echo "shellcheck: ok"; \
	else \
		echo "shellcheck: not installed, skipped"; \
	fi

lint: fmt vet staticcheck clang-format style shellcheck ## every static check: what CI runs before the tests

clean: ## remove build outputs and test logs (not the committed generated files)
	rm -rf $(BIN_DIR) coverage.out coverage.html *.coverprofile
