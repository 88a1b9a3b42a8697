package layers

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/mtlrank/mtlrank/kernels"
)

// Gate mixes expert outputs: w = softmax(Dense_E(h) / temperature) with
// h = relu(Dense_gateDim(x)) (or h = x without a gate MLP), and
// out = sum_e w[:, e] * expert_e. The Dense(E) layer has no bias (Merlin).
type Gate struct {
	Name        string
	In, E, D    int // input width, number of experts, expert output width
	Hidden      *Dense
	Logits      *Dense
	Temperature float32
	dev         kernels.Device
}

// NewGate creates a gate named name with parameters name+"/mlp/kernel",
// name+"/mlp/bias" (when gateDim > 0) and name+"/logits/kernel".
func NewGate(dev kernels.Device, name string, in, experts, expertDim, gateDim int, temperature float32, rng *rand.Rand) (*Gate, error) {
	if experts <= 0 {
		return nil, fmt.Errorf("layers: gate %q: needs at least one expert, got %d", name, experts)
	}
	if gateDim < 0 {
		return nil, fmt.Errorf("layers: gate %q: gate dim must be >= 0, got %d", name, gateDim)
	}
	if !(temperature > 0) {
		return nil, fmt.Errorf("layers: gate %q: temperature must be > 0, got %g", name, temperature)
	}
	g := &Gate{Name: name, In: in, E: experts, D: expertDim, Temperature: temperature, dev: dev}
	h := in
	if gateDim > 0 {
		var err error
		if g.Hidden, err = NewDense(dev, name+"/mlp", in, gateDim, true, kernels.ReLU, rng); err != nil {
			return nil, err
		}
		h = gateDim
	}
	var err error
	if g.Logits, err = NewDense(dev, name+"/logits", h, experts, false, kernels.Linear, rng); err != nil {
		g.Release()
		return nil, err
	}
	return g, nil
}

// Params lists the gate MLP's kernel and bias (if any) and the logits kernel.
func (g *Gate) Params() []Param {
	var ps []Param
	if g.Hidden != nil {
		ps = append(ps, g.Hidden.Params()...)
	}
	return append(ps, g.Logits.Params()...)
}

// Release frees the parameters.
func (g *Gate) Release() {
	if g.Hidden != nil {
		g.Hidden.Release()
	}
	if g.Logits != nil {
		g.Logits.Release()
	}
}

// GateWS is the per-caller state of a Gate.
type GateWS struct {
	hidden, logits *DenseWS
	w, dw          *batchBuf // [B, E]
	out, dout      *batchBuf // [B, D]
	experts        []*kernels.Tensor
}

// NewWorkspace allocates the workspace for batches of up to maxRows rows.
func (g *Gate) NewWorkspace(maxRows int, train bool) *GateWS {
	ws := &GateWS{
		logits: g.Logits.NewWorkspace(maxRows, train),
		w:      newBatchBuf(g.dev, 1, maxRows, g.E),
		out:    newBatchBuf(g.dev, 1, maxRows, g.D),
	}
	if g.Hidden != nil {
		ws.hidden = g.Hidden.NewWorkspace(maxRows, train)
	}
	if train {
		// dw is the scratch of the unfused backward; a FusedGater keeps
		// it on chip.
		if _, fused := g.dev.(kernels.FusedGater); !fused {
			ws.dw = newBatchBuf(g.dev, 1, maxRows, g.E)
		}
		ws.dout = newBatchBuf(g.dev, 1, maxRows, g.D)
	}
	return ws
}

// Weights is the gate output of the last Forward, [B, E].
func (ws *GateWS) Weights() *kernels.Tensor { return ws.w.t() }

// Y is the mixed output [B, D]; DY the gradient w.r.t. it.
func (ws *GateWS) Y() *kernels.Tensor  { return ws.out.t() }
func (ws *GateWS) DY() *kernels.Tensor { return ws.dout.t() }

// Grads returns the gradients matching Params().
func (ws *GateWS) Grads() []*kernels.Tensor {
	var gs []*kernels.Tensor
	if ws.hidden != nil {
		gs = append(gs, ws.hidden.Grads()...)
	}
	return append(gs, ws.logits.Grads()...)
}

// Release frees the workspace.
func (ws *GateWS) Release() {
	if ws.hidden != nil {
		ws.hidden.Release()
	}
	ws.logits.Release()
	ws.w.release()
	ws.dw.release()
	ws.out.release()
	ws.dout.release()
}

