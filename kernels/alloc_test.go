package kernels_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
)

// TestHotOpsDoNotAllocate runs every op a training step uses, on sizes below
// and above the parallel threshold, and requires zero heap allocations per
// call once scratch buffers have reached their size.
func TestHotOpsDoNotAllocate(t *testing.T) {
	for _, th := range []int{1, 2} {
		for _, rows := range []int{17, 1024} {
			c := kernels.NewCPU(th)
			const d, e, dim, tableRows = 64, 4, 16, 5000
			x := c.Alloc(kernels.Float32, rows, 96)
			w := c.Alloc(kernels.Float32, e, 96, d)
			bias := c.Alloc(kernels.Float32, e, d)
			h := c.Alloc(kernels.Float32, e, rows, d)
			dx := c.Alloc(kernels.Float32, rows, 96)
			experts := make([]*kernels.Tensor, e)
			dexperts := make([]*kernels.Tensor, e)
			dh := c.Alloc(kernels.Float32, e, rows, d)
			for i := range experts {
				experts[i] = h.View(i*rows*d, rows, d)
				dexperts[i] = dh.View(i*rows*d, rows, d)
			}
			gw, gws := c.Alloc(kernels.Float32, rows, e), c.Alloc(kernels.Float32, rows, e)
			out, dout := c.Alloc(kernels.Float32, rows, d), c.Alloc(kernels.Float32, rows, d)
			mask := c.Alloc(kernels.Float32, e, rows, d)
			table := c.Alloc(kernels.Float32, tableRows, dim)
			ids := c.Alloc(kernels.Int32, rows)
			for i := range ids.I32 {
				ids.I32[i] = int32(i * 7 % tableRows)
			}
			offs := c.Alloc(kernels.Int32, rows+1)
			for i := range offs.I32 {
				offs.I32[i] = int32(i)
			}
			g := &kernels.SparseGrad{Rows: c.Alloc(kernels.Int32, rows), Values: c.Alloc(kernels.Float32, rows, dim)}
			z, y, dz := c.Alloc(kernels.Float32, rows), c.Alloc(kernels.Float32, rows), c.Alloc(kernels.Float32, rows)
			loss := c.Alloc(kernels.Float32, 1)
			m, v := c.Alloc(kernels.Float32, e, 96, d), c.Alloc(kernels.Float32, e, 96, d)
			tm, tv := c.Alloc(kernels.Float32, tableRows, dim), c.Alloc(kernels.Float32, tableRows, dim)
			w0 := w.View(0, 96, d)
			ps, ms, vs := []*kernels.Tensor{w, bias}, []*kernels.Tensor{m, bias}, []*kernels.Tensor{v, bias}
			w0s := []*kernels.Tensor{w0, w0, w0, w0} // the kernels of four layers reading x
			douts, gwss, gwsT := []*kernels.Tensor{dout, out}, []*kernels.Tensor{gws, gws}, []*kernels.Tensor{gw, gw}
			ap := kernels.AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, Step: 1}
			ops := map[string]func(){
				"Gemm":                 func() { c.Gemm(false, false, 1, x, w0, 0, out) },
				"GemmStridedBatched":   func() { c.GemmStridedBatched(false, false, rows, d, 96, 1, x, 0, w, 96*d, 0, h, rows*d, e) },
				"GemmStridedBatchedT":  func() { c.GemmStridedBatched(false, true, rows, 96, d, 1, dh, rows*d, w, 96*d, 0, dx, 0, 1) },
				"GemmSum":              func() { c.GemmSum(dexperts, w0s, false, dx) },
				"BiasAct":              func() { c.BiasAct(h, bias, e, kernels.ReLU) },
				"ActBackward":          func() { c.ActBackward(dh, h, kernels.ReLU) },
				"BiasGrad":             func() { c.BiasGrad(dh, bias, e, false) },
				"Dropout":              func() { c.Dropout(h, mask, 0.1, 3) },
				"Mul":                  func() { c.Mul(dh, dh, mask) },
				"Axpy":                 func() { c.Axpy(0.5, h, dh) },
				"SoftmaxRows":          func() { c.SoftmaxRows(gws, gw, 1) },
				"SoftmaxBackward":      func() { c.SoftmaxBackward(gw, gws, gws, 1) },
				"GateCombine":          func() { c.GateCombine(out, gws, experts) },
				"GateCombineBackward":  func() { c.GateCombineBackward(dout, gws, experts, gw, dexperts) },
				"GatesCombineBackward": func() { c.GatesCombineBackward(douts, gwss, gwsT, experts, dexperts) },
				"CopyCols":             func() { c.CopyCols(dx, 3, out, 0, 16, true) },
				"EmbeddingGather":      func() { _ = c.EmbeddingGather(dx, 0, table, ids, nil, kernels.Mean) },
				"EmbeddingGatherList":  func() { _ = c.EmbeddingGather(dx, 0, table, ids, offs, kernels.Mean) },
				"EmbeddingBackward":    func() { c.EmbeddingBackward(g, dx, 0, ids, offs, kernels.Mean, tableRows) },
				"SparseAdam":           func() { c.SparseAdam(table, tm, tv, g, ap) },
				"BCEWithLogits":        func() { c.BCEWithLogits(loss, dz, z, y, nil, 1) },
				"MSE":                  func() { c.MSE(loss, dz, z, y, y, 1) },
				"SumSquares":           func() { c.SumSquares(loss, w, 1e-4) },
				"Adam":                 func() { c.Adam(w, w, m, v, ap) },
				"AdamMulti":            func() { c.AdamMulti(ps, ps, ms, vs, ap) },
				"Sigmoid":              func() { c.Sigmoid(y, z) },
			}
			for name, op := range ops {
				op() // grow scratch buffers
				require.Zero(t, testing.AllocsPerRun(20, op), "%s allocates (threads %d, rows %d)", name, th, rows)
			}
		}
	}
}
