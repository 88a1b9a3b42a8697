/* Small-GEMM kernels of mtlrank's CPU device.
 *
 * The models' GEMMs are small and thin: a few hundred rows (one shard of a
 * batch) times layer widths of 1..512. OpenBLAS spends a large share of such
 * calls packing its operands, zeroing C for beta = 0 and setting up, and is
 * slow on the degenerate shapes (n = 1 heads, k = 1 outer products, n = 4
 * gate logits). These kernels keep a tile of C in registers for the whole k
 * loop and read A and B in place (B, at most K x N, stays in L1/L2), and can
 * fuse a bias add and a ReLU into the store. C narrower than 16 columns
 * (heads, gate logits) goes to the thin kernels instead (below).
 *
 * Numerics: every element of C is a sum over k in increasing k order, one
 * fused multiply-add per term, starting from zero, then
 * alpha*sum (+ beta*C) (+ bias) (ReLU). The AVX-512 and the AVX2
 * implementations follow exactly this order, so they give the same bits;
 * where neither is available (or for shapes they do not take) the Go side
 * uses OpenBLAS. The thin kernels have an order of their own, also the
 * same at both levels. With every kernel, a row of C depends only on that
 * row of op(A), never on how many rows the call has (OpenBLAS's thin
 * results do, by a last bit).
 */
#include "cpu_kernels.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_GEMM_KERNELS 1
#endif

/* REG keeps a vector in a register: without it GCC folds the loads of B
 * and the broadcasts of A into every FMA's memory operand, which makes the
 * inner loop load-bound (6 rows x 4 vectors = 24 loads per k instead of 10). */
#define REG(x) __asm__("" : "+v"(x))

/* Largest B^T (k * n floats) built on the stack for a transposed B. */
#define TBUF 16384

typedef struct {
	long m, n, k;
	const float *a;
	long ars, aks; /* op(A)[i][kk] = a[i*ars + kk*aks] */
	const float *b;
	long ldb; /* op(B)[kk][j] = b[kk*ldb + j] (after any transpose) */
	float *c;
	long ldc;
	float alpha, beta;
	const float *bias;
	int relu;
	/* The data-gradient epilogue (mtlcpu_sgemm_actgrad), after the above:
	 * C = gy[i*ldy + j] > 0 ? C : 0 where gy is set (the ReLU backward of
	 * the layer below), and cs[j] += (double)C for every row written, in
	 * row order, where cs is set (that layer's bias gradient). */
	const float *gy;
	long ldy;
	double *cs;
	/* K-segments (mtlcpu_sgemm_sum): where nseg > 0, op(A) is the
	 * concatenation along k of nseg matrices, element [i][kk] of segment s
	 * at sa[s][i*slda[s] + kk] for kk < sk[s], and k is the sum of the sk;
	 * a and ars, aks are unused. */
	int nseg;
	const float *const *sa;
	const long *slda, *sk;
} gemm_args;

#ifdef HAVE_GEMM_KERNELS

static int gemm_level; /* 2: AVX-512F, 1: AVX2+FMA, 0: none; -1: not probed */
static int gemm_forced = -1;

__attribute__((constructor)) static void gemm_probe(void) {
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		gemm_level = 2;
	else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		gemm_level = 1;
	else
		gemm_level = 0;
}

static inline int level(void) { return gemm_forced >= 0 && gemm_forced < gemm_level ? gemm_forced : gemm_level; }

int mtlcpu_gemm_level(void) { return level(); }

void mtlcpu_gemm_force_level(int l) { gemm_forced = l; }

/* ------------------------------------------------------------ AVX-512 */

#define T512 __attribute__((target("avx512f,fma")))

/* The epilogue of one 16-lane vector of C. */
T512 static inline void store512(const gemm_args *g, float *cp, const float *bp, __m512 x, __mmask16 mk) {
	if (g->alpha != 1.0f) x = _mm512_mul_ps(x, _mm512_set1_ps(g->alpha));
	if (g->beta != 0.0f) x = _mm512_add_ps(x, _mm512_mul_ps(_mm512_set1_ps(g->beta), _mm512_maskz_loadu_ps(mk, cp)));
	if (bp) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mk, bp));
	if (g->relu) x = _mm512_max_ps(x, _mm512_setzero_ps());
	_mm512_mask_storeu_ps(cp, mk, x);
}

