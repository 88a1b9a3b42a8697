/*
 * mtlcuda.h - the C API of libmtlcuda.so, the CUDA backend of mtlrank.
 *
 * The API exposes no CUDA type, so that the Go side (package cublas, build
 * tag cuda) compiles against this header alone and the library can be
 * rebuilt with any CUDA toolkit (11.8, 12.x, 13.x) without touching Go code.
 *
 * Conventions
 *  - Every function returns an int status: MTL_OK (0) or one of MTL_ERR_*.
 *    On failure the message of the failing call (the CUDA/cuBLAS call, its
 *    status name and description) is kept in the context and returned by
 *    mtlcuda_last_error(ctx); failures of context-free calls (mtlcuda_device_count,
 *    mtlcuda_ctx_create) are kept per thread and read with mtlcuda_last_error(NULL).
 *  - A context owns one device, one compute stream, one copy stream, a cuBLAS
 *    and a cuBLASLt handle with their workspace, and scratch buffers. It is
 *    not safe for concurrent use from several threads.
 *  - Device addresses are mtlcuda_dptr (an integer), host addresses void*.
 *  - Matrices are row-major, as on the Go side; the cuBLAS calls swap
 *    operands to express a row-major product in cuBLAS' column-major terms.
 *  - Kernels run on the compute stream and are asynchronous; errors that
 *    happen while a kernel runs are reported by the next synchronising call.
 *  - Sizes are in elements (4-byte float32 or int32) unless named *_bytes.
 */
#ifndef MTLCUDA_H
#define MTLCUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden symbols; only the API is exported. */
#if defined(MTLCUDA_BUILD) && defined(__GNUC__)
#define MTL_API __attribute__((visibility("default")))
#else
#define MTL_API
#endif

typedef uintptr_t mtlcuda_dptr;            /* device address */
typedef struct mtlcuda_ctx mtlcuda_ctx;        /* device context */
typedef struct mtlcuda_event mtlcuda_event;    /* CUDA event */
typedef struct mtlcuda_graph mtlcuda_graph;    /* instantiated CUDA graph */

enum {
	MTL_OK = 0,
	MTL_ERR_CUDA = 1,     /* a CUDA runtime call failed */
	MTL_ERR_CUBLAS = 2,   /* a cuBLAS or cuBLASLt call failed */
	MTL_ERR_INVALID = 3,  /* bad argument (size, pointer, enum) */
	MTL_ERR_NODEVICE = 4, /* no usable GPU or no driver */
	MTL_ERR_CAPTURE = 5,  /* operation not allowed while capturing a graph */
	MTL_ERR_NOMEM = 6     /* device or pinned memory exhausted */
};

enum { MTL_STREAM_COMPUTE = 0, MTL_STREAM_COPY = 1 };
/* Activations: the values of kernels.Activation and of the CPU kernels'
 * MTL_ACT_* (kernels/cpu_kernels.h); Keras' definitions and constants. */
enum {
	MTL_ACT_LINEAR = 0,
	MTL_ACT_RELU = 1,
	MTL_ACT_SELU = 2,
	MTL_ACT_ELU = 3,
	MTL_ACT_GELU = 4, /* erf form */
	MTL_ACT_TANH = 5,
	MTL_ACT_SIGMOID = 6,
	MTL_ACT_SWISH = 7, /* silu */
	MTL_ACT_LEAKY_RELU = 8 /* slope 0.2 */
};
enum { MTL_COMB_MEAN = 0, MTL_COMB_SUM = 1, MTL_COMB_SQRTN = 2 };
enum { MTL_OPT_SGD = 0, MTL_OPT_ADAGRAD = 1, MTL_OPT_ADAM = 2 };

/* Most pointers one kernel parameter block carries (gate experts, tensors
 * of one multi-tensor optimizer launch, inputs of one embedding update). */
#define MTL_MAX_EXPERTS 32
#define MTL_MAX_MULTI_TENSORS 48
#define MTL_MAX_EMB_INPUTS 16
/* Slots of the deferred embedding id check (one per gather between checks;
 * later gathers share the last slot). */
#define MTL_IDCHECK_SLOTS 256

/* ---- errors, devices, contexts ---- */

