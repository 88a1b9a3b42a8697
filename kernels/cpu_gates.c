/* The backward of a set of gates in one pass (see cpu_gates.h): the
 * gates' combine backward (mtlcpu_gate_bwd, all gates over a block of rows
 * before the next, so that the block's expert outputs and gradients stay in
 * the L2 cache from gate to gate), then, while the block is still there,
 * the softmax backward of each gate's logits (mtlcpu_softmax_bwd, in place
 * over the weight gradients) and the experts' ReLU backward and bias
 * gradient, each a separate pass over all the rows before. The bias sums
 * are carried across the blocks in double, in row order, so every result
 * is the bits of the separate passes; like cpu_kernels.c the file is ISO
 * C, so nothing is contracted into an FMA. */
#include "cpu_gates.h"

#include <string.h>

#include "cpu_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

/* Rows per block: 4 experts of width 64 are 32 KB of outputs and 32 KB of
 * gradients per block (kernels.gatesBlockRows). */
#define GATES_BLOCK 32

typedef float gv8 __attribute__((vector_size(32)));
typedef float gv16 __attribute__((vector_size(64)));
typedef int gi16 __attribute__((vector_size(64)));
typedef double gd8 __attribute__((vector_size(64)));

/* The ReLU backward (with relu) and the bias sums of rows of one expert:
 * dr = x > 0 ? dr : +0 (NaN masks too), s[j] += (double)dr[j] row after
 * row. */
HOT static void fold_rows(float *dr, const float *xr, double *s, long rows, int d, int relu) {
	const gv16 zero = {0};
	for (long r = 0; r < rows; r++, dr += d, xr += d) {
		int j = 0;
		for (; j + 16 <= d; j += 16) {
			gv16 v;
			memcpy(&v, dr + j, sizeof v);
			if (relu) {
				gv16 xv;
				memcpy(&xv, xr + j, sizeof xv);
				v = (gv16)((gi16)v & (xv > zero));
				memcpy(dr + j, &v, sizeof v);
			}
			gv8 lo8, hi8;
			memcpy(&lo8, &v, sizeof lo8);
			memcpy(&hi8, (const char *)&v + sizeof lo8, sizeof hi8);
			gd8 s0, s1;
			memcpy(&s0, s + j, sizeof s0);
			memcpy(&s1, s + j + 8, sizeof s1);
			s0 = s0 + __builtin_convertvector(lo8, gd8);
			s1 = s1 + __builtin_convertvector(hi8, gd8);
			memcpy(s + j, &s0, sizeof s0);
			memcpy(s + j + 8, &s1, sizeof s1);
		}
		for (; j < d; j++) {
			if (relu) dr[j] = xr[j] > 0 ? dr[j] : 0.0f;
			s[j] += (double)dr[j];
		}
	}
}

void mtlcpu_gates_bwd(long lo, long hi, int d, int ngates, int nexp, float *const *dout, float *const *w,
                      float *const *dlogits, const int *ne, const float *invT, float *const *x, float *const *dx,
                      const int *list, int relu, float *const *db) {
	int coff[MTL_GATES_MAX_COLS + 1];
	unsigned char first[MTL_GATES_MAX_COLS], listed[MTL_GATES_MAX_COLS];
	double sums[MTL_GATES_MAX_SUMS];
	if (ngates > MTL_GATES_MAX_COLS || nexp > MTL_GATES_MAX_COLS) return; /* the Go side checked */
	int cols = 0;
	for (int g = 0; g < ngates; g++) {
		coff[g] = cols;
		cols += ne[g];
		if (cols > MTL_GATES_MAX_COLS) return;
	}
	if (db && (long)nexp * d > MTL_GATES_MAX_SUMS) return;
	/* a column writes its expert's gradient where no earlier one lists it */
	memset(listed, 0, (size_t)nexp);
	for (int c = 0; c < cols; c++) {
		first[c] = !listed[list[c]];
		listed[list[c]] = 1;
	}
	if (db)
		for (long i = 0; i < (long)nexp * d; i++) sums[i] = 0;
	for (long b0 = lo; b0 < hi; b0 += GATES_BLOCK) {
		long b1 = b0 + GATES_BLOCK < hi ? b0 + GATES_BLOCK : hi, rows = b1 - b0;
		for (int e = 0; e < nexp; e++)
			if (!listed[e]) memset(dx[e] + b0 * d, 0, (size_t)(rows * d) * sizeof(float));
		for (int g = 0; g < ngates; g++) {
			const float *go = dout[g] + b0 * d, *wg = w[g] + b0 * ne[g];
			float *dl = dlogits[g] + b0 * ne[g];
			for (int e0 = 0; e0 < ne[g]; e0 += 4) {
				int cnt = ne[g] - e0 < 4 ? ne[g] - e0 : 4, firsts = 0;
				const float *xs[4] = {0, 0, 0, 0};
				float *dxs[4] = {0, 0, 0, 0};
				for (int i = 0; i < cnt; i++) {
					int c = coff[g] + e0 + i;
					xs[i] = x[list[c]] + b0 * d;
					dxs[i] = dx[list[c]] + b0 * d;
					firsts += first[c];
				}
				/* a chunk that mixes gradients written first here and
				 * ones written before zeroes the former and adds */
				if (firsts > 0 && firsts < cnt)
					for (int i = 0; i < cnt; i++)
						if (first[coff[g] + e0 + i]) memset(dxs[i], 0, (size_t)(rows * d) * sizeof(float));
				mtlcpu_gate_bwd(go, wg, ne[g], e0, cnt, xs[0], xs[1], xs[2], xs[3], dxs[0], dxs[1], dxs[2],
				                dxs[3], dl, rows, d, firsts == cnt);
			}
			mtlcpu_softmax_bwd(dl, dl, wg, 0, rows, ne[g], invT[g]);
		}
		if (db)
			for (int e = 0; e < nexp; e++)
				fold_rows(dx[e] + b0 * d, x[e] + b0 * d, sums + (long)e * d, rows, d, relu);
	}
	if (db)
		for (int e = 0; e < nexp; e++)
			for (int j = 0; j < d; j++) db[e][j] = (float)sums[(long)e * d + j];
}