/* cs[16v + l] += x[r][v] lane l for the tile's rows r in order (the lanes
 * of mk in its last vector), in double: each column's sum runs in row
 * order, as the tiles of a column block go down the rows. */
T512 static inline __attribute__((always_inline)) void colsum512(double *cs, __m512 x[6][4], const int MR, const int NV,
                                                                __mmask16 mk) {
#pragma GCC unroll 4
	for (int v = 0; v < NV; v++) {
		const __mmask8 ml = v == NV - 1 ? (__mmask8)mk : 0xFF, mh = v == NV - 1 ? (__mmask8)(mk >> 8) : 0xFF;
		__m512d lo = _mm512_maskz_loadu_pd(ml, cs + 16 * v), hi = _mm512_maskz_loadu_pd(mh, cs + 16 * v + 8);
#pragma GCC unroll 6
		for (int r = 0; r < MR; r++) {
			lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(x[r][v])));
			hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x[r][v]), 1))));
		}
		_mm512_mask_storeu_pd(cs + 16 * v, ml, lo);
		_mm512_mask_storeu_pd(cs + 16 * v + 8, mh, hi);
	}
}

/* The k loop of a tile: acc[r][v] += a[r*ars + kk*aks] * b[kk*ldb + 16v]
 * for kk = 0..k-1 in order, one FMA per term; returns b past the k rows. */
T512 static inline __attribute__((always_inline)) const float *kloop512(__m512 acc[6][4], const float *a, long ars,
                                                                       long aks, const float *b, long ldb, long k,
                                                                       const int MR, const int NV, __mmask16 mk) {
	for (long kk = 0; kk < k; kk++) {
		__m512 bv[4];
#pragma GCC unroll 4
		for (int v = 0; v < NV; v++) {
			bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(mk, b + 16 * v) : _mm512_loadu_ps(b + 16 * v);
			REG(bv[v]);
		}
#pragma GCC unroll 6
		for (int r = 0; r < MR; r++) {
			__m512 av = _mm512_set1_ps(a[r * ars]);
			REG(av);
#pragma GCC unroll 4
			for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
		}
		a += aks;
		b += ldb;
	}
	return b;
}

/* C[i0:i0+MR, j0:j0+16*NV] with the last vector masked by mk. */
T512 static inline __attribute__((always_inline)) void tile512(const gemm_args *g, long i0, long j0, const int MR,
                                                              const int NV, __mmask16 mk) {
	__m512 acc[6][4];
#pragma GCC unroll 6
	for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
		for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
	const float *b = g->b + j0;
	if (g->nseg == 0)
		kloop512(acc, g->a + i0 * g->ars, g->ars, g->aks, b, g->ldb, g->k, MR, NV, mk);
	else
		for (int s = 0; s < g->nseg; s++)
			b = kloop512(acc, g->sa[s] + i0 * g->slda[s], g->slda[s], 1, b, g->ldb, g->sk[s], MR, NV, mk);
	if (g->cs) {
		/* the data gradient's epilogue (mtlcpu_sgemm_actgrad: alpha 1, beta
		 * 0, no bias): y > 0 ? x : +0 where gy is set, false for a NaN y
		 * (an ordered comparison), then the column sums */
		const float *gy = g->gy;
#pragma GCC unroll 6
		for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
			for (int v = 0; v < NV; v++) {
				const __mmask16 m = v == NV - 1 ? mk : (__mmask16)0xFFFF;
				if (gy) {
					__m512 y = _mm512_maskz_loadu_ps(m, gy + (i0 + r) * g->ldy + j0 + 16 * v);
					acc[r][v] = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), acc[r][v]);
				}
				_mm512_mask_storeu_ps(g->c + (i0 + r) * g->ldc + j0 + 16 * v, m, acc[r][v]);
			}
		colsum512(g->cs + j0, acc, MR, NV, mk);
		return;
	}
	if (g->alpha == 1.0f && g->beta == 0.0f && !g->bias && !g->relu) {
#pragma GCC unroll 6
		for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
			for (int v = 0; v < NV; v++) {
				float *cp = g->c + (i0 + r) * g->ldc + j0 + 16 * v;
				if (v == NV - 1)
					_mm512_mask_storeu_ps(cp, mk, acc[r][v]);
				else
					_mm512_storeu_ps(cp, acc[r][v]);
			}
		return;
	}