MTL_API const char *mtlcuda_last_error(const mtlcuda_ctx *ctx);
/* runtime: the CUDA version the library was built with (e.g. 12040);
 * driver: the installed driver's CUDA version, 0 without a driver. */
MTL_API int mtlcuda_runtime_version(int *runtime, int *driver);
MTL_API int mtlcuda_device_count(int *count);
MTL_API int mtlcuda_ctx_create(int device, mtlcuda_ctx **out);
MTL_API void mtlcuda_ctx_destroy(mtlcuda_ctx *ctx);
/* name: the device name, copied into buf (NUL-terminated, truncated). */
MTL_API int mtlcuda_device_info(mtlcuda_ctx *ctx, char *buf, int buf_len, int *cc_major, int *cc_minor,
                    int *sm_count, size_t *total_mem);
/* TF32 tensor-core math for SGEMM (off by default: results then differ from
 * the CPU beyond the 1e-4 relative tolerance of the parity tests). */
MTL_API int mtlcuda_set_tf32(mtlcuda_ctx *ctx, int on);

/* ---- memory ---- */

/* Stream-ordered, pooled allocation on the compute stream, zero-filled.
 * The pool keeps freed blocks for reuse (release threshold = unlimited). */
MTL_API int mtlcuda_malloc(mtlcuda_ctx *ctx, size_t bytes, mtlcuda_dptr *out);
MTL_API int mtlcuda_free(mtlcuda_ctx *ctx, mtlcuda_dptr p);
/* free/total: cudaMemGetInfo; pool_reserved/pool_used: the allocation pool. */
MTL_API int mtlcuda_mem_info(mtlcuda_ctx *ctx, size_t *free_bytes, size_t *total_bytes, size_t *pool_reserved,
                 size_t *pool_used);
/* Returns the pool's unused blocks to the device (after releasing models). */
MTL_API int mtlcuda_trim(mtlcuda_ctx *ctx);
MTL_API int mtlcuda_host_alloc(mtlcuda_ctx *ctx, size_t bytes, void **out); /* pinned */
MTL_API int mtlcuda_host_free(mtlcuda_ctx *ctx, void *p);

/* Copies on the given stream. With sync != 0 the call waits for the stream,
 * which is required when host is ordinary (pageable) memory that the caller
 * reuses after the call; async copies must use pinned host memory. */
MTL_API int mtlcuda_memcpy_htod(mtlcuda_ctx *ctx, mtlcuda_dptr dst, const void *src, size_t bytes, int stream, int sync);
MTL_API int mtlcuda_memcpy_dtoh(mtlcuda_ctx *ctx, void *dst, mtlcuda_dptr src, size_t bytes, int stream, int sync);
MTL_API int mtlcuda_memcpy_dtod(mtlcuda_ctx *ctx, mtlcuda_dptr dst, mtlcuda_dptr src, size_t bytes);
MTL_API int mtlcuda_memset(mtlcuda_ctx *ctx, mtlcuda_dptr dst, int byte_value, size_t bytes);
MTL_API int mtlcuda_fill_f32(mtlcuda_ctx *ctx, mtlcuda_dptr dst, int64_t n, float v);
MTL_API int mtlcuda_fill_i32(mtlcuda_ctx *ctx, mtlcuda_dptr dst, int64_t n, int32_t v);

/* ---- streams, events, graphs ---- */

MTL_API int mtlcuda_stream_sync(mtlcuda_ctx *ctx, int stream);
MTL_API int mtlcuda_event_create(mtlcuda_ctx *ctx, int timing, mtlcuda_event **out);
MTL_API void mtlcuda_event_destroy(mtlcuda_event *ev);
MTL_API int mtlcuda_event_record(mtlcuda_ctx *ctx, mtlcuda_event *ev, int stream);
MTL_API int mtlcuda_stream_wait_event(mtlcuda_ctx *ctx, int stream, mtlcuda_event *ev);
MTL_API int mtlcuda_event_sync(mtlcuda_ctx *ctx, mtlcuda_event *ev);
MTL_API int mtlcuda_event_query(mtlcuda_ctx *ctx, mtlcuda_event *ev, int *done);
MTL_API int mtlcuda_event_elapsed_ms(mtlcuda_ctx *ctx, mtlcuda_event *start, mtlcuda_event *end, float *ms);
/* Capture of the compute stream into a graph (relaxed mode: allocations of
 * scratch memory are allowed, synchronising calls are not). */
