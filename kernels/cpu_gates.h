/* The one-pass backward of a set of gates (cpu_gates.c). */
#ifndef MTLRANK_CPU_GATES_H
#define MTLRANK_CPU_GATES_H

/* Limits of mtlcpu_gates_bwd's stack scratch: the gates' columns (the sum
 * of their expert counts) and the bias sums (experts x width). The Go side
 * checks them before the call. */
#define MTL_GATES_MAX_COLS 512
#define MTL_GATES_MAX_SUMS 8192

/* The backward of ngates gates mixing nexp experts, rows lo..hi-1, every
 * pointer at row 0 of its tensor; gate g's column i mixes expert
 * list[coff(g) + i], coff(g) = ne[0] + ... + ne[g-1]:
 *   dlogits[g]  = the softmax backward (mtlcpu_softmax_bwd) of
 *                 dw_g[b,i] = <dout[g][b,:], x[e][b,:]> (mtlcpu_gate_bwd's);
 *   dx[e][b,:]  = 0 + the sum over the gates in order (and their columns in
 *                 order) that list e of w[g][b,i] * dout[g][b,:] (+0 where
 *                 none does);
 * in blocks of rows, every gate over a block before the next block. With
 * db (one row of d floats per expert) dx is then masked where x <= 0 or NaN
 * when relu, and db[e] gets dx's column sums in double in row order
 * (mtlcpu_relu_bwd_bias_grad's bits over rows lo..hi-1). */
void mtlcpu_gates_bwd(long lo, long hi, int d, int ngates, int nexp, float *const *dout, float *const *w,
                      float *const *dlogits, const int *ne, const float *invT, float *const *x, float *const *dx,
                      const int *list, int relu, float *const *db);

#endif
