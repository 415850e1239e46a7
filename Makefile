# Hot-Plug Heaven — build, test, demo.
#
#   make demo    boot a real QEMU guest with the agent, run the actuator, load
#                the guest and watch vCPUs move (installs what it needs)
#   make test    everything CI runs, end-to-end tests with real QEMU included
#   make bench   benchmarks, figures only (no pass/fail on speed)
#   make fuzz    a short run of every fuzz target (FUZZTIME=10s each)
#   make deb     hotplug-agent and hotplug-actuator .deb packages in build/deb

GO       ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin
FUZZTIME ?= 10s
export CGO_ENABLED ?= 0
# An older Go (e.g. Debian's from backports) fetches the version go.mod
# names from the module proxy.
export GOTOOLCHAIN ?= auto

.PHONY: all build deps test unit e2e demo bench fuzz vet clean distclean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hotplug-agent ./guest/cmd/hotplug-agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hotplug-actuator ./host/cmd/hotplug-actuator

# Installs QEMU, busybox and cpio from Debian and caches the guest kernel
# under build/cache. Idempotent and quiet when everything is there.
deps:
	integration/setup-host.sh

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

# The race detector needs cgo; the shipped binaries do not.
test: deps vet
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 30m ./...

unit: vet
	CGO_ENABLED=1 $(GO) test -race -short -count=1 ./...

e2e: deps
	$(GO) test -count=1 -v -timeout 20m ./integration/...

demo: deps build
	$(GO) run ./integration/cmd/hotplug-demo

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
	  pkg=./$$(dirname $$f); \
	  for t in $$(grep -oh '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
	    echo "== fuzz $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# Regenerates bpf/*_bpfel.{go,o} from bpf/*.c with bpf2go (a go.mod tool)
# and Debian's clang (apt-get install clang llvm libbpf-dev). The same bytes
# every time; `go test ./bpf` checks that the committed files are fresh.
.PHONY: bpf
bpf:
	$(GO) generate ./bpf

clean:
	rm -rf $(BIN) build/out

# hotplug-agent_<version>_amd64.deb and hotplug-actuator_<version>_amd64.deb
# (packaging/README.md). DEB_VERSION comes from git describe through
# packaging/version.sh (e.g. 0.0.0+62.g92416d5); set it to override.
DEB_OUT ?= build/deb
.PHONY: deb
deb:
	GO=$(GO) packaging/build-deb.sh $(DEB_OUT)

# Also drops the cached guest kernel (re-downloaded by make deps).
distclean: clean
	rm -rf build