MTL_API int mtlcuda_capture_begin(mtlcuda_ctx *ctx);
MTL_API int mtlcuda_capture_end(mtlcuda_ctx *ctx, mtlcuda_graph **out);
MTL_API int mtlcuda_capturing(mtlcuda_ctx *ctx);
MTL_API int mtlcuda_graph_launch(mtlcuda_ctx *ctx, mtlcuda_graph *g);
MTL_API void mtlcuda_graph_destroy(mtlcuda_graph *g);

/* ---- BLAS (row-major) ---- */

/* C[m,n] = alpha*op(A)*op(B) + beta*C; A is [m,k] ([k,m] if trans_a), B is
 * [k,n] ([n,k] if trans_b); all contiguous. */
MTL_API int mtlcuda_gemm(mtlcuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k, float alpha, mtlcuda_dptr a,
             mtlcuda_dptr b, float beta, mtlcuda_dptr c);
MTL_API int mtlcuda_gemm_strided_batched(mtlcuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k, float alpha,
                             mtlcuda_dptr a, int64_t stride_a, mtlcuda_dptr b, int64_t stride_b, float beta,
                             mtlcuda_dptr c, int64_t stride_c, int batch);
/* C_i = act(op(A_i)*op(B_i) + bias_i) for i < batch through cuBLASLt with a
 * bias(+ReLU) epilogue; bias_i (n floats) starts at bias + i*stride_bias;
 * bias == 0 means no bias (C_i = act(op(A_i)*op(B_i))).
 * Falls back to SGEMM + bias kernel when cuBLASLt offers no algorithm. */
MTL_API int mtlcuda_gemm_bias_act(mtlcuda_ctx *ctx, int trans_a, int trans_b, int m, int n, int k, mtlcuda_dptr a,
                      int64_t stride_a, mtlcuda_dptr b, int64_t stride_b, mtlcuda_dptr bias, int64_t stride_bias,
                      mtlcuda_dptr c, int64_t stride_c, int batch, int act);

/* ---- element-wise and row kernels ---- */

/* x [groups, rows, n] += bias [groups, n], then act; in place. */
MTL_API int mtlcuda_bias_act(mtlcuda_ctx *ctx, mtlcuda_dptr x, mtlcuda_dptr bias, int groups, int64_t rows, int n, int act);
MTL_API int mtlcuda_act_backward(mtlcuda_ctx *ctx, mtlcuda_dptr dy, mtlcuda_dptr y, int64_t n, int act);
/* y = act(x) element-wise for any MTL_ACT_* (y may equal x), and dy *= act'(x)
 * at the pre-activation x: the activations bias_act does not fuse. */
MTL_API int mtlcuda_activate(mtlcuda_ctx *ctx, mtlcuda_dptr y, mtlcuda_dptr x, int64_t n, int act);
MTL_API int mtlcuda_activate_backward(mtlcuda_ctx *ctx, mtlcuda_dptr dy, mtlcuda_dptr x, int64_t n, int act);
/* db [groups, n] (+)= sum over rows of dy [groups, rows, n]. */
MTL_API int mtlcuda_bias_grad(mtlcuda_ctx *ctx, mtlcuda_dptr dy, mtlcuda_dptr db, int groups, int64_t rows, int n, int accumulate);
/* Element i is dropped (mask 0) when hash(seed, i) >> 40 < threshold and
 * otherwise scaled by scale; hash is the SplitMix64 finaliser of
 * seed + (i+1)*0x9E3779B97F4A7C15, bit-identical to the CPU device. */
MTL_API int mtlcuda_dropout(mtlcuda_ctx *ctx, mtlcuda_dptr x, mtlcuda_dptr mask, int64_t n, uint64_t threshold, float scale,
                uint64_t seed);