// Forward computes the gate weights from x [B, In] and mixes experts (E
// tensors [B, D]; the slice is kept for Backward).
func (g *Gate) Forward(ws *GateWS, x *kernels.Tensor, experts []*kernels.Tensor) *kernels.Tensor {
	if len(experts) != g.E {
		panic(fmt.Sprintf("layers: gate %q: %d experts, want %d", g.Name, len(experts), g.E))
	}
	rows := x.Rows()
	ws.w.resize(rows)
	ws.out.resize(rows)
	if ws.dout != nil {
		ws.dout.resize(rows)
	}
	if ws.dw != nil {
		ws.dw.resize(rows)
	}
	ws.experts = experts
	h := x
	if g.Hidden != nil {
		h = g.Hidden.Forward(ws.hidden, x)
	}
	logits := g.Logits.Forward(ws.logits, h)
	// One fused kernel on a kernels.FusedGater, else SoftmaxRows then
	// GateCombine (bit for bit the same ops on the CPU).
	kernels.GateForward(g.dev, ws.out.t(), ws.w.t(), logits, experts, g.Temperature)
	return ws.out.t()
}

// Backward propagates ws.DY() into the gate parameters, adds the expert
// gradients into dexperts (matching the experts of Forward) and writes (or
// with accumulate adds) the input gradient into dx when it is not nil.
func (g *Gate) Backward(ws *GateWS, dexperts []*kernels.Tensor, dx *kernels.Tensor, accumulate bool) {
	g.backwardTo(ws, dexperts, nil, dx, accumulate)
}

// backwardTo is Backward with the input gradient's GEMM added to sums.
func (g *Gate) backwardTo(ws *GateWS, dexperts []*kernels.Tensor, sums *GradSums, dx *kernels.Tensor, accumulate bool) {
	var dw *kernels.Tensor // scratch of the unfused path (nil on a FusedGater)
	if ws.dw != nil {
		dw = ws.dw.t()
	}
	kernels.GateBackward(g.dev, ws.logits.DY(), dw, ws.dout.t(), ws.w.t(), ws.experts, dexperts, g.Temperature)
	g.backwardDense(ws, sums, dx, accumulate)
}

// backwardDense propagates the logits' gradient through the gate's Dense
// layers into their parameters and dx (its GEMM added to sums).
func (g *Gate) backwardDense(ws *GateWS, sums *GradSums, dx *kernels.Tensor, accumulate bool) {
	if g.Hidden == nil {
		g.Logits.BackwardTo(ws.logits, sums, dx, accumulate)
		return
	}
	g.Logits.backwardInto(ws.logits, g.Hidden, ws.hidden)
	g.Hidden.BackwardTo(ws.hidden, sums, dx, accumulate)
}

// GatesWS is the state of BackwardGates for one set of gates: the lists of
// their tensors, built once so that a step allocates nothing.
type GatesWS struct {
	douts, ws, dws []*kernels.Tensor
	// the one-pass backward (kernels.GatesFusedBackwarder), and the
	// experts whose last activation backward and bias gradient it may take
	// (FoldExperts)
	pass   kernels.GatesBackward
	fold   *Experts
	foldWS *ExpertsWS
	foldDB []*kernels.Tensor
	// the experts and gradients of the pass when FoldExperts' are not used
	xs, dxs []*kernels.Tensor
}

// FoldExperts lets BackwardGates and BackwardGateSets run the activation
// backward and bias gradient of the last layer of x (workspace ws, whose
// outputs the gates mix) in their pass where the device can (a
// kernels.GatesFusedBackwarder, ReLU or linear experts, no dropout in the
// step); x's next Backward then skips that pass. The results are the
// same bits.
func (s *GatesWS) FoldExperts(x *Experts, ws *ExpertsWS) {
	if _, ok := x.dev.(kernels.GatesFusedBackwarder); !ok || ws.dy == nil {
		return
	}
	s.fold, s.foldWS = x, ws
	last, d := len(x.Dims)-1, x.Out()
	s.foldDB = s.foldDB[:0]
	for e := 0; e < x.E; e++ {
		s.foldDB = append(s.foldDB, ws.dB[last].View(e*d, d))
	}
}

// onePass reports whether gates run their backward in one
// kernels.GatesFusedBackwarder pass, and prepares its per-gate lists.
func (s *GatesWS) onePass(gates []*Gate, wss []*GateWS) (kernels.GatesFusedBackwarder, bool) {
	dev := gates[0].dev
	f, ok := dev.(kernels.GatesFusedBackwarder)
	if _, fused := dev.(kernels.FusedGater); fused || !ok {
		return nil, false
	}
	p := &s.pass
	p.DOuts, p.Ws = s.douts, s.ws
	p.DLogits, p.Temperatures = p.DLogits[:0], p.Temperatures[:0]
	for t, g := range gates {
		p.DLogits = append(p.DLogits, wss[t].logits.DY())
		p.Temperatures = append(p.Temperatures, g.Temperature)
	}
	return f, true
}

