/* The backward of a set of gates in one pass over the rows (see
 * cpu_gates.h). mtlcpu_gate_bwd runs one gate and up to 4 experts at a time
 * over a block of rows, so each expert's output and gradient go through the
 * L2 cache once per gate; here a row is finished for every gate and expert
 * before the next, so the row's expert outputs, gates' gradients and
 * expert gradients stay in L1 (or registers): each expert gradient is
 * written once, summed over the gates in a register, and the gate logits'
 * softmax backward and the experts' ReLU backward and bias gradient, each
 * a separate pass over the rows before, run on the row while it is there.
 *
 * Every value is computed with the operations, operands and order of the
 * kernels it replaces (mtlcpu_gate_bwd, mtlcpu_softmax_bwd,
 * mtlcpu_relu_bwd_bias_grad), so the results are the same bits; like
 * cpu_kernels.c the file is ISO C, so nothing is contracted into an FMA. */
#include "cpu_gates.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

typedef float gv8 __attribute__((vector_size(32)));
typedef float gv16 __attribute__((vector_size(64)));
typedef int gi16 __attribute__((vector_size(64)));
typedef double gd8 __attribute__((vector_size(64)));

/* The end of mtlcpu_gate_bwd's dot product: the tail j..d-1 added into
 * lanes 0.. in order, then the lanes in a fixed tree. */
