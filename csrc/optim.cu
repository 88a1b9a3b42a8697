// optim.cu - dense optimizers over many tensors per launch (multi-tensor
// apply) and sparse (lazy) row updates of embedding tables. The formulas are
// the CPU device's (kernels/cpu.go: adamRow, adagradRow, sgdRow).
#include <cmath>

#include "internal.cuh"

// Elements one block updates before moving to its next chunk.
constexpr int64_t kChunk = 4096;

struct multi_args {
	mtlcuda_opt_tensor t[MTL_MAX_MULTI_TENSORS];
	int64_t chunk_start[MTL_MAX_MULTI_TENSORS + 1]; // prefix sums of chunks per tensor
	int count;
};

__device__ __forceinline__ void adam_elem(float *p, const float *g, float *m, float *v, int64_t i, float lr_t, float b1,
                                          float b2, float eps, float l2x2) {
	float pi = p[i];
	float gi = g[i] + l2x2 * pi;
	float mi = b1 * m[i] + (1.0f - b1) * gi;
	float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
	m[i] = mi;
	v[i] = vi;
	p[i] = pi - lr_t * mi / (sqrtf(vi) + eps);
}

__device__ __forceinline__ void adagrad_elem(float *p, const float *g, float *acc, int64_t i, float lr, float eps,
                                             float l2x2) {
	float pi = p[i];
	float gi = g[i] + l2x2 * pi;
	float a = acc[i] + gi * gi;
	acc[i] = a;
	p[i] = pi - lr * gi / (sqrtf(a) + eps);
}

__device__ __forceinline__ void sgd_elem(float *p, const float *g, int64_t i, float lr, float l2x2) {
	float pi = p[i];
	p[i] = pi - lr * (g[i] + l2x2 * pi);
}

// One launch updates up to MTL_MAX_MULTI_TENSORS tensors: the chunks of all
// of them are numbered consecutively and block c finds its tensor in the
// prefix table (a short linear scan: few tensors per launch).
template <int OPT>
__global__ void __launch_bounds__(kThreads)
    k_multi(multi_args a, int64_t total_chunks, float lr, float b1, float b2, float eps, float l2x2,
            const mtlcuda_step_params *sp) {
	if (sp) lr = OPT == MTL_OPT_ADAM ? sp->lr_t : sp->lr;
	for (int64_t c = blockIdx.x; c < total_chunks; c += gridDim.x) {
		int t = 0;
		while (t + 1 < a.count && a.chunk_start[t + 1] <= c) t++;
		const mtlcuda_opt_tensor &ts = a.t[t];
		int64_t lo = (c - a.chunk_start[t]) * kChunk;
		int64_t hi = lo + kChunk < ts.n ? lo + kChunk : ts.n;
		float *p = dptr<float>(ts.param);
		const float *g = dptr<const float>(ts.grad);
		for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
			if (OPT == MTL_OPT_ADAM)
				adam_elem(p, g, dptr<float>(ts.m), dptr<float>(ts.v), i, lr, b1, b2, eps, l2x2);
			else if (OPT == MTL_OPT_ADAGRAD)
				adagrad_elem(p, g, dptr<float>(ts.m), i, lr, eps, l2x2);
			else
				sgd_elem(p, g, i, lr, l2x2);
		}
	}
}

template <int OPT>
static int run_multi(mtlcuda_ctx *ctx, const char *name, const mtlcuda_opt_tensor *tensors, int count, float lr, float b1,
                     float b2, float eps, float l2, mtlcuda_dptr sp = 0) {
	MTL_REQUIRE(ctx, count >= 0, "%s: negative tensor count", name);
	MTL_ENTER(ctx);
	int i = 0;
	while (i < count) {
		multi_args a{};
		int64_t chunks = 0;
		while (i < count && a.count < MTL_MAX_MULTI_TENSORS) {
			const mtlcuda_opt_tensor &t = tensors[i++];
			MTL_REQUIRE(ctx, t.n >= 0, "%s: tensor %d has negative length", name, i - 1);
			if (t.n == 0) continue;
			a.t[a.count] = t;
			a.chunk_start[a.count] = chunks;
			chunks += (t.n + kChunk - 1) / kChunk;
			a.count++;
		}
		if (a.count == 0) continue;
		a.chunk_start[a.count] = chunks;
		int64_t cap = (int64_t)ctx->sm_count * 8;
		unsigned grid = (unsigned)(chunks < cap ? chunks : cap);
		MTL_LAUNCH(grid, kThreads, 0, ctx->compute, k_multi<OPT>)(a, chunks, lr, b1, b2, eps, 2.0f * l2,
		                                                       dptr<const mtlcuda_step_params>(sp));
		MTL_LAUNCHED(ctx, "multi_tensor_optimizer");
	}
	return MTL_OK;
}

extern "C" int mtlcuda_adam(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_adam_params *p) {
	return run_multi<MTL_OPT_ADAM>(ctx, "adam", tensors, count, p->lr_t, p->beta1, p->beta2, p->eps, p->l2);
}

extern "C" int mtlcuda_adagrad(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_adagrad_params *p) {
	return run_multi<MTL_OPT_ADAGRAD>(ctx, "adagrad", tensors, count, p->lr, 0, 0, p->eps, p->l2);
}

