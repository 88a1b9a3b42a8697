package kernels

import "fmt"

// The shape checks of the GEMM ops, shared by every device (CPU, CUDA) so
// that the same misuse fails the same way everywhere.

// gemmShape validates the 2-D operands of C = op(A)*op(B) and returns its
// m, n and k. A mismatch is a programming error, so it panics, naming op.
func gemmShape(op string, transA, transB bool, a, b, c *Tensor) (m, n, k int) {
	m, n = c.Rows(), c.Cols()
	am, ak := a.Rows(), a.Cols()
	if transA {
		am, ak = ak, am
	}
	bk, bn := b.Rows(), b.Cols()
	if transB {
		bk, bn = bn, bk
	}
	if am != m || bn != n || ak != bk {
		panic(fmt.Sprintf("kernels: %s: op(A) %dx%d, op(B) %dx%d, C %dx%d", op, am, ak, bk, bn, m, n))
	}
	return m, n, ak
}

// checkBatched validates the sizes and strides of a strided batch of
// GEMMs: entry i reads A at i*strideA, B at i*strideB and writes C at
// i*strideC; outputs must not overlap.
func checkBatched(op string, m, n, k int, a *Tensor, strideA int, b *Tensor, strideB int, c *Tensor, strideC, batch int) {
	if m < 0 || n < 0 || k < 0 || batch < 0 || strideA < 0 || strideB < 0 || strideC < 0 {
		panic(fmt.Sprintf("kernels: %s: bad sizes m=%d n=%d k=%d batch=%d strides %d %d %d",
			op, m, n, k, batch, strideA, strideB, strideC))
	}
	if m == 0 || n == 0 || batch == 0 {
		return
	}
	if (batch-1)*strideA+m*k > a.Len() || (batch-1)*strideB+k*n > b.Len() || (batch-1)*strideC+m*n > c.Len() {
		panic(fmt.Sprintf("kernels: %s: batch %d of %dx%dx%d with strides %d,%d,%d overruns A(%d) B(%d) C(%d)",
			op, batch, m, n, k, strideA, strideB, strideC, a.Len(), b.Len(), c.Len()))
	}
	if strideC < m*n && batch > 1 {
		panic(fmt.Sprintf("kernels: %s: output stride %d < %d makes outputs overlap", op, strideC, m*n))
	}
}
