package kernels

/*
#cgo pkg-config: openblas
#include <cblas.h>

// sgemm_rm is a row-major cblas_sgemm taking plain ints so the Go side does
// not depend on the width of blasint or on the CBLAS enum values.
static void sgemm_rm(int ta, int tb, int m, int n, int k, float alpha,
                     const float *a, int lda, const float *b, int ldb,
                     float beta, float *c, int ldc) {
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
	            tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
	            beta, c, ldc);
}

// sgemm_rm_batch runs count row-major GEMMs of one shape with element
// strides between consecutive A, B and C matrices. Looping in C rather than
// in Go pays the cgo transition once per batch instead of once per entry.
static void sgemm_rm_batch(int ta, int tb, int m, int n, int k, float alpha,
                           const float *a, long sa, int lda,
                           const float *b, long sb, int ldb, float beta,
                           float *c, long sc, int ldc, int count) {
	for (int i = 0; i < count; i++) {
		cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
		            tb ? CblasTrans : CblasNoTrans, m, n, k, alpha,
		            a + (long)i * sa, lda, b + (long)i * sb, ldb, beta,
		            c + (long)i * sc, ldc);
	}
}
*/
import "C"

import "unsafe"

// OpenBLAS runs single-threaded, always: the CPU device parallelises GEMMs
// itself (whole row blocks or batch entries per goroutine, see gemmPlan) and
// callers parallelise at a coarser grain (Sharder). OpenBLAS's own threads
// would add a synchronisation per call, spin on cores the Go workers need,
// and keep one process-wide thread count that concurrent callers would have
// to serialise on. Single-threaded, cblas_sgemm may be called from any
// number of goroutines at once.
func init() {
	C.openblas_set_num_threads(1)
}

func b2i(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// sgemm calls the row-major single-precision GEMM on raw slices in the
// calling goroutine. The caller has validated every dimension and that the
// slices are long enough.
func sgemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	C.sgemm_rm(b2i(ta), b2i(tb), C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.int(ldb), C.float(beta),
		(*C.float)(unsafe.Pointer(&c[0])), C.int(ldc))
}

// sgemmBatch runs count GEMMs of one shape in a single cgo call.
func sgemmBatch(ta, tb bool, m, n, k int, alpha float32,
	a []float32, sa, lda int, b []float32, sb, ldb int, beta float32,
	c []float32, sc, ldc int, count int) {
	C.sgemm_rm_batch(b2i(ta), b2i(tb), C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.long(sa), C.int(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.long(sb), C.int(ldb), C.float(beta),
		(*C.float)(unsafe.Pointer(&c[0])), C.long(sc), C.int(ldc), C.int(count))
}

// setBLASThreads sets OpenBLAS's own thread count (benchmarks that measure
// OpenBLAS's threading; everything else keeps 1).
func setBLASThreads(n int) { C.openblas_set_num_threads(C.int(n)) }
