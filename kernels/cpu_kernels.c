/* CPU kernels of mtlrank's CPU device.
 *
 * Written as plain loops over restrict pointers so that GCC vectorises them;
 * the hot ones are built for x86-64-v4 (AVX-512), x86-64-v3 (AVX2) and
 * baseline x86-64 and picked at load time (target_clones), so one binary runs
 * anywhere and uses the widest vectors the machine has. The file is built as
 * ISO C (-std=c11), which makes GCC keep every multiply and add separate
 * (-ffp-contract=off) even where the target has FMA: every clone rounds
 * exactly like the scalar code (and like Go), so results are identical on
 * every x86-64 machine. Reductions use a fixed number of lanes in a fixed
 * order for the same reason.
 *
 * GCC does not vectorise sqrtf while it may have to set errno, and cgo does
 * not accept -fno-math-errno (and target clones drop it when given by
 * pragma), so the optimizers, the only kernels with a square root, carry an
 * explicit AVX2 path, chosen at run time, with the scalar loop's exact order
 * of operations. */
#include "cpu_kernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

HOT void mtlcpu_fill(float *restrict x, long n, float v) {
	for (long i = 0; i < n; i++) x[i] = v;
}

HOT void mtlcpu_scale(float *restrict x, long n, float a) {
	for (long i = 0; i < n; i++) x[i] *= a;
}

HOT void mtlcpu_axpy(float *restrict y, const float *restrict x, long n, float a) {
	for (long i = 0; i < n; i++) y[i] += a * x[i];
}

/* dst may alias a or b, so no restrict here; each element is read before it
 * is written, which is all aliasing needs. */
HOT void mtlcpu_mul(float *dst, const float *a, const float *b, long n) {
	for (long i = 0; i < n; i++) dst[i] = a[i] * b[i];
}

HOT void mtlcpu_equal(float *restrict dst, const float *restrict src, long n, float v) {
	for (long i = 0; i < n; i++) dst[i] = src[i] == v ? 1.0f : 0.0f;
}

HOT void mtlcpu_relu_bwd(float *restrict dy, const float *restrict y, long n) {
	for (long i = 0; i < n; i++) dy[i] = y[i] > 0 ? dy[i] : 0.0f;
}

HOT void mtlcpu_bias_act(float *restrict x, const float *restrict bias, long rows, int n, int relu) {
	if (relu) {
		for (long r = 0; r < rows; r++) {
			float *restrict row = x + r * n;
			for (int j = 0; j < n; j++) {
				float v = row[j] + bias[j];
				row[j] = v > 0 ? v : 0.0f;
			}
		}
	} else {
		for (long r = 0; r < rows; r++) {
			float *restrict row = x + r * n;
			for (int j = 0; j < n; j++) row[j] += bias[j];
		}
	}
}

/* mtlcpu_bias_act over rows with leading dimension ld; bias may be NULL. */
HOT void mtlcpu_bias_act_ld(float *restrict x, long ld, const float *restrict bias, long rows, int n, int relu) {
	for (long r = 0; r < rows; r++) {
		float *restrict row = x + r * ld;
		if (bias && relu)
			for (int j = 0; j < n; j++) {
				float v = row[j] + bias[j];
				row[j] = v > 0 ? v : 0.0f;
			}
		else if (bias)
			for (int j = 0; j < n; j++) row[j] += bias[j];
		else if (relu)
			for (int j = 0; j < n; j++) row[j] = row[j] > 0 ? row[j] : 0.0f;
	}
}

/* db[j] (= or +=) sum over rows r of dy[r*ld + j] for j < w <= 64, summed
 * in double in row order. */
HOT void mtlcpu_bias_grad(const float *restrict dy, long rows, long ld, int w, float *restrict db,
                       int accumulate) {
	double acc[64];
	if (w > 64) w = 64;
	for (int j = 0; j < w; j++) acc[j] = 0;
	for (long r = 0; r < rows; r++) {
		const float *restrict row = dy + r * ld;
		for (int j = 0; j < w; j++) acc[j] += (double)row[j];
	}
	for (int j = 0; j < w; j++) db[j] = accumulate ? (float)((double)db[j] + acc[j]) : (float)acc[j];
}

