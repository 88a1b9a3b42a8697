package mtl

import (
	"fmt"
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
)

// pleBody is PLE (Tang et al., RecSys 2020): stacked CGC levels. Each level
// has CGCTaskExperts experts per task and CGCSharedExperts shared experts,
// all computed by one Experts block (task t's experts first, task after
// task, then the shared ones). Task t's gate mixes its own and the shared
// experts; every level but the last also has a shared gate over all experts.
// At level l > 0 task t's experts and gate read task t's output of level
// l-1 and the shared experts and gate read the shared output (paper
// semantics); with PLEGatesOnInput every gate reads the model input instead
// (Merlin's variant). CGC is PLE with one level.
type pleBody struct {
	levels       []*pleLevel
	tasks        int
	nt, ns       int
	gatesOnInput bool
	dev          kernels.Device // the layers' device
}

type pleLevel struct {
	experts    *layers.Experts
	taskGates  []*layers.Gate
	sharedGate *layers.Gate // nil on the last level
	names      []string     // gate names: tasks, then shared
}

func newPLEBody(m *Model, prefix string, levels int, rng *rand.Rand) (*pleBody, error) {
	cfg := &m.cfg
	T, nt, ns := len(m.tasks), cfg.CGCTaskExperts, cfg.CGCSharedExperts
	b := &pleBody{tasks: T, nt: nt, ns: ns, gatesOnInput: cfg.PLEGatesOnInput, dev: m.ldev}
	d := cfg.ExpertMLPLayers[len(cfg.ExpertMLPLayers)-1]
	for l := 0; l < levels; l++ {
		lp, gp := prefix, ""
		if prefix == "ple" {
			lp = fmt.Sprintf("ple/level_%d", l)
			gp = fmt.Sprintf("level_%d/", l)
		}
		in := m.input.OutDim
		groups := []int{T*nt + ns}
		if l > 0 {
			in = d
			groups = groups[:0]
			for range T {
				groups = append(groups, nt)
			}
			groups = append(groups, ns)
		}
		gateIn := in
		if b.gatesOnInput {
			gateIn = m.input.OutDim
		}
		lv := &pleLevel{}
		b.levels = append(b.levels, lv)
		var err error
		lv.experts, err = layers.NewExperts(m.ldev, lp+"/experts", groups, in, cfg.ExpertMLPLayers, m.act, cfg.Dropout, rng)
		if err != nil {
			b.release()
			return nil, err
		}
		for _, t := range m.tasks {
			g, err := layers.NewGate(m.ldev, lp+"/gate/"+t.Target, gateIn, nt+ns, d, cfg.GateDim, cfg.GateTemperature, rng)
			if err != nil {
				b.release()
				return nil, err
			}
			lv.taskGates = append(lv.taskGates, g)
			lv.names = append(lv.names, gp+t.Target)
		}
		if l < levels-1 {
			g, err := layers.NewGate(m.ldev, lp+"/gate/shared", gateIn, T*nt+ns, d, cfg.GateDim, cfg.GateTemperature, rng)
			if err != nil {
				b.release()
				return nil, err
			}
			lv.sharedGate = g
			lv.names = append(lv.names, gp+"shared")
		}
	}
	return b, nil
}

func (b *pleBody) params() []layers.Param {
	var ps []layers.Param
	for _, lv := range b.levels {
		ps = append(ps, lv.experts.Params()...)
		for _, g := range lv.taskGates {
			ps = append(ps, g.Params()...)
		}
		if lv.sharedGate != nil {
			ps = append(ps, lv.sharedGate.Params()...)
		}
	}
	return ps
}

func (b *pleBody) outDim() int { return b.levels[0].experts.Out() }

func (b *pleBody) release() {
	for _, lv := range b.levels {
		if lv.experts != nil {
			lv.experts.Release()
		}
		for _, g := range lv.taskGates {
			g.Release()
		}
		if lv.sharedGate != nil {
			lv.sharedGate.Release()
		}
	}
}

type pleLevelWS struct {
	experts   *layers.ExpertsWS
	taskGates []*layers.GateWS
	shared    *layers.GateWS
	// expert lists of each gate (task gates, then the shared gate) over the
	// experts' outputs and output gradients
	lists, dlists [][]*kernels.Tensor
	xs, dxs       []*kernels.Tensor // expert inputs per group, their gradients
	gateIn        []*kernels.Tensor // input of each gate
	gateDX        []*kernels.Tensor // gradient of each gate's input
	// every gate (task gates, then the shared gate), its workspace and the
	// gates' backward state (training only)
	gates   []*layers.Gate
	gws     []*layers.GateWS
	gatesWS *layers.GatesWS
}

type pleWS struct {
	b      *pleBody
	levels []*pleLevelWS
	reps   []*kernels.Tensor
	views  []gateView
	train  bool
	// a level's input gradients: per input, its gates' terms then its
	// experts'
	sums layers.GradSums
}

