package layers

import (
	"math"
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
)

// Param is one trainable tensor.
type Param struct {
	// Name is stable and unique within a model ("mmoe/experts/0/kernel").
	Name  string
	Value *kernels.Tensor
	// L2 marks Dense kernels, which the L2 regulariser covers (biases and
	// embedding tables are not).
	L2 bool
	// Sparse marks embedding tables: their gradient is a kernels.SparseGrad
	// and the optimizers update only the rows a batch touched.
	Sparse bool
}

// NewRNG returns the deterministic generator used for initialisation.
func NewRNG(seed int64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x6d746c72616e6b)) // "mtlrank"
}

// glorotUniform fills dst (host) with U(-l, l), l = sqrt(6/(fanIn+fanOut)),
// Keras' default kernel initializer.
func glorotUniform(rng *rand.Rand, dst []float32, fanIn, fanOut int) {
	limit := math.Sqrt(6 / float64(fanIn+fanOut))
	uniform(rng, dst, limit)
}

func uniform(rng *rand.Rand, dst []float32, limit float64) {
	for i := range dst {
		dst[i] = float32((2*rng.Float64() - 1) * limit)
	}
}

// fillUniform fills t with U(-limit, limit) from rng, the values of
// uniform over a host slice of t's length, but through a bounded host
// buffer: initialising a large embedding table does not need a second,
// host-side copy of it.
func fillUniform(dev kernels.Device, rng *rand.Rand, t *kernels.Tensor, limit float64) {
	const chunk = 1 << 16
	n := t.Len()
	buf := make([]float32, min(n, chunk))
	for off := 0; off < n; off += chunk {
		w := buf[:min(chunk, n-off)]
		uniform(rng, w, limit)
		dev.CopyFromHostF32(t.View(off, len(w)), w)
	}
}

// fillShard fills t, shard sh of a table of rows rows of t.Cols() columns,
// with the rows fillUniform gives the full table: every row is drawn, in
// order, and only sh's are kept, so the full table is never held.
func fillShard(dev kernels.Device, rng *rand.Rand, t *kernels.Tensor, rows int, sh RowShard, limit float64) {
	dim := t.Cols()
	row := make([]float32, dim)
	for id := range rows {
		uniform(rng, row, limit)
		if id%sh.Size == sh.Rank {
			dev.CopyFromHostF32(t.View((id/sh.Size)*dim, dim), row)
		}
	}
}

func releaseAll(ts ...*kernels.Tensor) {
	for _, t := range ts {
		t.Release()
	}
}
