// mtlcuda.cu - contexts, memory, copies, streams, events, graphs and the
// cuBLAS / cuBLASLt wrappers of libmtlcuda.
#include <cstdio>
#include <cstring>
#include <limits>

#include "internal.cuh"

// ---- errors ----

static thread_local char tls_err[1024];
// The device last made current on this thread by the library; every entry
// point that takes a context makes its device current first, because the
// callers (goroutines) move between threads.
static thread_local int tls_device = -1;

int mtlcuda_enter(mtlcuda_ctx *ctx) {
	if (tls_device != ctx->device) {
		cudaError_t e = cudaSetDevice(ctx->device);
		if (e != cudaSuccess) return mtlcuda_cuda_fail(ctx, e, "cudaSetDevice");
		tls_device = ctx->device;
	}
	return MTL_OK;
}

int mtlcuda_fail(mtlcuda_ctx *ctx, int code, const char *fmt, ...) {
	char *buf = ctx ? ctx->err : tls_err;
	size_t n = ctx ? sizeof(ctx->err) : sizeof(tls_err);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	return code;
}

int mtlcuda_cuda_fail(mtlcuda_ctx *ctx, cudaError_t e, const char *call) {
	// Clear the runtime's last-error state (for errors that are not sticky),
	// so that the next launch check does not report this failure again.
	cudaGetLastError();
	int code = MTL_ERR_CUDA;
	if (e == cudaErrorMemoryAllocation) code = MTL_ERR_NOMEM;
	if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) code = MTL_ERR_NODEVICE;
	if (e == cudaErrorStreamCaptureUnsupported || e == cudaErrorStreamCaptureInvalidated ||
	    e == cudaErrorStreamCaptureImplicit)
		code = MTL_ERR_CAPTURE;
	return mtlcuda_fail(ctx, code, "%s: %s (%s)", call, cudaGetErrorName(e), cudaGetErrorString(e));
}

const char *mtlcuda_cublas_status_name(cublasStatus_t s) {
	// Spelled out rather than cublasGetStatusName so that the text is the
	// same with every toolkit version.
	switch (s) {
	case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
	case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
	case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
	case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
	case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
	case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
	case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
	case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
	case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
	case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
	default: return "CUBLAS_STATUS_UNKNOWN";
	}
}

int mtlcuda_cublas_fail(mtlcuda_ctx *ctx, cublasStatus_t s, const char *call) {
	int code = s == CUBLAS_STATUS_ALLOC_FAILED ? MTL_ERR_NOMEM : MTL_ERR_CUBLAS;
	return mtlcuda_fail(ctx, code, "%s: %s (status %d)", call, mtlcuda_cublas_status_name(s), (int)s);
}

extern "C" const char *mtlcuda_last_error(const mtlcuda_ctx *ctx) { return ctx ? ctx->err : tls_err; }

// ---- devices and contexts ----

extern "C" int mtlcuda_runtime_version(int *runtime, int *driver) {
	// The runtime is linked statically: its version is the one built with
	// (cudaRuntimeGetVersion would fail on a machine without a device).
	*runtime = CUDART_VERSION;
	*driver = 0;
	if (cudaDriverGetVersion(driver) != cudaSuccess) {
		*driver = 0; // no driver installed
		cudaGetLastError();
	}
	return MTL_OK;
}

extern "C" int mtlcuda_device_count(int *count) {
	*count = 0;
	cudaError_t e = cudaGetDeviceCount(count);
	if (e == cudaErrorNoDevice) {
		*count = 0;
		cudaGetLastError();
		return MTL_OK;
	}
	if (e != cudaSuccess) {
		*count = 0;
		return mtlcuda_cuda_fail(nullptr, e, "cudaGetDeviceCount");
	}
	return MTL_OK;
}

static void lt_plans_clear(mtlcuda_ctx *ctx) {
	for (auto &kv : ctx->lt_plans) {
		mtlcuda_lt_plan &p = kv.second;
		if (p.desc) cublasLtMatmulDescDestroy(p.desc);
		if (p.la) cublasLtMatrixLayoutDestroy(p.la);
		if (p.lb) cublasLtMatrixLayoutDestroy(p.lb);
		if (p.lc) cublasLtMatrixLayoutDestroy(p.lc);
	}
	ctx->lt_plans.clear();
}

