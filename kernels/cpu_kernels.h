/* Element-wise and row kernels of the CPU device, in C so that the compiler
 * vectorises them (see cpu_kernels.c). Every function works on a range the Go
 * side has validated; none keeps a pointer after it returns. */
#ifndef MTLRANK_CPU_KERNELS_H
#define MTLRANK_CPU_KERNELS_H

#include <stdint.h>

void mtlcpu_fill(float *x, long n, float v);
void mtlcpu_scale(float *x, long n, float a);
void mtlcpu_axpy(float *y, const float *x, long n, float a);
void mtlcpu_mul(float *dst, const float *a, const float *b, long n);
void mtlcpu_equal(float *dst, const float *src, long n, float v);
void mtlcpu_relu_bwd(float *dy, const float *y, long n);
/* Activation codes: the values of kernels.Activation (device.go). */
enum {
	MTL_ACT_LINEAR = 0,
	MTL_ACT_RELU = 1,
	MTL_ACT_SELU = 2,
	MTL_ACT_ELU = 3,
	MTL_ACT_GELU = 4,
	MTL_ACT_TANH = 5,
	MTL_ACT_SIGMOID = 6,
	MTL_ACT_SWISH = 7,
	MTL_ACT_LEAKY_RELU = 8,
};
void mtlcpu_act_fwd(float *y, const float *x, long n, int act);
void mtlcpu_act_bwd(float *dy, const float *x, long n, int act);
void mtlcpu_bias_act(float *x, const float *bias, long rows, int n, int relu);
void mtlcpu_bias_act_ld(float *x, long ld, const float *bias, long rows, int n, int relu);
void mtlcpu_bias_grad(const float *dy, long rows, long ld, int w, float *db, int accumulate);
void mtlcpu_dropout(float *x, float *mask, long lo, long n, uint64_t seed, uint64_t thr, float scale);
void mtlcpu_gate_fwd(float *out, const float *w, int ne, int e0, int cnt, const float *x0, const float *x1,
                  const float *x2, const float *x3, long rows, int d, int first);
void mtlcpu_gate_bwd(const float *dout, const float *w, int ne, int e0, int cnt, const float *x0,
                  const float *x1, const float *x2, const float *x3, float *dx0, float *dx1, float *dx2,
                  float *dx3, float *dw, long rows, int d, int first);
void mtlcpu_copy_cols(float *dst, long ldd, const float *src, long lds, long rows, int width, int accumulate);
void mtlcpu_gather(float *out, long ldo, const float *table, int dim, const int32_t *ids,
                const int32_t *offs, long lo, long hi, int comb);
void mtlcpu_emb_bwd(float *gv, int dim, const int32_t *slot, long base, const float *dout, long ldo,
                 const int32_t *offs, long rows, int comb);
void mtlcpu_adam(float *p, const float *g, float *m, float *v, long n,
              float lr, float b1, float b2, float eps, float l2x2);
void mtlcpu_adagrad(float *p, const float *g, float *acc, long n, float lr, float eps, float l2x2);
void mtlcpu_sgd(float *p, const float *g, long n, float lr, float l2x2);
void mtlcpu_sparse_adam(float *table, float *m, float *v, const float *g, const int32_t *rows,
                     long lo, long hi, int dim, float lr, float b1, float b2, float eps, float l2x2);
void mtlcpu_sparse_adagrad(float *table, float *acc, const float *g, const int32_t *rows,
                        long lo, long hi, int dim, float lr, float eps, float l2x2);
void mtlcpu_sparse_sgd(float *table, const float *g, const int32_t *rows, long lo, long hi,
                    int dim, float lr, float l2x2);

/* cpu_math.c */
void mtlcpu_exp_inplace(float *x, long n);
/* Caps the vector width of cpu_math.c: 2 AVX-512, 1 AVX2, 0 scalar (tests). */
void mtlcpu_math_force_level(int l);
void mtlcpu_sigmoid(float *y, const float *x, long n);
void mtlcpu_softmax(float *y, const float *x, long lo, long hi, int n, float invT);
void mtlcpu_softmax_bwd(float *dx, const float *dy, const float *y, long lo, long hi, int n, float invT);
double mtlcpu_bce(float *dz, const float *z, const float *y, const float *w, long n, float scale);
void mtlcpu_relu_bwd_bias_grad(float *dy, const float *y, long rows, long ld, int w, float *db, int accumulate,
                            int relu);

/* Small-GEMM kernels (cpu_gemm.c). mtlcpu_sgemm computes the row-major
 * C = act(alpha*op(A)*op(B) + beta*C + bias) and returns 1, or returns 0
 * without touching C when it does not handle the shape or the CPU lacks
 * AVX2/FMA (the caller then uses BLAS). bias (n values) may be NULL. */
int mtlcpu_sgemm(int ta, int tb, long m, long n, long k, float alpha, const float *a, long lda, const float *b,
              long ldb, float beta, float *c, long ldc, const float *bias, int relu);
/* C = A * op(B) (A [m, k] not transposed; op(B) = B^T when tb), then
 * C = y > 0 ? C : +0 where y (leading dimension ldy) is not NULL, and db[j]
 * = the column sums of C summed in double in row order, as
 * mtlcpu_relu_bwd_bias_grad: a layer's data gradient with the activation
 * backward and the bias gradient of the layer below. Returns 0 without
 * touching C or db when it does not handle the shape (or n > 512). */
int mtlcpu_sgemm_actgrad(int tb, long m, long n, long k, const float *a, long lda, const float *b, long ldb, float *c,
                      long ldc, const float *y, long ldy, float *db);
/* The input gradient of layers sharing an input as one GEMM over
 * K-segments (cpu_gemm.c): mtlcpu_gemm_sum_transpose stacks the W_s^T
 * (W_s [n, k[s]], leading dimension ldb[s]) into bt [sum k, n];
 * mtlcpu_sgemm_sum computes rows [i0, i1) of C = sum_s a[s] * W_s^T
 * (a[s] [m, k[s]], leading dimension lda[s]), + C when accumulate, each
 * element one FMA chain over the segments in order. Both return 0 without
 * touching their output where the kernels do not run (no AVX2/FMA, n < 16,
 * nseg outside 1..MTL_GEMM_SUM_MAX_SEGS). */
#define MTL_GEMM_SUM_MAX_SEGS 64
int mtlcpu_gemm_sum_transpose(long n, int nseg, const float *const *b, const long *ldb, const long *k, float *bt);
int mtlcpu_sgemm_sum(long i0, long i1, long n, int nseg, const float *const *a, const long *lda, const long *k,
                     const float *bt, int accumulate, float *c, long ldc);
/* 2: AVX-512 kernels, 1: AVX2 kernels, 0: none. */
int mtlcpu_gemm_level(void);
/* Caps the level used (tests run the AVX2 kernels on AVX-512 machines). */
void mtlcpu_gemm_force_level(int l);

#endif
