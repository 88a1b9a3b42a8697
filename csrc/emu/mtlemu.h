// mtlemu.h - the emulated CUDA device of libmtlcuda: what the kernels of
// csrc/*.cu see when g++ compiles them as C++ for the host (the build adds
// -include mtlemu.h and puts csrc/emu first on the include path, so that
// <cuda_runtime.h>, <cublas_v2.h>, <cublasLt.h> and <cub/cub.cuh> are the
// shims of this directory).
//
// A kernel launch runs every block of the grid; the threads of a block are
// cooperatively scheduled fibers on one host thread, resumed in a seeded
// random order between barriers (MTLCUDA_EMU_SEED), so that __syncthreads,
// the warp collectives, __shared__ memory and atomics behave as on a GPU and
// a missing barrier changes results. Device memory lives in a guarded arena:
// every allocation ends at a page that is never accessible, and the arena is
// inaccessible to host code (see runtime.cpp).
#ifndef MTLEMU_H
#define MTLEMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
#include <cmath>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define MTLCUDA_EMULATED 1
#define CUDART_VERSION 12040

// ---- qualifiers ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Static shared memory: one instance per host thread, and a block's fibers
// all run on one host thread, one block at a time: per-block storage.
#define __shared__ static thread_local

// ---- runtime types ----
typedef enum cudaError {
	cudaSuccess = 0,
	cudaErrorInvalidValue = 1,
	cudaErrorMemoryAllocation = 2,
	cudaErrorInitializationError = 3,
	cudaErrorInvalidConfiguration = 9,
	cudaErrorInvalidDevice = 101,
	cudaErrorInvalidResourceHandle = 400,
	cudaErrorNotReady = 600,
	cudaErrorIllegalAddress = 700,
	cudaErrorLaunchFailure = 719,
	cudaErrorInsufficientDriver = 35,
	cudaErrorNoDevice = 100,
	cudaErrorStreamCaptureUnsupported = 900,
	cudaErrorStreamCaptureInvalidated = 901,
	cudaErrorStreamCaptureMerge = 902,
	cudaErrorStreamCaptureUnmatched = 903,
	cudaErrorStreamCaptureUnjoined = 904,
	cudaErrorStreamCaptureIsolation = 905,
	cudaErrorStreamCaptureImplicit = 906,
	cudaErrorStreamCaptureWrongThread = 908,
	cudaErrorIllegalState = 401,
	cudaErrorUnknown = 999
} cudaError_t;

struct uint3 {
	unsigned x, y, z;
};
struct dim3 {
	unsigned x, y, z;
	constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
	constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

typedef struct mtlemu_stream *cudaStream_t;
typedef struct mtlemu_event *cudaEvent_t;
typedef struct mtlemu_graph *cudaGraph_t;
typedef struct mtlemu_graph_exec *cudaGraphExec_t;
typedef struct mtlemu_mempool *cudaMemPool_t;

enum cudaMemcpyKind {
	cudaMemcpyHostToHost = 0,
	cudaMemcpyHostToDevice = 1,
	cudaMemcpyDeviceToHost = 2,
	cudaMemcpyDeviceToDevice = 3,
	cudaMemcpyDefault = 4
};
enum cudaStreamCaptureMode {
	cudaStreamCaptureModeGlobal = 0,
	cudaStreamCaptureModeThreadLocal = 1,
	cudaStreamCaptureModeRelaxed = 2
};
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMemoryPoolsSupported = 115 };
enum cudaMemPoolAttr {
	cudaMemPoolReuseFollowEventDependencies = 1,
	cudaMemPoolAttrReleaseThreshold = 4,
	cudaMemPoolAttrReservedMemCurrent = 5,
	cudaMemPoolAttrReservedMemHigh = 6,
	cudaMemPoolAttrUsedMemCurrent = 7,
	cudaMemPoolAttrUsedMemHigh = 8
};
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00

struct cudaDeviceProp {
	char name[256];
	size_t totalGlobalMem;
	int major, minor;
	int multiProcessorCount;
	int warpSize;
	int maxThreadsPerBlock;
};

extern "C" {
const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int d);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr a, void *v);
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr a, void *v);
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t s);
cudaError_t cudaFreeAsync(void *p, cudaStream_t s);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total);
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
}

// The typed overloads of cuda_runtime.h's C++ API.
template <class T>
inline cudaError_t cudaMalloc(T **p, size_t bytes) {
	return cudaMalloc(reinterpret_cast<void **>(p), bytes);
}
template <class T>
inline cudaError_t cudaMallocAsync(T **p, size_t bytes, cudaStream_t s) {
	return cudaMallocAsync(reinterpret_cast<void **>(p), bytes, s);
}
template <class T>
inline cudaError_t cudaHostAlloc(T **p, size_t bytes, unsigned flags) {
	return cudaHostAlloc(reinterpret_cast<void **>(p), bytes, flags);
}