extern "C" int mtlcuda_sgd(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_sgd_params *p) {
	return run_multi<MTL_OPT_SGD>(ctx, "sgd", tensors, count, p->lr, 0, 0, 0, p->l2);
}

extern "C" int mtlcuda_adam_sp(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_adam_params *p,
                           mtlcuda_dptr sp) {
	MTL_REQUIRE(ctx, sp != 0, "adam_sp: no step parameters");
	return run_multi<MTL_OPT_ADAM>(ctx, "adam_sp", tensors, count, p->lr_t, p->beta1, p->beta2, p->eps, p->l2, sp);
}

extern "C" int mtlcuda_adagrad_sp(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_adagrad_params *p,
                              mtlcuda_dptr sp) {
	MTL_REQUIRE(ctx, sp != 0, "adagrad_sp: no step parameters");
	return run_multi<MTL_OPT_ADAGRAD>(ctx, "adagrad_sp", tensors, count, p->lr, 0, 0, p->eps, p->l2, sp);
}

extern "C" int mtlcuda_sgd_sp(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_sgd_params *p,
                          mtlcuda_dptr sp) {
	MTL_REQUIRE(ctx, sp != 0, "sgd_sp: no step parameters");
	return run_multi<MTL_OPT_SGD>(ctx, "sgd_sp", tensors, count, p->lr, 0, 0, 0, p->l2, sp);
}

// ---- sparse rows ----

// Thread per element of values [n, dim]; row i of the gradient updates table
// row rows[i] (skipped when outside the table: the -1 padding).
template <int OPT>
__global__ void k_sparse(float *table, float *s1, float *s2, int64_t table_rows, int dim, const int *rows,
                         const float *values, int64_t n, float lr, float b1, float b2, float eps, float l2x2) {
	int64_t total = n * dim;
	for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)blockDim.x * gridDim.x) {
		int64_t i = k / dim;
		int j = (int)(k - i * dim);
		int r = rows[i];
		if (r < 0 || r >= table_rows) continue;
		int64_t at = (int64_t)r * dim + j;
		float g = values[k];
		float pi = table[at];
		float gi = g + l2x2 * pi;
		if (OPT == MTL_OPT_ADAM) {
			float mi = b1 * s1[at] + (1.0f - b1) * gi;
			float vi = b2 * s2[at] + (1.0f - b2) * gi * gi;
			s1[at] = mi;
			s2[at] = vi;
			table[at] = pi - lr * mi / (sqrtf(vi) + eps);
		} else if (OPT == MTL_OPT_ADAGRAD) {
			float a = s1[at] + gi * gi;
			s1[at] = a;
			table[at] = pi - lr * gi / (sqrtf(a) + eps);
		} else {
			table[at] = pi - lr * gi;
		}
	}
}

template <int OPT>
static int run_sparse(mtlcuda_ctx *ctx, const char *name, mtlcuda_dptr table, mtlcuda_dptr s1, mtlcuda_dptr s2, int64_t table_rows,
                      int dim, mtlcuda_dptr rows, mtlcuda_dptr values, int64_t n, float lr, float b1, float b2, float eps,
                      float l2) {
	MTL_REQUIRE(ctx, n >= 0 && dim >= 0 && table_rows >= 0, "%s: negative size", name);
	if (n == 0 || dim == 0) return MTL_OK;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, n * dim, 2), kThreads, 0, ctx->compute, k_sparse<OPT>)(
	    dptr<float>(table), dptr<float>(s1), dptr<float>(s2), table_rows, dim, dptr<const int>(rows),
	    dptr<const float>(values), n, lr, b1, b2, eps, 2.0f * l2);
	MTL_LAUNCHED(ctx, "sparse_optimizer");
	return MTL_OK;
}

extern "C" int mtlcuda_sparse_adam(mtlcuda_ctx *ctx, mtlcuda_dptr table, mtlcuda_dptr m, mtlcuda_dptr v, int64_t table_rows, int dim,
                               mtlcuda_dptr rows, mtlcuda_dptr values, int64_t n, const mtlcuda_adam_params *p) {
	return run_sparse<MTL_OPT_ADAM>(ctx, "sparse_adam", table, m, v, table_rows, dim, rows, values, n, p->lr_t,
	                                p->beta1, p->beta2, p->eps, p->l2);
}

extern "C" int mtlcuda_sparse_adagrad(mtlcuda_ctx *ctx, mtlcuda_dptr table, mtlcuda_dptr acc, int64_t table_rows, int dim,
                                  mtlcuda_dptr rows, mtlcuda_dptr values, int64_t n, const mtlcuda_adagrad_params *p) {
	return run_sparse<MTL_OPT_ADAGRAD>(ctx, "sparse_adagrad", table, acc, 0, table_rows, dim, rows, values, n, p->lr,
	                                   0, 0, p->eps, p->l2);
}

extern "C" int mtlcuda_sparse_sgd(mtlcuda_ctx *ctx, mtlcuda_dptr table, int64_t table_rows, int dim, mtlcuda_dptr rows,
                              mtlcuda_dptr values, int64_t n, const mtlcuda_sgd_params *p) {
	return run_sparse<MTL_OPT_SGD>(ctx, "sparse_sgd", table, 0, 0, table_rows, dim, rows, values, n, p->lr, 0, 0, 0,
	                               p->l2);
}
