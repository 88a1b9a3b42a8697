// fused.cu - fused kernels of the training step and of evaluation:
//  - the gate: softmax with temperature + weighted sum of the experts in one
//    kernel, and its backward (expert gradients, gate-weight gradient and
//    softmax backward) in one kernel;
//  - the multi-task loss: BCE-with-logits and MSE with per-sample weights
//    (positive-class weight, weight column, sample-space mask) and loss
//    weights, for every task in one launch, with the gradients of every task
//    and the loss accumulated into device scalars;
//  - metric reductions: per-task float64 sums (counts, logloss, confusion
//    counts, squared and absolute errors) accumulated on the device across
//    evaluation batches.
//
// The reductions are deterministic: each block writes its partial sums, and
// the last block of the launch (found with an atomic ticket after a memory
// fence) adds them in a fixed order. So one launch does the whole job, no
// host synchronisation is needed, and the launch can be captured in a graph.
#include <cmath>

#include "internal.cuh"

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float fwarp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
	return v;
}

__device__ __forceinline__ float fwarp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
	return v;
}

__device__ __forceinline__ double dwarp_sum(double v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
	return v;
}

// Sum over the block, valid in thread 0; sh is reusable after the call.
__device__ __forceinline__ double block_sum(double v, double *sh) {
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	v = dwarp_sum(v);
	if (lane == 0) sh[warp] = v;
	__syncthreads();
	double t = 0;
	if (threadIdx.x == 0)
		for (int w = 0; w < kWarps; w++) t += sh[w];
	__syncthreads();
	return t;
}

// Expert pointers travel by value in the kernel parameters (no upload,
// graph-capturable).
struct gate_ptrs {
	const float *x[MTL_MAX_EXPERTS];
	float *dx[MTL_MAX_EXPERTS];
};

// One warp per row b, lane e holding expert e (ne <= 32): the softmax of the
// row's logits (maximum, exp((x - max)/T) summed in float64, normalised:
// the order of operations of k_softmax), then out[b, j] = sum_e w_e *
// x_e[b, j] with the weights in shared memory, experts in order (the order
// of k_gate_combine).
__global__ void __launch_bounds__(kThreads)
    k_gate_forward(float *out, float *w, const float *logits, gate_ptrs ex, int ne, int64_t rows, int d,
                   float inv_t) {
	__shared__ float sw[kWarps][32];
	int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
	int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
	for (int64_t r = warp; r < rows; r += warps) {
		float xl = lane < ne ? logits[r * ne + lane] : -INFINITY;
		float mx = fwarp_max(xl);
		double e = lane < ne ? exp((double)((xl - mx) * inv_t)) : 0.0;
		double sum = dwarp_sum(e);
		float we = (float)((double)(float)e * (1.0 / sum));
		if (lane < ne) w[r * ne + lane] = we;
		sw[wib][lane] = we;
		__syncwarp();
		const int64_t base = r * d;
		for (int j = lane; j < d; j += 32) {
			float acc = sw[wib][0] * ex.x[0][base + j];
			for (int k = 1; k < ne; k++) acc += sw[wib][k] * ex.x[k][base + j];
			out[base + j] = acc;
		}
		__syncwarp();
	}
}

// One warp per row b: dw_e = <dout[b], x_e[b]> (float32, lane partials then
// a warp sum, as k_gate_combine_backward) kept by lane e, dx_e[b] += w_e *
// dout[b], then the softmax backward dlogits_e = w_e * (dw_e - <w, dw>) / T
// with the dot product in float64 (as k_softmax_backward).
__global__ void __launch_bounds__(kThreads)
    k_gate_backward(float *dlogits, const float *dout, const float *w, gate_ptrs ex, int ne, int64_t rows, int d,
                    float inv_t) {
	int lane = threadIdx.x & 31;
	int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
	for (int64_t r = warp; r < rows; r += warps) {
		const int64_t base = r * d;
		const float *g = dout + base;
		float wl = lane < ne ? w[r * ne + lane] : 0.0f;
		float dwl = 0.0f;
		for (int k = 0; k < ne; k++) {
			float wk = __shfl_sync(kFull, wl, k);
			const float *x = ex.x[k] + base;
			float *dx = ex.dx[k] + base;
			float dot = 0.0f;
			for (int j = lane; j < d; j += 32) {
				float gj = g[j];
				dot += gj * x[j];
				dx[j] += wk * gj;
			}
			dot = fwarp_sum(dot);
			if (lane == k) dwl = dot;
		}
		float s = (float)dwarp_sum(lane < ne ? (double)wl * (double)dwl : 0.0);
		if (lane < ne) dlogits[r * ne + lane] = inv_t * wl * (dwl - s);
	}
}

