# s3cryptfs: every task a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
GO ?= go
TOOLS := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
STATICCHECK_VERSION := v0.8.2
# AWS KMS emulator for the KMS slot tests (internal/kmstest); keep equal to
# kmstest.Version.
LOCALKMS_VERSION := v0.0.0-20260228092603-2a5e92d09ab6
BENCHSTAT_VERSION := v0.0.0-20260908200009-22c9c6c9d4da

# Tests find the pinned MinIO here (internal/miniotest); override to use another.
export S3CRYPTFS_MINIO_BIN ?= $(TOOLS)/minio
# ... and the pinned local-kms here (internal/kmstest).
export S3CRYPTFS_LOCALKMS_BIN ?= $(TOOLS)/local-kms

.PHONY: help build demo install uninstall test test-deps test-short lint fmt bench fuzz tools minio minio-bin localkms-bin staticcheck-bin deps clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build bin/s3cryptfs
	$(GO) build -o bin/s3cryptfs ./cmd/s3cryptfs

# A new vault's passphrase is asked once and handed to init and mount on
# their stdin (a pipe: neither argv nor the environment holds it).
demo: build ## create a vault in ./vault (asks a passphrase once) and mount it on ./mnt
	@mkdir -p vault mnt
	@if [ -e vault/.s3cryptfs.conf.obj ]; then ./bin/s3cryptfs mount vault mnt; else \
	  read -rsp "Passphrase for the new vault in ./vault: " p && echo >&2 && \
	  [ -n "$$p" ] || { echo "empty passphrase" >&2; exit 1; }; \
	  printf '%s' "$$p" | ./bin/s3cryptfs init --passphrase-file /dev/stdin vault && \
	  printf '%s' "$$p" | ./bin/s3cryptfs mount --passphrase-file /dev/stdin vault mnt; fi
	@echo "mounted ./vault on ./mnt; unmount with: bin/s3cryptfs unmount mnt"

# make install [PREFIX=/usr/local] [DESTDIR=staging dir]: the binary in
# BINDIR, the mount(8) helper mount.fuse.s3cryptfs (a link to it) in
# HELPERDIR, and the bash and zsh completions. HELPERDIR stays /sbin
# whatever PREFIX: mount(8) looks for helpers only in /sbin, /sbin/fs.d and
# /sbin/fs (libmount's FS_SEARCH_PATH).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
HELPERDIR ?= /sbin
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
install: build ## install s3cryptfs, the mount helper /sbin/mount.fuse.s3cryptfs and completions (PREFIX, DESTDIR)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(HELPERDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 0755 bin/s3cryptfs $(DESTDIR)$(BINDIR)/s3cryptfs
	ln -sfn $(BINDIR)/s3cryptfs $(DESTDIR)$(HELPERDIR)/mount.fuse.s3cryptfs
	./bin/s3cryptfs completion bash > $(DESTDIR)$(BASHCOMPDIR)/s3cryptfs
	./bin/s3cryptfs completion zsh > $(DESTDIR)$(ZSHCOMPDIR)/_s3cryptfs

uninstall: ## remove what install installed
	rm -f $(DESTDIR)$(BINDIR)/s3cryptfs $(DESTDIR)$(HELPERDIR)/mount.fuse.s3cryptfs \
	  $(DESTDIR)$(BASHCOMPDIR)/s3cryptfs $(DESTDIR)$(ZSHCOMPDIR)/_s3cryptfs

test: build minio-bin localkms-bin test-deps ## all tests (unit, MinIO over TLS, real FUSE mounts), race detector on
	$(GO) test -race -timeout 40m -count=1 ./...

