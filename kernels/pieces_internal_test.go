package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInCalls(t *testing.T) {
	for _, tc := range []struct {
		lo, hi, n int
		want      [][2]int
	}{
		{0, 0, 4, nil},
		{3, 3, 4, nil},
		{0, 3, 4, [][2]int{{0, 3}}},
		{0, 4, 4, [][2]int{{0, 4}}},
		{0, 5, 4, [][2]int{{0, 4}, {4, 5}}},
		{2, 11, 4, [][2]int{{2, 6}, {6, 10}, {10, 11}}},
		{5, 6, 1, [][2]int{{5, 6}}},
	} {
		var got [][2]int
		inCalls(tc.lo, tc.hi, tc.n, func(lo, hi int) { got = append(got, [2]int{lo, hi}) })
		assert.Equal(t, tc.want, got, "inCalls(%d, %d, %d)", tc.lo, tc.hi, tc.n)
	}
}

// The sparse optimizers update a batch's rows in calls of at most
// sparseRowsPerCall rows; the result must be the bits of one call over all
// rows (the rows are distinct, so they do not interact), on one thread and
// on two.
func TestSparseOptimizersInPieces(t *testing.T) {
	const tableRows = 3000
	opts := []struct {
		name string
		// one runs the reference: a single C call over rows [0, n)
		one func(s sparseState, g []float32, rows []int32, dim int)
		dev func(c *CPU, s sparseState, grad *SparseGrad, dim int)
	}{
		{"adam", func(s sparseState, g []float32, rows []int32, dim int) {
			p := AdamParams{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: 0.01, Step: 3}
			cSparseAdam(s.table, s.a, s.b, g, rows, 0, len(rows), dim, AdamStepSize(p), p.Beta1, p.Beta2, p.Eps, 2*p.L2)
		}, func(c *CPU, s sparseState, grad *SparseGrad, dim int) {
			c.SparseAdam(wrap2(c, s.table, dim), wrap2(c, s.a, dim), wrap2(c, s.b, dim), grad,
				AdamParams{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: 0.01, Step: 3})
		}},
		{"adagrad", func(s sparseState, g []float32, rows []int32, dim int) {
			cSparseAdagrad(s.table, s.a, g, rows, 0, len(rows), dim, 0.05, 1e-7, 0.02)
		}, func(c *CPU, s sparseState, grad *SparseGrad, dim int) {
			c.SparseAdagrad(wrap2(c, s.table, dim), wrap2(c, s.a, dim), grad, AdagradParams{LR: 0.05, Eps: 1e-7, L2: 0.01})
		}},
		{"sgd", func(s sparseState, g []float32, rows []int32, dim int) {
			cSparseSGD(s.table, g, rows, 0, len(rows), dim, 0.1, 0.02)
		}, func(c *CPU, s sparseState, grad *SparseGrad, dim int) {
			c.SparseSGD(wrap2(c, s.table, dim), grad, SGDParams{LR: 0.1, L2: 0.01})
		}},
	}
	for _, opt := range opts {
		for _, dim := range []int{1, 7, 40} {
			for _, n := range []int{1, sparseRowsPerCall - 1, sparseRowsPerCall, sparseRowsPerCall + 1, 777, 4*sparseRowsPerCall + 6} {
				rng := rand.New(rand.NewPCG(uint64(n), uint64(dim)))
				rows := make([]int32, n)
				for i, r := range rng.Perm(tableRows)[:n] {
					rows[i] = int32(r)
				}
				g := randF32(rng, n*dim, -0.1, 0.1)
				g[0] = float32(math.Copysign(0, -1))
				g[len(g)-1] = float32(math.NaN()) // one row's update goes NaN, the others must not
				s0 := sparseState{randF32(rng, tableRows*dim, -1, 1), randF32(rng, tableRows*dim, -0.01, 0.01), randF32(rng, tableRows*dim, 0, 1e-3)}
				want := cloneState(s0)
				opt.one(want, append([]float32(nil), g...), rows, dim)
				for _, threads := range []int{1, 2} {
					c := NewCPU(threads)
					got := cloneState(s0)
					grad := &SparseGrad{Rows: WrapI32(c, append([]int32(nil), rows...), n), Values: WrapF32(c, append([]float32(nil), g...), n, dim), N: n}
					opt.dev(c, got, grad, dim)
					name := opt.name
					require.Equal(t, bits32(want.table), bits32(got.table), "%s dim %d rows %d threads %d: table", name, dim, n, threads)
					require.Equal(t, bits32(want.a), bits32(got.a), "%s dim %d rows %d threads %d: first state", name, dim, n, threads)
					require.Equal(t, bits32(want.b), bits32(got.b), "%s dim %d rows %d threads %d: second state", name, dim, n, threads)
				}
			}
		}
	}
}

func wrap2(c *CPU, x []float32, dim int) *Tensor { return WrapF32(c, x, len(x)/dim, dim) }

// sparseState is a table and up to two optimizer states of its shape.
type sparseState struct{ table, a, b []float32 }

func cloneState(s sparseState) sparseState {
	c := func(x []float32) []float32 { return append([]float32(nil), x...) }
	return sparseState{c(s.table), c(s.a), c(s.b)}
}

// bits32 compares float32s by their bits (NaN equals NaN, -0 is not +0).
func bits32(x []float32) []uint32 {
	b := make([]uint32, len(x))
	for i, v := range x {
		b[i] = math.Float32bits(v)
	}
	return b
}