MTL_API int mtlcuda_mul(mtlcuda_ctx *ctx, mtlcuda_dptr dst, mtlcuda_dptr a, mtlcuda_dptr b, int64_t n);
MTL_API int mtlcuda_axpy(mtlcuda_ctx *ctx, float alpha, mtlcuda_dptr x, mtlcuda_dptr y, int64_t n);
MTL_API int mtlcuda_scale(mtlcuda_ctx *ctx, mtlcuda_dptr x, int64_t n, float alpha);
MTL_API int mtlcuda_equal_mask(mtlcuda_ctx *ctx, mtlcuda_dptr dst, mtlcuda_dptr src, int64_t n, float value);
MTL_API int mtlcuda_sigmoid(mtlcuda_ctx *ctx, mtlcuda_dptr y, mtlcuda_dptr x, int64_t n);
/* dst[r, dst_col+j] (+)= src[r, src_col+j] for r < rows, j < width. */
MTL_API int mtlcuda_copy_cols(mtlcuda_ctx *ctx, mtlcuda_dptr dst, int dst_cols, int dst_col, mtlcuda_dptr src, int src_cols,
                  int src_col, int64_t rows, int width, int accumulate);
MTL_API int mtlcuda_softmax_rows(mtlcuda_ctx *ctx, mtlcuda_dptr y, mtlcuda_dptr x, int64_t rows, int cols, float temperature);
MTL_API int mtlcuda_softmax_backward(mtlcuda_ctx *ctx, mtlcuda_dptr dx, mtlcuda_dptr dy, mtlcuda_dptr y, int64_t rows, int cols,
                         float temperature);
/* out[b,:] = sum_e w[b,e] * experts[e][b,:]; w [rows, num_experts]. */
MTL_API int mtlcuda_gate_combine(mtlcuda_ctx *ctx, mtlcuda_dptr out, mtlcuda_dptr w, const mtlcuda_dptr *experts, int num_experts,
                     int64_t rows, int d);
/* dw[b,e] = <dout[b,:], experts[e][b,:]>; dexperts[e][b,:] += w[b,e]*dout[b,:]. */
MTL_API int mtlcuda_gate_combine_backward(mtlcuda_ctx *ctx, mtlcuda_dptr dout, mtlcuda_dptr w, const mtlcuda_dptr *experts,
                              mtlcuda_dptr dw, const mtlcuda_dptr *dexperts, int num_experts, int64_t rows, int d);

/* Fused gate: w = softmax(logits / temperature) ([rows, num_experts]) and
 * out[b,:] = sum_e w[b,e] * experts[e][b,:] in one kernel (one warp per row:
 * the logits of a row are read once, the weights never leave the chip).
 * Equals mtlcuda_softmax_rows followed by mtlcuda_gate_combine, which it runs
 * instead when num_experts > MTL_MAX_EXPERTS. */
MTL_API int mtlcuda_gate_forward(mtlcuda_ctx *ctx, mtlcuda_dptr out, mtlcuda_dptr w, mtlcuda_dptr logits, const mtlcuda_dptr *experts,
                             int num_experts, int64_t rows, int d, float temperature);
/* Its backward in one kernel: dw[b,e] = <dout[b,:], experts[e][b,:]> stays
 * in registers, dexperts[e][b,:] += w[b,e] * dout[b,:], and
 * dlogits[b,e] = w[b,e] * (dw[b,e] - <w[b,:], dw[b,:]>) / temperature
 * (overwritten). Equals mtlcuda_gate_combine_backward followed by
 * mtlcuda_softmax_backward (run instead when num_experts > MTL_MAX_EXPERTS, with
 * dw_scratch [rows, num_experts], which may be 0 otherwise). */
MTL_API int mtlcuda_gate_backward(mtlcuda_ctx *ctx, mtlcuda_dptr dlogits, mtlcuda_dptr dout, mtlcuda_dptr w, const mtlcuda_dptr *experts,
                              const mtlcuda_dptr *dexperts, int num_experts, int64_t rows, int d, float temperature,
                              mtlcuda_dptr dw_scratch);

/* ---- losses: loss[0] += scale * sum_i (float64 partial sums, fixed order) ---- */

MTL_API int mtlcuda_bce_with_logits(mtlcuda_ctx *ctx, mtlcuda_dptr loss, mtlcuda_dptr dz, mtlcuda_dptr z, mtlcuda_dptr y, mtlcuda_dptr w,
                        int64_t n, float scale);
