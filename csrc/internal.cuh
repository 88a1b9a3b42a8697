// internal.cuh - shared by the .cu files of libmtlcuda: the context layout,
// error reporting and launch helpers. Not part of the public API.
#ifndef MTLCUDA_INTERNAL_CUH
#define MTLCUDA_INTERNAL_CUH

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "mtlcuda.h"

// Kernel launches are written once as
//   MTL_LAUNCH(grid, block, shmem, stream, kernel)(args...);
// which is kernel<<<grid, block, shmem, stream>>>(args...) for nvcc, and a
// launch on the emulated device (csrc/emu/mtlemu.h, which defines it first)
// when g++ builds the same sources for the host. The kernel comes last so
// that a template kernel's commas need no parentheses.
#ifndef MTL_LAUNCH
#define MTL_LAUNCH(grid, block, shmem, stream, ...) __VA_ARGS__<<<grid, block, shmem, stream>>>
#endif
// The launch's dynamic shared memory (its shmem bytes) as a T array.
#ifndef MTL_DYNAMIC_SHARED
#define MTL_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// One id-check slot, all fields set to all-ones when clean. key = (position
// << 32) | (uint32)id of the first bad id (atomicMin keeps the smallest
// position); row = the smallest batch row with a bad id (which is the row of
// that position, offsets being non-decreasing); rows = the table's row count;
// bad_offsets = the smallest row with malformed offsets.
struct mtlcuda_idcheck_slot {
	unsigned long long key;
	unsigned long long row;
	unsigned long long rows;
	unsigned long long bad_offsets;
};

// Key of a cached cuBLASLt plan.
struct mtlcuda_lt_key {
	int trans_a, trans_b, m, n, k, batch, act, align;
	long long sa, sb, sbias, sc;
	bool operator==(const mtlcuda_lt_key &o) const {
		return trans_a == o.trans_a && trans_b == o.trans_b && m == o.m && n == o.n && k == o.k &&
		       batch == o.batch && act == o.act && align == o.align && sa == o.sa && sb == o.sb && sbias == o.sbias &&
		       sc == o.sc;
	}
};

struct mtlcuda_lt_key_hash {
	size_t operator()(const mtlcuda_lt_key &k) const {
		size_t h = 1469598103934665603ull;
		const long long v[] = {k.trans_a, k.trans_b, k.m, k.n, k.k, k.batch, k.act, k.align, k.sa, k.sb, k.sbias, k.sc};
		for (long long x : v) {
			h ^= (size_t)x;
			h *= 1099511628211ull;
		}
		return h;
	}
};

struct mtlcuda_lt_plan {
	bool ok; // false: no algorithm, use the SGEMM fallback
	cublasLtMatmulDesc_t desc;
	cublasLtMatrixLayout_t la, lb, lc;
	cublasLtMatmulAlgo_t algo;
};

struct mtlcuda_ctx {
	int device;
	int sm_count;
	cudaStream_t compute, copy;
	cublasHandle_t blas;
	cublasLtHandle_t lt;
	void *blas_ws; // cuBLAS + cuBLASLt workspace (set explicitly: graph capture needs it)
	size_t blas_ws_bytes;
	cudaMemPool_t pool;
	bool capturing;
	bool tf32;

	// Scratch arena for the embedding backward (sort buffers), grown outside
	// graph capture only; every use is stream-ordered on the compute stream.
	char *scratch;
	size_t scratch_bytes;
	double *partials;       // per-block partial sums of the loss reductions
	// Per-block partial sums of the fused multi-task loss and the metric
	// reductions (kFusedPartials doubles), and the tickets with which the
	// last block of such a launch finds out that it is the last (zero
	// between launches: the last block resets its ticket).
	double *fused_partials;
	unsigned *tickets;
	mtlcuda_idcheck_slot *idcheck;
	void *host_small;       // pinned, for small synchronous read-backs
	float *ones;            // a vector of ones for bias gradients via GEMV
	int64_t ones_len;

	std::unordered_map<mtlcuda_lt_key, mtlcuda_lt_plan, mtlcuda_lt_key_hash> lt_plans;
	char err[1024];
};