#pragma GCC unroll 6
	for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
		for (int v = 0; v < NV; v++)
			store512(g, g->c + (i0 + r) * g->ldc + j0 + 16 * v, g->bias ? g->bias + j0 + 16 * v : 0, acc[r][v],
			         v == NV - 1 ? mk : (__mmask16)0xFFFF);
}

#define TILE512_CASE(MR, NV) \
	case MR * 8 + NV: tile512(g, i0, j0, MR, NV, mk); break;
#define TILE512_ROW(MR) TILE512_CASE(MR, 1) TILE512_CASE(MR, 2) TILE512_CASE(MR, 3) TILE512_CASE(MR, 4)

T512 static void gemm512(const gemm_args *g) {
	for (long j0 = 0; j0 < g->n; j0 += 64) {
		long w = g->n - j0 < 64 ? g->n - j0 : 64;
		int nv = (int)((w + 15) / 16);
		int tail = (int)(w - 16 * (nv - 1));
		__mmask16 mk = (__mmask16)(tail == 16 ? 0xFFFF : (1u << tail) - 1);
		for (long i0 = 0; i0 < g->m; i0 += 6) {
			int mr = g->m - i0 < 6 ? (int)(g->m - i0) : 6;
			switch (mr * 8 + nv) {
				TILE512_ROW(1)
				TILE512_ROW(2)
				TILE512_ROW(3)
				TILE512_ROW(4)
				TILE512_ROW(5)
				TILE512_ROW(6)
			}
		}
	}
}

/* ------------------------------------------------------------ AVX2 */

#define T256 __attribute__((target("avx2,fma")))

T256 static inline __m256i mask256(int w) {
	const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	return _mm256_cmpgt_epi32(_mm256_set1_epi32(w), idx);
}

/* Masked loads and stores only where a vector is partial: on AMD's cores
 * VMASKMOVPS stores are microcoded, several times slower than plain ones. */
T256 static inline __m256 load256(const float *p, __m256i mk, int full) {
	return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mk);
}

T256 static inline void store256(const gemm_args *g, float *cp, const float *bp, __m256 x, __m256i mk, int full) {
	if (g->alpha != 1.0f) x = _mm256_mul_ps(x, _mm256_set1_ps(g->alpha));
	if (g->beta != 0.0f) x = _mm256_add_ps(x, _mm256_mul_ps(_mm256_set1_ps(g->beta), load256(cp, mk, full)));
	if (bp) x = _mm256_add_ps(x, load256(bp, mk, full));
	if (g->relu) x = _mm256_max_ps(x, _mm256_setzero_ps());
	if (full)
		_mm256_storeu_ps(cp, x);
	else
		_mm256_maskstore_ps(cp, mk, x);
}

/* colsum512 on 8-lane vectors; a partial last vector (w lanes) lane by
 * lane, in the same order. */
T256 static inline __attribute__((always_inline)) void colsum256(double *cs, __m256 x[4][3], const int MR, const int NV,
                                                                int w, const int FULL) {
#pragma GCC unroll 3
	for (int v = 0; v < NV; v++) {
		if (!FULL && v == NV - 1) {
			for (int r = 0; r < MR; r++) {
				float t[8];
				_mm256_storeu_ps(t, x[r][v]);
				for (int l = 0; l < w; l++) cs[8 * v + l] += (double)t[l];
			}
			continue;
		}
		__m256d lo = _mm256_loadu_pd(cs + 8 * v), hi = _mm256_loadu_pd(cs + 8 * v + 4);
#pragma GCC unroll 4
		for (int r = 0; r < MR; r++) {
			lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(x[r][v])));
			hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(x[r][v], 1)));
		}
		_mm256_storeu_pd(cs + 8 * v, lo);
		_mm256_storeu_pd(cs + 8 * v + 4, hi);
	}
}

/* kloop512 on 8-lane vectors. */
T256 static inline __attribute__((always_inline)) const float *kloop256(__m256 acc[4][3], const float *a, long ars,
                                                                       long aks, const float *b, long ldb, long k,
                                                                       const int MR, const int NV, __m256i mk,
                                                                       const int FULL) {
	for (long kk = 0; kk < k; kk++) {
		__m256 bv[3];
#pragma GCC unroll 3
		for (int v = 0; v < NV; v++) {
			bv[v] = load256(b + 8 * v, mk, FULL || v < NV - 1);
			REG(bv[v]);
		}
#pragma GCC unroll 4
		for (int r = 0; r < MR; r++) {
			__m256 av = _mm256_broadcast_ss(a + r * ars);
			REG(av);
#pragma GCC unroll 3
			for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
		}
		a += aks;
		b += ldb;
	}
	return b;
}