# Debian packages the tests run: fusermount3 (fuse3), fio, getfattr/setfattr
# (attr), systemd-analyze (systemd: the documented units are verified),
# mount(8), unshare (util-linux), script (bsdutils), rsync and restic (round
# trips through the mount). Installed with apt-get when missing and running
# as root; otherwise the command to run is printed and the target fails.
TEST_PKGS := fusermount3:fuse3 fio:fio getfattr:attr systemd-analyze:systemd mount:mount unshare:util-linux script:bsdutils rsync:rsync restic:restic
test-deps: ## install the Debian packages the tests need (fuse3, fio, attr, systemd, rsync, restic, ...) if missing
	@need=(); for p in $(TEST_PKGS); do command -v "$${p%%:*}" >/dev/null || need+=("$${p#*:}"); done; \
	  if [ $${#need[@]} -eq 0 ]; then exit 0; fi; \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "missing test tools; install them with: sudo apt-get install $${need[*]}" >&2; exit 1; fi; \
	  echo "installing $${need[*]} (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$${need[@]}" >/dev/null

test-short: ## unit tests only (no MinIO, no FUSE)
	$(GO) test -short -count=1 ./...

lint: staticcheck-bin ## gofmt check, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

# A count, not a duration: with -fuzztime=5s, Go 1.26's fuzz coordinator
# sometimes ends a clean run with "context deadline exceeded" and no
# failing input (golang/go#75804, fixed in Go 1.27); a count has no
# deadline to race. 100000 runs take a few seconds per target here.
FUZZTIME ?= 100000x
fuzz: ## run every fuzz target for FUZZTIME each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

# -p 1: one package at a time. In parallel, fs/content's and backend/s3's
# MinIO benchmarks ran beside tests/perf on the same 2 cores (and their own
# MinIO), and the mount's figures fell to a third.
# tests/perf runs every workload at S3CRYPTFS_BENCH_LATENCY (default 0,10ms:
# loopback, then a 20 ms round trip through its latency proxy); the 10 ms
# pass, with its one-request-at-a-time baselines, takes longest, hence 90m.
bench: build minio-bin ## benchmarks (cipher, backend vs bare SDK, mount vs bare SDK at 0 and 10 ms latency), one package at a time
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -count=1 -timeout 90m ./... | tee bench.txt

.PHONY: bench-compare
bench-compare: build minio-bin ## tests/perf benchmarks with s3fs and rclone crypt side by side (installs them); table in bin/bench-compare.md
	@need=(); for p in s3fs:s3fs rclone:rclone fio:fio fusermount3:fuse3; do \
	  command -v "$${p%%:*}" >/dev/null || need+=("$${p#*:}"); done; \
	  if [ $${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$${need[@]}"; fi
	@mkdir -p bin
	set -o pipefail; S3CRYPTFS_BENCH_COMPARE=1 S3CRYPTFS_BIN=$(CURDIR)/bin/s3cryptfs S3CRYPTFS_BENCH_TABLE=$(CURDIR)/bin/bench-compare.md \
	  $(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 120m ./tests/perf | tee bin/bench-compare.txt

tools: minio-bin localkms-bin staticcheck-bin ## install pinned tools into .tools/bin

MINIO_PORT ?= 9000
MINIO_DIR ?=
minio: minio-bin ## run a TLS MinIO (static KMS key) in the foreground; prints endpoint, credentials, CA; MINIO_PORT, MINIO_DIR=keep data
	$(GO) run ./internal/miniotest/cmd/miniodev -port $(MINIO_PORT) $(if $(MINIO_DIR),-dir $(MINIO_DIR))

minio-bin: $(TOOLS)/minio
$(TOOLS)/minio:
	@echo "installing MinIO $(MINIO_VERSION) into $(TOOLS) (4-5 minutes on a fresh machine)"
	GOBIN=$(TOOLS) GOFLAGS=-buildvcs=false $(GO) install github.com/minio/minio@$(MINIO_VERSION)

localkms-bin: $(TOOLS)/local-kms
$(TOOLS)/local-kms:
	GOBIN=$(TOOLS) GOFLAGS=-buildvcs=false $(GO) install github.com/nsmithuk/local-kms@$(LOCALKMS_VERSION)

staticcheck-bin: $(TOOLS)/staticcheck
$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean: ## remove build outputs
	rm -rf bin bench.txt
