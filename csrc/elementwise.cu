// elementwise.cu - element-wise and row-wise kernels: fill, bias + activation,
// activation backward, dropout, mul/axpy/scale/equal/sigmoid, column copies,
// softmax with temperature and its backward, gate combine and its backward.
#include <cmath>

#include "internal.cuh"

// Grid-stride loop with the index type I (int when the total fits, so that
// the divisions in the index arithmetic stay 32-bit).
#define MTL_FOR(I, i, n) \
	for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (I)blockDim.x * gridDim.x)

static inline bool fits32(int64_t n) { return n <= 0x7fffffff; }

// ---- fill ----

__global__ void k_fill(float *x, int64_t n, float v) {
	MTL_FOR(int64_t, i, n) x[i] = v;
}

__global__ void k_fill_i32(int *x, int64_t n, int v) {
	MTL_FOR(int64_t, i, n) x[i] = v;
}

extern "C" int mtlcuda_fill_f32(mtlcuda_ctx *ctx, mtlcuda_dptr dst, int64_t n, float v) {
	if (n <= 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_fill)(dptr<float>(dst), n, v);
	MTL_LAUNCHED(ctx, "fill");
	return MTL_OK;
}

extern "C" int mtlcuda_fill_i32(mtlcuda_ctx *ctx, mtlcuda_dptr dst, int64_t n, int32_t v) {
	if (n <= 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_fill_i32)(dptr<int>(dst), n, v);
	MTL_LAUNCHED(ctx, "fill_i32");
	return MTL_OK;
}

// ---- bias + activation ----

template <typename I, bool RELU>
__global__ void k_bias_act(float *x, const float *bias, I rows, I n, I total) {
	MTL_FOR(I, i, total) {
		I r = i / n;    // global row
		I c = i - r * n; // column
		I g = r / rows; // group
		float v = x[i] + bias[g * n + c];
		x[i] = RELU ? fmaxf(v, 0.0f) : v;
	}
}

extern "C" int mtlcuda_bias_act(mtlcuda_ctx *ctx, mtlcuda_dptr x, mtlcuda_dptr bias, int groups, int64_t rows, int n, int act) {
	MTL_REQUIRE(ctx, groups >= 0 && rows >= 0 && n >= 0, "bias_act: negative size");
	MTL_REQUIRE(ctx, act == MTL_ACT_LINEAR || act == MTL_ACT_RELU, "bias_act: unknown activation %d", act);
	int64_t total = (int64_t)groups * rows * n;
	if (total == 0) return MTL_OK;
	MTL_ENTER(ctx);
	unsigned grid = mtlcuda_grid(ctx, total, 4);
	float *px = dptr<float>(x);
	const float *pb = dptr<const float>(bias);
	if (fits32(total)) {
		if (act == MTL_ACT_RELU)
			MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_bias_act<int, true>)(px, pb, (int)rows, n, (int)total);
		else
			MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_bias_act<int, false>)(px, pb, (int)rows, n, (int)total);
	} else {
		if (act == MTL_ACT_RELU)
			MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_bias_act<int64_t, true>)(px, pb, rows, n, total);
		else
			MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_bias_act<int64_t, false>)(px, pb, rows, n, total);
	}
	MTL_LAUNCHED(ctx, "bias_act");
	return MTL_OK;
}

__global__ void k_relu_backward(float *dy, const float *y, int64_t n) {
	MTL_FOR(int64_t, i, n) {
		if (y[i] <= 0.0f) dy[i] = 0.0f;
	}
}

extern "C" int mtlcuda_act_backward(mtlcuda_ctx *ctx, mtlcuda_dptr dy, mtlcuda_dptr y, int64_t n, int act) {
	MTL_REQUIRE(ctx, act == MTL_ACT_LINEAR || act == MTL_ACT_RELU, "act_backward: unknown activation %d", act);
	if (n <= 0 || act == MTL_ACT_LINEAR) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_relu_backward)(dptr<float>(dy), dptr<const float>(y), n);
	MTL_LAUNCHED(ctx, "relu_backward");
	return MTL_OK;
}

// ---- activations (kernels.Activator) ----