/* C[i0:i0+MR, j0:j0+8*NV], the last vector masked by mk (tail lanes) unless
 * FULL. */
T256 static inline __attribute__((always_inline)) void tile256(const gemm_args *g, long i0, long j0, const int MR,
                                                              const int NV, __m256i mk, int tail, const int FULL) {
	__m256 acc[4][3];
#pragma GCC unroll 4
	for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
		for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps();
	const float *b = g->b + j0;
	if (g->nseg == 0)
		kloop256(acc, g->a + i0 * g->ars, g->ars, g->aks, b, g->ldb, g->k, MR, NV, mk, FULL);
	else
		for (int s = 0; s < g->nseg; s++)
			b = kloop256(acc, g->sa[s] + i0 * g->slda[s], g->slda[s], 1, b, g->ldb, g->sk[s], MR, NV, mk, FULL);
	if (g->cs) {
		/* as tile512's data-gradient epilogue */
		const float *gy = g->gy;
#pragma GCC unroll 4
		for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
			for (int v = 0; v < NV; v++) {
				const int full = FULL || v < NV - 1;
				float *cp = g->c + (i0 + r) * g->ldc + j0 + 8 * v;
				if (gy) {
					__m256 y = load256(gy + (i0 + r) * g->ldy + j0 + 8 * v, mk, full);
					acc[r][v] = _mm256_and_ps(acc[r][v], _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ));
				}
				if (full)
					_mm256_storeu_ps(cp, acc[r][v]);
				else
					_mm256_maskstore_ps(cp, mk, acc[r][v]);
			}
		colsum256(g->cs + j0, acc, MR, NV, tail, FULL);
		return;
	}
	if (g->alpha == 1.0f && g->beta == 0.0f && !g->bias && !g->relu) {
#pragma GCC unroll 4
		for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
			for (int v = 0; v < NV; v++) {
				float *cp = g->c + (i0 + r) * g->ldc + j0 + 8 * v;
				if (FULL || v < NV - 1)
					_mm256_storeu_ps(cp, acc[r][v]);
				else
					_mm256_maskstore_ps(cp, mk, acc[r][v]);
			}
		return;
	}
#pragma GCC unroll 4
	for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
		for (int v = 0; v < NV; v++)
			store256(g, g->c + (i0 + r) * g->ldc + j0 + 8 * v, g->bias ? g->bias + j0 + 8 * v : 0, acc[r][v],
			         mk, FULL || v < NV - 1);
}

#define TILE256_CASE(MR, NV)                                   \
	case (MR * 4 + NV) * 2: tile256(g, i0, j0, MR, NV, mk, tail, 0); break; \
	case (MR * 4 + NV) * 2 + 1: tile256(g, i0, j0, MR, NV, mk, tail, 1); break;
#define TILE256_ROW(MR) TILE256_CASE(MR, 1) TILE256_CASE(MR, 2) TILE256_CASE(MR, 3)

T256 static void gemm256(const gemm_args *g) {
	for (long j0 = 0; j0 < g->n; j0 += 24) {
		long w = g->n - j0 < 24 ? g->n - j0 : 24;
		int nv = (int)((w + 7) / 8), tail = (int)(w - 8 * (nv - 1));
		__m256i mk = mask256(tail);
		for (long i0 = 0; i0 < g->m; i0 += 4) {
			int mr = g->m - i0 < 4 ? (int)(g->m - i0) : 4;
			switch ((mr * 4 + nv) * 2 + (tail == 8)) {
				TILE256_ROW(1)
				TILE256_ROW(2)
				TILE256_ROW(3)
				TILE256_ROW(4)
			}
		}
	}
}

/* dst[c*ldd + r] = src[r*lds + c] for an 8 x 8 block. */
T256 static inline void transpose8(const float *src, long lds, float *dst, long ldd) {
	__m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
	__m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
	__m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
	__m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
	__m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
	__m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
	__m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
	__m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
	__m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
	__m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
	__m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
	__m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
	__m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
	__m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
	__m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
	__m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
	_mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
	_mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
	_mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
	_mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
	_mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
	_mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
	_mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
	_mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}