// ---- the SIMT runtime ----
namespace mtlemu {

// One emulated GPU thread (a fiber): its indices and the launch it runs in.
struct Thread {
	uint3 tid;
	uint3 bid;
	dim3 bdim;
	dim3 gdim;
};
extern thread_local Thread *tls_current;

// The block's dynamic shared memory (the launch's shmem bytes, 16-byte
// aligned; filled with garbage at the start of every block, as on a GPU).
void *dynamic_shared();

// Barriers and collectives, called from fibers (they switch to other threads
// of the block until every participant has arrived).
void syncthreads();
void syncwarp(unsigned mask);
// Deposits v (8 bytes) for the warp and returns lane src's deposit once every
// lane of mask has arrived.
uint64_t shfl_exchange(unsigned mask, uint64_t v, int src_lane, int xor_mask, int mode);
// A scheduling point: another thread of the block may run first.
void yield_point();
void threadfence();

// The body of one thread: calls the kernel with its own copy of the arguments.
using Body = std::function<void()>;
void launch(const char *name, dim3 grid, dim3 block, size_t shmem, cudaStream_t s, Body body);

template <class... P>
struct Launcher {
	const char *name;
	dim3 grid, block;
	size_t shmem;
	cudaStream_t stream;
	void (*kernel)(P...);
	template <class... A>
	void operator()(A &&...a) const {
		// The arguments are converted to the parameter types and copied at
		// launch, as the CUDA runtime does; every thread gets its own copy.
		std::tuple<std::decay_t<P>...> args(std::forward<A>(a)...);
		auto k = kernel;
		launch(name, grid, block, shmem, stream, [k, args]() { std::apply(k, args); });
	}
};

template <class... P>
Launcher<P...> launcher(const char *name, dim3 grid, dim3 block, size_t shmem, cudaStream_t s, void (*k)(P...)) {
	return Launcher<P...>{name, grid, block, shmem, s, k};
}

template <class T>
uint64_t to_bits(T v) {
	static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
	uint64_t b = 0;
	memcpy(&b, &v, sizeof(T));
	return b;
}
template <class T>
T from_bits(uint64_t b) {
	T v;
	memcpy(&v, &b, sizeof(T));
	return v;
}

} // namespace mtlemu

// Kernel launches, written once in csrc as
//   MTL_LAUNCH(grid, block, shmem, stream, kernel)(args...);
// nvcc's definition (internal.cuh) is kernel<<<grid, block, shmem, stream>>>.
#define MTL_LAUNCH(grid, block, shmem, stream, ...) \
	::mtlemu::launcher(#__VA_ARGS__, dim3(grid), dim3(block), (size_t)(shmem), stream, __VA_ARGS__)

// Dynamic shared memory, written once in csrc as MTL_DYNAMIC_SHARED(T, name)
// (extern __shared__ T name[] for nvcc, see internal.cuh).
#define MTL_DYNAMIC_SHARED(T, name) T *name = static_cast<T *>(::mtlemu::dynamic_shared())

#define threadIdx (::mtlemu::tls_current->tid)
#define blockIdx (::mtlemu::tls_current->bid)
#define blockDim (::mtlemu::tls_current->bdim)
#define gridDim (::mtlemu::tls_current->gdim)

inline void __syncthreads() { ::mtlemu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::mtlemu::syncwarp(mask); }
inline void __threadfence() { ::mtlemu::threadfence(); }
inline void __threadfence_block() { ::mtlemu::threadfence(); }

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
	(void)width;
	return ::mtlemu::from_bits<T>(::mtlemu::shfl_exchange(mask, ::mtlemu::to_bits(v), src, 0, 0));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
	(void)width;
	return ::mtlemu::from_bits<T>(::mtlemu::shfl_exchange(mask, ::mtlemu::to_bits(v), 0, lane_mask, 1));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
	(void)width;
	return ::mtlemu::from_bits<T>(::mtlemu::shfl_exchange(mask, ::mtlemu::to_bits(v), (int)delta, 0, 2));
}

// Atomics: real host atomics (blocks of different launches on different
// streams may run at the same time), each a scheduling point.
template <class T>
inline T mtlemu_atomic_add(T *p, T v) {
	::mtlemu::yield_point();
	return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline int atomicAdd(int *p, int v) { return mtlemu_atomic_add(p, v); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return mtlemu_atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) { return mtlemu_atomic_add(p, v); }
// Floating-point adds: a compare-and-swap loop.
template <class T>
inline T mtlemu_atomic_add_fp(T *p, T v) {
	::mtlemu::yield_point();
	T old;
	__atomic_load(p, &old, __ATOMIC_SEQ_CST);
	T want;
	do {
		want = old + v;
	} while (!__atomic_compare_exchange(p, &old, &want, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
	return old;
}
inline float atomicAdd(float *p, float v) { return mtlemu_atomic_add_fp(p, v); }
inline double atomicAdd(double *p, double v) { return mtlemu_atomic_add_fp(p, v); }
template <class T>
inline T mtlemu_atomic_min(T *p, T v) {
	::mtlemu::yield_point();
	T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
	while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
	}
	return old;
}
template <class T>
inline T mtlemu_atomic_max(T *p, T v) {
	::mtlemu::yield_point();
	T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
	while (v > old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
	}
	return old;
}
inline int atomicMin(int *p, int v) { return mtlemu_atomic_min(p, v); }
inline unsigned atomicMin(unsigned *p, unsigned v) { return mtlemu_atomic_min(p, v); }
inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v) { return mtlemu_atomic_min(p, v); }
inline int atomicMax(int *p, int v) { return mtlemu_atomic_max(p, v); }
inline unsigned atomicMax(unsigned *p, unsigned v) { return mtlemu_atomic_max(p, v); }
inline unsigned long long atomicMax(unsigned long long *p, unsigned long long v) { return mtlemu_atomic_max(p, v); }
inline int atomicExch(int *p, int v) {
	::mtlemu::yield_point();
	return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned atomicCAS(unsigned *p, unsigned cmp, unsigned v) {
	::mtlemu::yield_point();
	__atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	return cmp;
}

#endif // __cplusplus
#endif // MTLEMU_H
