//go:build cuda

package kernels_test

// The StepParamOps variants (per-step scalars read from device memory)
// against the eager ops: run eagerly with a step-parameter block, and
// captured once into a graph that is replayed with a new Upload per step,
// they must give bit-identical parameters, optimizer state and dropout
// masks, since the variants only move where the scalars come from.

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
)

// refMixSeed is an independent transcription of layers.MixSeed (splitmix64
// mixing), the seed derivation DropoutSP performs on the device.
func refMixSeed(parts ...uint64) uint64 {
	s := uint64(0x9e3779b97f4a7c15)
	for _, p := range parts {
		s ^= p
		s += 0x9e3779b97f4a7c15
		z := s
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		s = z ^ (z >> 31)
	}
	return s
}

// stepSet is one copy of everything a step updates.
type stepSet struct {
	dense, grads, m, v       []*kernels.Tensor
	acc, sgd                 *kernels.Tensor
	tabA, tabAm, tabAv, tabG *kernels.Tensor
	tabGacc, tabS            *kernels.Tensor
	x, mask                  *kernels.Tensor
}

func TestCUDAStepParamsMatchEager(t *testing.T) {
	r := newRig(t, 41)
	d := r.gpu
	const rows, dim, B = 50, 16, 64
	denseData := [][]float32{r.Uniform(1000, -1, 1), r.Uniform(5000, -1, 1)}
	gradData := [][]float32{r.Uniform(1000, -1, 1), r.Uniform(5000, -1, 1)}
	tabData := r.Uniform(rows*dim, -1, 1)
	xData := r.Uniform(4096, -1, 1)
	ids := make([]int32, B)
	for i := range ids {
		ids[i] = int32((i * 7) % rows)
	}
	idT := r.I32(ids, B).Dev
	dout := r.RandF(B, 2*dim).Dev
	srcs := []kernels.EmbeddingSource{{Dout: dout, Col: 0, IDs: idT}, {Dout: dout, Col: dim, IDs: idT}}

	newSet := func() *stepSet {
		s := &stepSet{}
		for i := range denseData {
			s.dense = append(s.dense, r.F32(denseData[i], len(denseData[i])).Dev)
			s.grads = append(s.grads, r.F32(gradData[i], len(gradData[i])).Dev)
			s.m = append(s.m, r.F32(make([]float32, len(denseData[i])), len(denseData[i])).Dev)
			s.v = append(s.v, r.F32(make([]float32, len(denseData[i])), len(denseData[i])).Dev)
		}
		s.acc = r.F32(make([]float32, 1000), 1000).Dev
		d.Fill(s.acc, 0.1)
		s.sgd = r.F32(denseData[1], 5000).Dev
		tab := func() *kernels.Tensor { return r.F32(tabData, rows, dim).Dev }
		zero := func() *kernels.Tensor { return r.F32(make([]float32, rows*dim), rows, dim).Dev }
		s.tabA, s.tabAm, s.tabAv = tab(), zero(), zero()
		s.tabG, s.tabGacc, s.tabS = tab(), zero(), tab()
		d.Fill(s.tabGacc, 0.1)
		s.x = r.F32(xData, len(xData)).Dev
		s.mask = r.F32(make([]float32, len(xData)), len(xData)).Dev
		return s
	}
	const beta1, beta2, eps = 0.9, 0.999, 1e-7
	lrOf := func(k int) float32 { return 0.01 / float32(1+k) }
	seedOf := func(k int) uint64 { return 977 + uint64(k)*31 }
	adamOf := func(k int) kernels.AdamParams {
		return kernels.AdamParams{LR: lrOf(k), Beta1: beta1, Beta2: beta2, Eps: eps, L2: 1e-3, Step: k + 1}
	}
	const site, layer, rate = 12345, 2, 0.3

	eager := func(s *stepSet, k int) {
		p := adamOf(k)
		d.AdamMulti(s.dense, s.grads, s.m, s.v, p)
		d.Adagrad(s.dense[0], s.grads[0], s.acc, kernels.AdagradParams{LR: lrOf(k), Eps: eps, L2: 1e-3})
		d.SGD(s.sgd, s.grads[1], kernels.SGDParams{LR: lrOf(k), L2: 1e-3})
		d.EmbeddingUpdateAdam(s.tabA, s.tabAm, s.tabAv, srcs, p)
		d.EmbeddingUpdateAdagrad(s.tabG, s.tabGacc, srcs, kernels.AdagradParams{LR: lrOf(k), Eps: eps})
		d.EmbeddingUpdateSGD(s.tabS, srcs, kernels.SGDParams{LR: lrOf(k)})
		d.Dropout(s.x, s.mask, rate, refMixSeed(seedOf(k), site, layer))
	}
	sp, err := d.NewStepParams()
	require.NoError(t, err)
	defer sp.Release()
	// The scalars passed here are deliberately wrong: the variants must
	// take lr, the Adam step and the seed from sp.
	withSP := func(s *stepSet) {
		p := kernels.AdamParams{LR: 99, Beta1: beta1, Beta2: beta2, Eps: eps, L2: 1e-3, Step: 1}
		d.AdamMultiSP(s.dense, s.grads, s.m, s.v, p, sp)
		d.AdagradSP(s.dense[0], s.grads[0], s.acc, kernels.AdagradParams{LR: 99, Eps: eps, L2: 1e-3}, sp)
		d.SGDSP(s.sgd, s.grads[1], kernels.SGDParams{LR: 99, L2: 1e-3}, sp)
		d.EmbeddingUpdateAdamSP(s.tabA, s.tabAm, s.tabAv, srcs, p, sp)
		d.EmbeddingUpdateAdagradSP(s.tabG, s.tabGacc, srcs, kernels.AdagradParams{LR: 99, Eps: eps}, sp)
		d.EmbeddingUpdateSGDSP(s.tabS, srcs, kernels.SGDParams{LR: 99}, sp)
		d.DropoutSP(s.x, s.mask, rate, sp, site, layer)
	}
	upload := func(k int) {
		require.NoError(t, sp.Upload(lrOf(k), adamOf(k), seedOf(k)))
	}

	const steps = 6
	want, got := newSet(), newSet()
	for k := range steps {
		eager(want, k)
	}
	// Step 0 eagerly through the variants (sizes the scratch buffers),
	// then one capture replayed for the other steps.
	upload(0)
	withSP(got)
	r.Sync()
	require.NoError(t, d.BeginCapture())
	assert.Error(t, sp.Upload(1, adamOf(1), 1), "Upload while capturing")
	withSP(got)
	g, err := d.EndCapture()
	require.NoError(t, err)
	defer g.Release()
	for k := 1; k < steps; k++ {
		upload(k)
		require.NoError(t, g.Launch())
		if k%2 == 0 {
			r.Sync() // both with and without a sync between launches
		}
	}
	r.Sync()

	pairs := map[string][2]*kernels.Tensor{
		"adam dense 0": {want.dense[0], got.dense[0]}, "adam dense 1": {want.dense[1], got.dense[1]},
		"adam m 1": {want.m[1], got.m[1]}, "adam v 1": {want.v[1], got.v[1]},
		"adagrad acc": {want.acc, got.acc}, "sgd": {want.sgd, got.sgd},
		"emb adam": {want.tabA, got.tabA}, "emb adam m": {want.tabAm, got.tabAm}, "emb adam v": {want.tabAv, got.tabAv},
		"emb adagrad": {want.tabG, got.tabG}, "emb adagrad acc": {want.tabGacc, got.tabGacc}, "emb sgd": {want.tabS, got.tabS},
		"dropout x": {want.x, got.x}, "dropout mask": {want.mask, got.mask},
	}
	for name, p := range pairs {
		a, b := r.gpuF32(p[0]), r.gpuF32(p[1])
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("%s[%d]: eager %v, step params %v", name, i, a[i], b[i])
			}
		}
	}
	// A graph that froze the step-0 scalars fails the comparison above: the
	// eager reference uses a new lr, Adam step and seed on every step.
	m := r.gpuF32(want.mask)
	dropped := 0
	for _, v := range m {
		if v == 0 {
			dropped++
		}
	}
	assert.InDelta(t, rate, float64(dropped)/float64(len(m)), 0.05)
}
