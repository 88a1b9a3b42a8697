/* Element-wise and row kernels of the CPU device, in C so that the compiler
 * vectorises them (see cpu_kernels.c). Every function works on a range the Go
 * side has validated; none keeps a pointer after it returns. */
#ifndef MTLRANK_CPU_KERNELS_H
#define MTLRANK_CPU_KERNELS_H

#include <stdint.h>

void mtl_fill(float *x, long n, float v);
void mtl_scale(float *x, long n, float a);
void mtl_axpy(float *y, const float *x, long n, float a);
void mtl_mul(float *dst, const float *a, const float *b, long n);
void mtl_equal(float *dst, const float *src, long n, float v);
void mtl_relu_bwd(float *dy, const float *y, long n);
void mtl_bias_act(float *x, const float *bias, long rows, int n, int relu);
void mtl_bias_grad(const float *dy, long rows, long ld, int w, float *db, int accumulate);
void mtl_dropout(float *x, float *mask, long lo, long n, uint64_t seed, uint64_t thr, float scale);
void mtl_gate_fwd(float *out, const float *w, int ne, int e0, int cnt, const float *x0, const float *x1,
                  const float *x2, const float *x3, long rows, int d, int first);
void mtl_gate_bwd(const float *dout, const float *w, int ne, int e0, int cnt, const float *x0,
                  const float *x1, const float *x2, const float *x3, float *dx0, float *dx1, float *dx2,
                  float *dx3, float *dw, long rows, int d);
void mtl_copy_cols(float *dst, long ldd, const float *src, long lds, long rows, int width, int accumulate);
void mtl_gather(float *out, long ldo, const float *table, int dim, const int32_t *ids,
                const int32_t *offs, long lo, long hi, int comb);
void mtl_emb_bwd(float *gv, int dim, const int32_t *pos, const float *dout, long ldo,
                 const int32_t *ids, const int32_t *offs, long rows, int comb);
void mtl_adam(float *p, const float *g, float *m, float *v, long n,
              float lr, float b1, float b2, float eps, float l2x2);
void mtl_adagrad(float *p, const float *g, float *acc, long n, float lr, float eps, float l2x2);
void mtl_sgd(float *p, const float *g, long n, float lr, float l2x2);
void mtl_sparse_adam(float *table, float *m, float *v, const float *g, const int32_t *rows,
                     long lo, long hi, int dim, float lr, float b1, float b2, float eps, float l2x2);
void mtl_sparse_adagrad(float *table, float *acc, const float *g, const int32_t *rows,
                        long lo, long hi, int dim, float lr, float eps, float l2x2);
void mtl_sparse_sgd(float *table, const float *g, const int32_t *rows, long lo, long hi,
                    int dim, float lr, float l2x2);

#endif