/* The dropout hash (kernels.DropoutHash) for element index i. */
static inline uint64_t dropout_hash(uint64_t seed, uint64_t i) {
	uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ULL;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* Elements lo..lo+n-1 of the tensor; x and mask point at element lo. */
HOT void mtlcpu_dropout(float *restrict x, float *restrict mask, long lo, long n, uint64_t seed,
                     uint64_t thr, float scale) {
	for (long j = 0; j < n; j++) {
		float m = (dropout_hash(seed, (uint64_t)(lo + j)) >> 40) < thr ? 0.0f : scale;
		mask[j] = m;
		x[j] *= m;
	}
}

/* Dot product in 8 float lanes (lane l sums the elements j = l mod 8 in
 * order), lanes added in a fixed order. Written on an 8-lane vector type:
 * left to GCC, the lane array was vectorised with a permutation per step. */
typedef float v8f __attribute__((vector_size(32)));

static inline float dot8(const float *restrict a, const float *restrict b, int d) {
	v8f acc = {0, 0, 0, 0, 0, 0, 0, 0};
	int j = 0;
	for (; j + 8 <= d; j += 8) {
		v8f x, y;
		memcpy(&x, a + j, sizeof x);
		memcpy(&y, b + j, sizeof y);
		acc += x * y;
	}
	float lane[8];
	memcpy(lane, &acc, sizeof lane);
	for (int l = 0; j < d; j++, l++) lane[l] += a[j] * b[j];
	return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* Gate combine over up to 4 experts e0..e0+cnt-1 at a time (x0..x3; unused
 * ones are NULL): out[b,:] (= if first, else +=) sum_i w[b,e0+i] * x_i[b,:],
 * added left to right, which rounds exactly like one expert at a time. One
 * pass over out for 4 experts instead of 4 passes. The row is processed in
 * 16-float vectors held in registers (then a scalar tail): GCC's own
 * vectorisation of these short rows ran about 5 times slower. */
typedef float v16f __attribute__((vector_size(64)));

HOT void mtlcpu_gate_fwd(float *restrict out, const float *restrict w, int ne, int e0, int cnt,
                      const float *restrict x0, const float *restrict x1, const float *restrict x2,
                      const float *restrict x3, long rows, int d, int first) {
	const float *xs[4] = {x0, x1, x2, x3};
	for (long b = 0; b < rows; b++) {
		const float *wr = w + b * ne + e0;
		float *o = out + b * d;
		long off = b * d;
		int j = 0;
		for (; j + 16 <= d; j += 16) {
			v16f acc, x;
			memcpy(&x, xs[0] + off + j, sizeof x);
			if (first) {
				acc = wr[0] * x;
			} else {
				memcpy(&acc, o + j, sizeof acc);
				acc = acc + wr[0] * x;
			}
			for (int i = 1; i < cnt; i++) {
				memcpy(&x, xs[i] + off + j, sizeof x);
				acc = acc + wr[i] * x;
			}
			memcpy(o + j, &acc, sizeof acc);
		}
		for (; j < d; j++) {
			float acc = first ? wr[0] * xs[0][off + j] : o[j] + wr[0] * xs[0][off + j];
			for (int i = 1; i < cnt; i++) acc = acc + wr[i] * xs[i][off + j];
			o[j] = acc;
		}
	}
}

/* dw[b,e] = <dout[b,:], ex[b,:]>; dex[b,:] += w[b,e] * dout[b,:] for the cnt
 * (<= 4) experts e0.. given by x_i / dx_i, while the row of dout is hot.
 * With first, dex[b,:] = 0 + w[b,e] * dout[b,:] is written without reading
 * dex: the bits of zeroing dex and adding (0 + p rounds -0 to +0 as the
 * addition into zeros does). */
HOT void mtlcpu_gate_bwd(const float *restrict dout, const float *restrict w, int ne, int e0, int cnt,
                      const float *x0, const float *x1, const float *x2, const float *x3,
                      float *dx0, float *dx1, float *dx2, float *dx3, float *restrict dw, long rows, int d,
                      int first) {
	const float *xs[4] = {x0, x1, x2, x3};
	float *dxs[4] = {dx0, dx1, dx2, dx3};
	for (long b = 0; b < rows; b++) {
		const float *restrict g = dout + b * d;
		/* the cnt dot products side by side (independent addition chains),
		 * each in dot8's lanes and order; accumulators are named variables
		 * so that they stay in registers */
		v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
		const float *p0 = x0 + b * d, *p1 = cnt > 1 ? x1 + b * d : p0;
		const float *p2 = cnt > 2 ? x2 + b * d : p0, *p3 = cnt > 3 ? x3 + b * d : p0;
		int j = 0;
		for (; j + 8 <= d; j += 8) {
			v8f gv, x;
			memcpy(&gv, g + j, sizeof gv);
			memcpy(&x, p0 + j, sizeof x);
			a0 += gv * x;
			memcpy(&x, p1 + j, sizeof x);
			a1 += gv * x;
			memcpy(&x, p2 + j, sizeof x);
			a2 += gv * x;
			memcpy(&x, p3 + j, sizeof x);
			a3 += gv * x;
		}
		v8f accs[4] = {a0, a1, a2, a3};
		for (int i = 0; i < cnt; i++) {
			float lane[8];
			memcpy(lane, &accs[i], sizeof lane);
			const float *x = xs[i] + b * d;
			for (int l = 0, jj = j; jj < d; jj++, l++) lane[l] += g[jj] * x[jj];
			dw[b * ne + e0 + i] =
			    ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
		}
		for (int i = 0; i < cnt; i++) {
			float *restrict dx = dxs[i] + b * d;
			float we = w[b * ne + e0 + i];
			int jj = 0;
			if (first) {
				const v16f zero = {0};
				for (; jj + 16 <= d; jj += 16) {
					v16f gv, dv;
					memcpy(&gv, g + jj, sizeof gv);
					dv = zero + we * gv;
					memcpy(dx + jj, &dv, sizeof dv);
				}
				for (; jj < d; jj++) dx[jj] = 0.0f + we * g[jj];
				continue;
			}
			for (; jj + 16 <= d; jj += 16) {
				v16f gv, dv;
				memcpy(&gv, g + jj, sizeof gv);
				memcpy(&dv, dx + jj, sizeof dv);
				dv = dv + we * gv;
				memcpy(dx + jj, &dv, sizeof dv);
			}
			for (; jj < d; jj++) dx[jj] += we * g[jj];
		}
	}
}

HOT void mtlcpu_copy_cols(float *restrict dst, long ldd, const float *restrict src, long lds, long rows,
                       int width, int accumulate) {
	for (long r = 0; r < rows; r++) {
		float *restrict d = dst + r * ldd;
		const float *restrict s = src + r * lds;
		if (accumulate)
			for (int j = 0; j < width; j++) d[j] += s[j];
		else
			memcpy(d, s, (size_t)width * sizeof(float));
	}
}

/* The factor on the sum of a list of n embeddings; comb 0 = mean, 1 = sum,
 * 2 = sqrtn (kernels.Combiner). */
static inline float combine_scale(int comb, int n) {
	if (n == 0) return 0.0f;
	if (comb == 0) return 1.0f / (float)n;
	if (comb == 2) return (float)(1.0 / sqrt((double)n));
	return 1.0f;
}

/* Table rows are random accesses: the loops below ask for the row they will
 * need PREFETCH iterations later, so that several cache misses are in
 * flight at once instead of one at a time. */
#define PREFETCH 8
#define GATHER_BLOCK 8

/* On x86-64 the prefetches are volatile asm: GCC 12 deletes
 * __builtin_prefetch calls of a loop followed by calls it has summarised
 * (its IPA mod/ref analysis, -fipa-modref at -O2), which left
 * mtlcpu_sparse_adam and mtlcpu_sparse_adagrad with no prefetch at all. */
#if defined(__x86_64__) && defined(__GNUC__)
#define PREFETCH_R(p) __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)(p)))
#define PREFETCH_W(p) __asm__ volatile("prefetcht1 %0" : : "m"(*(const char *)(p)))
#else
#define PREFETCH_R(p) __builtin_prefetch((p), 0, 3)
#define PREFETCH_W(p) __builtin_prefetch((p), 1, 2)
#endif

static inline void prefetch_read(const float *p, int dim) {
	for (int j = 0; j < dim; j += 16) PREFETCH_R(p + j);
	PREFETCH_R(p + dim - 1);
}

static inline void prefetch_write(const float *p, int dim) {
	for (int j = 0; j < dim; j += 16) PREFETCH_W(p + j);
	PREFETCH_W(p + dim - 1);
}

/* The sparse optimizers update rows in blocks of SPARSE_BLOCK and request
 * the next block's rows (table and state) before working on the current
 * one: with a block's worth of rows in flight at once, the cache misses of
 * a large table overlap far better than one row at a time. */
#define SPARSE_BLOCK 8

static inline void prefetch_rows(const int32_t *rows, long i, long hi, int dim, float *a, float *b, float *c) {
	for (long e = i + SPARSE_BLOCK < hi ? i + SPARSE_BLOCK : hi; i < e; i++) {
		long q = (long)rows[i] * dim;
		prefetch_write(a + q, dim);
		if (b) prefetch_write(b + q, dim);
		if (c) prefetch_write(c + q, dim);
	}
}

/* Rows lo..hi-1 of a gather; out points at column col of row 0. */
HOT void mtlcpu_gather(float *restrict out, long ldo, const float *restrict table, int dim,
                    const int32_t *restrict ids, const int32_t *restrict offs, long lo, long hi, int comb) {
	long end = offs ? offs[hi] : hi; /* prefetch only ids of this range */
	if (!offs)
		for (long q = lo; q < lo + GATHER_BLOCK && q < end; q++) prefetch_read(table + (long)ids[q] * dim, dim);
	for (long b = lo; b < hi; b++) {
		float *restrict o = out + b * ldo;
		if (!offs) {
			/* blocks of rows, the next block requested before copying this one
			 * (see SPARSE_BLOCK) */
			if ((b - lo) % GATHER_BLOCK == 0)
				for (long q = b + GATHER_BLOCK; q < b + 2 * GATHER_BLOCK && q < end; q++)
					prefetch_read(table + (long)ids[q] * dim, dim);
			memcpy(o, table + (long)ids[b] * dim, (size_t)dim * sizeof(float));
			continue;
		}
		int32_t s = offs[b], e = offs[b + 1];
		for (int j = 0; j < dim; j++) o[j] = 0.0f;
		for (int32_t k = s; k < e; k++) {
			if (k + PREFETCH < end) prefetch_read(table + (long)ids[k + PREFETCH] * dim, dim);
			const float *restrict t = table + (long)ids[k] * dim;
			for (int j = 0; j < dim; j++) o[j] += t[j];
		}
		float sc = combine_scale(comb, e - s);
		if (sc != 1.0f)
			for (int j = 0; j < dim; j++) o[j] *= sc;
	}
}

/* Accumulates dout rows into the gradient rows slot[k - base] of the ids k
 * (gv zeroed by the caller), in batch order; dout points at column col of
 * row 0. */
HOT void mtlcpu_emb_bwd(float *restrict gv, int dim, const int32_t *restrict slot, long base,
                     const float *restrict dout, long ldo, const int32_t *restrict offs, long rows, int comb) {
	for (long b = 0; b < rows; b++) {
		const float *restrict src = dout + b * ldo;
		if (!offs) {
			float *restrict g = gv + (long)slot[b] * dim;
			for (int j = 0; j < dim; j++) g[j] += src[j];
			continue;
		}
		int32_t s = offs[b], e = offs[b + 1];
		float sc = combine_scale(comb, e - s);
		for (int32_t k = s; k < e; k++) {
			float *restrict g = gv + (long)slot[k - base] * dim;
			for (int j = 0; j < dim; j++) g[j] += sc * src[j];
		}
	}
}

#ifdef HAVE_AVX2_PATH
static int have_avx2;

__attribute__((constructor)) static void detect_cpu(void) {
	__builtin_cpu_init();
	have_avx2 = __builtin_cpu_supports("avx2") != 0;
}

static inline int use_avx2(void) { return have_avx2; }

/* The vector part of mtlcpu_adam: returns the number of elements done. */
__attribute__((target("avx2"))) static long adam_avx2(float *p, const float *g, float *m, float *v, long n,
                                                      float lr, float b1, float b2, float eps, float l2x2) {
	const __m256 vb1 = _mm256_set1_ps(b1), vb2 = _mm256_set1_ps(b2);
	const __m256 vc1 = _mm256_set1_ps(1.0f - b1), vc2 = _mm256_set1_ps(1.0f - b2);
	const __m256 vlr = _mm256_set1_ps(lr), veps = _mm256_set1_ps(eps), vl2 = _mm256_set1_ps(l2x2);
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 pi = _mm256_loadu_ps(p + i);
		__m256 gi = _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(vl2, pi));
		__m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(vc1, gi));
		__m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_loadu_ps(v + i)),
		                          _mm256_mul_ps(_mm256_mul_ps(vc2, gi), gi));
		_mm256_storeu_ps(m + i, mi);
		_mm256_storeu_ps(v + i, vi);
		__m256 step = _mm256_div_ps(_mm256_mul_ps(vlr, mi), _mm256_add_ps(_mm256_sqrt_ps(vi), veps));
		_mm256_storeu_ps(p + i, _mm256_sub_ps(pi, step));
	}
	return i;
}