static void ctx_release(mtlcuda_ctx *ctx) {
	if (ctx->compute) cudaStreamSynchronize(ctx->compute);
	if (ctx->copy) cudaStreamSynchronize(ctx->copy);
	lt_plans_clear(ctx);
	if (ctx->lt) cublasLtDestroy(ctx->lt);
	if (ctx->blas) cublasDestroy(ctx->blas);
	if (ctx->scratch) cudaFree(ctx->scratch);
	if (ctx->ones) cudaFree(ctx->ones);
	if (ctx->blas_ws) cudaFree(ctx->blas_ws);
	if (ctx->partials) cudaFree(ctx->partials);
	if (ctx->fused_partials) cudaFree(ctx->fused_partials);
	if (ctx->tickets) cudaFree(ctx->tickets);
	if (ctx->idcheck) cudaFree(ctx->idcheck);
	if (ctx->host_small) cudaFreeHost(ctx->host_small);
	if (ctx->compute) cudaStreamDestroy(ctx->compute);
	if (ctx->copy) cudaStreamDestroy(ctx->copy);
	if (ctx->pool) cudaMemPoolTrimTo(ctx->pool, 0);
}

static int ctx_init(mtlcuda_ctx *ctx, int device) {
	MTL_ENTER(ctx);
	MTL_CUDA(ctx, cudaDeviceGetAttribute(&ctx->sm_count, cudaDevAttrMultiProcessorCount, device));
	int pools = 0;
	MTL_CUDA(ctx, cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device));
	MTL_REQUIRE(ctx, pools, "device %d does not support stream-ordered memory pools (cudaMallocAsync)", device);
	MTL_CUDA(ctx, cudaDeviceGetDefaultMemPool(&ctx->pool, device));
	// Keep freed blocks in the pool instead of returning them to the driver
	// at every synchronisation: models allocate and free workspaces often.
	uint64_t threshold = std::numeric_limits<uint64_t>::max();
	MTL_CUDA(ctx, cudaMemPoolSetAttribute(ctx->pool, cudaMemPoolAttrReleaseThreshold, &threshold));
	MTL_CUDA(ctx, cudaStreamCreateWithFlags(&ctx->compute, cudaStreamNonBlocking));
	MTL_CUDA(ctx, cudaStreamCreateWithFlags(&ctx->copy, cudaStreamNonBlocking));
	MTL_CUBLAS(ctx, cublasCreate(&ctx->blas));
	MTL_CUBLAS(ctx, cublasSetStream(ctx->blas, ctx->compute));
	MTL_CUBLAS(ctx, cublasSetPointerMode(ctx->blas, CUBLAS_POINTER_MODE_HOST));
	MTL_CUBLAS(ctx, cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH));
	ctx->blas_ws_bytes = kBlasWorkspaceBytes;
	MTL_CUDA(ctx, cudaMalloc(&ctx->blas_ws, ctx->blas_ws_bytes));
	// An explicit workspace keeps cuBLAS from allocating inside a graph capture.
	MTL_CUBLAS(ctx, cublasSetWorkspace(ctx->blas, ctx->blas_ws, ctx->blas_ws_bytes));
	MTL_CUBLAS(ctx, cublasLtCreate(&ctx->lt));
	MTL_CUDA(ctx, cudaMalloc(&ctx->partials, sizeof(double) * kMaxReduceBlocks));
	MTL_CUDA(ctx, cudaMalloc(&ctx->fused_partials, sizeof(double) * kFusedPartials));
	MTL_CUDA(ctx, cudaMalloc(&ctx->tickets, sizeof(unsigned) * kTickets));
	MTL_CUDA(ctx, cudaMemset(ctx->tickets, 0, sizeof(unsigned) * kTickets));
	MTL_CUDA(ctx, cudaMalloc(&ctx->idcheck, sizeof(mtlcuda_idcheck_slot) * MTL_IDCHECK_SLOTS));
	MTL_CUDA(ctx, cudaMemset(ctx->idcheck, 0xFF, sizeof(mtlcuda_idcheck_slot) * MTL_IDCHECK_SLOTS));
	MTL_CUDA(ctx, cudaHostAlloc(&ctx->host_small, kHostSmallBytes, cudaHostAllocDefault));
	MTL_CUDA(ctx, cudaDeviceSynchronize());
	return MTL_OK;
}