static inline float dot_end(const gv8 *acc, const float *g, const float *x, int j, int d) {
	float lane[8];
	memcpy(lane, acc, sizeof lane);
	for (int l = 0; j < d; j++, l++) lane[l] += g[j] * x[j];
	return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* n (1..4) dot products of the rows g[0..n-1] with xr side by side
 * (independent addition chains), each in mtlcpu_gate_bwd's lanes and order.
 * Inlined with a constant n, so no chain is computed for nothing. */
static inline __attribute__((always_inline)) void dots_n(int n, float *out[4], const float *g[4], const float *xr,
                                                        int d) {
	gv8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
	int j = 0;
	for (; j + 8 <= d; j += 8) {
		gv8 xv, t;
		memcpy(&xv, xr + j, sizeof xv);
		memcpy(&t, g[0] + j, sizeof t);
		a0 += t * xv;
		if (n > 1) {
			memcpy(&t, g[1] + j, sizeof t);
			a1 += t * xv;
		}
		if (n > 2) {
			memcpy(&t, g[2] + j, sizeof t);
			a2 += t * xv;
		}
		if (n > 3) {
			memcpy(&t, g[3] + j, sizeof t);
			a3 += t * xv;
		}
	}
	*out[0] = dot_end(&a0, g[0], xr, j, d);
	if (n > 1) *out[1] = dot_end(&a1, g[1], xr, j, d);
	if (n > 2) *out[2] = dot_end(&a2, g[2], xr, j, d);
	if (n > 3) *out[3] = dot_end(&a3, g[3], xr, j, d);
}

/* dwr[column of listing k] = <dout row of listing k, xr> for the listings
 * k0..k1-1 of one expert, 4 at a time. */
static inline void expert_dots(float *dwr, const int *coff, const float *xr, float *const *dout, long b, int d,
                               const int *lgate, const int *lcol, int k0, int k1) {
	for (int k = k0; k < k1; k += 4) {
		int cnt = k1 - k < 4 ? k1 - k : 4;
		const float *g[4];
		float *out[4];
		for (int i = 0; i < cnt; i++) {
			g[i] = dout[lgate[k + i]] + b * d;
			out[i] = dwr + coff[lgate[k + i]] + lcol[k + i];
		}
		switch (cnt) {
		case 4:
			dots_n(4, out, g, xr, d);
			break;
		case 3:
			dots_n(3, out, g, xr, d);
			break;
		case 2:
			dots_n(2, out, g, xr, d);
			break;
		default:
			dots_n(1, out, g, xr, d);
		}
	}
}

/* The ReLU backward (with relu) and the bias sums of one gradient row:
 * dr = x > 0 ? dr : +0, s[j] += (double)dr[j]. */
static inline void fold_row(float *dr, const float *xr, double *s, int d, int relu) {
	const gv16 zero = {0};
	int j = 0;
	for (; j + 16 <= d; j += 16) {
		gv16 v;
		memcpy(&v, dr + j, sizeof v);
		if (relu) {
			gv16 xv;
			memcpy(&xv, xr + j, sizeof xv);
			v = (gv16)((gi16)v & (xv > zero)); /* +0 where !(x > 0), NaN included */
			memcpy(dr + j, &v, sizeof v);
		}
		gv8 lo8, hi8;
		memcpy(&lo8, &v, sizeof lo8);
		memcpy(&hi8, (const char *)&v + sizeof lo8, sizeof hi8);
		gd8 lo = __builtin_convertvector(lo8, gd8), hi = __builtin_convertvector(hi8, gd8), s0, s1;
		memcpy(&s0, s + j, sizeof s0);
		memcpy(&s1, s + j + 8, sizeof s1);
		s0 = s0 + lo;
		s1 = s1 + hi;
		memcpy(s + j, &s0, sizeof s0);
		memcpy(s + j + 8, &s1, sizeof s1);
	}
	for (; j < d; j++) {
		if (relu) dr[j] = xr[j] > 0 ? dr[j] : 0.0f;
		s[j] += (double)dr[j];
	}
}

HOT void mtlcpu_gates_bwd(long lo, long hi, int d, int ngates, int nexp, float *const *dout, float *const *w,
                          float *const *dlogits, const int *ne, const float *invT, float *const *x,
                          float *const *dx, const int *loff, const int *lgate, const int *lcol, int relu,
                          float *const *db) {
	int coff[MTL_GATES_MAX_COLS + 1];
	float dwr[MTL_GATES_MAX_COLS];
	double sums[MTL_GATES_MAX_SUMS];
	if (ngates > MTL_GATES_MAX_COLS) return; /* the Go side checked */
	int cols = 0;
	for (int g = 0; g < ngates; g++) {
		coff[g] = cols;
		cols += ne[g];
	}
	if (cols > MTL_GATES_MAX_COLS || (db && (long)nexp * d > MTL_GATES_MAX_SUMS)) return;
	if (db)
		for (long i = 0; i < (long)nexp * d; i++) sums[i] = 0;
	const gv16 zero = {0};
	for (long b = lo; b < hi; b++) {
		for (int e = 0; e < nexp; e++) {
			const float *xr = x[e] + b * d;
			float *dr = dx[e] + b * d;
			int k0 = loff[e], k1 = loff[e + 1];
			expert_dots(dwr, coff, xr, dout, b, d, lgate, lcol, k0, k1);
			/* the gradient row, in L1: written by the first listing, then
			 * added into in listing order */
			if (k0 == k1) memset(dr, 0, (size_t)d * sizeof(float));
			for (int k = k0; k < k1; k++) {
				int g = lgate[k];
				float we = w[g][b * ne[g] + lcol[k]];
				const float *gr = dout[g] + b * d;
				int j = 0;
				for (; j + 16 <= d; j += 16) {
					gv16 t, acc = zero;
					memcpy(&t, gr + j, sizeof t);
					if (k > k0) memcpy(&acc, dr + j, sizeof acc);
					acc = acc + we * t;
					memcpy(dr + j, &acc, sizeof acc);
				}
				for (; j < d; j++) dr[j] = (k > k0 ? dr[j] : 0.0f) + we * gr[j];
			}
			if (db) fold_row(dr, xr, sums + (long)e * d, d, relu);
		}
		for (int g = 0; g < ngates; g++) {
			const float *wr = w[g] + b * ne[g], *gr = dwr + coff[g];
			float *dl = dlogits[g] + b * ne[g];
			double dot = 0;
			for (int i = 0; i < ne[g]; i++) dot += (double)wr[i] * (double)gr[i];
			float dd = (float)dot;
			for (int i = 0; i < ne[g]; i++) dl[i] = invT[g] * wr[i] * (gr[i] - dd);
		}
	}
	if (db)
		for (int e = 0; e < nexp; e++)
			for (int j = 0; j < d; j++) db[e][j] = (float)sums[(long)e * d + j];
}
