# oashare — the project's vocabulary. `make run` mounts ~/net; `make test`
# installs what the tests need and runs them; `make ci` is what CI runs.

# Go may not be on PATH on a fresh machine (it lives in /usr/local/go).
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN := bin/oashare
# The version a build reports (oashare version): git describe of the
# checkout, "devel" outside one.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# make install puts the binary in $(DESTDIR)$(PREFIX)/bin.
PREFIX ?= /usr/local
MNT ?= $(HOME)/net
# Extra flags for `make run`, e.g. RUN_FLAGS="--iface eth0 --replicas 2".
RUN_FLAGS ?=
# Packages the tests need: fuse3 (fusermount3), iproute2 (ip netns),
# util-linux (nsenter), procps (pkill/ps in scripts); sqlite3, git and rsync
# are the real programs fusefs/programs_test.go runs on the mounts (tar, sed
# and diff are essential on Debian); tcpdump captures the testbed's bridge
# (cmd/oashare/testbed_test.go: nothing readable crosses it); attr gives
# setfattr and getfattr; chromium-headless-shell is the browser the
# dashboard is tested in (cmd/oashare/ui_test.go, through chromedp).
TEST_DEBS := fuse3 iproute2 util-linux procps sqlite3 git rsync tcpdump attr chromium-headless-shell
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.6.1

.PHONY: build install run test test-race test-short lint fmt-check vet fuzz bench bench-go posix demo ci deps clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/oashare
	$(GO) build -o bin/oashare-loopback ./scripts/loopback

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/oashare
	@echo "installed $(DESTDIR)$(PREFIX)/bin/oashare ($$($(BIN) --version))"

# A network of one until peers appear; Ctrl-C unmounts and exits.
run: build
	@if ! command -v fusermount3 >/dev/null; then \
	  echo "installing fuse3 (needs root)"; apt-get update -qq && apt-get install -y -qq fuse3; fi
	mkdir -p $(MNT)
	$(BIN) mount $(MNT) $(RUN_FLAGS)

# deps installs the Debian packages tests use, when any is missing.
deps:
	@missing=""; \
	command -v fusermount3 >/dev/null || missing="$$missing fuse3"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v nsenter >/dev/null || missing="$$missing util-linux"; \
	command -v pkill >/dev/null || missing="$$missing procps"; \
	command -v sqlite3 >/dev/null || missing="$$missing sqlite3"; \
	command -v git >/dev/null || missing="$$missing git"; \
	command -v rsync >/dev/null || missing="$$missing rsync"; \
	command -v setfattr >/dev/null || missing="$$missing attr"; \
	command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || missing="$$missing chromium-headless-shell"; \
	command -v tcpdump >/dev/null || missing="$$missing tcpdump"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "tests need:$$missing — install them (apt-get install$$missing) or run as root"; exit 1; fi; \
	  echo "installing:$$missing"; \
	  log=$$(mktemp); \
	  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } >$$log 2>&1; then \
	    cat $$log; rm -f $$log; echo "installing$$missing failed (apt-get's output above)"; exit 1; \
	  fi; \
	  rm -f $$log; \
	fi

# test: format, vet, then every test with the race detector (FUSE, TCP,
# Pebble and network-namespace tests run for real as root and skip with a
# reason otherwise), then chunknet's again with every node a member of a
# network over TLS (CHUNKNET_TLS=1), then the FUSE tests once more on one OS thread, where
# same-process deadlocks would show.
test: deps fmt-check vet build
	$(GO) test -race -count=1 -timeout 30m ./...
	CHUNKNET_TLS=1 $(GO) test -race -count=1 -timeout 15m ./chunknet/
	GOMAXPROCS=1 $(GO) test -count=1 -timeout 15m ./fusefs/

# fuzz runs every fuzz target for FUZZTIME each (go test allows one target
# per run). A crasher is saved under the package's testdata/fuzz: commit it,
# and it becomes a test case of every `make test`.
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$target for $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

test-short:
	$(GO) test -count=1 -short ./...

lint: vet fmt-check
	$(GO) run $(STATICCHECK) ./...

vet:
	$(GO) vet ./...
	$(GO) vet -tags oashare_plain ./cmd/oashare

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# oashare against local disk, a FUSE loopback and sshfs on a 4-peer testbed
# (needs root; installs fio, sshfs and openssh-server if missing; about
# 20 minutes on a 2-core machine with BENCH_BEFORE). BENCH_RUNS, BENCH_SIZE_MIB... : see
# scripts/bench. The table goes to scripts/results/.
bench:
	scripts/bench

# Go micro-benchmarks of the hot paths (chunking, hashing, frames, index),
# in a form benchstat compares.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 ./...

# Four peers on a private LAN of network namespaces (needs root).
demo: build
	scripts/demo

# posix runs pjdfstest, built outside this repository (README: POSIX
# suite), against a peer's mount of a 3-peer testbed: make posix PJDFSTEST=DIR
posix: build
	PJDFSTEST="$(PJDFSTEST)" scripts/posix

ci: test lint

clean:
	rm -rf bin