__attribute__((target("avx2"))) static long adagrad_avx2(float *p, const float *g, float *acc, long n, float lr,
                                                         float eps, float l2x2) {
	const __m256 vlr = _mm256_set1_ps(lr), veps = _mm256_set1_ps(eps), vl2 = _mm256_set1_ps(l2x2);
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 pi = _mm256_loadu_ps(p + i);
		__m256 gi = _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(vl2, pi));
		__m256 a = _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_mul_ps(gi, gi));
		_mm256_storeu_ps(acc + i, a);
		__m256 step = _mm256_div_ps(_mm256_mul_ps(vlr, gi), _mm256_add_ps(_mm256_sqrt_ps(a), veps));
		_mm256_storeu_ps(p + i, _mm256_sub_ps(pi, step));
	}
	return i;
}
#endif

/* Keras / TensorFlow Adam with the bias correction folded into lr:
 * g += l2x2*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
 * p -= lr * m / (sqrt(v) + eps). */
void mtlcpu_adam(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, long n,
              float lr, float b1, float b2, float eps, float l2x2) {
	long i = 0;
#ifdef HAVE_AVX2_PATH
	if (use_avx2()) i = adam_avx2(p, g, m, v, n, lr, b1, b2, eps, l2x2);
#endif
	float c1 = 1.0f - b1, c2 = 1.0f - b2;
	for (; i < n; i++) {
		float gi = g[i] + l2x2 * p[i];
		float mi = b1 * m[i] + c1 * gi;
		float vi = b2 * v[i] + c2 * gi * gi;
		m[i] = mi;
		v[i] = vi;
		p[i] = p[i] - lr * mi / (sqrtf(vi) + eps);
	}
}