unsigned warp_grid(const mtlcuda_ctx *ctx, int64_t rows) { return mtlcuda_grid(ctx, rows * 32); }

// ---- multi-task loss ----

struct loss_tasks {
	mtlcuda_loss_task t[MTL_MAX_LOSS_TASKS];
};

// Blocks per task of the fused reductions: about 4 rows per thread, at most
// kFusedBlocks.
unsigned fused_blocks(int64_t rows) {
	int64_t b = (rows + (int64_t)kThreads * 4 - 1) / ((int64_t)kThreads * 4);
	if (b > kFusedBlocks) b = kFusedBlocks;
	if (b < 1) b = 1;
	return (unsigned)b;
}

// Grid (blocks, tasks): block (x, t) handles a stride of task t's rows.
__global__ void __launch_bounds__(kThreads)
    k_multi_task_loss(loss_tasks tl, int64_t rows, float scale, float *task_loss, float *total, double *partials,
                      unsigned *ticket) {
	__shared__ double sh[kWarps];
	__shared__ double lam[MTL_MAX_LOSS_TASKS];
	__shared__ bool last;
	const mtlcuda_loss_task &tk = tl.t[blockIdx.y];
	const float *z = dptr<const float>(tk.z), *y = dptr<const float>(tk.y);
	const float *wcol = dptr<const float>(tk.weight), *space = dptr<const float>(tk.space);
	float *dz = dptr<float>(tk.dz);
	const float pos = tk.pos_weight, lambda = tk.lambda;
	const bool bce = tk.kind == MTL_LOSS_BCE;
	double acc = 0;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < rows; i += (int64_t)blockDim.x * gridDim.x) {
		float zi = z[i], yi = y[i];
		// w = pos * weight * space, built in the order of the unfused ops
		float wi = 1.0f;
		if (pos != 1.0f) wi = 1.0f + (pos - 1.0f) * yi;
		if (wcol) wi *= wcol[i];
		if (space) wi *= space[i] == 1.0f ? 1.0f : 0.0f;
		float g;
		if (bce) {
			double zf = zi, yf = yi;
			// max(z,0) - z*y + log1p(exp(-|z|)): no overflow for any z.
			acc += (double)wi * (fmax(zf, 0.0) - zf * yf + log1p(exp(-fabs(zf))));
			float s;
			if (zi >= 0.0f) {
				s = (float)(1.0 / (1.0 + exp(-zf)));
			} else {
				double e = exp(zf);
				s = (float)(e / (1.0 + e));
			}
			g = scale * wi * (s - yi);
		} else {
			float d = zi - yi;
			acc += (double)wi * (double)d * (double)d;
			g = 2.0f * scale * wi * d;
		}
		if (lambda != 1.0f) g *= lambda;
		dz[i] = g;
	}
	double t = block_sum(acc, sh);
	if (threadIdx.x == 0) {
		partials[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = t;
		__threadfence();
		last = atomicAdd(ticket, 1u) == gridDim.x * gridDim.y - 1;
	}
	__syncthreads();
	if (!last) return;
	// The last block: every partial is visible (fence before the ticket).
	__threadfence();
	const int nt = gridDim.y;
	if (threadIdx.x < nt) {
		volatile const double *p = partials + (size_t)threadIdx.x * gridDim.x;
		double s = 0;
		for (unsigned b = 0; b < gridDim.x; b++) s += p[b];
		double v = (double)scale * s;
		if (task_loss) task_loss[threadIdx.x] = (float)((double)task_loss[threadIdx.x] + v);
		lam[threadIdx.x] = (double)tl.t[threadIdx.x].lambda * v;
	}
	__syncthreads();
	if (threadIdx.x == 0) {
		if (total) {
			double tot = 0;
			for (int k = 0; k < nt; k++) tot += lam[k];
			total[0] = (float)((double)total[0] + tot);
		}
		*ticket = 0; // ready for the next launch (stream order)
	}
}