extern "C" int mtlcuda_ctx_create(int device, mtlcuda_ctx **out) {
	*out = nullptr;
	int count = 0;
	cudaError_t e = cudaGetDeviceCount(&count);
	if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) {
		cudaGetLastError();
		return mtlcuda_fail(nullptr, MTL_ERR_NODEVICE, "no CUDA device found (cudaGetDeviceCount: %s)",
		                e == cudaSuccess ? "0 devices" : cudaGetErrorName(e));
	}
	if (e != cudaSuccess) {
		cudaGetLastError();
		int code = mtlcuda_cuda_fail(nullptr, e, "cudaGetDeviceCount");
		return code == MTL_ERR_CUDA ? MTL_ERR_NODEVICE : code;
	}
	if (device < 0 || device >= count)
		return mtlcuda_fail(nullptr, MTL_ERR_NODEVICE, "CUDA device %d does not exist (%d device%s found)", device,
		                count, count == 1 ? "" : "s");
	mtlcuda_ctx *ctx = new mtlcuda_ctx();
	ctx->device = device;
	int rc = ctx_init(ctx, device);
	if (rc != MTL_OK) {
		mtlcuda_fail(nullptr, rc, "CUDA device %d: %s", device, ctx->err);
		ctx_release(ctx);
		delete ctx;
		return rc;
	}
	*out = ctx;
	return MTL_OK;
}

extern "C" void mtlcuda_ctx_destroy(mtlcuda_ctx *ctx) {
	if (!ctx) return;
	mtlcuda_enter(ctx);
	ctx_release(ctx);
	delete ctx;
}

extern "C" int mtlcuda_device_info(mtlcuda_ctx *ctx, char *buf, int buf_len, int *cc_major, int *cc_minor,
                               int *sm_count, size_t *total_mem) {
	MTL_ENTER(ctx);
	cudaDeviceProp prop;
	MTL_CUDA(ctx, cudaGetDeviceProperties(&prop, ctx->device));
	if (buf && buf_len > 0) snprintf(buf, (size_t)buf_len, "%s", prop.name);
	*cc_major = prop.major;
	*cc_minor = prop.minor;
	*sm_count = prop.multiProcessorCount;
	*total_mem = prop.totalGlobalMem;
	return MTL_OK;
}

