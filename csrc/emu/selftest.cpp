// selftest.cpp - proves that the emulated device catches what a GPU would:
// a missing __syncthreads changes results under the seeded random thread
// order, an out-of-bounds access is reported with kernel, block and thread,
// a write into an allocation's slack is caught when it is freed, a host
// dereference of device memory fails loudly, divergent warp collectives
// are reported; and that the collectives, atomics, graphs, capture errors
// and CUB calls behave as the CUDA runtime's. Each check that kills the
// device (a sticky fault) runs in a child process. Built and run by
// make test-emulated-gpu (build/cuda-emu/selftest).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "cub/cub.cuh"
#include "emu_internal.h"

static int failures = 0;

#define CHECK(cond, ...)                                   \
	do {                                                   \
		if (!(cond)) {                                     \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                  \
			fprintf(stderr, "\n");                         \
			failures++;                                    \
		}                                                  \
	} while (0)

#define OK(call) CHECK((call) == cudaSuccess, "%s", #call)

// ---- kernels ----

// Each thread writes its slot, then reads its neighbour's. With the
// barrier every read sees the write; without it, a thread that runs before
// its neighbour reads the previous launch's value.
template <bool SYNC>
__global__ void k_neighbour(int *out, int round) {
	__shared__ int sh[128];
	int t = threadIdx.x;
	sh[t] = round * 1000 + t;
	if (SYNC) __syncthreads();
	out[t] = sh[(t + 1) % blockDim.x];
}

__global__ void k_warp_sum(float *out, const float *in) {
	float v = in[blockIdx.x * blockDim.x + threadIdx.x];
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	float first = __shfl_sync(0xffffffffu, v, 0);
	out[blockIdx.x * blockDim.x + threadIdx.x] = v - first; // 0 when every lane agrees
	if ((threadIdx.x & 31) == 0) out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

__global__ void k_count(unsigned *ticket, unsigned *last) {
	__shared__ bool am_last;
	if (threadIdx.x == 0) {
		__threadfence();
		am_last = atomicAdd(ticket, 1u) == gridDim.x - 1;
	}
	__syncthreads();
	if (am_last && threadIdx.x == 0) *last = blockIdx.x + 1;
}

__global__ void k_write(float *x, int at) { x[at] = 1.0f; }

__global__ void k_oob(float *x, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) x[i + 1] = 2.0f; // the last thread writes one past the end
}

__global__ void k_divergent(float *x) {
	if (threadIdx.x < 16)
		__syncthreads();
	else
		x[0] = __shfl_xor_sync(0xffffffffu, x[1], 1);
}

__global__ void k_add(float *x, float v) { x[threadIdx.x] += v; }

// Reverses a block's values through dynamic shared memory.
__global__ void k_reverse(int *x) {
	MTL_DYNAMIC_SHARED(int, buf);
	int t = threadIdx.x, n = blockDim.x;
	buf[t] = x[blockIdx.x * n + t];
	__syncthreads();
	x[blockIdx.x * n + t] = buf[n - 1 - t];
}

// ---- helpers ----