// ---- metrics ----

struct metric_tasks {
	mtlcuda_metric_task t[MTL_MAX_METRIC_TASKS];
};

__global__ void __launch_bounds__(kThreads)
    k_metrics(metric_tasks tl, int64_t rows, double eps, float threshold, double *acc, double *partials,
              unsigned *ticket) {
	__shared__ double sh[kWarps][MTL_METRIC_FIELDS];
	__shared__ bool last;
	const mtlcuda_metric_task &tk = tl.t[blockIdx.y];
	const float *pred = dptr<const float>(tk.pred), *label = dptr<const float>(tk.label);
	const float *mask = dptr<const float>(tk.mask);
	const bool binary = tk.binary != 0;
	double s[MTL_METRIC_FIELDS];
#pragma unroll
	for (int f = 0; f < MTL_METRIC_FIELDS; f++) s[f] = 0;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < rows; i += (int64_t)blockDim.x * gridDim.x) {
		if (mask && mask[i] != 1.0f) continue;
		float p = pred[i], y = label[i];
		if (binary) {
			if (!(y == 0.0f || y == 1.0f)) {
				s[MTL_METRIC_BAD_LABELS] += 1;
				continue;
			}
			bool pos = y == 1.0f;
			s[MTL_METRIC_COUNT] += 1;
			s[MTL_METRIC_LABEL_SUM] += y;
			s[MTL_METRIC_POSITIVES] += pos ? 1 : 0;
			if (p != p) {
				s[MTL_METRIC_NAN] += 1;
				continue;
			}
			double pc = fmin(fmax((double)p, eps), 1.0 - eps);
			s[MTL_METRIC_LOGLOSS] += pos ? -log(pc) : -log(1.0 - pc);
			bool hit = p > threshold;
			s[MTL_METRIC_TP] += hit && pos ? 1 : 0;
			s[MTL_METRIC_FP] += hit && !pos ? 1 : 0;
			s[MTL_METRIC_FN] += !hit && pos ? 1 : 0;
			s[MTL_METRIC_TN] += !hit && !pos ? 1 : 0;
		} else {
			s[MTL_METRIC_COUNT] += 1;
			s[MTL_METRIC_LABEL_SUM] += y;
			if (p != p) {
				s[MTL_METRIC_NAN] += 1;
				continue;
			}
			double e = (double)p - (double)y;
			s[MTL_METRIC_SQ_ERR] += e * e;
			s[MTL_METRIC_ABS_ERR] += fabs(e);
		}
	}
	int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
#pragma unroll
	for (int f = 0; f < MTL_METRIC_FIELDS; f++) {
		double v = dwarp_sum(s[f]);
		if (lane == 0) sh[wib][f] = v;
	}
	__syncthreads();
	if (threadIdx.x < MTL_METRIC_FIELDS) {
		double v = 0;
		for (int w = 0; w < kWarps; w++) v += sh[w][threadIdx.x];
		partials[((size_t)blockIdx.y * gridDim.x + blockIdx.x) * MTL_METRIC_FIELDS + threadIdx.x] = v;
		__threadfence();
	}
	__syncthreads();
	if (threadIdx.x == 0) last = atomicAdd(ticket, 1u) == gridDim.x * gridDim.y - 1;
	__syncthreads();
	if (!last) return;
	__threadfence();
	const int n = gridDim.y * MTL_METRIC_FIELDS;
	for (int k = threadIdx.x; k < n; k += blockDim.x) {
		int t = k / MTL_METRIC_FIELDS, f = k - t * MTL_METRIC_FIELDS;
		volatile const double *p = partials + (size_t)t * gridDim.x * MTL_METRIC_FIELDS + f;
		double v = 0;
		for (unsigned b = 0; b < gridDim.x; b++) v += p[(size_t)b * MTL_METRIC_FIELDS];
		acc[k] += v;
	}
	if (threadIdx.x == 0) *ticket = 0;
}

__global__ void k_relu_strided(float *x, int64_t n, int64_t stride, int64_t total) {
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)blockDim.x * gridDim.x) {
		int64_t b = i / n;
		float *p = x + b * stride + (i - b * n);
		*p = fmaxf(*p, 0.0f);
	}
}

} // namespace