/* dst[kk*n + j] = b[j*ldb + kk]: B [n, k] into B^T [k, n]. */
T256 static void transpose(const float *b, long ldb, long n, long k, float *dst) {
	long n8 = n & ~7L, k8 = k & ~7L;
	for (long j = 0; j < n8; j += 8)
		for (long kk = 0; kk < k8; kk += 8) transpose8(b + j * ldb + kk, ldb, dst + kk * n + j, n);
	for (long j = 0; j < n; j++)
		for (long kk = j < n8 ? k8 : 0; kk < k; kk++) dst[kk * n + j] = b[j * ldb + kk];
}

/* ------------------------------------------------------------ thin C */

/* C with n < 16 columns (heads, gate logits and their weight gradients).
 *
 * Rows of A contiguous along k (A not transposed): each element of C is a
 * dot product of a row of A and a column of op(B), taken as 16 partial sums
 * (lane l sums the terms with k = l mod 16, in increasing k, one FMA each)
 * then added pairwise: l + l+8, then + l+4, + l+2, + l+1. The AVX2 code
 * keeps the 16 lanes in two vectors and adds them in the same tree, so both
 * levels give the same bits, and a row's result depends on nothing but
 * that row. The columns of op(B) are made contiguous first (on the stack).
 * A transposed (the weight gradients of thin layers, where k is the batch)
 * goes through the tiles with the operands' roles swapped (thin_wgrad). */

/* The epilogue of element (i, j), as store512/store256. */
static inline void thin_store(const gemm_args *g, long i, long j, float x) {
	float *cp = g->c + i * g->ldc + j;
	if (g->alpha != 1.0f) x = x * g->alpha;
	if (g->beta != 0.0f) x = x + g->beta * *cp;
	if (g->bias) x = x + g->bias[j];
	if (g->relu) x = x > 0.0f ? x : 0.0f;
	if (g->gy) x = g->gy[i * g->ldy + j] > 0.0f ? x : 0.0f;
	*cp = x;
	if (g->cs) g->cs[j] += (double)x;
}

/* The last three steps of the tree, from lanes l + l+8 (8 lanes). */
T256 static inline float reduce8(__m256 s8) {
	__m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
	__m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
	return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

T512 static void thin_dot512(const gemm_args *g, const float *wt, long ldw) {
	const long k16 = g->k & ~15L;
	const __mmask16 tm = (__mmask16)((1u << (g->k - k16)) - 1);
	for (long i = 0; i < g->m; i++) {
		const float *a = g->a + i * g->ars;
		for (long j = 0; j < g->n; j++) {
			const float *w = wt + j * ldw;
			__m512 acc = _mm512_setzero_ps();
			for (long kk = 0; kk < k16; kk += 16)
				acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + kk), _mm512_loadu_ps(w + kk), acc);
			if (tm) acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, a + k16), _mm512_maskz_loadu_ps(tm, w + k16), acc);
			__m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
			thin_store(g, i, j, reduce8(_mm256_add_ps(_mm512_castps512_ps256(acc), hi)));
		}
	}
}

T256 static void thin_dot256(const gemm_args *g, const float *wt, long ldw) {
	const long k16 = g->k & ~15L;
	const int t = (int)(g->k - k16);
	const __m256i mlo = mask256(t < 8 ? t : 8), mhi = mask256(t > 8 ? t - 8 : 0);
	for (long i = 0; i < g->m; i++) {
		const float *a = g->a + i * g->ars;
		for (long j = 0; j < g->n; j++) {
			const float *w = wt + j * ldw;
			__m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
			for (long kk = 0; kk < k16; kk += 16) {
				lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + kk), _mm256_loadu_ps(w + kk), lo);
				hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + kk + 8), _mm256_loadu_ps(w + kk + 8), hi);
			}
			if (t) {
				lo = _mm256_fmadd_ps(_mm256_maskload_ps(a + k16, mlo), _mm256_maskload_ps(w + k16, mlo), lo);
				hi = _mm256_fmadd_ps(_mm256_maskload_ps(a + k16 + 8, mhi), _mm256_maskload_ps(w + k16 + 8, mhi), hi);
			}
			thin_store(g, i, j, reduce8(_mm256_add_ps(lo, hi)));
		}
	}
}

static void run_tiles(const gemm_args *g);

