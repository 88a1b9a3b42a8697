// blas.cpp - cuBLAS and cuBLASLt of the emulated device: the SGEMM calls and
// the matmuls with epilogues that libmtlcuda makes, computed on the host in
// stream order (column-major, as cuBLAS), float32 products accumulated in
// float32, TF32 rounding of the inputs when the handle or the descriptor
// asks for it. Argument checks return the status cuBLAS returns.
#include <cstring>
#include <vector>

#include "cublasLt.h"
#include "emu_internal.h"

struct mtlemu_cublas {
	cudaStream_t stream = nullptr;
	cublasMath_t math = CUBLAS_DEFAULT_MATH;
	void *ws = nullptr;
	size_t ws_bytes = 0;
};

struct mtlemu_lt {};

struct mtlemu_lt_desc {
	cublasComputeType_t compute;
	cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
	cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
	const float *bias = nullptr;
	int64_t bias_stride = 0;
};

struct mtlemu_lt_layout {
	uint64_t rows, cols;
	int64_t ld;
	int32_t batch = 1;
	int64_t stride = 0;
};

struct mtlemu_lt_pref {
	uint64_t ws = 0;
	uint32_t align[4] = {256, 256, 256, 256};
};

namespace {

// Rounds to TF32 (10-bit mantissa, to nearest, ties away from zero), the
// input conversion of the tensor cores.
inline float tf32(float x) {
	uint32_t u;
	memcpy(&u, &x, 4);
	if ((u & 0x7f800000u) != 0x7f800000u) {
		u += 0x1000u;
		u &= 0xffffe000u;
	}
	memcpy(&x, &u, 4);
	return x;
}

// One column-major GEMM: C[m,n] = alpha*op(A)*op(B) (+ beta*C), then the
// epilogue (bias per row of C, ReLU).
void gemm_one(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int64_t lda, const float *b,
              int64_t ldb, float beta, float *c, int64_t ldc, bool round_tf32, const float *bias, bool relu) {
	// op(A) packed by rows (row i: k values), op(B) by columns (column j).
	std::vector<float> ap((size_t)m * k), bp((size_t)n * k);
	for (int i = 0; i < m; i++)
		for (int l = 0; l < k; l++) {
			float v = ta ? a[l + (int64_t)i * lda] : a[i + (int64_t)l * lda];
			ap[(size_t)i * k + l] = round_tf32 ? tf32(v) : v;
		}
	for (int j = 0; j < n; j++)
		for (int l = 0; l < k; l++) {
			float v = tb ? b[j + (int64_t)l * ldb] : b[l + (int64_t)j * ldb];
			bp[(size_t)j * k + l] = round_tf32 ? tf32(v) : v;
		}
	for (int j = 0; j < n; j++) {
		const float *bj = &bp[(size_t)j * k];
		for (int i = 0; i < m; i++) {
			const float *ai = &ap[(size_t)i * k];
			float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
			int l = 0;
			for (; l + 8 <= k; l += 8)
				for (int q = 0; q < 8; q++) acc[q] += ai[l + q] * bj[l + q];
			float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
			for (; l < k; l++) s += ai[l] * bj[l];
			float *cij = &c[i + (int64_t)j * ldc];
			float v = alpha * s;
			if (beta != 0.0f) v += beta * *cij; // beta == 0: C is not read (it may hold NaN)
			if (bias) v += bias[i];
			if (relu && v < 0.0f) v = 0.0f;
			*cij = v;
		}
	}
}

int64_t max1(int64_t x) { return x < 1 ? 1 : x; }

template <class T>
bool get_attr(T *dst, const void *v, size_t n) {
	if (n != sizeof(T)) return false;
	memcpy(dst, v, n);
	return true;
}


} // namespace

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t *h) {
	*h = new mtlemu_cublas();
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h) {
	if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
	delete h;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
	if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
	h->stream = s;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t m) {
	if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
	// Only host scalars are emulated (the library's mode).
	return m == CUBLAS_POINTER_MODE_HOST ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
	if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
	h->math = m;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes) {
	if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
	if (bytes && !mtlemu::device_range(ws, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
	h->ws = ws;
	h->ws_bytes = bytes;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float *alpha, const float *a, int lda, long long sa,
                                         const float *b, int ldb, long long sb, const float *beta, float *c, int ldc,
                                         long long sc, int batch) {
	if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
	if (m < 0 || n < 0 || k < 0 || batch < 0 || (ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) ||
	    (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T) || lda < max1(ta == CUBLAS_OP_N ? m : k) ||
	    ldb < max1(tb == CUBLAS_OP_N ? k : n) || ldc < max1(m))
		return CUBLAS_STATUS_INVALID_VALUE;
	if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
	const float al = *alpha, be = *beta; // host pointer mode: read at the call
	const bool t32 = h->math == CUBLAS_TF32_TENSOR_OP_MATH;
	const bool tra = ta == CUBLAS_OP_T, trb = tb == CUBLAS_OP_T;
	cudaError_t e = mtlemu::submit(h->stream, "cublasSgemm", [=]() {
		for (int i = 0; i < batch; i++)
			gemm_one(tra, trb, m, n, k, al, a + i * sa, lda, b + i * sb, ldb, be, c + i * sc, ldc, t32, nullptr, false);
	});
	return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *a, int lda, const float *b, int ldb, const float *beta,
                           float *c, int ldc) {
	return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
	*h = new mtlemu_lt();
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
	delete h;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
	if (scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
	if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32 && compute != CUBLAS_COMPUTE_32F_PEDANTIC)
		return CUBLAS_STATUS_NOT_SUPPORTED;
	*d = new mtlemu_lt_desc();
	(*d)->compute = compute;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
	delete d;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t n) {
	if (!d) return CUBLAS_STATUS_NOT_INITIALIZED;
	bool ok = false;
	switch (a) {
	case CUBLASLT_MATMUL_DESC_TRANSA: ok = get_attr(&d->ta, v, n); break;
	case CUBLASLT_MATMUL_DESC_TRANSB: ok = get_attr(&d->tb, v, n); break;
	case CUBLASLT_MATMUL_DESC_EPILOGUE:
		ok = get_attr(&d->epi, v, n) && (d->epi == CUBLASLT_EPILOGUE_DEFAULT || d->epi == CUBLASLT_EPILOGUE_RELU ||
		                                 d->epi == CUBLASLT_EPILOGUE_BIAS || d->epi == CUBLASLT_EPILOGUE_RELU_BIAS);
		break;
	case CUBLASLT_MATMUL_DESC_BIAS_POINTER: ok = get_attr(&d->bias, v, n); break;
	case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: ok = get_attr(&d->bias_stride, v, n); break;
	}
	return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
	if (t != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
	if (ld < (int64_t)(rows < 1 ? 1 : rows)) return CUBLAS_STATUS_INVALID_VALUE;
	*l = new mtlemu_lt_layout();
	(*l)->rows = rows;
	(*l)->cols = cols;
	(*l)->ld = ld;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
	delete l;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a,
                                                const void *v, size_t n) {
	if (!l) return CUBLAS_STATUS_NOT_INITIALIZED;
	bool ok = false;
	switch (a) {
	case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: ok = get_attr(&l->batch, v, n) && l->batch >= 1; break;
	case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: ok = get_attr(&l->stride, v, n); break;
	}
	return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
	*p = new mtlemu_lt_pref();
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
	delete p;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a, const void *v, size_t n) {
	if (!p) return CUBLAS_STATUS_NOT_INITIALIZED;
	switch (a) {
	case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
		return get_attr(&p->ws, v, n) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
	case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
	case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
	case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
	case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
		return get_attr(&p->align[a - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], v, n) ? CUBLAS_STATUS_SUCCESS
		                                                                                : CUBLAS_STATUS_INVALID_VALUE;
	}
	return CUBLAS_STATUS_INVALID_VALUE;
}

// The shapes of a matmul: op(A) [m,k], op(B) [k,n], C and D [m,n], one batch
// count; false when the layouts do not fit together.
static bool lt_shapes(const mtlemu_lt_desc *d, const mtlemu_lt_layout *a, const mtlemu_lt_layout *b,
                      const mtlemu_lt_layout *c, const mtlemu_lt_layout *dl, int64_t *m, int64_t *n, int64_t *k) {
	int64_t am = d->ta == CUBLAS_OP_N ? a->rows : a->cols, ak = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
	int64_t bk = d->tb == CUBLAS_OP_N ? b->rows : b->cols, bn = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
	*m = am;
	*n = bn;
	*k = ak;
	return ak == bk && (int64_t)c->rows == am && (int64_t)c->cols == bn && dl->rows == c->rows &&
	       dl->cols == c->cols && a->batch == b->batch && b->batch == c->batch && c->batch == dl->batch;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t *results, int *found) {
	if (!h || !d || !a || !b || !c || !dl || !p) return CUBLAS_STATUS_NOT_INITIALIZED;
	if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
	int64_t m, n, k;
	*found = 0;
	if (!lt_shapes(d, a, b, c, dl, &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
	memset(&results[0], 0, sizeof results[0]);
	// The "algorithm" remembers the smallest alignment it was chosen for;
	// cublasLtMatmul checks the operands against it, as a real algorithm
	// requires.
	uint32_t al = p->align[0];
	for (int i = 1; i < 4; i++)
		if (p->align[i] < al) al = p->align[i];
	results[0].algo.data[0] = al;
	results[0].state = CUBLAS_STATUS_SUCCESS;
	*found = 1;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *a,
                              cublasLtMatrixLayout_t la, const void *b, cublasLtMatrixLayout_t lb, const void *beta,
                              const void *c, cublasLtMatrixLayout_t lc, void *dst, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes, cudaStream_t s) {
	(void)ws;
	(void)ws_bytes;
	if (!h || !d || !la || !lb || !lc || !ld) return CUBLAS_STATUS_NOT_INITIALIZED;
	int64_t m, n, k;
	if (!lt_shapes(d, la, lb, lc, ld, &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
	if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
	if (algo) {
		uint64_t al = algo->data[0];
		const void *ptrs[] = {a, b, c, dst};
		for (const void *q : ptrs)
			if (al && (uintptr_t)q % al != 0) return CUBLAS_STATUS_NOT_SUPPORTED;
	}
	const bool bias_epi = d->epi == CUBLASLT_EPILOGUE_BIAS || d->epi == CUBLASLT_EPILOGUE_RELU_BIAS;
	const bool relu = d->epi == CUBLASLT_EPILOGUE_RELU || d->epi == CUBLASLT_EPILOGUE_RELU_BIAS;
	if (bias_epi && !d->bias) return CUBLAS_STATUS_INVALID_VALUE;
	const float al = *(const float *)alpha, be = *(const float *)beta;
	const float *bias = bias_epi ? d->bias : nullptr;
	const int64_t bstride = d->bias_stride;
	const bool t32 = d->compute == CUBLAS_COMPUTE_32F_FAST_TF32;
	const bool ta = d->ta == CUBLAS_OP_T, tb = d->tb == CUBLAS_OP_T;
	const mtlemu_lt_layout A = *la, B = *lb, C = *lc, D = *ld;
	const float *pa = (const float *)a, *pb = (const float *)b, *pc = (const float *)c;
	float *pd = (float *)dst;
	cudaError_t e = mtlemu::submit(s, "cublasLtMatmul", [=]() {
		for (int i = 0; i < A.batch; i++) {
			float *di = pd + i * D.stride;
			const float *ci = pc + i * C.stride;
			if (be != 0.0f && ci != di)
				for (int64_t j = 0; j < n; j++) memcpy(di + j * D.ld, ci + j * C.ld, (size_t)m * 4);
			gemm_one(ta, tb, (int)m, (int)n, (int)k, al, pa + i * A.stride, A.ld, pb + i * B.stride, B.ld, be, di, D.ld,
			         t32, bias ? bias + i * bstride : nullptr, relu);
		}
	});
	return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

} // extern "C"