int mtlcuda_relu_strided(mtlcuda_ctx *ctx, mtlcuda_dptr x, int batch, int64_t n, int64_t stride) {
	int64_t total = (int64_t)batch * n;
	if (total <= 0) return MTL_OK;
	if (batch == 1) stride = 0;
	MTL_ENTER(ctx);
	MTL_LAUNCH(mtlcuda_grid(ctx, total, 4), kThreads, 0, ctx->compute, k_relu_strided)(dptr<float>(x), n, stride, total);
	MTL_LAUNCHED(ctx, "relu_strided");
	return MTL_OK;
}

// ---- entry points ----

extern "C" int mtlcuda_gate_forward(mtlcuda_ctx *ctx, mtlcuda_dptr out, mtlcuda_dptr w, mtlcuda_dptr logits, const mtlcuda_dptr *experts,
                                int num_experts, int64_t rows, int d, float temperature) {
	MTL_REQUIRE(ctx, num_experts > 0 && rows >= 0 && d >= 0, "gate_forward: %d experts, %lld rows, width %d",
	            num_experts, (long long)rows, d);
	MTL_REQUIRE(ctx, temperature > 0 || temperature < 0, "gate_forward: temperature must not be 0");
	MTL_REQUIRE(ctx, experts != nullptr, "gate_forward: no expert pointers");
	if (rows == 0) return MTL_OK;
	if (num_experts > MTL_MAX_EXPERTS) {
		int rc = mtlcuda_softmax_rows(ctx, w, logits, rows, num_experts, temperature);
		if (rc != MTL_OK) return rc;
		return mtlcuda_gate_combine(ctx, out, w, experts, num_experts, rows, d);
	}
	MTL_ENTER(ctx);
	gate_ptrs p{};
	for (int e = 0; e < num_experts; e++) p.x[e] = dptr<const float>(experts[e]);
	MTL_LAUNCH(warp_grid(ctx, rows), kThreads, 0, ctx->compute, k_gate_forward)(
	    dptr<float>(out), dptr<float>(w), dptr<const float>(logits), p, num_experts, rows, d, 1.0f / temperature);
	MTL_LAUNCHED(ctx, "gate_forward");
	return MTL_OK;
}

extern "C" int mtlcuda_gate_backward(mtlcuda_ctx *ctx, mtlcuda_dptr dlogits, mtlcuda_dptr dout, mtlcuda_dptr w, const mtlcuda_dptr *experts,
                                 const mtlcuda_dptr *dexperts, int num_experts, int64_t rows, int d, float temperature,
                                 mtlcuda_dptr dw_scratch) {
	MTL_REQUIRE(ctx, num_experts > 0 && rows >= 0 && d >= 0, "gate_backward: %d experts, %lld rows, width %d",
	            num_experts, (long long)rows, d);
	MTL_REQUIRE(ctx, temperature > 0 || temperature < 0, "gate_backward: temperature must not be 0");
	MTL_REQUIRE(ctx, experts != nullptr && dexperts != nullptr, "gate_backward: no expert pointers");
	if (rows == 0) return MTL_OK;
	if (num_experts > MTL_MAX_EXPERTS) {
		MTL_REQUIRE(ctx, dw_scratch != 0, "gate_backward: %d experts (more than %d) need dw scratch", num_experts,
		            MTL_MAX_EXPERTS);
		int rc = mtlcuda_gate_combine_backward(ctx, dout, w, experts, dw_scratch, dexperts, num_experts, rows, d);
		if (rc != MTL_OK) return rc;
		return mtlcuda_softmax_backward(ctx, dlogits, dw_scratch, w, rows, num_experts, temperature);
	}
	MTL_ENTER(ctx);
	gate_ptrs p{};
	for (int e = 0; e < num_experts; e++) {
		p.x[e] = dptr<const float>(experts[e]);
		p.dx[e] = dptr<float>(dexperts[e]);
	}
	MTL_LAUNCH(warp_grid(ctx, rows), kThreads, 0, ctx->compute, k_gate_backward)(
	    dptr<float>(dlogits), dptr<const float>(dout), dptr<const float>(w), p, num_experts, rows, d,
	    1.0f / temperature);
	MTL_LAUNCHED(ctx, "gate_backward");
	return MTL_OK;
}

