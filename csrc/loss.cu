// loss.cu - BCE-with-logits, MSE and sum-of-squares with their gradients.
//
// The loss is reduced deterministically and in float64: every block writes
// its partial sum to ctx->partials, then a single block adds the partials in
// a fixed order and adds scale*total to loss[0]. No atomics, so the same
// inputs give the same bits on every run, and the two kernels stay on the
// compute stream (no host synchronisation, graph-capturable).
#include <cmath>

#include "internal.cuh"

enum { LOSS_BCE = 0, LOSS_MSE = 1, LOSS_SUMSQ = 2 };

__device__ __forceinline__ double block_sum(double v) {
	__shared__ double sh[kThreads / 32];
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	if (lane == 0) sh[warp] = v;
	__syncthreads();
	double t = 0;
	if (warp == 0) {
		t = lane < kThreads / 32 ? sh[lane] : 0.0;
		for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
	}
	return t; // valid in thread 0
}

template <int KIND>
__global__ void __launch_bounds__(kThreads)
    k_loss_partial(double *partials, float *dz, const float *z, const float *y, const float *w, int64_t n,
                   float scale) {
	double acc = 0;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
		float zi = z[i];
		if (KIND == LOSS_SUMSQ) {
			acc += (double)zi * (double)zi;
			continue;
		}
		float wi = w ? w[i] : 1.0f;
		float yi = y[i];
		if (KIND == LOSS_BCE) {
			double zf = zi, yf = yi;
			// max(z,0) - z*y + log(1+exp(-|z|)): no overflow for any z.
			double l = fmax(zf, 0.0) - zf * yf + log1p(exp(-fabs(zf)));
			acc += (double)wi * l;
			float s;
			if (zi >= 0.0f) {
				s = (float)(1.0 / (1.0 + exp(-zf)));
			} else {
				double e = exp(zf);
				s = (float)(e / (1.0 + e));
			}
			dz[i] = scale * wi * (s - yi);
		} else {
			float d = zi - yi;
			acc += (double)wi * (double)d * (double)d;
			dz[i] = 2.0f * scale * wi * d;
		}
	}
	double t = block_sum(acc);
	if (threadIdx.x == 0) partials[blockIdx.x] = t;
}

__global__ void __launch_bounds__(kThreads) k_loss_final(float *loss, const double *partials, int nblocks, float scale) {
	double acc = 0;
	for (int i = threadIdx.x; i < nblocks; i += blockDim.x) acc += partials[i];
	double t = block_sum(acc);
	if (threadIdx.x == 0) loss[0] = (float)((double)loss[0] + (double)scale * t);
}

template <int KIND>
static int run_loss(mtlcuda_ctx *ctx, const char *name, mtlcuda_dptr loss, mtlcuda_dptr dz, mtlcuda_dptr z, mtlcuda_dptr y, mtlcuda_dptr w,
                    int64_t n, float scale) {
	MTL_REQUIRE(ctx, n >= 0, "%s: negative length", name);
	MTL_ENTER(ctx);
	unsigned grid = mtlcuda_grid(ctx, n, 8);
	if (grid > (unsigned)kMaxReduceBlocks) grid = kMaxReduceBlocks;
	if (n > 0) {
		MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_loss_partial<KIND>)(ctx->partials, dptr<float>(dz), dptr<const float>(z),
		                                                          dptr<const float>(y), dptr<const float>(w), n, scale);
		MTL_LAUNCHED(ctx, "loss_partial");
		MTL_LAUNCH(1, kThreads, 0, ctx->compute, k_loss_final)(dptr<float>(loss), ctx->partials, (int)grid, scale);
		MTL_LAUNCHED(ctx, "loss_final");
	}
	return MTL_OK;
}

extern "C" int mtlcuda_bce_with_logits(mtlcuda_ctx *ctx, mtlcuda_dptr loss, mtlcuda_dptr dz, mtlcuda_dptr z, mtlcuda_dptr y, mtlcuda_dptr w,
                                   int64_t n, float scale) {
	return run_loss<LOSS_BCE>(ctx, "bce_with_logits", loss, dz, z, y, w, n, scale);
}

extern "C" int mtlcuda_mse(mtlcuda_ctx *ctx, mtlcuda_dptr loss, mtlcuda_dptr dz, mtlcuda_dptr z, mtlcuda_dptr y, mtlcuda_dptr w, int64_t n,
                       float scale) {
	return run_loss<LOSS_MSE>(ctx, "mse", loss, dz, z, y, w, n, scale);
}

extern "C" int mtlcuda_sum_squares(mtlcuda_ctx *ctx, mtlcuda_dptr loss, mtlcuda_dptr x, int64_t n, float scale) {
	return run_loss<LOSS_SUMSQ>(ctx, "sum_squares", loss, 0, x, 0, 0, n, scale);
}
