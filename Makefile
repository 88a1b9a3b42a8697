# mtlrank — build, test, demo and benchmark.
# `make demo` and `make test` install missing system packages first (Debian).

GO        ?= go
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN       := bin/mtlrank
CUDA_BUILD:= build/cuda
DEMO_OUT  := demo-out

# PURE_GO_PKGS are the library packages that must build without cgo (no C
# compiler, no OpenBLAS): reading schemas, loading and preprocessing data,
# checkpoints and metrics. `make nocgo` checks it; `make test` runs it.
PURE_GO_PKGS := ./schema/... ./loader/... ./preprocess/... ./mtl/safetensors/... ./mtl/metrics/...

.PHONY: all setup build test test-short nocgo vet demo bench fuzz cuda cuda-check clean

all: build

# setup installs the system packages the CPU build needs (a C compiler for
# cgo, OpenBLAS, pkg-config).
setup:
	@if ! dpkg -s libopenblas-dev >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1 || ! command -v gcc >/dev/null 2>&1; then \
		echo "installing gcc libopenblas-dev pkg-config"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libopenblas-dev pkg-config; \
	fi
	@command -v $(GO) >/dev/null || { echo "Go is required (https://go.dev/dl); install Go >= 1.26"; exit 1; }

build: setup
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/mtlrank

vet: setup
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

test: setup vet nocgo
	$(GO) test -count=1 -timeout 20m ./...
	# concurrency tests (shared devices, predictors, scorer, loader) again under the race detector
	$(GO) test -race -count=1 -timeout 10m -run 'Concurrent' ./kernels/ ./mtl/ ./loader/

# test-short skips the long tests (testing.Short: the learning tests that
# train models to a quality bar, end-to-end training runs, large generated
# data sets) for a quick check while editing; `make test` runs everything.
test-short: setup vet nocgo
	$(GO) test -short -count=1 -timeout 10m ./...

# nocgo builds and vets (tests included) the pure-Go packages with cgo off,
# so that they never come to import the cgo packages (kernels, cublas).
nocgo:
	CGO_ENABLED=0 $(GO) build $(PURE_GO_PKGS)
	CGO_ENABLED=0 $(GO) vet $(PURE_GO_PKGS)

demo: build
	$(BIN) demo --output_path $(DEMO_OUT)

bench: build
	scripts/bench.sh

fuzz: setup
	scripts/fuzz.sh

# cuda builds libmtlcuda.so from csrc/ with CMake + nvcc.
cuda:
	cmake -S . -B $(CUDA_BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(CUDA_BUILD) -j

# cuda-check installs the CUDA toolkit when nvcc is missing (Debian non-free,
# CUDA 11.8), builds libmtlcuda.so and compiles, links and runs the cuda-tagged
# tests (GPU tests skip without a device).
cuda-check:
	scripts/cuda-check.sh

clean:
	rm -rf bin build $(DEMO_OUT)