// run runs the prepared pass, with the experts' fold when FoldExperts
// registered the experts of p.Experts and they allow it.
func (s *GatesWS) run(f kernels.GatesFusedBackwarder) {
	p := &s.pass
	p.DB = nil
	fold := s.fold != nil && slices.Equal(p.Experts, s.foldWS.outs) && slices.Equal(p.DExperts, s.foldWS.douts) && s.fold.foldable(s.foldWS)
	if fold {
		p.Act, p.DB = s.fold.Act, s.foldDB
	}
	f.GatesBackward(p)
	if fold {
		s.foldWS.lastFolded = true
	}
}

// setLists points the pass's lists at every expert for each of n gates.
func (s *GatesWS) setLists(n, experts int) {
	p := &s.pass
	for len(p.Lists) < n {
		p.Lists = append(p.Lists, nil)
	}
	p.Lists = p.Lists[:n]
	for g := range p.Lists {
		if len(p.Lists[g]) != experts {
			p.Lists[g] = make([]int, experts)
			for e := range p.Lists[g] {
				p.Lists[g][e] = e
			}
		}
	}
}

// NewGatesWS returns the state of BackwardGates for the gates whose
// workspaces are wss (the same gates in every call).
func NewGatesWS(wss []*GateWS) *GatesWS {
	s := &GatesWS{}
	for _, ws := range wss {
		s.douts = append(s.douts, ws.dout.t())
		s.ws = append(s.ws, ws.w.t())
		if ws.dw != nil {
			s.dws = append(s.dws, ws.dw.t())
		}
	}
	return s
}

// BackwardGates is Backward of every gate of gates, all of which mixed the
// same experts in their Forward: it writes (not adds) the expert gradients
// dexperts, whose storage is dy (zeroed at once where the device runs
// gate after gate), and writes dx (gate 0) then adds into it (the others)
// when dx is not nil. On a kernels.GatesBackwarder the gates' combine
// backward runs in one pass over the experts (kernels.GatesCombineBackward),
// then each gate's softmax and Dense backward; the results are the same
// bits as gate after gate.
func BackwardGates(gates []*Gate, wss []*GateWS, s *GatesWS, dy *kernels.Tensor, dexperts []*kernels.Tensor, dx *kernels.Tensor) {
	BackwardGatesTo(gates, wss, s, dy, dexperts, nil, dx)
}

// BackwardGatesTo is BackwardGates with the gates' input gradient GEMMs
// added to sums, gate after gate (gate 0's term written into dx, the
// others added), for its Flush to compute with the other layers reading
// the same input.
func BackwardGatesTo(gates []*Gate, wss []*GateWS, s *GatesWS, dy *kernels.Tensor, dexperts []*kernels.Tensor, sums *GradSums, dx *kernels.Tensor) {
	dev := gates[0].dev
	if f, ok := s.onePass(gates, wss); ok {
		s.pass.Experts, s.pass.DExperts = wss[0].experts, dexperts
		s.setLists(len(gates), len(dexperts))
		s.run(f)
		for t, g := range gates {
			g.backwardDense(wss[t], sums, dx, t > 0)
		}
		return
	}
	multi, ok := dev.(kernels.GatesBackwarder)
	if _, fused := dev.(kernels.FusedGater); fused || !ok || len(s.dws) != len(gates) {
		dev.Zero(dy)
		for t, g := range gates {
			g.backwardTo(wss[t], dexperts, sums, dx, t > 0)
		}
		return
	}
	multi.GatesCombineBackward(s.douts, s.ws, s.dws, wss[0].experts, dexperts)
	for t, g := range gates {
		dev.SoftmaxBackward(wss[t].logits.DY(), s.dws[t], s.ws[t], g.Temperature)
		g.backwardDense(wss[t], sums, dx, t > 0)
	}
}