// Keras' constants, as the CPU kernels (kernels/cpu_kernels.c) spell them.
#define SELU_ALPHA 1.6732632423543772848170429916717f
#define SELU_SCALE 1.0507009873554804934193349852946f
#define LEAKY_ALPHA 0.2f
#define INV_SQRT2 0.70710678118654752440084436210485f
#define INV_SQRT_2PI 0.39894228040143267793994605993438f

// Sigmoid in float32 without overflow: exp of a non-positive argument only.
__device__ __forceinline__ float sigmoid_f32(float x) {
	if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
	float e = expf(x);
	return e / (1.0f + e);
}

// The CPU device's formulas: elu and selu take exp(min(x, 0)) - 1, so that
// a large positive x never reaches expf.
__device__ __forceinline__ float act_fwd(float v, int act) {
	switch (act) {
	case MTL_ACT_SELU:
		return v > 0.0f ? SELU_SCALE * v : SELU_SCALE * (SELU_ALPHA * (expf(fminf(v, 0.0f)) - 1.0f));
	case MTL_ACT_ELU:
		return v > 0.0f ? v : expf(fminf(v, 0.0f)) - 1.0f;
	case MTL_ACT_GELU:
		return 0.5f * v * (1.0f + erff(v * INV_SQRT2));
	case MTL_ACT_TANH:
		return tanhf(v);
	case MTL_ACT_SIGMOID:
		return sigmoid_f32(v);
	case MTL_ACT_SWISH:
		return v * sigmoid_f32(v);
	case MTL_ACT_LEAKY_RELU:
		return v > 0.0f ? v : LEAKY_ALPHA * v;
	case MTL_ACT_RELU:
		return v > 0.0f ? v : 0.0f;
	}
	return v;
}

// act'(v) at the pre-activation v.
__device__ __forceinline__ float act_grad(float v, int act) {
	switch (act) {
	case MTL_ACT_SELU:
		return v > 0.0f ? SELU_SCALE : SELU_SCALE * (SELU_ALPHA * expf(fminf(v, 0.0f)));
	case MTL_ACT_ELU:
		return v > 0.0f ? 1.0f : expf(fminf(v, 0.0f));
	case MTL_ACT_GELU:
		return 0.5f * (1.0f + erff(v * INV_SQRT2)) + v * INV_SQRT_2PI * expf(-0.5f * v * v);
	case MTL_ACT_TANH: {
		float t = tanhf(v);
		return 1.0f - t * t;
	}
	case MTL_ACT_SIGMOID: {
		float t = sigmoid_f32(v);
		return t * (1.0f - t);
	}
	case MTL_ACT_SWISH: {
		float t = sigmoid_f32(v);
		return t * (1.0f + v * (1.0f - t));
	}
	case MTL_ACT_LEAKY_RELU:
		return v > 0.0f ? 1.0f : LEAKY_ALPHA;
	}
	return 1.0f;
}

// act is the same for every thread, so the switch does not diverge.
__global__ void k_activate(float *y, const float *x, int64_t n, int act) {
	MTL_FOR(int64_t, i, n) y[i] = act_fwd(x[i], act);
}

__global__ void k_activate_backward(float *dy, const float *x, int64_t n, int act) {
	// relu zeroes dy where x <= 0 (not dy * 0, which keeps a NaN or an
	// infinite dy), like the CPU device.
	MTL_FOR(int64_t, i, n) dy[i] = act == MTL_ACT_RELU ? (x[i] > 0.0f ? dy[i] : 0.0f) : dy[i] * act_grad(x[i], act);
}

static bool known_act(int act) { return act >= MTL_ACT_LINEAR && act <= MTL_ACT_LEAKY_RELU; }

extern "C" int mtlcuda_activate(mtlcuda_ctx *ctx, mtlcuda_dptr y, mtlcuda_dptr x, int64_t n, int act) {
	MTL_REQUIRE(ctx, known_act(act), "activate: unknown activation %d", act);
	if (n <= 0 || (act == MTL_ACT_LINEAR && y == x)) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_activate)(dptr<float>(y), dptr<const float>(x), n, act);
	MTL_LAUNCHED(ctx, "activate");
	return MTL_OK;
}

extern "C" int mtlcuda_activate_backward(mtlcuda_ctx *ctx, mtlcuda_dptr dy, mtlcuda_dptr x, int64_t n, int act) {
	MTL_REQUIRE(ctx, known_act(act), "activate_backward: unknown activation %d", act);
	if (n <= 0 || act == MTL_ACT_LINEAR) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_activate_backward)(dptr<float>(dy), dptr<const float>(x),
	                                                                         n, act);
	MTL_LAUNCHED(ctx, "activate_backward");
	return MTL_OK;
}

