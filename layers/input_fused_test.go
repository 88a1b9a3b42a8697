package layers

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
)

// fusedEmbCPU is the CPU device presented as a kernels.FusedEmbeddingUpdater
// (the update composed from EmbeddingBackward and the sparse optimizers),
// to test the paths the input block takes on such a device.
type fusedEmbCPU struct{ *kernels.CPU }

func (d fusedEmbCPU) grad(table *kernels.Tensor, srcs []kernels.EmbeddingSource) *kernels.SparseGrad {
	if len(srcs) != 1 {
		panic("fusedEmbCPU: one source expected")
	}
	s := srcs[0]
	n := max(s.IDs.Len(), 1)
	g := &kernels.SparseGrad{Rows: d.Alloc(kernels.Int32, n), Values: d.Alloc(kernels.Float32, n, table.Cols())}
	d.EmbeddingBackward(g, s.Dout, s.Col, s.IDs, s.Offsets, s.Comb, table.Rows())
	return g
}

func (d fusedEmbCPU) EmbeddingUpdateAdam(table, m, v *kernels.Tensor, srcs []kernels.EmbeddingSource, p kernels.AdamParams) {
	d.SparseAdam(table, m, v, d.grad(table, srcs), p)
}

func (d fusedEmbCPU) EmbeddingUpdateAdagrad(table, acc *kernels.Tensor, srcs []kernels.EmbeddingSource, p kernels.AdagradParams) {
	d.SparseAdagrad(table, acc, d.grad(table, srcs), p)
}

func (d fusedEmbCPU) EmbeddingUpdateSGD(table *kernels.Tensor, srcs []kernels.EmbeddingSource, p kernels.SGDParams) {
	d.SparseSGD(table, d.grad(table, srcs), p)
}

// sparseHost reads the first N rows and values of g.
func sparseHost(dev kernels.Device, g *kernels.SparseGrad) ([]int32, []float32) {
	rows := make([]int32, g.N)
	vals := make([]float32, g.N*g.Values.Cols())
	if g.N > 0 {
		dev.CopyToHostI32(rows, g.Rows.View(0, g.N))
		dev.CopyToHostF32(vals, g.Values.View(0, g.N, g.Values.Cols()))
	}
	return rows, vals
}

// EmbeddingSources describe BackwardTable's gradient exactly: the
// EmbeddingBackward of its (single) source equals the SparseGrad, bit for
// bit, for an own table, a table shared by a list and a scalar, and a list
// table, with and without the batch L2 term.
func TestInputBlockEmbeddingSources(t *testing.T) {
	for _, l2 := range []float32{0, 0.3} {
		t.Run(fmt.Sprintf("l2_%g", l2), func(t *testing.T) {
			dev := testDev()
			f := newInputFixture(t, dev, kernels.SqrtN, l2)
			blk := f.block
			ws := blk.NewWorkspace(8, true)
			_, err := blk.Forward(ws, f.data)
			require.NoError(t, err)
			dev.CopyFromHostF32(ws.DY(), randHost(NewRNG(3), 5*blk.OutDim, 1))
			blk.BeginBackward(ws)
			for ti, tb := range blk.Tables {
				srcs := blk.EmbeddingSources(ws, ti)
				require.Len(t, srcs, 1, "table %s", tb.Name)
				g := fusedEmbCPU{dev}.grad(tb.W, srcs)
				gotRows, gotVals := sparseHost(dev, g)
				blk.BackwardTable(ws, ti)
				wantRows, wantVals := sparseHost(dev, ws.SparseGrad(ti))
				require.NotEmpty(t, wantRows, "table %s has a gradient", tb.Name)
				assert.Equal(t, wantRows, gotRows, "table %s rows", tb.Name)
				assert.Equal(t, wantVals, gotVals, "table %s values", tb.Name)
			}
		})
	}
}

// On a device that fuses the embedding update the training workspace
// allocates no sparse gradients; BackwardTable allocates one when called.
func TestInputBlockFusedDeviceDefersSparseGrads(t *testing.T) {
	cpu := testDev()
	dev := fusedEmbCPU{cpu}
	f := newInputFixture(t, cpu, kernels.Mean, 0)
	f.block.dev = dev
	ws := f.block.NewWorkspace(5, true)
	defer ws.Release()
	for ti := range f.block.Tables {
		assert.Nil(t, ws.SparseGrad(ti))
	}
	_, err := f.block.Forward(ws, f.data)
	require.NoError(t, err)
	dev.Fill(ws.DY(), 1)
	f.block.Backward(ws)
	for ti := range f.block.Tables {
		require.NotNil(t, ws.SparseGrad(ti))
		assert.Positive(t, ws.SparseGrad(ti).N)
	}
}