/* Thin C with A transposed: the weight gradients dW = X^T dY of heads and
 * gate logits, where k is the batch and n the 1..15 outputs. C^T = dY^T X
 * is a GEMM whose A' = dY^T reads dY in place (row j of A' is column j of
 * dY) and whose B' = X is not transposed: the tiles above compute it with
 * the thin side as their rows and X's row of m floats as their vectors,
 * each element summed over k in increasing k order, one FMA per term, from
 * zero, the same order as every other tile, so both levels give the same
 * bits. C^T goes to the stack (not inlined, so that its buffer never adds
 * to thin_gemm's) and the epilogue writes it transposed. */
__attribute__((noinline)) static int thin_wgrad(const gemm_args *g, const float *b, long ldb) {
	float buf[TBUF];
	if (g->m * g->n > TBUF) return 0;
	gemm_args t = {g->n, g->m, g->k, b, 1, ldb, g->a, g->aks, buf, g->m, 1.0f, 0.0f, 0, 0, 0, 0, 0};
	run_tiles(&t);
	for (long i = 0; i < g->m; i++)
		for (long j = 0; j < g->n; j++) thin_store(g, i, j, buf[j * g->m + i]);
	return 1;
}

/* Thin C: 1 when done, 0 when the shape is left to OpenBLAS. */
static int thin_gemm(const gemm_args *g, int ta, int tb, const float *b, long ldb) {
	if (ta) return thin_wgrad(g, b, ldb);
	const float *wt = b; /* op(B)^T: column j of op(B) at wt + j*ldw */
	long ldw = ldb;
	float buf[TBUF];
	if (!tb) {
		if (g->n * g->k > TBUF) return 0;
		transpose(b, ldb, g->k, g->n, buf);
		wt = buf;
		ldw = g->k;
	}
	if (level() == 2)
		thin_dot512(g, wt, ldw);
	else
		thin_dot256(g, wt, ldw);
	return 1;
}

/* ------------------------------------------------------------ dispatch */

static int sgemm_args(gemm_args *g, int ta, int tb);

static void run_tiles(const gemm_args *g) {
	if (level() == 2)
		gemm512(g);
	else
		gemm256(g);
}

int mtlcpu_sgemm(int ta, int tb, long m, long n, long k, float alpha, const float *a, long lda, const float *b,
              long ldb, float beta, float *c, long ldc, const float *bias, int relu) {
	if (level() == 0 || (ta && tb) || m <= 0 || n <= 0 || k <= 0) return 0;
	gemm_args g = {m, n, k, a, ta ? 1 : lda, ta ? lda : 1, b, ldb, c, ldc, alpha, beta, bias, relu, 0, 0, 0};
	return sgemm_args(&g, ta, tb);
}

/* The data gradient of a layer with its epilogue: C = A * op(B) (the
 * output gradient dY * W^T), then C = y > 0 ? C : +0 where y is set (the
 * ReLU backward of the layer whose output C is the gradient of) and db =
 * the column sums of C, each summed in double in row order, as
 * mtlcpu_relu_bwd_bias_grad sums them, so the bits are the same as those of
 * the GEMM followed by that pass. The rows must not be split between calls
 * (the sums would then be partial); column blocks are fine. */
int mtlcpu_sgemm_actgrad(int tb, long m, long n, long k, const float *a, long lda, const float *b, long ldb, float *c,
                      long ldc, const float *y, long ldy, float *db) {
	double cs[512];
	if (level() == 0 || m <= 0 || n <= 0 || k <= 0 || n > 512) return 0;
	for (long j = 0; j < n; j++) cs[j] = 0;
	gemm_args g = {m, n, k, a, lda, 1, b, ldb, c, ldc, 1.0f, 0.0f, 0, 0, y, ldy, cs};
	if (!sgemm_args(&g, 0, tb)) return 0;
	for (long j = 0; j < n; j++) db[j] = (float)cs[j];
	return 1;
}

/* Runs g (built from the arguments of a call with transposes ta and tb). */
static int sgemm_args(gemm_args *g, int ta, int tb) {
	const long n = g->n, k = g->k;
	const float *b = g->b;
	const long ldb = g->ldb;
	if (n < 16) return thin_gemm(g, ta, tb, b, ldb); /* a tile would waste most of its lanes */
	if (tb) {
		/* B is [n, k]: build op(B) = B^T [k, n] row-major */
		if (n * k > TBUF) return 0;
		float bt[TBUF];
		transpose(b, ldb, n, k, bt);
		g->b = bt;
		g->ldb = n;
		run_tiles(g);
		return 1;
	}
	run_tiles(g);
	return 1;
}

