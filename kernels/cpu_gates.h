/* The one-pass backward of a set of gates (cpu_gates.c). */
#ifndef MTLRANK_CPU_GATES_H
#define MTLRANK_CPU_GATES_H

/* Limits of mtlcpu_gates_bwd's stack scratch: the gates' columns of one row
 * (the sum of their expert counts) and the bias sums (experts x width). The
 * Go side checks them before the call. */
#define MTL_GATES_MAX_COLS 512
#define MTL_GATES_MAX_SUMS 8192

/* The backward of ngates gates mixing nexp experts, rows lo..hi-1, all
 * pointers at row 0 of their tensor:
 *   dw_g[b,i]   = <dout[g][b,:], x[e][b,:]> for the expert e of gate g's
 *                 column i (in the lanes and order of mtlcpu_gate_bwd);
 *   dlogits[g]  = the softmax backward of dw_g (mtlcpu_softmax_bwd's bits);
 *   dx[e][b,:]  = 0 + sum of w[g][b,i] * dout[g][b,:] over the listings
 *                 (g, i) of e, in the order given (gates in order);
 * where expert e is listed by (lgate[k], lcol[k]) for k in
 * loff[e]..loff[e+1]-1. With db (one row of d floats per expert) dx is also
 * masked where x <= 0 or NaN when relu, and db[e] gets dx's column sums in
 * double in row order (mtlcpu_relu_bwd_bias_grad's bits over rows lo..hi-1). */
void mtlcpu_gates_bwd(long lo, long hi, int d, int ngates, int nexp, float *const *dout, float *const *w,
                      float *const *dlogits, const int *ne, const float *invT, float *const *x, float *const *dx,
                      const int *loff, const int *lgate, const int *lcol, int relu, float *const *db);

#endif