// BackwardGateSets is BackwardGates for gates that each mixed their own
// list of the experts (CGC's and PLE's: a task gate its task's experts and
// the shared ones, the shared gate all of them). lists[g] and dlists[g] are
// gate g's experts and their gradients (an expert listed by several gates
// is the same tensor in each list), dy the storage of every expert
// gradient, which it writes (not adds), and dxs[g] the gradient of gate
// g's input: with accumulate each gate adds into it; without, a gate
// writes it unless an earlier gate of the call has the same dxs tensor
// (which it then adds into), so that the caller need not zero it (a -0
// it writes stays -0, where zeroing and adding gave +0). On a kernels.GateSetsBackwarder,
// when the lists cover dy, the gates' combine backward runs in one pass
// over the experts, then each gate's softmax and Dense backward; the
// results are the same bits as zeroing dy and running gate after gate.
func BackwardGateSets(gates []*Gate, wss []*GateWS, s *GatesWS, dy *kernels.Tensor, lists, dlists [][]*kernels.Tensor, dxs []*kernels.Tensor, accumulate bool) {
	BackwardGateSetsTo(gates, wss, s, dy, lists, dlists, nil, dxs, accumulate)
}

// BackwardGateSetsTo is BackwardGateSets with the gates' input gradient
// GEMMs added to sums, in gate order, for its Flush to compute.
func BackwardGateSetsTo(gates []*Gate, wss []*GateWS, s *GatesWS, dy *kernels.Tensor, lists, dlists [][]*kernels.Tensor, sums *GradSums, dxs []*kernels.Tensor, accumulate bool) {
	dev := gates[0].dev
	if f, ok := s.onePass(gates, wss); ok && s.indexLists(lists, dlists, dy) {
		s.run(f)
		for t, g := range gates {
			g.backwardDense(wss[t], sums, dxs[t], accumulate || slices.Contains(dxs[:t], dxs[t]))
		}
		return
	}
	multi, ok := dev.(kernels.GateSetsBackwarder)
	if _, fused := dev.(kernels.FusedGater); fused || !ok || len(s.dws) != len(gates) || !covers(dlists, dy) {
		dev.Zero(dy)
		for t, g := range gates {
			g.backwardTo(wss[t], dlists[t], sums, dxs[t], accumulate || slices.Contains(dxs[:t], dxs[t]))
		}
		return
	}
	multi.GateSetsCombineBackward(s.douts, s.ws, s.dws, lists, dlists)
	for t, g := range gates {
		dev.SoftmaxBackward(wss[t].logits.DY(), s.dws[t], s.ws[t], g.Temperature)
		g.backwardDense(wss[t], sums, dxs[t], accumulate || slices.Contains(dxs[:t], dxs[t]))
	}
}

// covers reports whether the distinct tensors of lists (views of dy that
// do not overlap) add up to all of dy, so that writing them writes dy.
func covers(lists [][]*kernels.Tensor, dy *kernels.Tensor) bool {
	n := 0
	for g, l := range lists {
		for i, x := range l {
			if !listedBefore(lists, g, i, x) {
				n += x.Len()
			}
		}
	}
	return n == dy.Len()
}

func listedBefore(lists [][]*kernels.Tensor, g, i int, x *kernels.Tensor) bool {
	for h := 0; h <= g; h++ {
		l := lists[h]
		if h == g {
			l = l[:i]
		}
		for _, y := range l {
			if y == x {
				return true
			}
		}
	}
	return false
}

// indexLists sets the pass's experts and lists from the gates' lists of
// tensors: the experts registered by FoldExperts when they hold every
// listed one (their gradients cover dy), else the distinct listed experts
// in the order first listed, which must cover dy. It reports false where
// neither holds (the composed path zeroes dy first).
func (s *GatesWS) indexLists(lists, dlists [][]*kernels.Tensor, dy *kernels.Tensor) bool {
	p := &s.pass
	p.Experts, p.DExperts = s.xs[:0], s.dxs[:0]
	if s.foldWS != nil && s.foldWS.DY() == dy {
		p.Experts, p.DExperts = s.foldWS.outs, s.foldWS.douts
	}
	registered := len(p.Experts) > 0
	for len(p.Lists) < len(lists) {
		p.Lists = append(p.Lists, nil)
	}
	p.Lists = p.Lists[:len(lists)]
	for g, l := range dlists {
		p.Lists[g] = p.Lists[g][:0]
		for i, dx := range l {
			e := slices.Index(p.DExperts, dx)
			if e < 0 && registered {
				return false
			}
			if e < 0 {
				e = len(p.DExperts)
				p.Experts, p.DExperts = append(p.Experts, lists[g][i]), append(p.DExperts, dx)
			}
			if p.Experts[e] != lists[g][i] {
				return false
			}
			p.Lists[g] = append(p.Lists[g], e)
		}
	}
	if !registered {
		s.xs, s.dxs = p.Experts, p.DExperts
	}
	return registered || covers(dlists, dy)
}