/* ------------------------------------------------------------ K-segmented sums */

/* The gradient of an input that several layers read is the sum over the
 * layers s of dY_s W_s^T (dY_s [m, k_s], W_s [n, k_s]): one GEMM over
 * K = sum k_s, its A the k-concatenation [dY_1 | ... | dY_S] read in place
 * segment by segment, its B the concatenation of the W_s^T, transposed
 * once into the caller's bt. Every element of C is one FMA chain over the
 * segments in order, each in increasing k, from zero: bit for bit the
 * GEMM of the explicitly concatenated operands, at the rate of one GEMM
 * of depth K instead of a chain of S shallow ones each adding a rounded
 * partial sum into C. */

/* bt[(koff_s + kk)*n + j] = b[s][j*ldb[s] + kk]: the W_s^T stacked along k
 * into bt [sum k, n]. */
int mtlcpu_gemm_sum_transpose(long n, int nseg, const float *const *b, const long *ldb, const long *k, float *bt) {
	if (level() == 0) return 0;
	for (int s = 0; s < nseg; s++) {
		transpose(b[s], ldb[s], n, k[s], bt);
		bt += k[s] * n;
	}
	return 1;
}

/* Rows per pass over the column blocks: 48 rows of the terms (112 KB at
 * K = 576) stay in L2 from one 64-column block to the next instead of
 * being read again from memory for each (a multiple of both levels' tile
 * heights, 6 and 4). */
#define SUM_ROWS 48

/* Rows [i0, i1) of C = sum_s a[s] * bt_s (+ C when accumulate), with
 * a[s] [m, k[s]] (leading dimension lda[s]) and bt from
 * mtlcpu_gemm_sum_transpose. A row of C depends only on that row of the
 * a[s], so any cut of the rows gives the same bits. */
int mtlcpu_sgemm_sum(long i0, long i1, long n, int nseg, const float *const *a, const long *lda, const long *k,
                     const float *bt, int accumulate, float *c, long ldc) {
	const float *sa[MTL_GEMM_SUM_MAX_SEGS];
	long ktot = 0;
	if (level() == 0 || nseg <= 0 || nseg > MTL_GEMM_SUM_MAX_SEGS || n < 16) return 0;
	for (int s = 0; s < nseg; s++) {
		sa[s] = a[s] + i0 * lda[s];
		ktot += k[s];
	}
	for (long r0 = i0; r0 < i1; r0 += SUM_ROWS) {
		const long r1 = i1 - r0 < SUM_ROWS ? i1 : r0 + SUM_ROWS;
		for (int s = 0; s < nseg; s++) sa[s] = a[s] + r0 * lda[s];
		gemm_args g = {r1 - r0, n, ktot, 0, 0, 0, bt, n, c + r0 * ldc, ldc, 1.0f, accumulate ? 1.0f : 0.0f,
		               0, 0, 0, 0, 0, nseg, sa, lda, k};
		run_tiles(&g);
	}
	return 1;
}

#else

int mtlcpu_gemm_level(void) { return 0; }
void mtlcpu_gemm_force_level(int l) { (void)l; }
int mtlcpu_sgemm(int ta, int tb, long m, long n, long k, float alpha, const float *a, long lda, const float *b,
              long ldb, float beta, float *c, long ldc, const float *bias, int relu) {
	(void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb;
	(void)beta, (void)c, (void)ldc, (void)bias, (void)relu;
	return 0;
}
int mtlcpu_sgemm_actgrad(int tb, long m, long n, long k, const float *a, long lda, const float *b, long ldb, float *c,
                      long ldc, const float *y, long ldy, float *db) {
	(void)tb, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)c, (void)ldc, (void)y;
	(void)ldy, (void)db;
	return 0;
}
int mtlcpu_gemm_sum_transpose(long n, int nseg, const float *const *b, const long *ldb, const long *k, float *bt) {
	(void)n, (void)nseg, (void)b, (void)ldb, (void)k, (void)bt;
	return 0;
}
int mtlcpu_sgemm_sum(long i0, long i1, long n, int nseg, const float *const *a, const long *lda, const long *k,
                     const float *bt, int accumulate, float *c, long ldc) {
	(void)i0, (void)i1, (void)n, (void)nseg, (void)a, (void)lda, (void)k, (void)bt, (void)accumulate, (void)c;
	(void)ldc;
	return 0;
}

#endif