MTL_API int mtlcuda_mse(mtlcuda_ctx *ctx, mtlcuda_dptr loss, mtlcuda_dptr dz, mtlcuda_dptr z, mtlcuda_dptr y, mtlcuda_dptr w, int64_t n,
            float scale);
MTL_API int mtlcuda_sum_squares(mtlcuda_ctx *ctx, mtlcuda_dptr loss, mtlcuda_dptr x, int64_t n, float scale);

/* Fused multi-task loss: every task of a model in one launch. For task t
 * and row i (i < rows), with
 *   w_ti = [1 + (pos_weight-1)*y_ti] * weight_ti * [space_ti == 1]
 * (each factor only when given: pos_weight != 1, weight != 0, space != 0),
 *   l_ti = max(z,0) - z*y + log1p(exp(-|z|))   (BCE from the logit), or
 *   l_ti = (z - y)^2                            (MSE),
 * it writes dz_ti = lambda_t * scale * w_ti * dl/dz, adds
 * scale * sum_i w_ti*l_ti to task_loss[t] (before lambda; task_loss may be 0)
 * and sum_t lambda_t * scale * sum_i w_ti*l_ti to total[0] (total may be 0).
 * Sums are float64, reduced in a fixed order (deterministic), and finished
 * by the last block of the launch: one kernel, no host synchronisation,
 * graph-capturable. More than MTL_MAX_LOSS_TASKS tasks take several launches. */
#define MTL_MAX_LOSS_TASKS 16
enum { MTL_LOSS_BCE = 0, MTL_LOSS_MSE = 1 };
typedef struct {
	int kind;                  /* MTL_LOSS_* */
	mtlcuda_dptr z, dz, y;         /* [rows] each */
	mtlcuda_dptr weight, space;    /* optional [rows] */
	float pos_weight, lambda;
} mtlcuda_loss_task;
MTL_API int mtlcuda_multi_task_loss(mtlcuda_ctx *ctx, mtlcuda_dptr task_loss, mtlcuda_dptr total, const mtlcuda_loss_task *tasks,
                                int num_tasks, int64_t rows, float scale);

/* Metric reductions: acc (float64 [num_tasks, MTL_METRIC_FIELDS] in device
 * memory, 8-byte aligned) += the sums of this batch, per task, in one launch
 * (deterministic float64 sums; no host synchronisation). A row counts when
 * mask is 0 or mask[i] == 1. Binary tasks: labels must be 0 or 1 (others
 * only add to BAD_LABELS); pred is a probability; a NaN pred only adds to
 * COUNT, POSITIVES, LABEL_SUM and NAN; LOGLOSS uses p clipped to
 * [eps, 1-eps]; a prediction is positive when p > threshold. Regression
 * tasks: SQ_ERR and ABS_ERR of pred - label (NaN preds only counted). */
enum {
	MTL_METRIC_COUNT = 0,
	MTL_METRIC_POSITIVES,
	MTL_METRIC_LABEL_SUM,
	MTL_METRIC_LOGLOSS,
	MTL_METRIC_TP,
	MTL_METRIC_FP,
	MTL_METRIC_TN,
	MTL_METRIC_FN,
	MTL_METRIC_SQ_ERR,
	MTL_METRIC_ABS_ERR,
	MTL_METRIC_NAN,
	MTL_METRIC_BAD_LABELS,
	MTL_METRIC_FIELDS
};
#define MTL_MAX_METRIC_TASKS 16
typedef struct {
	int binary;
	mtlcuda_dptr pred, label, mask; /* [rows]; mask optional */
} mtlcuda_metric_task;
MTL_API int mtlcuda_metric_accumulate(mtlcuda_ctx *ctx, mtlcuda_dptr acc, const mtlcuda_metric_task *tasks, int num_tasks,
                                  int64_t rows, double eps, float threshold);

/* ---- optimizers ---- */

/* lr_t is the bias-corrected step size lr*sqrt(1-beta2^t)/(1-beta1^t),
 * computed by the caller in float64 exactly as the CPU device does; the
 * update is g = grad + 2*l2*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
 * p -= lr_t*m/(sqrt(v)+eps). */