func (b *pleBody) newWS(maxRows int, train bool) bodyWS {
	w := &pleWS{b: b, reps: make([]*kernels.Tensor, b.tasks), train: train}
	T, nt, ns := b.tasks, b.nt, b.ns
	for _, lv := range b.levels {
		lw := &pleLevelWS{experts: lv.experts.NewWorkspace(maxRows, train)}
		outs, douts := lw.experts.Outputs(), lw.experts.DOutputs()
		pick := func(src []*kernels.Tensor, t int) []*kernels.Tensor {
			if src == nil {
				return nil
			}
			l := append([]*kernels.Tensor(nil), src[t*nt:(t+1)*nt]...)
			return append(l, src[T*nt:T*nt+ns]...)
		}
		for t, g := range lv.taskGates {
			gw := g.NewWorkspace(maxRows, train)
			lw.taskGates = append(lw.taskGates, gw)
			lw.lists = append(lw.lists, pick(outs, t))
			lw.dlists = append(lw.dlists, pick(douts, t))
		}
		lw.gates, lw.gws = append(lw.gates, lv.taskGates...), append(lw.gws, lw.taskGates...)
		if lv.sharedGate != nil {
			lw.shared = lv.sharedGate.NewWorkspace(maxRows, train)
			lw.lists = append(lw.lists, outs)
			lw.dlists = append(lw.dlists, douts)
			lw.gates, lw.gws = append(lw.gates, lv.sharedGate), append(lw.gws, lw.shared)
		}
		if train {
			lw.gatesWS = layers.NewGatesWS(lw.gws)
			lw.gatesWS.FoldExperts(lv.experts, lw.experts)
		}
		ng := len(lv.experts.Groups)
		lw.xs, lw.dxs = make([]*kernels.Tensor, ng), make([]*kernels.Tensor, ng)
		lw.gateIn, lw.gateDX = make([]*kernels.Tensor, len(lw.lists)), make([]*kernels.Tensor, len(lw.lists))
		w.levels = append(w.levels, lw)
		for i, name := range lv.names {
			w.views = append(w.views, gateView{name: name, w: lw.gate(i).Weights()})
		}
	}
	return w
}

// gate returns the workspace of gate i (task gates, then the shared gate).
func (lw *pleLevelWS) gate(i int) *layers.GateWS {
	if i < len(lw.taskGates) {
		return lw.taskGates[i]
	}
	return lw.shared
}

func (w *pleWS) forward(x *kernels.Tensor, mode layers.Mode) []*kernels.Tensor {
	b := w.b
	var prev *pleLevelWS
	for l, lv := range b.levels {
		lw := w.levels[l]
		if l == 0 {
			lw.xs[0] = x
		} else {
			for t := range b.tasks {
				lw.xs[t] = prev.taskGates[t].Y()
			}
			lw.xs[b.tasks] = prev.shared.Y()
		}
		lv.experts.Forward(lw.experts, lw.xs, mode)
		for i := range lw.lists {
			in := x
			if !b.gatesOnInput && l > 0 {
				in = lw.xs[i] // task i's (or, last, the shared) output of level l-1
			}
			lw.gateIn[i] = in
			if i < b.tasks {
				lv.taskGates[i].Forward(lw.taskGates[i], in, lw.lists[i])
			} else {
				lv.sharedGate.Forward(lw.shared, in, lw.lists[i])
			}
		}
		prev = lw
	}
	for t := range b.tasks {
		w.reps[t] = prev.taskGates[t].Y()
	}
	return w.reps
}

func (w *pleWS) repGrad(t int) (*kernels.Tensor, bool) {
	return w.levels[len(w.levels)-1].taskGates[t].DY(), false
}

func (w *pleWS) backward(dx *kernels.Tensor) {
	b := w.b
	// dx is written by the first gates that reach it (the top level's
	// with gatesOnInput, else level 0's), then added into: no zeroing
	dxWritten := false
	for l := len(b.levels) - 1; l >= 0; l-- {
		lv, lw := b.levels[l], w.levels[l]
		onInput := b.gatesOnInput || l == 0
		// gradients of this level's inputs: the model input at level 0,
		// else the outputs of level l-1, each the sum of the terms of this
		// level's gate of the same index (without gatesOnInput) and of
		// the experts of its group, written by the first term (no zeroing)
		if l == 0 {
			lw.dxs[0] = dx
		} else {
			prev := w.levels[l-1]
			for t := range b.tasks {
				lw.dxs[t] = prev.taskGates[t].DY()
			}
			lw.dxs[b.tasks] = prev.shared.DY()
		}
		for i := range lw.lists {
			if onInput {
				lw.gateDX[i] = dx
			} else {
				lw.gateDX[i] = lw.dxs[i]
			}
		}
		accumulate := onInput && dxWritten
		dxWritten = dxWritten || onInput
		layers.BackwardGateSetsTo(lw.gates, lw.gws, lw.gatesWS, lw.experts.DY(), lw.lists, lw.dlists, &w.sums, lw.gateDX, accumulate)
		// a group's experts write its gradient where no gate did (l > 0)
		// and add to what the gates wrote otherwise (their flag is then
		// ignored: the first term of a sum decides)
		lv.experts.BackwardTo(lw.experts, &w.sums, lw.dxs, false)
		w.sums.Flush()
	}
}

func (w *pleWS) grads() []*kernels.Tensor {
	var gs []*kernels.Tensor
	for _, lw := range w.levels {
		gs = append(gs, lw.experts.Grads()...)
		for _, g := range lw.taskGates {
			gs = append(gs, g.Grads()...)
		}
		if lw.shared != nil {
			gs = append(gs, lw.shared.Grads()...)
		}
	}
	return gs
}

func (w *pleWS) gates() []gateView { return w.views }

func (w *pleWS) release() {
	for _, lw := range w.levels {
		lw.experts.Release()
		for _, g := range lw.taskGates {
			g.Release()
		}
		if lw.shared != nil {
			lw.shared.Release()
		}
	}
}