/* TensorFlow ApplyAdagradV2: acc += g*g; p -= lr * g / (sqrt(acc) + eps). */
void mtlcpu_adagrad(float *restrict p, const float *restrict g, float *restrict acc, long n, float lr, float eps,
                 float l2x2) {
	long i = 0;
#ifdef HAVE_AVX2_PATH
	if (use_avx2()) i = adagrad_avx2(p, g, acc, n, lr, eps, l2x2);
#endif
	for (; i < n; i++) {
		float gi = g[i] + l2x2 * p[i];
		float a = acc[i] + gi * gi;
		acc[i] = a;
		p[i] = p[i] - lr * gi / (sqrtf(a) + eps);
	}
}

HOT void mtlcpu_sgd(float *restrict p, const float *restrict g, long n, float lr, float l2x2) {
	for (long i = 0; i < n; i++) p[i] = p[i] - lr * (g[i] + l2x2 * p[i]);
}

void mtlcpu_sparse_adam(float *table, float *m, float *v, const float *g, const int32_t *rows, long lo, long hi,
                     int dim, float lr, float b1, float b2, float eps, float l2x2) {
	prefetch_rows(rows, lo, hi, dim, table, m, v);
	for (long i0 = lo; i0 < hi; i0 += SPARSE_BLOCK) {
		prefetch_rows(rows, i0 + SPARSE_BLOCK, hi, dim, table, m, v);
		for (long i = i0, e = i0 + SPARSE_BLOCK < hi ? i0 + SPARSE_BLOCK : hi; i < e; i++) {
			long r = (long)rows[i] * dim;
			mtlcpu_adam(table + r, g + i * dim, m + r, v + r, dim, lr, b1, b2, eps, l2x2);
		}
	}
}

