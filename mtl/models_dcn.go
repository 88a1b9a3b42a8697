package mtl

import (
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
)

// dcnBody is DCN-V2 (Wang et al., WWW 2021) as Merlin's DCNModel builds it
// by default (stacked=True): the cross network of DCNInteractedLayerNum
// full-rank layers over the concatenated inputs, then the deep MLP
// (MLPLayers) on its output. Every task's tower reads the MLP's output.
type dcnBody struct {
	cross *layers.CrossNet
	mlp   *layers.MLP
	tasks int
}

func newDCNBody(m *Model, rng *rand.Rand) (*dcnBody, error) {
	cfg := &m.cfg
	cross, err := layers.NewCrossNet(m.ldev, "dcn/cross", m.input.OutDim, cfg.DCNInteractedLayerNum, rng)
	if err != nil {
		return nil, err
	}
	mlp, err := layers.NewMLP(m.ldev, "dcn/mlp", m.input.OutDim, cfg.MLPLayers, m.act, false, cfg.Dropout, rng)
	if err != nil {
		cross.Release()
		return nil, err
	}
	return &dcnBody{cross: cross, mlp: mlp, tasks: len(m.tasks)}, nil
}

func (b *dcnBody) params() []layers.Param { return append(b.cross.Params(), b.mlp.Params()...) }
func (b *dcnBody) outDim() int            { return b.mlp.Out() }
func (b *dcnBody) release() {
	b.cross.Release()
	b.mlp.Release()
}

func (b *dcnBody) newWS(maxRows int, train bool) bodyWS {
	return &dcnWS{b: b, cross: b.cross.NewWorkspace(maxRows, train), mlp: b.mlp.NewWorkspace(maxRows, train),
		reps: make([]*kernels.Tensor, b.tasks)}
}

type dcnWS struct {
	b     *dcnBody
	cross *layers.CrossWS
	mlp   *layers.MLPWS
	reps  []*kernels.Tensor
}

func (w *dcnWS) forward(x *kernels.Tensor, mode layers.Mode) []*kernels.Tensor {
	y := w.b.mlp.Forward(w.mlp, w.b.cross.Forward(w.cross, x), mode)
	for t := range w.reps {
		w.reps[t] = y
	}
	return w.reps
}

// Every tower adds its gradient into the deep MLP's output gradient.
func (w *dcnWS) repGrad(t int) (*kernels.Tensor, bool) { return w.mlp.DY(), t > 0 }

func (w *dcnWS) backward(dx *kernels.Tensor) {
	w.b.mlp.Backward(w.mlp, w.cross.DY(), false)
	w.b.cross.Backward(w.cross, dx, false)
}

func (w *dcnWS) grads() []*kernels.Tensor { return append(w.cross.Grads(), w.mlp.Grads()...) }
func (w *dcnWS) gates() []gateView        { return nil }
func (w *dcnWS) release() {
	w.cross.Release()
	w.mlp.Release()
}

// dcn counts the cross network and the deep MLP over an input of width in
// (EstimateMemory) and returns the output width.
func (c *counter) dcn(in float64, cfg *Config, act func(float64) float64) float64 {
	L := float64(cfg.DCNInteractedLayerNum)
	c.dense += L * (in*in + in)
	// per layer x W + b, the output and its gradient; two backward scratches
	c.row += L*3*in + 2*in
	return c.mlp(in, cfg.MLPLayers, act)
}
