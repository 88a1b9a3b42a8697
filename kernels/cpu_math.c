/* Kernels of mtlrank's CPU device that need exp or log: softmax, sigmoid,
 * binary cross-entropy, and the fused ReLU backward + bias gradient.
 *
 * exp and log are float32 polynomials (Cody-Waite range reduction and the
 * Cephes minimax coefficients, about 1 ulp on their ranges) written as
 * straight-line arithmetic so that GCC vectorises the loops that call them;
 * like cpu_kernels.c the file is ISO C (no contraction into FMA), so every
 * clone rounds like the scalar code. Sums that feed a loss or a normaliser
 * are accumulated in double, in a fixed order.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

/* The exp and log polynomials are written once over GCC vector types of
 * 16, 8 and 1 lanes (the AVX-512, AVX2 and scalar instances); every lane
 * goes through the same IEEE operations in the same order, so the three
 * give the same bits. Selections are bitwise blends, not branches, so that
 * nothing depends on the compiler's if-conversion. */
typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef float vf1 __attribute__((vector_size(4)));
typedef int32_t vi1 __attribute__((vector_size(4)));

#define MATH_FUNCS(S, VF, VI, ATTR)                                                                \
	ATTR static inline VF sel_##S(VI m, VF a, VF b) { return (VF)((m & (VI)a) | (~m & (VI)b)); }    \
	ATTR static inline VF bc_##S(float c) { return (VF){0} + c; }                                   \
	/* exp(x) for x in [-87, 88.3]; x is clamped to that range first (below, the result is        \
	 * exp(-87) = 1.6e-38, a normal float, instead of a denormal or 0). */                          \
	ATTR static inline VF fexp_##S(VF x) {                                                          \
		x = sel_##S(x < -87.0f, bc_##S(-87.0f), x);                                                  \
		x = sel_##S(x > 88.3762626f, bc_##S(88.3762626f), x);                                       \
		VF t = x * 1.44269504088896341f;                                                            \
		VF h = sel_##S(t >= 0.0f, bc_##S(0.5f), bc_##S(-0.5f));                                      \
		VI ni = __builtin_convertvector(t + h, VI); /* round(x / ln 2) */                         \
		VF n = __builtin_convertvector(ni, VF);                                                     \
		VF r = x - n * 0.693359375f;                                                                \
		r = r - n * -2.12194440e-4f;                                                                \
		VF p = r * 1.9875691500e-4f + 1.3981999507e-3f;                                             \
		p = p * r + 8.3334519073e-3f;                                                               \
		p = p * r + 4.1665795894e-2f;                                                               \
		p = p * r + 1.6666665459e-1f;                                                               \
		p = p * r + 5.0000001201e-1f;                                                               \
		p = p * (r * r) + r + 1.0f;                                                                 \
		return p * (VF)((ni + 127) << 23);                                                          \
	}                                                                                               \
	/* log(x) for x in [1, 2]. */                                                                   \
	ATTR static inline VF flog12_##S(VF x) {                                                        \
		VI big = x > 1.41421356f; /* x = m * 2^e, m in [sqrt(1/2), sqrt(2)) */                      \
		VF m = sel_##S(big, x * 0.5f, x);                                                           \
		VF e = sel_##S(big, bc_##S(1.0f), bc_##S(0.0f));                                                 \
		VF f = m - 1.0f;                                                                            \
		VF z = f * f;                                                                               \
		VF p = f * 7.0376836292e-2f - 1.1514610310e-1f;                                             \
		p = p * f + 1.1676998740e-1f;                                                               \
		p = p * f - 1.2420140846e-1f;                                                               \
		p = p * f + 1.4249322787e-1f;                                                               \
		p = p * f - 1.6668057665e-1f;                                                               \
		p = p * f + 2.0000714765e-1f;                                                               \
		p = p * f - 2.4999993993e-1f;                                                               \
		p = p * f + 3.3333331174e-1f;                                                               \
		VF y = f * z * p;                                                                           \
		y = y + e * -2.12194440e-4f;                                                                \
		y = y - z * 0.5f;                                                                           \
		return f + y + e * 0.693359375f;                                                            \
	}                                                                                               \
	/* log1p(u) for u in [0, 1], accurate also for tiny u (Goldberg: log(1+u) scaled by            \
	 * u / ((1+u) - 1)). */                                                                         \
	ATTR static inline VF flog1p01_##S(VF u) {                                                      \
		VF w = u + 1.0f;                                                                            \
		VF d = w - 1.0f;                                                                            \
		VI tiny = d == 0.0f;                                                                        \
		VF q = u / sel_##S(tiny, bc_##S(1.0f), d);                                                  \
		return sel_##S(tiny, u, flog12_##S(w) * q);                                                 \
	}                                                                                               \
	ATTR static inline void exp_##S(float *x) {                                                     \
		VF v;                                                                                       \
		memcpy(&v, x, sizeof v);                                                                    \
		v = fexp_##S(v);                                                                            \
		memcpy(x, &v, sizeof v);                                                                    \
	}                                                                                               \
	ATTR static inline void sigmoid_##S(float *y, const float *x) {                                 \
		VF v;                                                                                       \
		memcpy(&v, x, sizeof v);                                                                    \
		VI pos = v >= 0.0f;                                                                         \
		VF e = fexp_##S(sel_##S(pos, -v, v));                                                       \
		VF r = sel_##S(pos, bc_##S(1.0f), e) / (e + 1.0f);                                          \
		memcpy(y, &r, sizeof r);                                                                    \
	}                                                                                               \
	/* dz = scale*w*(sigmoid(z)-y); l = w*(max(z,0) - z*y + log1p(exp(-|z|))). */                 \
	ATTR static inline void bce_##S(float *dz, float *l, const float *zp, const float *yp,          \
	                                const float *wp, float scale) {                                 \
		VF z, y, w;                                                                                 \
		memcpy(&z, zp, sizeof z);                                                                   \
		memcpy(&y, yp, sizeof y);                                                                   \
		if (wp)                                                                                     \
			memcpy(&w, wp, sizeof w);                                                               \
		else                                                                                        \
			w = bc_##S(1.0f);                                                                       \
		VI pos = z >= 0.0f;                                                                         \
		VF e = fexp_##S(sel_##S(pos, -z, z));                                                       \
		VF p = sel_##S(pos, bc_##S(1.0f), e) / (e + 1.0f);                                          \
		VF g = (w * scale) * (p - y);                                                               \
		VF zpos = sel_##S(z > 0.0f, z, bc_##S(0.0f));                                                      \
		VF loss = w * (zpos - z * y + flog1p01_##S(e));                                             \
		memcpy(dz, &g, sizeof g);                                                                   \
		memcpy(l, &loss, sizeof loss);                                                              \
	}

MATH_FUNCS(1, vf1, vi1, )

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_VEC_MATH 1
MATH_FUNCS(16, vf16, vi16, __attribute__((target("avx512f"))))
MATH_FUNCS(8, vf8, vi8, __attribute__((target("avx2"))))

static int math_level; /* 2: AVX-512F, 1: AVX2, 0: scalar */

__attribute__((constructor)) static void math_probe(void) {
	__builtin_cpu_init();
	math_level = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
}

void mtlcpu_math_force_level(int l) {
	__builtin_cpu_init();
	int top = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
	math_level = l < top ? l : top;
}

__attribute__((target("avx512f"))) static void exp_run16(float *x, long n, long *done) {
	long i = 0;
	for (; i + 16 <= n; i += 16) exp_16(x + i);
	*done = i;
}
__attribute__((target("avx2"))) static void exp_run8(float *x, long n, long *done) {
	long i = 0;
	for (; i + 8 <= n; i += 8) exp_8(x + i);
	*done = i;
}
__attribute__((target("avx512f"))) static long sigmoid_run16(float *y, const float *x, long n) {
	long i = 0;
	for (; i + 16 <= n; i += 16) sigmoid_16(y + i, x + i);
	return i;
}
__attribute__((target("avx2"))) static long sigmoid_run8(float *y, const float *x, long n) {
	long i = 0;
	for (; i + 8 <= n; i += 8) sigmoid_8(y + i, x + i);
	return i;
}
__attribute__((target("avx512f"))) static long bce_run16(float *dz, float *l, const float *z, const float *y,
                                                         const float *w, long n, float scale) {
	long i = 0;
	for (; i + 16 <= n; i += 16) bce_16(dz + i, l + i, z + i, y + i, w ? w + i : 0, scale);
	return i;
}
__attribute__((target("avx2"))) static long bce_run8(float *dz, float *l, const float *z, const float *y,
                                                    const float *w, long n, float scale) {
	long i = 0;
	for (; i + 8 <= n; i += 8) bce_8(dz + i, l + i, z + i, y + i, w ? w + i : 0, scale);
	return i;
}
#else
static const int math_level = 0;
void mtlcpu_math_force_level(int l) { (void)l; }
#endif

void mtlcpu_exp_inplace(float *x, long n) {
	long i = 0;
#ifdef HAVE_VEC_MATH
	if (math_level == 2)
		exp_run16(x, n, &i);
	else if (math_level == 1)
		exp_run8(x, n, &i);
#endif
	for (; i < n; i++) exp_1(x + i);
}

void mtlcpu_sigmoid(float *y, const float *x, long n) {
	long i = 0;
#ifdef HAVE_VEC_MATH
	if (math_level == 2)
		i = sigmoid_run16(y, x, n);
	else if (math_level == 1)
		i = sigmoid_run8(y, x, n);
#endif
	for (; i < n; i++) sigmoid_1(y + i, x + i);
}

/* Rows lo..hi-1 of softmax(x / T) over rows of n columns (y may alias x):
 * shift by the row maximum, exponentiate, divide by the sum (in double). */
HOT void mtlcpu_softmax(float *y, const float *x, long lo, long hi, int n, float invT) {
	for (long r = lo; r < hi; r++) {
		const float *xr = x + r * n;
		float *yr = y + r * n;
		float mx = xr[0];
		for (int j = 1; j < n; j++) mx = xr[j] > mx ? xr[j] : mx;
		for (int j = 0; j < n; j++) yr[j] = (xr[j] - mx) * invT;
	}
	mtlcpu_exp_inplace(y + lo * n, (hi - lo) * n);
	for (long r = lo; r < hi; r++) {
		float *yr = y + r * n;
		double s = 0;
		for (int j = 0; j < n; j++) s += yr[j];
		double inv = 1.0 / s;
		for (int j = 0; j < n; j++) yr[j] = (float)(yr[j] * inv);
	}
}

/* dx = y * (dy - <dy, y>) / T on rows lo..hi-1, the dot in double. */
HOT void mtlcpu_softmax_bwd(float *dx, const float *dy, const float *y, long lo, long hi, int n, float invT) {
	for (long r = lo; r < hi; r++) {
		const float *yr = y + r * n, *gr = dy + r * n;
		float *dr = dx + r * n;
		double dot = 0;
		for (int j = 0; j < n; j++) dot += (double)yr[j] * (double)gr[j];
		float d = (float)dot;
		for (int j = 0; j < n; j++) dr[j] = invT * yr[j] * (gr[j] - d);
	}
}

/* BCE from logits over n elements: writes dz = scale*w*(sigmoid(z)-y) and
 * returns sum w*(max(z,0) - z*y + log1p(exp(-|z|))) (unscaled) in double,
 * summed in element order. w may be NULL (all ones). */
double mtlcpu_bce(float *dz, const float *z, const float *y, const float *w, long n, float scale) {
	double sum = 0;
	float lbuf[256];
	for (long i0 = 0; i0 < n; i0 += 256) {
		long m = n - i0 < 256 ? n - i0 : 256, i = 0;
		const float *wi = w ? w + i0 : 0;
#ifdef HAVE_VEC_MATH
		if (math_level == 2)
			i = bce_run16(dz + i0, lbuf, z + i0, y + i0, wi, m, scale);
		else if (math_level == 1)
			i = bce_run8(dz + i0, lbuf, z + i0, y + i0, wi, m, scale);
#endif
		for (; i < m; i++) bce_1(dz + i0 + i, lbuf + i, z + i0 + i, y + i0 + i, wi ? wi + i : 0, scale);
		for (i = 0; i < m; i++) sum += lbuf[i];
	}
	return sum;
}

/* ReLU backward fused with the bias gradient, on a block of w <= 64
 * columns of rows rows (leading dimension ld): dy = y > 0 ? dy : 0 (when
 * relu), then db[j] (= or +=) the column sums of dy, in double, in row
 * order (the sums of mtlcpu_bias_grad). */
HOT void mtlcpu_relu_bwd_bias_grad(float *restrict dy, const float *restrict y, long rows, long ld, int w,
                                float *restrict db, int accumulate, int relu) {
	double acc[64];
	if (w > 64) w = 64;
	for (int j = 0; j < w; j++) acc[j] = 0;
	for (long r = 0; r < rows; r++) {
		float *restrict d = dy + r * ld;
		if (relu) {
			const float *restrict yr = y + r * ld;
			for (int j = 0; j < w; j++) d[j] = yr[j] > 0 ? d[j] : 0.0f;
		}
		for (int j = 0; j < w; j++) acc[j] += (double)d[j];
	}
	for (int j = 0; j < w; j++) db[j] = accumulate ? (float)((double)db[j] + acc[j]) : (float)acc[j];
}