void mtlcpu_sparse_adagrad(float *table, float *acc, const float *g, const int32_t *rows, long lo, long hi,
                        int dim, float lr, float eps, float l2x2) {
	prefetch_rows(rows, lo, hi, dim, table, acc, 0);
	for (long i0 = lo; i0 < hi; i0 += SPARSE_BLOCK) {
		prefetch_rows(rows, i0 + SPARSE_BLOCK, hi, dim, table, acc, 0);
		for (long i = i0, e = i0 + SPARSE_BLOCK < hi ? i0 + SPARSE_BLOCK : hi; i < e; i++) {
			long r = (long)rows[i] * dim;
			mtlcpu_adagrad(table + r, g + i * dim, acc + r, dim, lr, eps, l2x2);
		}
	}
}

void mtlcpu_sparse_sgd(float *table, const float *g, const int32_t *rows, long lo, long hi, int dim, float lr,
                    float l2x2) {
	prefetch_rows(rows, lo, hi, dim, table, 0, 0);
	for (long i0 = lo; i0 < hi; i0 += SPARSE_BLOCK) {
		prefetch_rows(rows, i0 + SPARSE_BLOCK, hi, dim, table, 0, 0);
		for (long i = i0, e = i0 + SPARSE_BLOCK < hi ? i0 + SPARSE_BLOCK : hi; i < e; i++) {
			long r = (long)rows[i] * dim;
			mtlcpu_sgd(table + r, g + i * dim, dim, lr, l2x2);
		}
	}
}