typedef struct {
	float lr_t, beta1, beta2, eps, l2;
} mtlcuda_adam_params;

/* g = grad + 2*l2*p; acc += g*g; p -= lr*g/(sqrt(acc)+eps). */
typedef struct {
	float lr, eps, l2;
} mtlcuda_adagrad_params;

/* p -= lr*(grad + 2*l2*p). */
typedef struct {
	float lr, l2;
} mtlcuda_sgd_params;

typedef struct {
	mtlcuda_dptr param, grad, m, v; /* m, v unused by SGD; v unused by Adagrad */
	int64_t n;
} mtlcuda_opt_tensor;

/* Adam over count tensors in as few launches as the parameter block allows
 * (MTL_MAX_MULTI_TENSORS tensors per launch). */
MTL_API int mtlcuda_adam(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_adam_params *p);
/* Adagrad: acc in .m. */
MTL_API int mtlcuda_adagrad(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_adagrad_params *p);
MTL_API int mtlcuda_sgd(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_sgd_params *p);

/* Sparse (lazy) updates of the rows rows[i] (i < n) of a [table_rows, dim]
 * table with gradient values [n, dim]. Rows outside [0, table_rows) (the -1
 * padding of mtlcuda_embedding_backward) are skipped. */
MTL_API int mtlcuda_sparse_adam(mtlcuda_ctx *ctx, mtlcuda_dptr table, mtlcuda_dptr m, mtlcuda_dptr v, int64_t table_rows, int dim,
                    mtlcuda_dptr rows, mtlcuda_dptr values, int64_t n, const mtlcuda_adam_params *p);
MTL_API int mtlcuda_sparse_adagrad(mtlcuda_ctx *ctx, mtlcuda_dptr table, mtlcuda_dptr acc, int64_t table_rows, int dim, mtlcuda_dptr rows,
                       mtlcuda_dptr values, int64_t n, const mtlcuda_adagrad_params *p);
MTL_API int mtlcuda_sparse_sgd(mtlcuda_ctx *ctx, mtlcuda_dptr table, int64_t table_rows, int dim, mtlcuda_dptr rows, mtlcuda_dptr values,
                   int64_t n, const mtlcuda_sgd_params *p);

/* ---- embeddings ---- */

/* out[b, col:col+dim] = table[ids[b]] (offsets == 0), or the combination of
 * table[ids[offsets[b]:offsets[b+1]]] (offsets [batch+1] on the device).
 * Ids outside [0, table_rows) contribute zeros and are recorded in id-check
 * slot `slot` (the smallest position wins); so are malformed offsets (a
 * decreasing pair, or a value outside [0, num_ids]), whose rows contribute
 * zeros. Read the slots with mtlcuda_idcheck_fetch. */
MTL_API int mtlcuda_embedding_gather(mtlcuda_ctx *ctx, mtlcuda_dptr out, int out_cols, int col, mtlcuda_dptr table,
                         int64_t table_rows, int dim, mtlcuda_dptr ids, int64_t num_ids, mtlcuda_dptr offsets,
                         int64_t batch, int comb, int slot);
/* Reads and clears the first `slots` id-check slots (synchronises the
 * compute stream). For the first slot with a finding: found = 1 for an id
 * out of range (pos: its position in ids, row: its batch row, id, and
 * table_rows), found = 2 for malformed offsets (row: the first bad row);
 * found = 0 when every slot is clean. */
MTL_API int mtlcuda_idcheck_fetch(mtlcuda_ctx *ctx, int slots, int *found, int *slot, int64_t *pos, int64_t *row, int64_t *id,
                      int64_t *table_rows);

/* One source of gradient rows for an embedding table: the columns
 * [col, col+dim) of dout [batch, dout_cols], looked up with ids (offsets ==
 * 0) or with list offsets [batch+1] and a combiner. */
typedef struct {
	mtlcuda_dptr dout;
	int dout_cols, col;
	mtlcuda_dptr ids;
	int64_t num_ids;
	mtlcuda_dptr offsets; /* 0 = one id per row */
	int64_t batch;
	int comb;
} mtlcuda_emb_input;

