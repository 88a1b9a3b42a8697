package mtl

import (
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
)

// mmoeBody is MMoE (Ma et al., KDD 2018): E expert MLPs over the input (no
// shared bottom) and one gate per task mixing all experts.
type mmoeBody struct {
	experts *layers.Experts
	gates   []*layers.Gate
	names   []string
}

func newMMoEBody(m *Model, rng *rand.Rand) (*mmoeBody, error) {
	cfg := &m.cfg
	in := m.input.OutDim
	b := &mmoeBody{}
	var err error
	b.experts, err = layers.NewExperts(m.ldev, "mmoe/experts", []int{cfg.MMoENumExperts}, in, cfg.ExpertMLPLayers, m.act, cfg.Dropout, rng)
	if err != nil {
		return nil, err
	}
	for _, t := range m.tasks {
		g, err := layers.NewGate(m.ldev, "mmoe/gate/"+t.Target, in, cfg.MMoENumExperts, b.experts.Out(), cfg.GateDim, cfg.GateTemperature, rng)
		if err != nil {
			b.release()
			return nil, err
		}
		b.gates = append(b.gates, g)
		b.names = append(b.names, t.Target)
	}
	return b, nil
}

func (b *mmoeBody) params() []layers.Param {
	ps := b.experts.Params()
	for _, g := range b.gates {
		ps = append(ps, g.Params()...)
	}
	return ps
}

func (b *mmoeBody) outDim() int { return b.experts.Out() }

func (b *mmoeBody) release() {
	b.experts.Release()
	for _, g := range b.gates {
		g.Release()
	}
}

type mmoeWS struct {
	b       *mmoeBody
	experts *layers.ExpertsWS
	gws     []*layers.GateWS
	gatesWS *layers.GatesWS // the gates' backward state (training only)
	xs, dxs []*kernels.Tensor
	reps    []*kernels.Tensor
	views   []gateView
	// the input's gradient: the gates' terms, then the experts'
	sums layers.GradSums
}

func (b *mmoeBody) newWS(maxRows int, train bool) bodyWS {
	w := &mmoeWS{b: b, experts: b.experts.NewWorkspace(maxRows, train),
		xs: make([]*kernels.Tensor, 1), dxs: make([]*kernels.Tensor, 1), reps: make([]*kernels.Tensor, len(b.gates))}
	for i, g := range b.gates {
		gw := g.NewWorkspace(maxRows, train)
		w.gws = append(w.gws, gw)
		w.views = append(w.views, gateView{name: b.names[i], w: gw.Weights()})
	}
	if train {
		w.gatesWS = layers.NewGatesWS(w.gws)
		w.gatesWS.FoldExperts(b.experts, w.experts)
	}
	return w
}

func (w *mmoeWS) forward(x *kernels.Tensor, mode layers.Mode) []*kernels.Tensor {
	w.xs[0] = x
	w.b.experts.Forward(w.experts, w.xs, mode)
	for t, g := range w.b.gates {
		w.reps[t] = g.Forward(w.gws[t], x, w.experts.Outputs())
	}
	return w.reps
}

func (w *mmoeWS) repGrad(t int) (*kernels.Tensor, bool) { return w.gws[t].DY(), false }

func (w *mmoeWS) backward(dx *kernels.Tensor) {
	layers.BackwardGatesTo(w.b.gates, w.gws, w.gatesWS, w.experts.DY(), w.experts.DOutputs(), &w.sums, dx)
	w.dxs[0] = dx
	w.b.experts.BackwardTo(w.experts, &w.sums, w.dxs, true)
	w.sums.Flush()
}

func (w *mmoeWS) grads() []*kernels.Tensor {
	gs := w.experts.Grads()
	for _, g := range w.gws {
		gs = append(gs, g.Grads()...)
	}
	return gs
}

func (w *mmoeWS) gates() []gateView {
	for i, g := range w.gws {
		w.views[i].w = g.Weights()
	}
	return w.views
}

func (w *mmoeWS) release() {
	w.experts.Release()
	for _, g := range w.gws {
		g.Release()
	}
}