/* The activations beyond ReLU, with Keras' definitions (codes: the
 * MTL_ACT_* of cpu_kernels.h, equal to kernels.Activation), one loop per
 * activation so that the choice is made once per call. Sigmoid, swish, elu
 * and selu take their exponentials from the vectorised mtlcpu_sigmoid and
 * mtlcpu_exp_inplace of cpu_math.c, a block at a time through a stack buffer
 * (so y may alias x); elu and selu compute exp(x) - 1 as TensorFlow's
 * kernels do. gelu and tanh call libm's erff and tanhf. */
#define ACT_BLOCK 256
#define SELU_ALPHA 1.6732632423543772848170429916717f
#define SELU_SCALE 1.0507009873554804934193349852946f
#define LEAKY_ALPHA 0.2f
#define INV_SQRT2 0.70710678118654752440084436210485f
#define INV_SQRT_2PI 0.39894228040143267793994605993438f

/* t[0:m] = exp(min(x, 0)) */
static void exp_neg_part(float *t, const float *x, long m) {
	for (long i = 0; i < m; i++) t[i] = x[i] < 0 ? x[i] : 0.0f;
	mtlcpu_exp_inplace(t, m);
}

/* y = act(x); y may alias x. */
void mtlcpu_act_fwd(float *y, const float *x, long n, int act) {
	long i;
	float t[ACT_BLOCK];
	switch (act) {
	case MTL_ACT_SELU:
	case MTL_ACT_ELU: {
		float sc = act == MTL_ACT_SELU ? SELU_SCALE : 1.0f, al = act == MTL_ACT_SELU ? SELU_ALPHA : 1.0f;
		for (long b = 0; b < n; b += ACT_BLOCK) {
			long m = n - b < ACT_BLOCK ? n - b : ACT_BLOCK;
			exp_neg_part(t, x + b, m);
			for (i = 0; i < m; i++) y[b + i] = x[b + i] > 0 ? sc * x[b + i] : sc * (al * (t[i] - 1.0f));
		}
		break;
	}
	case MTL_ACT_SWISH:
		for (long b = 0; b < n; b += ACT_BLOCK) {
			long m = n - b < ACT_BLOCK ? n - b : ACT_BLOCK;
			mtlcpu_sigmoid(t, x + b, m);
			for (i = 0; i < m; i++) y[b + i] = x[b + i] * t[i];
		}
		break;
	case MTL_ACT_GELU:
		for (i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * INV_SQRT2));
		break;
	case MTL_ACT_TANH:
		for (i = 0; i < n; i++) y[i] = tanhf(x[i]);
		break;
	case MTL_ACT_SIGMOID:
		mtlcpu_sigmoid(y, x, n);
		break;
	case MTL_ACT_LEAKY_RELU:
		for (i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : LEAKY_ALPHA * x[i];
		break;
	case MTL_ACT_RELU:
		for (i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
		break;
	default:
		for (i = 0; i < n; i++) y[i] = x[i];
	}
}

/* dy *= act'(x), x the pre-activation. */
void mtlcpu_act_bwd(float *restrict dy, const float *restrict x, long n, int act) {
	long i;
	float t[ACT_BLOCK];
	switch (act) {
	case MTL_ACT_SELU:
	case MTL_ACT_ELU: {
		float sc = act == MTL_ACT_SELU ? SELU_SCALE : 1.0f, al = act == MTL_ACT_SELU ? SELU_ALPHA : 1.0f;
		for (long b = 0; b < n; b += ACT_BLOCK) {
			long m = n - b < ACT_BLOCK ? n - b : ACT_BLOCK;
			exp_neg_part(t, x + b, m);
			for (i = 0; i < m; i++) dy[b + i] *= x[b + i] > 0 ? sc : sc * (al * t[i]);
		}
		break;
	}
	case MTL_ACT_SIGMOID:
	case MTL_ACT_SWISH:
		for (long b = 0; b < n; b += ACT_BLOCK) {
			long m = n - b < ACT_BLOCK ? n - b : ACT_BLOCK;
			mtlcpu_sigmoid(t, x + b, m);
			if (act == MTL_ACT_SIGMOID)
				for (i = 0; i < m; i++) dy[b + i] *= t[i] * (1.0f - t[i]);
			else
				for (i = 0; i < m; i++) dy[b + i] *= t[i] * (1.0f + x[b + i] * (1.0f - t[i]));
		}
		break;
	case MTL_ACT_GELU:
		for (i = 0; i < n; i++) {
			float v = x[i];
			dy[i] *= 0.5f * (1.0f + erff(v * INV_SQRT2)) + v * INV_SQRT_2PI * expf(-0.5f * v * v);
		}
		break;
	case MTL_ACT_TANH:
		for (i = 0; i < n; i++) {
			float t = tanhf(x[i]);
			dy[i] *= 1.0f - t * t;
		}
		break;

	case MTL_ACT_LEAKY_RELU:
		for (i = 0; i < n; i++) dy[i] *= x[i] > 0 ? 1.0f : LEAKY_ALPHA;
		break;
	case MTL_ACT_RELU:
		for (i = 0; i < n; i++) dy[i] = x[i] > 0 ? dy[i] : 0.0f;
		break;
	}
}
