# mtlrank — build, test, demo and benchmark.
# `make demo` and `make test` install missing system packages first (Debian).

GO        ?= go
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN       := bin/mtlrank
CUDA_BUILD:= build/cuda
DEMO_OUT  := demo-out

# PURE_GO_PKGS are the library packages that must build without cgo (no C
# compiler, no OpenBLAS): reading schemas, loading and preprocessing data,
# checkpoints and metrics, the communicator of distributed training (without
# the mpi tag) and training reports. `make nocgo` checks it; `make test` runs it.
PURE_GO_PKGS := ./schema/... ./loader/... ./preprocess/... ./mtl/safetensors/... ./mtl/metrics/... ./dist/... ./internal/mpitest/... ./report/...

.PHONY: all setup build test test-short nocgo vet demo bench bench-ceiling fuzz cuda cuda-check cuda-emu test-emulated-gpu setup-emu proto clean

all: build

# setup installs the system packages the CPU build needs (a C compiler for
# cgo, OpenBLAS, pkg-config), and Open MPI for the `mpi`-tagged build of
# package dist and its mpirun tests (scripts/setup-mpi.sh; skipped with a
# message where apt-get is missing).
setup:
	@if ! dpkg -s libopenblas-dev >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1 || ! command -v gcc >/dev/null 2>&1; then \
		echo "installing gcc libopenblas-dev pkg-config"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libopenblas-dev pkg-config; \
	fi
	@scripts/setup-mpi.sh
	@command -v $(GO) >/dev/null || { echo "Go is required (https://go.dev/dl); install Go >= 1.26"; exit 1; }

build: setup
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/mtlrank

vet: setup
	$(GO) vet ./...
	# the MPI communicator (build tag mpi) and what uses it, where Open MPI is installed
	@if pkg-config --exists ompi-c; then echo "$(GO) vet -tags mpi ./dist/ ./mtl/ ./cmd/mtlrank/..."; $(GO) vet -tags mpi ./dist/ ./mtl/ ./cmd/mtlrank/...; else echo "no Open MPI (pkg-config ompi-c): not vetting -tags mpi"; fi
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

test: setup vet nocgo
	$(GO) test -count=1 -timeout 20m ./...
	# concurrency tests (shared devices, predictors, scorer, loader, server) again under the race detector
	$(GO) test -race -count=1 -timeout 10m -run 'Concurrent' ./kernels/ ./mtl/ ./loader/ ./serve/...
	# the in-process ranks of dist.LocalGroup (one goroutine per rank), and distributed training on them
	$(GO) test -race -count=1 -timeout 5m -run 'LocalGroup|AgreeOnLayout' ./dist/
	$(GO) test -race -count=1 -timeout 10m -run 'TestDistributed|TestFitDistributed|TestPlannedRows|TestRowSharded|TestFitRowSharded|TestShardedCheckpoint|TestShardedSave' ./mtl/
	# every cuda-tagged test on the emulated GPU (no CUDA toolkit needed)
	$(MAKE) test-emulated-gpu

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

# The training step against the GEMM ceiling at the models' shapes
# (docs/PERFORMANCE.md, "Training step against the GEMM ceiling").
bench-ceiling: setup
	scripts/step-ceiling.sh

fuzz: setup
	scripts/fuzz.sh

# proto regenerates serve/inferencepb (the Open Inference Protocol's gRPC
# code, committed) with protoc and the Go plugins; the build does not need it.
proto:
	scripts/proto.sh

# ---- emulated GPU ----
# build/cuda-emu/libmtlcuda.so: the same csrc/*.cu compiled by g++ for the
# host against the SIMT runtime of csrc/emu (no CUDA toolkit, no GPU), with
# the C API of csrc/mtlcuda.h. test-emulated-gpu runs every cuda-tagged test
# against it (see README, "GPU").
EMU_BUILD := build/cuda-emu
EMU_LIB   := $(EMU_BUILD)/libmtlcuda.so
EMU_CXX   ?= g++
EMU_FLAGS := -std=c++17 -O2 -g -fPIC -fvisibility=hidden -Wall -Werror -Wno-unknown-pragmas -U_FORTIFY_SOURCE \
	-ftls-model=initial-exec -Icsrc/emu -Icsrc -DMTLCUDA_BUILD
EMU_CU    := $(wildcard csrc/*.cu)
EMU_RT    := csrc/emu/runtime.cpp csrc/emu/blas.cpp
EMU_DEPS  := $(wildcard csrc/*.cuh csrc/*.h csrc/emu/*.h csrc/emu/cub/*.cuh) csrc/emu/exports.map
EMU_OBJ   := $(patsubst csrc/%.cu,$(EMU_BUILD)/%.o,$(EMU_CU)) $(patsubst csrc/emu/%.cpp,$(EMU_BUILD)/emu_%.o,$(EMU_RT))
# Go binaries link and load the emulated library first (before build/cuda).
EMU_GOENV := CGO_LDFLAGS="-L$(CURDIR)/$(EMU_BUILD) -Wl,-rpath,$(CURDIR)/$(EMU_BUILD)" LD_LIBRARY_PATH="$(CURDIR)/$(EMU_BUILD)"

$(EMU_BUILD)/%.o: csrc/%.cu $(EMU_DEPS)
	@mkdir -p $(EMU_BUILD)
	$(EMU_CXX) -x c++ $(EMU_FLAGS) -Wno-sign-compare -include csrc/emu/mtlemu.h -c $< -o $@

$(EMU_BUILD)/emu_%.o: csrc/emu/%.cpp $(EMU_DEPS)
	@mkdir -p $(EMU_BUILD)
	$(EMU_CXX) $(EMU_FLAGS) -c $< -o $@

$(EMU_LIB): $(EMU_OBJ)
	$(EMU_CXX) -shared -Wl,-soname,libmtlcuda.so -Wl,--version-script=csrc/emu/exports.map -o $@ $(EMU_OBJ) -lpthread

cuda-emu: $(EMU_LIB) $(EMU_BUILD)/selftest

# The runtime's self-tests (csrc/emu/selftest.cpp), linked with its objects.
$(EMU_BUILD)/selftest: csrc/emu/selftest.cpp $(EMU_OBJ)
	$(EMU_CXX) -x c++ $(EMU_FLAGS) -include csrc/emu/mtlemu.h -o $@ $< -x none $(filter $(EMU_BUILD)/emu_%,$(EMU_OBJ)) -lpthread

# test-emulated-gpu runs every cuda-tagged test on the emulated device: the
# real kernels under a seeded random thread order (MTLCUDA_EMU_SEED, printed
# on failure), with bounds and host/device checks; then the runtime's own
# self-tests and the symbol check.
test-emulated-gpu: setup-emu
	$(MAKE) cuda-emu
	scripts/emu-check.sh

# setup-emu installs the C++ compiler the emulated device is built with.
setup-emu:
	@if ! command -v $(EMU_CXX) >/dev/null 2>&1; then \
		echo "installing g++"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++; \
	fi

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