// ---- dropout ----

// The CPU device's DropoutHash (kernels/cpu.go): SplitMix64's finaliser of
// seed + (i+1)*golden ratio. 64-bit wrap-around arithmetic, so the GPU and
// the CPU agree bit for bit.
__device__ __forceinline__ uint64_t dropout_hash(uint64_t seed, uint64_t i) {
	uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

__global__ void k_dropout(float *x, float *mask, int64_t n, uint64_t threshold, float scale, uint64_t seed) {
	MTL_FOR(int64_t, i, n) {
		float m = (dropout_hash(seed, (uint64_t)i) >> 40) < threshold ? 0.0f : scale;
		mask[i] = m;
		x[i] *= m;
	}
}

// layers.MixSeed(base, site, layer) (see mtlcuda_dropout_sp).
__device__ __forceinline__ uint64_t mix_seed(uint64_t base, uint64_t site, uint64_t layer) {
	const uint64_t parts[3] = {base, site, layer};
	uint64_t s = 0x9E3779B97F4A7C15ull;
#pragma unroll
	for (int k = 0; k < 3; k++) {
		s ^= parts[k];
		s += 0x9E3779B97F4A7C15ull;
		uint64_t z = s;
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
		s = z ^ (z >> 31);
	}
	return s;
}

// The step seed is read once per thread (a 16-byte block, cached) and mixed
// per thread: cheaper than a separate launch to derive it.
__global__ void k_dropout_sp(float *x, float *mask, int64_t n, uint64_t threshold, float scale,
                             const mtlcuda_step_params *sp, uint64_t site, uint64_t layer) {
	const uint64_t seed = mix_seed(sp->seed, site, layer);
	MTL_FOR(int64_t, i, n) {
		float m = (dropout_hash(seed, (uint64_t)i) >> 40) < threshold ? 0.0f : scale;
		mask[i] = m;
		x[i] *= m;
	}
}

extern "C" int mtlcuda_dropout_sp(mtlcuda_ctx *ctx, mtlcuda_dptr x, mtlcuda_dptr mask, int64_t n, uint64_t threshold, float scale,
                              mtlcuda_dptr sp, uint64_t site, uint64_t layer) {
	MTL_REQUIRE(ctx, sp != 0, "dropout_sp: no step parameters");
	if (n <= 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_dropout_sp)(
	    dptr<float>(x), dptr<float>(mask), n, threshold, scale, dptr<const mtlcuda_step_params>(sp), site, layer);
	MTL_LAUNCHED(ctx, "dropout_sp");
	return MTL_OK;
}

extern "C" int mtlcuda_dropout(mtlcuda_ctx *ctx, mtlcuda_dptr x, mtlcuda_dptr mask, int64_t n, uint64_t threshold, float scale,
                           uint64_t seed) {
	if (n <= 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_dropout)(dptr<float>(x), dptr<float>(mask), n, threshold,
	                                                               scale, seed);
	MTL_LAUNCHED(ctx, "dropout");
	return MTL_OK;
}

// ---- simple element-wise ops ----

__global__ void k_mul(float *dst, const float *a, const float *b, int64_t n) {
	MTL_FOR(int64_t, i, n) dst[i] = a[i] * b[i];
}

__global__ void k_axpy(float alpha, const float *x, float *y, int64_t n) {
	MTL_FOR(int64_t, i, n) y[i] += alpha * x[i];
}

__global__ void k_scale(float *x, int64_t n, float alpha) {
	MTL_FOR(int64_t, i, n) x[i] *= alpha;
}

__global__ void k_equal(float *dst, const float *src, int64_t n, float value) {
	MTL_FOR(int64_t, i, n) dst[i] = src[i] == value ? 1.0f : 0.0f;
}

// Sigmoid without overflow for any x, in float64 like the CPU device.
__device__ __forceinline__ float sigmoid_stable(float x) {
	if (x >= 0.0f) return (float)(1.0 / (1.0 + exp(-(double)x)));
	double e = exp((double)x);
	return (float)(e / (1.0 + e));
}

__global__ void k_sigmoid(float *y, const float *x, int64_t n) {
	MTL_FOR(int64_t, i, n) y[i] = sigmoid_stable(x[i]);
}

extern "C" int mtlcuda_mul(mtlcuda_ctx *ctx, mtlcuda_dptr dst, mtlcuda_dptr a, mtlcuda_dptr b, int64_t n) {
	if (n <= 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_mul)(dptr<float>(dst), dptr<const float>(a),
	                                                           dptr<const float>(b), n);
	MTL_LAUNCHED(ctx, "mul");
	return MTL_OK;
}

extern "C" int mtlcuda_axpy(mtlcuda_ctx *ctx, float alpha, mtlcuda_dptr x, mtlcuda_dptr y, int64_t n) {
	if (n <= 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_axpy)(alpha, dptr<const float>(x), dptr<float>(y), n);
	MTL_LAUNCHED(ctx, "axpy");
	return MTL_OK;
}

extern "C" int mtlcuda_scale(mtlcuda_ctx *ctx, mtlcuda_dptr x, int64_t n, float alpha) {
	if (n <= 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_scale)(dptr<float>(x), n, alpha);
	MTL_LAUNCHED(ctx, "scale");
	return MTL_OK;
}

extern "C" int mtlcuda_equal_mask(mtlcuda_ctx *ctx, mtlcuda_dptr dst, mtlcuda_dptr src, int64_t n, float value) {
	if (n <= 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_equal)(dptr<float>(dst), dptr<const float>(src), n, value);
	MTL_LAUNCHED(ctx, "equal_mask");
	return MTL_OK;
}

extern "C" int mtlcuda_sigmoid(mtlcuda_ctx *ctx, mtlcuda_dptr y, mtlcuda_dptr x, int64_t n) {
	if (n <= 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n, 4), kThreads, 0, ctx->compute, k_sigmoid)(dptr<float>(y), dptr<const float>(x), n);
	MTL_LAUNCHED(ctx, "sigmoid");
	return MTL_OK;
}