// Runs f in a child process; returns its exit status and stderr.
template <class F>
static int in_child(F f, std::string *err) {
	int fds[2];
	if (pipe(fds) != 0) abort();
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], 2);
		exit(f());
	}
	close(fds[1]);
	char buf[4096];
	ssize_t n;
	err->clear();
	while ((n = read(fds[0], buf, sizeof buf)) > 0) err->append(buf, (size_t)n);
	close(fds[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	return status;
}

static bool contains(const std::string &s, const char *what) { return s.find(what) != std::string::npos; }

// ---- checks ----

static void check_missing_barrier() {
	int *out;
	OK(cudaMalloc(&out, 128 * sizeof(int)));
	std::vector<int> h(128);
	int bad_without = 0, bad_with = 0;
	for (int round = 1; round <= 8; round++) {
		MTL_LAUNCH(1, 128, 0, nullptr, k_neighbour<false>)(out, round);
		OK(cudaMemcpy(h.data(), out, 128 * sizeof(int), cudaMemcpyDeviceToHost));
		for (int t = 0; t < 128; t++) bad_without += h[t] != round * 1000 + (t + 1) % 128;
		MTL_LAUNCH(1, 128, 0, nullptr, k_neighbour<true>)(out, round);
		OK(cudaMemcpy(h.data(), out, 128 * sizeof(int), cudaMemcpyDeviceToHost));
		for (int t = 0; t < 128; t++) bad_with += h[t] != round * 1000 + (t + 1) % 128;
	}
	CHECK(bad_with == 0, "with __syncthreads: %d wrong reads", bad_with);
	CHECK(bad_without > 0, "without __syncthreads the random order changed no result");
	printf("missing __syncthreads: %d of %d reads stale under seed %llu; none with the barrier\n", bad_without,
	       8 * 128, (unsigned long long)mtlemu::seed());
	OK(cudaFree(out));
}

static void check_collectives() {
	const int blocks = 3, threads = 64;
	float *in, *out;
	OK(cudaMalloc(&in, blocks * threads * 4));
	OK(cudaMalloc(&out, blocks * threads * 4));
	std::vector<float> h(blocks * threads), r(blocks * threads);
	for (int i = 0; i < blocks * threads; i++) h[i] = (float)(i % 7);
	OK(cudaMemcpy(in, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
	MTL_LAUNCH(blocks, threads, 0, nullptr, k_warp_sum)(out, in);
	OK(cudaMemcpy(r.data(), out, r.size() * 4, cudaMemcpyDeviceToHost));
	for (int w = 0; w < blocks * threads / 32; w++) {
		float want = 0;
		for (int l = 0; l < 32; l++) want += h[w * 32 + l];
		CHECK(r[w * 32] == want, "warp %d: sum %g, want %g", w, r[w * 32], want);
		for (int l = 1; l < 32; l++) CHECK(r[w * 32 + l] == 0, "warp %d lane %d disagrees", w, l);
	}
	// dynamic shared memory, per block
	int *v;
	OK(cudaMalloc(&v, 2 * 48 * 4));
	std::vector<int> hv(96), rv(96);
	for (int i = 0; i < 96; i++) hv[i] = i * 3 + 1;
	OK(cudaMemcpy(v, hv.data(), 96 * 4, cudaMemcpyHostToDevice));
	MTL_LAUNCH(2, 48, 48 * sizeof(int), nullptr, k_reverse)(v);
	OK(cudaMemcpy(rv.data(), v, 96 * 4, cudaMemcpyDeviceToHost));
	for (int b = 0; b < 2; b++)
		for (int t = 0; t < 48; t++)
			CHECK(rv[b * 48 + t] == hv[b * 48 + 47 - t], "reverse block %d thread %d: %d", b, t, rv[b * 48 + t]);
	OK(cudaFree(v));
	// the last-block ticket protocol of the fused reductions
	unsigned *ticket, *last;
	OK(cudaMalloc(&ticket, 4));
	OK(cudaMalloc(&last, 4));
	OK(cudaMemset(ticket, 0, 4));
	OK(cudaMemset(last, 0, 4));
	MTL_LAUNCH(40, 32, 0, nullptr, k_count)(ticket, last);
	unsigned hl = 0, ht = 0;
	OK(cudaMemcpy(&hl, last, 4, cudaMemcpyDeviceToHost));
	OK(cudaMemcpy(&ht, ticket, 4, cudaMemcpyDeviceToHost));
	CHECK(ht == 40 && hl >= 1 && hl <= 40, "ticket %u, last block %u", ht, hl);
	OK(cudaFree(in));
	OK(cudaFree(out));
	OK(cudaFree(ticket));
	OK(cudaFree(last));
}

static void check_graphs_and_capture() {
	cudaStream_t s;
	OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
	float *x;
	OK(cudaMalloc(&x, 32 * 4));
	OK(cudaMemsetAsync(x, 0, 32 * 4, s));
	OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
	MTL_LAUNCH(1, 32, 0, s, k_add)(x, 1.5f);
	MTL_LAUNCH(1, 32, 0, s, k_add)(x, 2.0f);
	cudaGraph_t g;
	OK(cudaStreamEndCapture(s, &g));
	cudaGraphExec_t ex;
	OK(cudaGraphInstantiate(&ex, g, 0));
	OK(cudaGraphDestroy(g));
	float h = -1;
	OK(cudaStreamSynchronize(s)); // the memset (s does not order with the default stream)
	OK(cudaMemcpy(&h, x, 4, cudaMemcpyDeviceToHost));
	CHECK(h == 0, "a capture ran its work (x = %g)", h);
	OK(cudaGraphLaunch(ex, s));
	OK(cudaGraphLaunch(ex, s));
	OK(cudaStreamSynchronize(s));
	OK(cudaMemcpy(&h, x, 4, cudaMemcpyDeviceToHost));
	CHECK(h == 7.0f, "two replays: x = %g, want 7", h);
	OK(cudaGraphExecDestroy(ex));
	// A synchronisation during capture fails and invalidates the capture.
	OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
	CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported, "sync during capture");
	std::vector<float> pageable(32);
	CHECK(cudaMemcpyAsync(pageable.data(), x, 128, cudaMemcpyDeviceToHost, s) == cudaErrorStreamCaptureUnsupported,
	      "pageable copy during capture");
	CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && g == nullptr, "invalidated capture");
	cudaGetLastError();
	OK(cudaFree(x));
	OK(cudaStreamDestroy(s));
}

static void check_cub() {
	const int n = 9;
	unsigned hk[n] = {5, 1, 0x105, 3, 1, 5, 0x103, 2, 0};
	int hv[n] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
	unsigned *kin, *kout;
	int *vin, *vout;
	OK(cudaMalloc(&kin, n * 4));
	OK(cudaMalloc(&kout, n * 4));
	OK(cudaMalloc(&vin, n * 4));
	OK(cudaMalloc(&vout, n * 4));
	OK(cudaMemcpy(kin, hk, sizeof hk, cudaMemcpyHostToDevice));
	OK(cudaMemcpy(vin, hv, sizeof hv, cudaMemcpyHostToDevice));
	size_t bytes = 0;
	OK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, kin, kout, vin, vout, n, 0, 8, nullptr));
	CHECK(bytes > 0, "temp size query");
	void *tmp;
	OK(cudaMalloc(&tmp, bytes));
	size_t small = bytes - 1;
	CHECK(cub::DeviceRadixSort::SortPairs(tmp, small, kin, kout, vin, vout, n, 0, 8, nullptr) == cudaErrorInvalidValue,
	      "too little temporary storage is refused");
	cudaGetLastError();
	// Only bits [0, 8) order the keys: 0x105 sorts with 5 and 0x103 with 3,
	// stably.
	OK(cub::DeviceRadixSort::SortPairs(tmp, bytes, kin, kout, vin, vout, n, 0, 8, nullptr));
	unsigned rk[n];
	int rv[n];
	OK(cudaMemcpy(rk, kout, sizeof rk, cudaMemcpyDeviceToHost));
	OK(cudaMemcpy(rv, vout, sizeof rv, cudaMemcpyDeviceToHost));
	const int want[n] = {8, 1, 4, 7, 3, 6, 0, 2, 5};
	for (int i = 0; i < n; i++) CHECK(rv[i] == want[i], "sorted value %d: %d, want %d", i, rv[i], want[i]);
	OK(cudaFree(tmp));
	OK(cudaFree(kin));
	OK(cudaFree(kout));
	OK(cudaFree(vin));
	OK(cudaFree(vout));
}