extern "C" int mtlcuda_set_tf32(mtlcuda_ctx *ctx, int on) {
	MTL_ENTER(ctx);
	MTL_CUBLAS(ctx, cublasSetMathMode(ctx->blas, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
	if (ctx->tf32 != (on != 0)) lt_plans_clear(ctx);
	ctx->tf32 = on != 0;
	return MTL_OK;
}

// ---- memory ----

extern "C" int mtlcuda_malloc(mtlcuda_ctx *ctx, size_t bytes, mtlcuda_dptr *out) {
	*out = 0;
	if (bytes == 0) return MTL_OK;
	MTL_ENTER(ctx);
	if (ctx->capturing)
		return mtlcuda_fail(ctx, MTL_ERR_CAPTURE,
		                "allocation of %zu bytes while capturing a graph: allocate every buffer of the step "
		                "before BeginCapture",
		                bytes);
	void *p = nullptr;
	MTL_CUDA(ctx, cudaMallocAsync(&p, bytes, ctx->compute));
	cudaError_t e = cudaMemsetAsync(p, 0, bytes, ctx->compute);
	if (e != cudaSuccess) {
		cudaFreeAsync(p, ctx->compute);
		return mtlcuda_cuda_fail(ctx, e, "cudaMemsetAsync(new allocation)");
	}
	*out = (mtlcuda_dptr)p;
	return MTL_OK;
}

extern "C" int mtlcuda_free(mtlcuda_ctx *ctx, mtlcuda_dptr p) {
	if (!p) return MTL_OK;
	MTL_ENTER(ctx);
	if (ctx->capturing)
		return mtlcuda_fail(ctx, MTL_ERR_CAPTURE, "free while capturing a graph: release buffers after EndCapture");
	MTL_CUDA(ctx, cudaFreeAsync(dptr<void>(p), ctx->compute));
	return MTL_OK;
}

extern "C" int mtlcuda_mem_info(mtlcuda_ctx *ctx, size_t *free_bytes, size_t *total_bytes, size_t *pool_reserved,
                            size_t *pool_used) {
	MTL_ENTER(ctx);
	MTL_CUDA(ctx, cudaMemGetInfo(free_bytes, total_bytes));
	uint64_t reserved = 0, used = 0;
	MTL_CUDA(ctx, cudaMemPoolGetAttribute(ctx->pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
	MTL_CUDA(ctx, cudaMemPoolGetAttribute(ctx->pool, cudaMemPoolAttrUsedMemCurrent, &used));
	*pool_reserved = (size_t)reserved;
	*pool_used = (size_t)used;
	return MTL_OK;
}

extern "C" int mtlcuda_trim(mtlcuda_ctx *ctx) {
	MTL_ENTER(ctx);
	MTL_REQUIRE(ctx, !ctx->capturing, "trim while capturing a graph");
	MTL_CUDA(ctx, cudaStreamSynchronize(ctx->compute));
	MTL_CUDA(ctx, cudaMemPoolTrimTo(ctx->pool, 0));
	return MTL_OK;
}

extern "C" int mtlcuda_host_alloc(mtlcuda_ctx *ctx, size_t bytes, void **out) {
	*out = nullptr;
	MTL_ENTER(ctx);
	MTL_REQUIRE(ctx, bytes > 0, "pinned allocation of 0 bytes");
	MTL_CUDA(ctx, cudaHostAlloc(out, bytes, cudaHostAllocDefault));
	return MTL_OK;
}

extern "C" int mtlcuda_host_free(mtlcuda_ctx *ctx, void *p) {
	if (!p) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_CUDA(ctx, cudaFreeHost(p));
	return MTL_OK;
}

static cudaStream_t stream_of(mtlcuda_ctx *ctx, int stream) {
	return stream == MTL_STREAM_COPY ? ctx->copy : ctx->compute;
}

extern "C" int mtlcuda_memcpy_htod(mtlcuda_ctx *ctx, mtlcuda_dptr dst, const void *src, size_t bytes, int stream, int sync) {
	if (bytes == 0) return MTL_OK;
	MTL_ENTER(ctx);
	if (ctx->capturing && stream == MTL_STREAM_COMPUTE)
		return mtlcuda_fail(ctx, MTL_ERR_CAPTURE,
		                "host-to-device copy of %zu bytes while capturing a graph: upload inputs before "
		                "launching the graph",
		                bytes);
	cudaStream_t s = stream_of(ctx, stream);
	MTL_CUDA(ctx, cudaMemcpyAsync(dptr<void>(dst), src, bytes, cudaMemcpyHostToDevice, s));
	if (sync) MTL_CUDA(ctx, cudaStreamSynchronize(s));
	return MTL_OK;
}

extern "C" int mtlcuda_memcpy_dtoh(mtlcuda_ctx *ctx, void *dst, mtlcuda_dptr src, size_t bytes, int stream, int sync) {
	if (bytes == 0) return MTL_OK;
	MTL_ENTER(ctx);
	if (ctx->capturing && stream == MTL_STREAM_COMPUTE)
		return mtlcuda_fail(ctx, MTL_ERR_CAPTURE,
		                "device-to-host copy of %zu bytes while capturing a graph: read results after "
		                "launching the graph",
		                bytes);
	cudaStream_t s = stream_of(ctx, stream);
	MTL_CUDA(ctx, cudaMemcpyAsync(dst, dptr<const void>(src), bytes, cudaMemcpyDeviceToHost, s));
	if (sync) MTL_CUDA(ctx, cudaStreamSynchronize(s));
	return MTL_OK;
}

extern "C" int mtlcuda_memcpy_dtod(mtlcuda_ctx *ctx, mtlcuda_dptr dst, mtlcuda_dptr src, size_t bytes) {
	if (bytes == 0 || dst == src) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_CUDA(ctx, cudaMemcpyAsync(dptr<void>(dst), dptr<const void>(src), bytes, cudaMemcpyDeviceToDevice,
	                              ctx->compute));
	return MTL_OK;
}

extern "C" int mtlcuda_memset(mtlcuda_ctx *ctx, mtlcuda_dptr dst, int byte_value, size_t bytes) {
	if (bytes == 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_CUDA(ctx, cudaMemsetAsync(dptr<void>(dst), byte_value, bytes, ctx->compute));
	return MTL_OK;
}

int mtlcuda_scratch_reserve(mtlcuda_ctx *ctx, size_t bytes) {
	if (bytes <= ctx->scratch_bytes) return MTL_OK;
	if (ctx->capturing)
		return mtlcuda_fail(ctx, MTL_ERR_CAPTURE,
		                "scratch memory must grow to %zu bytes while capturing a graph: run the step once "
		                "before BeginCapture so that scratch buffers reach their size",
		                bytes);
	size_t want = ctx->scratch_bytes * 3 / 2;
	if (want < bytes) want = bytes;
	want = (want + 4095) & ~(size_t)4095;
	// The old buffer may still be in use by queued kernels: wait for them.
	MTL_CUDA(ctx, cudaStreamSynchronize(ctx->compute));
	if (ctx->scratch) {
		cudaFree(ctx->scratch);
		ctx->scratch = nullptr;
		ctx->scratch_bytes = 0;
	}
	MTL_CUDA(ctx, cudaMalloc(&ctx->scratch, want));
	ctx->scratch_bytes = want;
	return MTL_OK;
}

// ---- streams, events, graphs ----

struct mtlcuda_event {
	cudaEvent_t e;
};

struct mtlcuda_graph {
	cudaGraphExec_t exec;
};

extern "C" int mtlcuda_stream_sync(mtlcuda_ctx *ctx, int stream) {
	MTL_ENTER(ctx);
	if (ctx->capturing && stream == MTL_STREAM_COMPUTE)
		return mtlcuda_fail(ctx, MTL_ERR_CAPTURE, "synchronisation while capturing a graph");
	MTL_CUDA(ctx, cudaStreamSynchronize(stream_of(ctx, stream)));
	return MTL_OK;
}

extern "C" int mtlcuda_event_create(mtlcuda_ctx *ctx, int timing, mtlcuda_event **out) {
	*out = nullptr;
	MTL_ENTER(ctx);
	cudaEvent_t e;
	MTL_CUDA(ctx, cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
	*out = new mtlcuda_event{e};
	return MTL_OK;
}

extern "C" void mtlcuda_event_destroy(mtlcuda_event *ev) {
	if (!ev) return;
	cudaEventDestroy(ev->e);
	delete ev;
}

extern "C" int mtlcuda_event_record(mtlcuda_ctx *ctx, mtlcuda_event *ev, int stream) {
	MTL_ENTER(ctx);
	MTL_CUDA(ctx, cudaEventRecord(ev->e, stream_of(ctx, stream)));
	return MTL_OK;
}

extern "C" int mtlcuda_stream_wait_event(mtlcuda_ctx *ctx, int stream, mtlcuda_event *ev) {
	MTL_ENTER(ctx);
	MTL_CUDA(ctx, cudaStreamWaitEvent(stream_of(ctx, stream), ev->e, 0));
	return MTL_OK;
}

extern "C" int mtlcuda_event_sync(mtlcuda_ctx *ctx, mtlcuda_event *ev) {
	MTL_ENTER(ctx);
	MTL_CUDA(ctx, cudaEventSynchronize(ev->e));
	return MTL_OK;
}

extern "C" int mtlcuda_event_query(mtlcuda_ctx *ctx, mtlcuda_event *ev, int *done) {
	MTL_ENTER(ctx);
	cudaError_t e = cudaEventQuery(ev->e);
	if (e == cudaErrorNotReady) {
		*done = 0;
		cudaGetLastError();
		return MTL_OK;
	}
	MTL_CUDA(ctx, e);
	*done = 1;
	return MTL_OK;
}

extern "C" int mtlcuda_event_elapsed_ms(mtlcuda_ctx *ctx, mtlcuda_event *start, mtlcuda_event *end, float *ms) {
	MTL_ENTER(ctx);
	MTL_CUDA(ctx, cudaEventElapsedTime(ms, start->e, end->e));
	return MTL_OK;
}

extern "C" int mtlcuda_capture_begin(mtlcuda_ctx *ctx) {
	MTL_ENTER(ctx);
	MTL_REQUIRE(ctx, !ctx->capturing, "BeginCapture while a capture is already in progress");
	// Relaxed mode: other threads (and the copy stream) may keep using the
	// runtime while the compute stream is being captured.
	MTL_CUDA(ctx, cudaStreamBeginCapture(ctx->compute, cudaStreamCaptureModeRelaxed));
	ctx->capturing = true;
	return MTL_OK;
}

extern "C" int mtlcuda_capturing(mtlcuda_ctx *ctx) { return ctx->capturing ? 1 : 0; }

extern "C" int mtlcuda_capture_end(mtlcuda_ctx *ctx, mtlcuda_graph **out) {
	*out = nullptr;
	MTL_ENTER(ctx);
	MTL_REQUIRE(ctx, ctx->capturing, "EndCapture without BeginCapture");
	ctx->capturing = false;
	cudaGraph_t graph = nullptr;
	MTL_CUDA(ctx, cudaStreamEndCapture(ctx->compute, &graph));
	cudaGraphExec_t exec = nullptr;
#if CUDART_VERSION >= 12000
	cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
#else
	cudaError_t e = cudaGraphInstantiate(&exec, graph, nullptr, nullptr, 0);
#endif
	cudaGraphDestroy(graph);
	if (e != cudaSuccess) return mtlcuda_cuda_fail(ctx, e, "cudaGraphInstantiate");
	*out = new mtlcuda_graph{exec};
	return MTL_OK;
}

extern "C" int mtlcuda_graph_launch(mtlcuda_ctx *ctx, mtlcuda_graph *g) {
	MTL_ENTER(ctx);
	MTL_REQUIRE(ctx, !ctx->capturing, "graph launch while capturing a graph");
	MTL_CUDA(ctx, cudaGraphLaunch(g->exec, ctx->compute));
	return MTL_OK;
}

extern "C" void mtlcuda_graph_destroy(mtlcuda_graph *g) {
	if (!g) return;
	cudaGraphExecDestroy(g->exec);
	delete g;
}

// ---- BLAS ----
//
// A row-major [r, c] matrix is, read column-major, its transpose [c, r]. So
// the row-major C = op(A) op(B) is computed as the column-major
// C^T = op(B)^T op(A)^T: cuBLAS gets B first, A second, and the dimensions
// (n, m, k). The leading dimension of each operand is its row-major row
// length.

extern "C" int mtlcuda_gemm(mtlcuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k, float alpha, mtlcuda_dptr a,
                        mtlcuda_dptr b, float beta, mtlcuda_dptr c) {
	return mtlcuda_gemm_strided_batched(ctx, trans_a, trans_b, m, n, k, alpha, a, 0, b, 0, beta, c, 0, 1);
}

extern "C" int mtlcuda_gemm_strided_batched(mtlcuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k,
                                        float alpha, mtlcuda_dptr a, int64_t stride_a, mtlcuda_dptr b, int64_t stride_b,
                                        float beta, mtlcuda_dptr c, int64_t stride_c, int batch) {
	MTL_REQUIRE(ctx, m >= 0 && n >= 0 && k >= 0 && batch >= 0, "gemm: negative size m=%d n=%d k=%d batch=%d", m,
	            n, k, batch);
	if (m == 0 || n == 0 || batch == 0) return MTL_OK;
	MTL_ENTER(ctx);
	if (k == 0) {
		// cuBLAS rejects a zero leading dimension; C = beta*C by hand.
		for (int i = 0; i < batch; i++) {
			mtlcuda_dptr ci = c + (mtlcuda_dptr)(i * stride_c * 4);
			int rc = beta == 0.0f ? mtlcuda_memset(ctx, ci, 0, (size_t)m * n * 4)
			                      : mtlcuda_scale(ctx, ci, (int64_t)m * n, beta);
			if (rc != MTL_OK) return rc;
		}
		return MTL_OK;
	}
	cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
	int lda = trans_a ? m : k;
	int ldb = trans_b ? k : n;
	if (batch == 1) {
		MTL_CUBLAS(ctx, cublasSgemm(ctx->blas, op_b, op_a, n, m, k, &alpha, dptr<const float>(b), ldb,
		                            dptr<const float>(a), lda, &beta, dptr<float>(c), n));
		return MTL_OK;
	}
	MTL_CUBLAS(ctx, cublasSgemmStridedBatched(ctx->blas, op_b, op_a, n, m, k, &alpha, dptr<const float>(b), ldb,
	                                          (long long)stride_b, dptr<const float>(a), lda, (long long)stride_a,
	                                          &beta, dptr<float>(c), n, (long long)stride_c, batch));
	return MTL_OK;
}

// Largest power of two (<= 256) dividing every address the matmul touches,
// which is what cuBLASLt's alignment preferences ask for.
static int lt_alignment(std::initializer_list<uint64_t> addrs) {
	uint64_t acc = 256;
	for (uint64_t x : addrs) {
		if (x == 0) continue;
		while (acc > 4 && x % acc != 0) acc >>= 1;
	}
	return (int)acc;
}

static int lt_plan_get(mtlcuda_ctx *ctx, const mtlcuda_lt_key &key, int align, mtlcuda_lt_plan **out) {
	mtlcuda_lt_key k2 = key;
	// The alignment is part of the plan: an algorithm chosen for 256-byte
	// aligned operands may not run on views at odd element offsets.
	k2.align = align;
	auto it = ctx->lt_plans.find(k2);
	if (it != ctx->lt_plans.end()) {
		*out = &it->second;
		return MTL_OK;
	}
	mtlcuda_lt_plan plan{};
	plan.ok = false;
	cublasComputeType_t compute = ctx->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
	MTL_CUBLAS(ctx, cublasLtMatmulDescCreate(&plan.desc, compute, CUDA_R_32F));
	cublasOperation_t op_first = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // B comes first
	cublasOperation_t op_second = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N; // then A
	MTL_CUBLAS(ctx, cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
	                                               sizeof(op_first)));
	MTL_CUBLAS(ctx, cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
	                                               sizeof(op_second)));
	// key.act is the activation, plus kLtNoBias for a product without bias.
	const bool with_bias = (key.act & kLtNoBias) == 0;
	const bool relu = (key.act & ~kLtNoBias) == MTL_ACT_RELU;
	cublasLtEpilogue_t epi = with_bias ? (relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
	                                   : (relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
	MTL_CUBLAS(ctx, cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
	if (key.batch > 1 && with_bias) {
		int64_t sbias = key.sbias;
		MTL_CUBLAS(ctx, cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &sbias,
		                                               sizeof(sbias)));
	}
	// Column-major layouts of the stored operands (see the BLAS note above).
	uint64_t rows_first = key.trans_b ? key.k : key.n, cols_first = key.trans_b ? key.n : key.k;
	uint64_t rows_second = key.trans_a ? key.m : key.k, cols_second = key.trans_a ? key.k : key.m;
	MTL_CUBLAS(ctx, cublasLtMatrixLayoutCreate(&plan.la, CUDA_R_32F, rows_first, cols_first, (int64_t)rows_first));
	MTL_CUBLAS(ctx,
	           cublasLtMatrixLayoutCreate(&plan.lb, CUDA_R_32F, rows_second, cols_second, (int64_t)rows_second));
	MTL_CUBLAS(ctx, cublasLtMatrixLayoutCreate(&plan.lc, CUDA_R_32F, key.n, key.m, key.n));
	if (key.batch > 1) {
		int32_t count = key.batch;
		int64_t strides[3] = {key.sb, key.sa, key.sc};
		cublasLtMatrixLayout_t ls[3] = {plan.la, plan.lb, plan.lc};
		for (int i = 0; i < 3; i++) {
			MTL_CUBLAS(ctx, cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
			                                                 sizeof(count)));
			MTL_CUBLAS(ctx, cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
			                                                 &strides[i], sizeof(strides[i])));
		}
	}
	cublasLtMatmulPreference_t pref;
	MTL_CUBLAS(ctx, cublasLtMatmulPreferenceCreate(&pref));
	uint64_t ws = ctx->blas_ws_bytes;
	uint32_t al = (uint32_t)align;
	cublasStatus_t s =
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
	const cublasLtMatmulPreferenceAttributes_t aligns[] = {
	    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
	    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
	for (auto attr : aligns)
		if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof(al));
	cublasLtMatmulHeuristicResult_t result;
	int found = 0;
	if (s == CUBLAS_STATUS_SUCCESS)
		s = cublasLtMatmulAlgoGetHeuristic(ctx->lt, plan.desc, plan.la, plan.lb, plan.lc, plan.lc, pref, 1, &result,
		                                   &found);
	cublasLtMatmulPreferenceDestroy(pref);
	// No algorithm, or a layout cuBLASLt rejects (NOT_SUPPORTED,
	// INVALID_VALUE, e.g. a zero batch stride on some versions), is not an
	// error: the plan is remembered as unusable and the caller falls back to
	// SGEMM + bias kernel.
	if (s == CUBLAS_STATUS_SUCCESS && found > 0) {
		plan.ok = true;
		plan.algo = result.algo;
	}
	auto ins = ctx->lt_plans.emplace(k2, plan);
	*out = &ins.first->second;
	return MTL_OK;
}

extern "C" int mtlcuda_gemm_bias_act(mtlcuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k, mtlcuda_dptr a,
                                 int64_t stride_a, mtlcuda_dptr b, int64_t stride_b, mtlcuda_dptr bias,
                                 int64_t stride_bias, mtlcuda_dptr c, int64_t stride_c, int batch, int act) {
	MTL_REQUIRE(ctx, m >= 0 && n >= 0 && k >= 0 && batch >= 0, "gemm_bias_act: negative size m=%d n=%d k=%d", m, n,
	            k);
	MTL_REQUIRE(ctx, act == MTL_ACT_LINEAR || act == MTL_ACT_RELU, "gemm_bias_act: unknown activation %d", act);
	if (m == 0 || n == 0 || batch == 0) return MTL_OK;
	MTL_ENTER(ctx);
	if (batch == 1) stride_a = stride_b = stride_bias = stride_c = 0;
	int align = lt_alignment({(uint64_t)a, (uint64_t)b, (uint64_t)c, (uint64_t)(stride_a * 4),
	                          (uint64_t)(stride_b * 4), (uint64_t)(stride_c * 4)});
	// cuBLASLt reads the bias vector with 16-byte loads. bias == 0: no bias.
	if (bias == 0) stride_bias = 0;
	bool bias_ok = bias % 16 == 0 && (stride_bias * 4) % 16 == 0;
	if (k > 0 && bias_ok) {
		int epi = act | (bias ? 0 : kLtNoBias);
		mtlcuda_lt_key key{trans_a, trans_b, m, n, k, batch, epi, 0, stride_a, stride_b, stride_bias, stride_c};
		mtlcuda_lt_plan *plan = nullptr;
		int rc = lt_plan_get(ctx, key, align, &plan);
		if (rc != MTL_OK) return rc;
		if (plan->ok) {
			if (bias) {
				const void *bp = dptr<const void>(bias);
				MTL_CUBLAS(ctx, cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp,
				                                               sizeof(bp)));
			}
			float alpha = 1.0f, beta = 0.0f;
			MTL_CUBLAS(ctx, cublasLtMatmul(ctx->lt, plan->desc, &alpha, dptr<const void>(b), plan->la,
			                               dptr<const void>(a), plan->lb, &beta, dptr<const void>(c), plan->lc,
			                               dptr<void>(c), plan->lc, &plan->algo, ctx->blas_ws, ctx->blas_ws_bytes,
			                               ctx->compute));
			return MTL_OK;
		}
	}
	// Fallback: SGEMM, then the bias + activation kernel per batch entry (or
	// in one launch when the entries and their biases are packed).
	int rc = mtlcuda_gemm_strided_batched(ctx, trans_a, trans_b, m, n, k, 1.0f, a, stride_a, b, stride_b, 0.0f, c,
	                                  stride_c, batch);
	if (rc != MTL_OK) return rc;
	if (bias == 0) // no bias: only a ReLU, if any, over every entry
		return act == MTL_ACT_RELU ? mtlcuda_relu_strided(ctx, c, batch, (int64_t)m * n, batch == 1 ? 0 : stride_c)
		                           : MTL_OK;
	if (batch == 1 || (stride_c == (int64_t)m * n && stride_bias == n))
		return mtlcuda_bias_act(ctx, c, bias, batch, m, n, act);
	for (int i = 0; i < batch; i++) {
		rc = mtlcuda_bias_act(ctx, c + (mtlcuda_dptr)(i * stride_c * 4), bias + (mtlcuda_dptr)(i * stride_bias * 4), 1, m, n,
		                  act);
		if (rc != MTL_OK) return rc;
	}
	return MTL_OK;
}

int mtlcuda_ones_reserve(mtlcuda_ctx *ctx, int64_t n) {
	if (n <= ctx->ones_len) return MTL_OK;
	if (ctx->capturing)
		return mtlcuda_fail(ctx, MTL_ERR_CAPTURE,
		                "bias-gradient buffer must grow to %lld rows while capturing a graph: run the step once "
		                "before BeginCapture",
		                (long long)n);
	int64_t want = n < 4096 ? 4096 : n;
	MTL_CUDA(ctx, cudaStreamSynchronize(ctx->compute));
	if (ctx->ones) cudaFree(ctx->ones);
	ctx->ones = nullptr;
	ctx->ones_len = 0;
	MTL_CUDA(ctx, cudaMalloc(&ctx->ones, (size_t)want * sizeof(float)));
	ctx->ones_len = want;
	return mtlcuda_fill_f32(ctx, (mtlcuda_dptr)ctx->ones, want, 1.0f);
}

// db[g] (+)= dy[g]^T * ones: the column sums of each group as one GEMV-shaped
// strided-batched GEMM, which cuBLAS splits over the rows (deterministic).
extern "C" int mtlcuda_bias_grad(mtlcuda_ctx *ctx, mtlcuda_dptr dy, mtlcuda_dptr db, int groups, int64_t rows, int n,
                             int accumulate) {
	MTL_REQUIRE(ctx, groups >= 0 && rows >= 0 && n >= 0, "bias_grad: negative size");
	if (groups == 0 || n == 0) return MTL_OK;
	MTL_ENTER(ctx);
	if (rows == 0) {
		if (accumulate) return MTL_OK;
		return mtlcuda_memset(ctx, db, 0, (size_t)groups * n * 4);
	}
	MTL_REQUIRE(ctx, rows <= 0x7fffffff, "bias_grad: %lld rows exceed the GEMM limit", (long long)rows);
	int rc = mtlcuda_ones_reserve(ctx, rows);
	if (rc != MTL_OK) return rc;
	// Row-major db_g[1, n] = ones[1, rows] * dy_g[rows, n].
	return mtlcuda_gemm_strided_batched(ctx, 0, 0, 1, n, (int)rows, 1.0f, (mtlcuda_dptr)ctx->ones, 0, dy, rows * n,
	                                accumulate ? 1.0f : 0.0f, db, n, groups);
}