// ---- column copies (concat / split along features) ----

template <typename I, bool ACC>
__global__ void k_copy_cols(float *dst, I dst_cols, I dst_col, const float *src, I src_cols, I src_col, I width,
                            I total) {
	MTL_FOR(I, i, total) {
		I r = i / width;
		I j = i - r * width;
		float v = src[r * src_cols + src_col + j];
		float *d = dst + r * dst_cols + dst_col + j;
		*d = ACC ? *d + v : v;
	}
}

extern "C" int mtlcuda_copy_cols(mtlcuda_ctx *ctx, mtlcuda_dptr dst, int dst_cols, int dst_col, mtlcuda_dptr src, int src_cols,
                             int src_col, int64_t rows, int width, int accumulate) {
	MTL_REQUIRE(ctx, rows >= 0 && width >= 0 && dst_col >= 0 && src_col >= 0 && dst_col + width <= dst_cols &&
	                     src_col + width <= src_cols,
	            "copy_cols: %d columns from column %d of %d to column %d of %d", width, src_col, src_cols, dst_col,
	            dst_cols);
	int64_t total = rows * width;
	if (total == 0) return MTL_OK;
	MTL_ENTER(ctx);
	unsigned grid = mtlcuda_grid(ctx, total, 4);
	float *d = dptr<float>(dst);
	const float *s = dptr<const float>(src);
	// The largest index touched is rows*max(cols); 32-bit indices when it fits.
	int64_t span = rows * (int64_t)(dst_cols > src_cols ? dst_cols : src_cols);
	if (fits32(span)) {
		if (accumulate)
			MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_copy_cols<int, true>)(d, dst_cols, dst_col, s, src_cols, src_col,
			                                                             width, (int)total);
		else
			MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_copy_cols<int, false>)(d, dst_cols, dst_col, s, src_cols, src_col,
			                                                              width, (int)total);
	} else {
		if (accumulate)
			MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_copy_cols<int64_t, true>)(d, dst_cols, dst_col, s, src_cols,
			                                                                 src_col, width, total);
		else
			MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_copy_cols<int64_t, false>)(d, dst_cols, dst_col, s, src_cols,
			                                                                  src_col, width, total);
	}
	MTL_LAUNCHED(ctx, "copy_cols");
	return MTL_OK;
}