static void check_oob_reported() {
	std::string err;
	int st = in_child(
	    [] {
		    float *x;
		    if (cudaMalloc(&x, 1024 * 4) != cudaSuccess) return 2;
		    MTL_LAUNCH(4, 256, 0, nullptr, k_oob)(x, 1024);
		    cudaError_t e = cudaDeviceSynchronize();
		    fprintf(stderr, "sync: %s: %s\n", cudaGetErrorName(e), cudaGetErrorString(e));
		    return e == cudaErrorIllegalAddress ? 0 : 1;
	    },
	    &err);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "out-of-bounds write: status %d: %s", st, err.c_str());
	CHECK(contains(err, "kernel k_oob, block (3,0,0), thread (255,0,0): invalid write"),
	      "the report names kernel, block and thread: %s", err.c_str());
	CHECK(contains(err, "1 bytes past the end of an allocation of 4096 bytes"), "the report says what was hit: %s",
	      err.c_str());
	printf("out-of-bounds write reported: %s", err.substr(0, err.find('\n') + 1).c_str());

	// A write into the slack after a 12-byte allocation (rounded to 16) is
	// caught by the canary when the allocation is freed.
	st = in_child(
	    [] {
		    float *x;
		    if (cudaMalloc(&x, 12) != cudaSuccess) return 2;
		    MTL_LAUNCH(1, 1, 0, nullptr, k_write)(x, 3);
		    cudaDeviceSynchronize();
		    cudaFree(x);
		    cudaError_t e = cudaDeviceSynchronize();
		    return e == cudaErrorIllegalAddress ? 0 : 1;
	    },
	    &err);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && contains(err, "1 bytes past its end"),
	      "slack write: status %d: %s", st, err.c_str());
}

static void check_host_deref_fails() {
	std::string err;
	int st = in_child(
	    [] {
		    float *x;
		    if (cudaMalloc(&x, 64) != cudaSuccess) return 2;
		    volatile float *p = x;
		    float v = p[0]; // host code reading device memory
		    return (int)v;
	    },
	    &err);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "host dereference: status %d", st);
	CHECK(contains(err, "host code read device address"), "host dereference report: %s", err.c_str());
	printf("host dereference of device memory: %s", err.c_str());
}

static void check_divergence_reported() {
	std::string err;
	int st = in_child(
	    [] {
		    float *x;
		    if (cudaMalloc(&x, 64) != cudaSuccess) return 2;
		    MTL_LAUNCH(1, 32, 0, nullptr, k_divergent)(x);
		    cudaError_t e = cudaDeviceSynchronize();
		    return e == cudaErrorLaunchFailure ? 0 : 1;
	    },
	    &err);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && contains(err, "k_divergent"), "divergence: status %d: %s", st,
	      err.c_str());
}

int main() {
	// The checks that kill the device run in children forked before this
	// process starts any stream thread (threads do not survive a fork).
	check_oob_reported();
	check_host_deref_fails();
	check_divergence_reported();
	check_missing_barrier();
	check_collectives();
	check_graphs_and_capture();
	check_cub();
	if (failures) {
		fprintf(stderr, "selftest: %d failures (MTLCUDA_EMU_SEED=%llu)\n", failures, (unsigned long long)mtlemu::seed());
		return 1;
	}
	printf("selftest: ok (MTLCUDA_EMU_SEED=%llu)\n", (unsigned long long)mtlemu::seed());
	return 0;
}