extern "C" int mtlcuda_multi_task_loss(mtlcuda_ctx *ctx, mtlcuda_dptr task_loss, mtlcuda_dptr total, const mtlcuda_loss_task *tasks,
                                   int num_tasks, int64_t rows, float scale) {
	MTL_REQUIRE(ctx, num_tasks >= 0 && rows >= 0, "multi_task_loss: %d tasks, %lld rows", num_tasks,
	            (long long)rows);
	MTL_REQUIRE(ctx, tasks != nullptr || num_tasks == 0, "multi_task_loss: no task list");
	for (int t = 0; t < num_tasks; t++) {
		const mtlcuda_loss_task &k = tasks[t];
		MTL_REQUIRE(ctx, k.kind == MTL_LOSS_BCE || k.kind == MTL_LOSS_MSE, "multi_task_loss: task %d: unknown kind %d",
		            t, k.kind);
		MTL_REQUIRE(ctx, k.z != 0 && k.dz != 0 && k.y != 0, "multi_task_loss: task %d: z, dz and y are required", t);
	}
	if (rows == 0 || num_tasks == 0) return MTL_OK;
	MTL_ENTER(ctx);
	unsigned bx = fused_blocks(rows);
	for (int t0 = 0; t0 < num_tasks; t0 += MTL_MAX_LOSS_TASKS) {
		int nt = num_tasks - t0 < MTL_MAX_LOSS_TASKS ? num_tasks - t0 : MTL_MAX_LOSS_TASKS;
		loss_tasks p{};
		for (int t = 0; t < nt; t++) p.t[t] = tasks[t0 + t];
		float *tl = task_loss ? dptr<float>(task_loss) + t0 : nullptr;
		MTL_LAUNCH(dim3(bx, (unsigned)nt), kThreads, 0, ctx->compute, k_multi_task_loss)(
		    p, rows, scale, tl, dptr<float>(total), ctx->fused_partials, ctx->tickets + kTicketLoss);
		MTL_LAUNCHED(ctx, "multi_task_loss");
	}
	return MTL_OK;
}

extern "C" int mtlcuda_metric_accumulate(mtlcuda_ctx *ctx, mtlcuda_dptr acc, const mtlcuda_metric_task *tasks, int num_tasks,
                                     int64_t rows, double eps, float threshold) {
	MTL_REQUIRE(ctx, num_tasks >= 0 && rows >= 0, "metric_accumulate: %d tasks, %lld rows", num_tasks,
	            (long long)rows);
	MTL_REQUIRE(ctx, acc != 0 && acc % 8 == 0, "metric_accumulate: accumulator %#llx is not 8-byte aligned",
	            (unsigned long long)acc);
	MTL_REQUIRE(ctx, tasks != nullptr || num_tasks == 0, "metric_accumulate: no task list");
	MTL_REQUIRE(ctx, eps >= 0 && eps < 0.5, "metric_accumulate: eps %g outside [0, 0.5)", eps);
	for (int t = 0; t < num_tasks; t++)
		MTL_REQUIRE(ctx, tasks[t].pred != 0 && tasks[t].label != 0, "metric_accumulate: task %d: pred and label are required",
		            t);
	if (rows == 0 || num_tasks == 0) return MTL_OK;
	MTL_ENTER(ctx);
	unsigned bx = fused_blocks(rows);
	for (int t0 = 0; t0 < num_tasks; t0 += MTL_MAX_METRIC_TASKS) {
		int nt = num_tasks - t0 < MTL_MAX_METRIC_TASKS ? num_tasks - t0 : MTL_MAX_METRIC_TASKS;
		metric_tasks p{};
		for (int t = 0; t < nt; t++) p.t[t] = tasks[t0 + t];
		MTL_LAUNCH(dim3(bx, (unsigned)nt), kThreads, 0, ctx->compute, k_metrics)(
		    p, rows, eps, threshold, dptr<double>(acc) + (size_t)t0 * MTL_METRIC_FIELDS, ctx->fused_partials,
		    ctx->tickets + kTicketMetrics);
		MTL_LAUNCHED(ctx, "metric_accumulate");
	}
	return MTL_OK;
}