// ---- softmax ----

__device__ __forceinline__ float warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

__device__ __forceinline__ double warp_sum(double v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

// One warp per row: the row maximum, exp((x - max) / T) summed in float64,
// then normalised (the CPU device's order of operations).
__global__ void k_softmax(float *y, const float *x, int64_t rows, int cols, float inv_t) {
	int lane = threadIdx.x & 31;
	int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
	for (int64_t r = warp; r < rows; r += warps) {
		const float *xr = x + r * cols;
		float *yr = y + r * cols;
		float mx = -INFINITY;
		for (int j = lane; j < cols; j += 32) mx = fmaxf(mx, xr[j]);
		mx = warp_max(mx);
		double sum = 0;
		for (int j = lane; j < cols; j += 32) {
			double e = exp((double)((xr[j] - mx) * inv_t));
			yr[j] = (float)e;
			sum += e;
		}
		sum = warp_sum(sum);
		double inv = 1.0 / sum;
		for (int j = lane; j < cols; j += 32) yr[j] = (float)((double)yr[j] * inv);
	}
}

// dx = y * (dy - <dy, y>) / T, the dot product in float64.
__global__ void k_softmax_backward(float *dx, const float *dy, const float *y, int64_t rows, int cols, float inv_t) {
	int lane = threadIdx.x & 31;
	int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
	for (int64_t r = warp; r < rows; r += warps) {
		const float *yr = y + r * cols;
		const float *dyr = dy + r * cols;
		float *dxr = dx + r * cols;
		double dot = 0;
		for (int j = lane; j < cols; j += 32) dot += (double)yr[j] * (double)dyr[j];
		float d = (float)warp_sum(dot);
		for (int j = lane; j < cols; j += 32) dxr[j] = inv_t * yr[j] * (dyr[j] - d);
	}
}

// Grid for one warp per row.
static unsigned warp_grid(const mtlcuda_ctx *ctx, int64_t rows) { return mtlcuda_grid(ctx, rows * 32); }

extern "C" int mtlcuda_softmax_rows(mtlcuda_ctx *ctx, mtlcuda_dptr y, mtlcuda_dptr x, int64_t rows, int cols, float temperature) {
	MTL_REQUIRE(ctx, rows >= 0 && cols >= 0, "softmax: negative size");
	MTL_REQUIRE(ctx, temperature > 0 || temperature < 0, "softmax: temperature must not be 0");
	if (rows == 0 || cols == 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(warp_grid(ctx, rows), kThreads, 0, ctx->compute, k_softmax)(dptr<float>(y), dptr<const float>(x), rows, cols,
	                                                                1.0f / temperature);
	MTL_LAUNCHED(ctx, "softmax");
	return MTL_OK;
}

extern "C" int mtlcuda_softmax_backward(mtlcuda_ctx *ctx, mtlcuda_dptr dx, mtlcuda_dptr dy, mtlcuda_dptr y, int64_t rows, int cols,
                                    float temperature) {
	MTL_REQUIRE(ctx, rows >= 0 && cols >= 0, "softmax_backward: negative size");
	MTL_REQUIRE(ctx, temperature > 0 || temperature < 0, "softmax_backward: temperature must not be 0");
	if (rows == 0 || cols == 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(warp_grid(ctx, rows), kThreads, 0, ctx->compute, k_softmax_backward)(
	    dptr<float>(dx), dptr<const float>(dy), dptr<const float>(y), rows, cols, 1.0f / temperature);
	MTL_LAUNCHED(ctx, "softmax_backward");
	return MTL_OK;
}

// ---- gate combine ----

// Expert pointers travel by value in the kernel parameters, so a launch
// needs no host-to-device copy and can be captured in a graph.
struct expert_ptrs {
	const float *x[MTL_MAX_EXPERTS];
	float *dx[MTL_MAX_EXPERTS];
};

// out[b, j] (+)= sum_{e < ne} w[b, e0+e] * x_e[b, j], experts in order.
template <typename I>
__global__ void k_gate_combine(float *out, const float *w, expert_ptrs ex, int ne, int e0, int wcols, I d, I total,
                               bool accumulate) {
	MTL_FOR(I, i, total) {
		I b = i / d;
		const float *wb = w + b * wcols + e0;
		float acc = accumulate ? out[i] : wb[0] * ex.x[0][i];
		for (int e = accumulate ? 0 : 1; e < ne; e++) acc += wb[e] * ex.x[e][i];
		out[i] = acc;
	}
}

extern "C" int mtlcuda_gate_combine(mtlcuda_ctx *ctx, mtlcuda_dptr out, mtlcuda_dptr w, const mtlcuda_dptr *experts, int num_experts,
                                int64_t rows, int d) {
	MTL_REQUIRE(ctx, num_experts > 0 && rows >= 0 && d >= 0, "gate_combine: %d experts, %lld rows, width %d",
	            num_experts, (long long)rows, d);
	int64_t total = rows * d;
	if (total == 0) return MTL_OK;
	MTL_ENTER(ctx);
	unsigned grid = mtlcuda_grid(ctx, total, 2);
	for (int e0 = 0; e0 < num_experts; e0 += MTL_MAX_EXPERTS) {
		int ne = num_experts - e0 < MTL_MAX_EXPERTS ? num_experts - e0 : MTL_MAX_EXPERTS;
		expert_ptrs p{};
		for (int e = 0; e < ne; e++) p.x[e] = dptr<const float>(experts[e0 + e]);
		bool acc = e0 > 0;
		if (fits32(total) && fits32(rows * num_experts))
			MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_gate_combine<int>)(dptr<float>(out), dptr<const float>(w), p, ne,
			                                                         e0, num_experts, d, (int)total, acc);
		else
			MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_gate_combine<int64_t>)(dptr<float>(out), dptr<const float>(w), p,
			                                                             ne, e0, num_experts, d, total, acc);
		MTL_LAUNCHED(ctx, "gate_combine");
	}
	return MTL_OK;
}

// One warp per row b: dw[b, e0+e] = <dout[b], x_e[b]> (float32, like the CPU
// device) and dx_e[b] += w[b, e0+e] * dout[b].
__global__ void k_gate_combine_backward(const float *dout, const float *w, expert_ptrs ex, float *dw, int ne, int e0,
                                        int wcols, int64_t rows, int d) {
	int lane = threadIdx.x & 31;
	int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
	for (int64_t b = warp; b < rows; b += warps) {
		const float *g = dout + b * d;
		for (int e = 0; e < ne; e++) {
			const float *x = ex.x[e] + b * d;
			float *dx = ex.dx[e] + b * d;
			float we = w[b * wcols + e0 + e];
			float dot = 0;
			for (int j = lane; j < d; j += 32) {
				float gj = g[j];
				dot += gj * x[j];
				dx[j] += we * gj;
			}
			dot = warp_sum(dot);
			if (lane == 0) dw[b * wcols + e0 + e] = dot;
		}
	}
}

extern "C" int mtlcuda_gate_combine_backward(mtlcuda_ctx *ctx, mtlcuda_dptr dout, mtlcuda_dptr w, const mtlcuda_dptr *experts,
                                         mtlcuda_dptr dw, const mtlcuda_dptr *dexperts, int num_experts, int64_t rows, int d) {
	MTL_REQUIRE(ctx, num_experts > 0 && rows >= 0 && d >= 0, "gate_combine_backward: %d experts, %lld rows, width %d",
	            num_experts, (long long)rows, d);
	if (rows == 0) return MTL_OK;
	MTL_ENTER(ctx);
	if (d == 0) return mtlcuda_memset(ctx, dw, 0, (size_t)rows * num_experts * 4);
	for (int e0 = 0; e0 < num_experts; e0 += MTL_MAX_EXPERTS) {
		int ne = num_experts - e0 < MTL_MAX_EXPERTS ? num_experts - e0 : MTL_MAX_EXPERTS;
		expert_ptrs p{};
		for (int e = 0; e < ne; e++) {
			p.x[e] = dptr<const float>(experts[e0 + e]);
			p.dx[e] = dptr<float>(dexperts[e0 + e]);
		}
		MTL_LAUNCH(warp_grid(ctx, rows), kThreads, 0, ctx->compute, k_gate_combine_backward)(
		    dptr<const float>(dout), dptr<const float>(w), p, dptr<float>(dw), ne, e0, num_experts, rows, d);
		MTL_LAUNCHED(ctx, "gate_combine_backward");
	}
	return MTL_OK;
}