// Limits of the reductions and launches.
constexpr int kThreads = 256;
constexpr int kMaxReduceBlocks = 1024;
constexpr size_t kHostSmallBytes = 64 * 1024;
constexpr size_t kBlasWorkspaceBytes = 32u << 20;
// Fused reductions: at most kFusedBlocks blocks per task, at most
// MTL_METRIC_FIELDS sums per block and task.
constexpr int kFusedBlocks = 128;
constexpr int kFusedMaxTasks = 16;
static_assert(MTL_MAX_LOSS_TASKS <= kFusedMaxTasks && MTL_MAX_METRIC_TASKS <= kFusedMaxTasks,
              "fused reductions: partials sized for kFusedMaxTasks tasks");
constexpr size_t kFusedPartials = (size_t)kFusedBlocks * kFusedMaxTasks * MTL_METRIC_FIELDS;
enum { kTicketLoss = 0, kTicketMetrics = 1, kTickets = 4 };

// Error reporting: the message goes to ctx->err (or to the thread's buffer
// when ctx is NULL); the status code is returned so that callers can write
// `return mtlcuda_fail(...)`.
int mtlcuda_fail(mtlcuda_ctx *ctx, int code, const char *fmt, ...);
int mtlcuda_cuda_fail(mtlcuda_ctx *ctx, cudaError_t e, const char *call);
int mtlcuda_cublas_fail(mtlcuda_ctx *ctx, cublasStatus_t s, const char *call);
const char *mtlcuda_cublas_status_name(cublasStatus_t s);

// Makes the context's device current on the calling thread (callers move
// between threads); every entry point taking a context starts with it.
int mtlcuda_enter(mtlcuda_ctx *ctx);
#define MTL_ENTER(ctx)                     \
	do {                                   \
		int rc_ = mtlcuda_enter(ctx);          \
		if (rc_ != MTL_OK) return rc_;     \
	} while (0)

// Ensures ctx->scratch has at least `bytes` (fails while capturing when it
// would have to grow).
int mtlcuda_scratch_reserve(mtlcuda_ctx *ctx, size_t bytes);
// Ensures ctx->ones has at least n ones.
int mtlcuda_ones_reserve(mtlcuda_ctx *ctx, int64_t n);
// x[b*stride + i] = max(x[b*stride + i], 0) for b < batch, i < n (stride is
// ignored when batch == 1).
int mtlcuda_relu_strided(mtlcuda_ctx *ctx, mtlcuda_dptr x, int batch, int64_t n, int64_t stride);
// Flag of mtlcuda_lt_key.act: a cuBLASLt product without bias.
constexpr int kLtNoBias = 4;

#define MTL_CUDA(ctx, call)                                  \
	do {                                                     \
		cudaError_t e_ = (call);                             \
		if (e_ != cudaSuccess) return mtlcuda_cuda_fail(ctx, e_, #call); \
	} while (0)

#define MTL_CUBLAS(ctx, call)                                  \
	do {                                                       \
		cublasStatus_t s_ = (call);                            \
		if (s_ != CUBLAS_STATUS_SUCCESS) return mtlcuda_cublas_fail(ctx, s_, #call); \
	} while (0)

// Checks a kernel launch (launch configuration errors and sticky faults of
// earlier kernels); it does not wait for the kernel.
#define MTL_LAUNCHED(ctx, name)                                  \
	do {                                                         \
		cudaError_t e_ = cudaGetLastError();                     \
		if (e_ != cudaSuccess) return mtlcuda_cuda_fail(ctx, e_, "launch " name); \
	} while (0)

#define MTL_REQUIRE(ctx, cond, ...)                                       \
	do {                                                                  \
		if (!(cond)) return mtlcuda_fail(ctx, MTL_ERR_INVALID, __VA_ARGS__); \
	} while (0)

// Grid size for a grid-stride loop over n items with kThreads per block:
// enough blocks to fill the device several times over, never more than
// needed.
static inline unsigned mtlcuda_grid(const mtlcuda_ctx *ctx, int64_t n, int per_thread = 1) {
	int64_t want = (n + (int64_t)kThreads * per_thread - 1) / ((int64_t)kThreads * per_thread);
	int64_t cap = (int64_t)ctx->sm_count * 16;
	if (want > cap) want = cap;
	if (want < 1) want = 1;
	return (unsigned)want;
}

template <typename T>
__host__ __device__ static inline T *dptr(mtlcuda_dptr p) {
	return reinterpret_cast<T *>(p);
}

#endif