/* Sparse gradient of a table: out_rows gets the touched rows, unique and
 * ascending, out_values [capacity, dim] their accumulated gradients; rows
 * past capacity are not written. With n_unique != NULL the call waits for
 * the count and stores it there (it may exceed capacity: the caller reports
 * that); with NULL (allowed while capturing) the entries after the last
 * unique row are set to row -1 and value 0 up to min(total ids, capacity),
 * so consumers that skip negative rows can use that as the count. */
MTL_API int mtlcuda_embedding_backward(mtlcuda_ctx *ctx, mtlcuda_dptr out_rows, mtlcuda_dptr out_values, int64_t capacity,
                                   int64_t table_rows, int dim, const mtlcuda_emb_input *inputs, int num_inputs,
                                   int64_t *n_unique);

/* lr is lr_t for Adam (see mtlcuda_adam_params). */
typedef struct {
	int kind; /* MTL_OPT_* */
	float lr, beta1, beta2, eps, l2;
} mtlcuda_sparse_opt;

/* Fused backward + sparse update: the gradient rows of all inputs are
 * accumulated per unique row (sorted, deterministic order) and the row of
 * the table (and of s1 = m or acc, s2 = v) is updated in the same kernel. No
 * host synchronisation; usable inside a captured graph. */
MTL_API int mtlcuda_embedding_update(mtlcuda_ctx *ctx, mtlcuda_dptr table, mtlcuda_dptr s1, mtlcuda_dptr s2, int64_t table_rows,
                         int dim, const mtlcuda_emb_input *inputs, int num_inputs, const mtlcuda_sparse_opt *opt);

/* ---- step parameters (CUDA-graph capture of a training step) ----
 *
 * A captured graph replays the arguments it was captured with, so the
 * scalars that change every training step are read from device memory
 * instead: a small mtlcuda_step_params block, updated by an asynchronous copy
 * on the compute stream (mtlcuda_memcpy_htod from pinned memory) before each
 * launch. The _sp variants below take the block's device address `sp` and
 * otherwise equal their eager counterparts bit for bit: the fields replace
 * the named argument, nothing is recomputed on the device. */
typedef struct {
	float lr;      /* Adagrad / SGD learning rate */
	float lr_t;    /* Adam bias-corrected step size (see mtlcuda_adam_params) */
	uint64_t seed; /* dropout step seed, mixed with (site, layer) as below */
} mtlcuda_step_params;

/* As mtlcuda_adam / mtlcuda_adagrad / mtlcuda_sgd with p->lr_t (Adam) or p->lr read
 * from sp->lr_t or sp->lr. */
MTL_API int mtlcuda_adam_sp(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_adam_params *p, mtlcuda_dptr sp);
MTL_API int mtlcuda_adagrad_sp(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_adagrad_params *p,
                           mtlcuda_dptr sp);
MTL_API int mtlcuda_sgd_sp(mtlcuda_ctx *ctx, const mtlcuda_opt_tensor *tensors, int count, const mtlcuda_sgd_params *p, mtlcuda_dptr sp);
/* As mtlcuda_embedding_update with opt->lr read from sp->lr_t (Adam) or sp->lr. */
MTL_API int mtlcuda_embedding_update_sp(mtlcuda_ctx *ctx, mtlcuda_dptr table, mtlcuda_dptr s1, mtlcuda_dptr s2, int64_t table_rows,
                                    int dim, const mtlcuda_emb_input *inputs, int num_inputs, const mtlcuda_sparse_opt *opt,
                                    mtlcuda_dptr sp);
/* As mtlcuda_dropout with seed = mix(sp->seed, site, layer), where mix is the
 * splitmix64 seed mixing of layers.MixSeed: s = 0x9E3779B97F4A7C15; for each
 * part q: s ^= q; s += 0x9E3779B97F4A7C15; s = finaliser(s). */
MTL_API int mtlcuda_dropout_sp(mtlcuda_ctx *ctx, mtlcuda_dptr x, mtlcuda_dptr mask, int64_t n, uint64_t threshold, float scale,
                           mtlcuda_dptr sp, uint64_t site, uint64_t layer);

#ifdef __cplusplus
}
#endif

#endif /* MTLCUDA_H */
