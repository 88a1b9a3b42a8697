package layers

import (
	"fmt"
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
)

// Experts is a set of E expert MLPs with identical shapes, computed together:
// every layer of all experts is one strided-batched GEMM with one batch entry
// per expert, and one fused bias+activation over [E, B, out].
//
// The experts are split into input groups: group g (Groups[g] consecutive
// experts) reads input g. With a single group all experts read the same
// [B, In] input, broadcast with stride 0 (MMoE; level 0 of CGC/PLE); with one
// group per task plus a shared one the task and shared experts of a PLE level
// read their own inputs.
type Experts struct {
	Name    string
	E       int
	Groups  []int // experts per input group, summing to E
	In      int
	Dims    []int
	Act     kernels.Activation
	Dropout float32
	W       []*kernels.Tensor // per layer: [E, in_l, out_l]
	B       []*kernels.Tensor // per layer: [E, out_l]

	first []int // first expert of each group
	site  uint64
	dev   kernels.Device
}

// NewExperts creates the experts; parameter names are
// name+"/<layer>/kernel" ([E, in, out]) and name+"/<layer>/bias" ([E, out]).
func NewExperts(dev kernels.Device, name string, groups []int, in int, dims []int, act kernels.Activation, dropout float32, rng *rand.Rand) (*Experts, error) {
	x := &Experts{Name: name, Groups: append([]int(nil), groups...), In: in, Dims: append([]int(nil), dims...),
		Act: act, Dropout: dropout, site: siteID(name), dev: dev}
	if err := kernels.CheckActivation(dev, act); err != nil {
		return nil, fmt.Errorf("layers: experts %q: %w", name, err)
	}
	if len(groups) == 0 {
		return nil, fmt.Errorf("layers: experts %q: no expert groups", name)
	}
	for g, n := range groups {
		if n <= 0 {
			return nil, fmt.Errorf("layers: experts %q: group %d has %d experts, want >= 1", name, g, n)
		}
		x.first = append(x.first, x.E)
		x.E += n
	}
	if in <= 0 || len(dims) == 0 {
		return nil, fmt.Errorf("layers: experts %q: need a positive input width and at least one layer", name)
	}
	if dropout < 0 || dropout >= 1 {
		return nil, fmt.Errorf("layers: experts %q: dropout must be in [0, 1), got %g", name, dropout)
	}
	prev := in
	for l, d := range dims {
		if d <= 0 {
			return nil, fmt.Errorf("layers: experts %q: layer %d width must be positive, got %d", name, l, d)
		}
		w := make([]float32, x.E*prev*d)
		for e := 0; e < x.E; e++ {
			glorotUniform(rng, w[e*prev*d:(e+1)*prev*d], prev, d)
		}
		wt := dev.Alloc(kernels.Float32, x.E, prev, d)
		dev.CopyFromHostF32(wt, w)
		x.W = append(x.W, wt)
		x.B = append(x.B, dev.Alloc(kernels.Float32, x.E, d))
		prev = d
	}
	return x, nil
}

// Out is the width of each expert's output.
func (x *Experts) Out() int { return x.Dims[len(x.Dims)-1] }

// Params lists kernel and bias of every layer.
func (x *Experts) Params() []Param {
	var ps []Param
	for l := range x.W {
		ps = append(ps,
			Param{Name: fmt.Sprintf("%s/%d/kernel", x.Name, l), Value: x.W[l], L2: true},
			Param{Name: fmt.Sprintf("%s/%d/bias", x.Name, l), Value: x.B[l]})
	}
	return ps
}

// Release frees the parameters.
func (x *Experts) Release() { releaseAll(append(append([]*kernels.Tensor(nil), x.W...), x.B...)...) }

// ExpertsWS is the per-caller state of an Experts block.
type ExpertsWS struct {
	xs       []*kernels.Tensor // inputs of the last Forward, per group
	y, dy    []*batchBuf       // per layer: [E, B, out_l]
	masks    []*batchBuf
	z        []*batchBuf // per layer: the pre-activation, for an Activator activation
	dW, dB   []*kernels.Tensor
	wGroup   []*kernels.Tensor // first-layer kernel of each group (fixed views)
	bGroup   []*kernels.Tensor // first-layer bias of each group (fixed views)
	dwGroup  []*kernels.Tensor
	rows     int
	dropped  bool
	expW     []*kernels.Tensor // first-layer kernel of each expert, [In, out0]
	outs     []*kernels.Tensor // per expert: last-layer output view [B, Out]
	douts    []*kernels.Tensor
	yGroup   []hdr // first-layer output of each group [n_g, B, out0]
	dyGroup  []hdr
	dyExpert []hdr // first-layer output gradient of each expert [B, out0]
	// lastFolded: the gates' backward did the last layer's activation
	// backward and bias gradient (GatesWS.FoldExperts); the next Backward
	// skips them
	lastFolded bool
}

// NewWorkspace allocates the workspace for batches of up to maxRows rows.
func (x *Experts) NewWorkspace(maxRows int, train bool) *ExpertsWS {
	ws := &ExpertsWS{rows: -1, xs: make([]*kernels.Tensor, len(x.Groups))}
	for l, d := range x.Dims {
		ws.y = append(ws.y, newStackedBuf(x.dev, x.E, maxRows, d))
		if train {
			ws.dy = append(ws.dy, newStackedBuf(x.dev, x.E, maxRows, d))
			ws.dW = append(ws.dW, x.dev.Alloc(kernels.Float32, x.W[l].Shape...))
			ws.dB = append(ws.dB, x.dev.Alloc(kernels.Float32, x.B[l].Shape...))
			if x.Dropout > 0 {
				ws.masks = append(ws.masks, newStackedBuf(x.dev, x.E, maxRows, d))
			}
			if x.Act.NeedsActivator() {
				ws.z = append(ws.z, newStackedBuf(x.dev, x.E, maxRows, d))
			}
		}
	}
	last := len(x.Dims) - 1
	for e := 0; e < x.E; e++ {
		ws.outs = append(ws.outs, ws.y[last].part(e))
		if train {
			ws.douts = append(ws.douts, ws.dy[last].part(e))
		}
		ws.expW = append(ws.expW, x.W[0].View(e*x.In*x.Dims[0], x.In, x.Dims[0]))
	}
	ws.yGroup = make([]hdr, len(x.Groups))
	ws.dyGroup = make([]hdr, len(x.Groups))
	ws.dyExpert = make([]hdr, x.E)
	for g, n := range x.Groups {
		sz := x.In * x.Dims[0]
		ws.wGroup = append(ws.wGroup, x.W[0].View(x.first[g]*sz, n, x.In, x.Dims[0]))
		ws.bGroup = append(ws.bGroup, x.B[0].View(x.first[g]*x.Dims[0], n, x.Dims[0]))
		if train {
			ws.dwGroup = append(ws.dwGroup, ws.dW[0].View(x.first[g]*sz, n, x.In, x.Dims[0]))
		}
	}
	return ws
}

// Outputs are the per-expert outputs of the last Forward, [B, Out] each;
// DOutputs the matching gradient buffers. The slices and the tensors in them
// are stable for the life of the workspace (their contents follow the batch),
// so gates can keep them.
func (ws *ExpertsWS) Outputs() []*kernels.Tensor  { return ws.outs }
func (ws *ExpertsWS) DOutputs() []*kernels.Tensor { return ws.douts }

// Y is the stacked output of the last Forward, [E, B, Out]; DY its gradient.
func (ws *ExpertsWS) Y() *kernels.Tensor  { return ws.y[len(ws.y)-1].t() }
func (ws *ExpertsWS) DY() *kernels.Tensor { return ws.dy[len(ws.dy)-1].t() }

// Grads returns the gradients matching Params().
func (ws *ExpertsWS) Grads() []*kernels.Tensor {
	var gs []*kernels.Tensor
	for l := range ws.dW {
		gs = append(gs, ws.dW[l], ws.dB[l])
	}
	return gs
}

// Release frees the workspace.
func (ws *ExpertsWS) Release() {
	for _, b := range ws.y {
		b.release()
	}
	for _, b := range ws.dy {
		b.release()
	}
	for _, b := range ws.masks {
		b.release()
	}
	for _, b := range ws.z {
		b.release()
	}
	releaseAll(ws.dW...)
	releaseAll(ws.dB...)
}

func (x *Experts) resize(ws *ExpertsWS, rows int) {
	if ws.rows == rows {
		return
	}
	ws.rows = rows
	for l := range x.Dims {
		ws.y[l].resize(rows)
		if ws.dy != nil {
			ws.dy[l].resize(rows)
		}
		if ws.masks != nil {
			ws.masks[l].resize(rows)
		}
		if ws.z != nil {
			ws.z[l].resize(rows)
		}
	}
	d0 := x.Dims[0]
	for g, n := range x.Groups {
		ws.yGroup[g].set(ws.y[0].full, x.first[g]*rows*d0, n, rows, d0)
		if ws.dy != nil {
			ws.dyGroup[g].set(ws.dy[0].full, x.first[g]*rows*d0, n, rows, d0)
		}
	}
	if ws.dy != nil {
		for e := 0; e < x.E; e++ {
			ws.dyExpert[e].set(ws.dy[0].full, e*rows*d0, rows, d0)
		}
	}
}

// Forward runs every expert; xs[g] [B, In] is the input of group g. It
// returns the stacked outputs [E, B, Out] (per expert: ws.Outputs()).
func (x *Experts) Forward(ws *ExpertsWS, xs []*kernels.Tensor, mode Mode) *kernels.Tensor {
	if len(xs) != len(x.Groups) {
		panic(fmt.Sprintf("layers: experts %q: %d inputs for %d groups", x.Name, len(xs), len(x.Groups)))
	}
	rows := xs[0].Rows()
	x.resize(ws, rows)
	copy(ws.xs, xs)
	ws.dropped = mode.Train && x.Dropout > 0 && ws.masks != nil
	ws.lastFolded = false
	in := x.In
	f, fused := x.dev.(kernels.FusedGemm)
	act := x.Act
	if act.NeedsActivator() {
		act = kernels.Linear // applied after the bias, below
	}
	for l, d := range x.Dims {
		y := ws.y[l].t()
		switch {
		case fused && l == 0:
			for g, n := range x.Groups {
				f.GemmStridedBatchedBiasAct(rows, d, in, xs[g], 0, ws.wGroup[g], in*d, ws.bGroup[g], act, ws.yGroup[g].get(), n)
			}
		case fused:
			f.GemmStridedBatchedBiasAct(rows, d, in, ws.y[l-1].t(), rows*in, x.W[l], in*d, x.B[l], act, y, x.E)
		case l == 0:
			for g, n := range x.Groups {
				x.dev.GemmStridedBatched(false, false, rows, d, in, 1,
					xs[g], 0, ws.wGroup[g], in*d, 0, ws.yGroup[g].get(), rows*d, n)
			}
		default:
			x.dev.GemmStridedBatched(false, false, rows, d, in, 1,
				ws.y[l-1].t(), rows*in, x.W[l], in*d, 0, y, rows*d, x.E)
		}
		if !fused {
			x.dev.BiasAct(y, x.B[l], x.E, act)
		}
		if act != x.Act {
			var z *batchBuf
			if ws.z != nil {
				z = ws.z[l]
			}
			activate(x.dev, z, y, x.Act)
		}
		if ws.dropped {
			dropout(x.dev, y, ws.masks[l].t(), x.Dropout, mode, x.site, uint64(l))
		}
		in = d
	}
	return ws.y[len(ws.y)-1].t()
}

// actBiasGrad runs layer l's activation backward on dy and its bias
// gradient.
func (x *Experts) actBiasGrad(ws *ExpertsWS, l int, dy *kernels.Tensor) {
	act := x.Act
	if act.NeedsActivator() {
		x.dev.(kernels.Activator).ActivateBackward(dy, ws.z[l].t(), act)
		act = kernels.Linear
	}
	if f, ok := x.dev.(kernels.FusedBiasGrad); ok {
		f.ActBiasGrad(dy, ws.y[l].t(), act, ws.dB[l], x.E, false)
		return
	}
	if act != kernels.Linear {
		x.dev.ActBackward(dy, ws.y[l].t(), act)
	}
	x.dev.BiasGrad(dy, ws.dB[l], x.E, false)
}

// foldable reports whether the last layer's activation backward and bias
// gradient can be done by whoever writes ws.DY() with
// kernels.GatesBackward's fold: a ReLU or linear activation, no dropout
// in the last Forward.
func (x *Experts) foldable(ws *ExpertsWS) bool {
	return (x.Act == kernels.ReLU || x.Act == kernels.Linear) && !ws.dropped && ws.dy != nil
}

// Backward propagates ws.DY() ([E, B, Out]) to the parameters and, for every
// group g with dxs[g] != nil, into dxs[g] [B, In] (added when accumulate).
func (x *Experts) Backward(ws *ExpertsWS, dxs []*kernels.Tensor, accumulate bool) {
	x.BackwardTo(ws, nil, dxs, accumulate)
}

// BackwardTo is Backward with the input gradients' GEMMs (one per expert,
// in expert order) added to sums, for its Flush to compute with the other
// layers reading the same inputs.
func (x *Experts) BackwardTo(ws *ExpertsWS, sums *GradSums, dxs []*kernels.Tensor, accumulate bool) {
	rows := ws.rows
	for l := len(x.Dims) - 1; l >= 0; l-- {
		d := x.Dims[l]
		in := x.In
		if l > 0 {
			in = x.Dims[l-1]
		}
		dy := ws.dy[l].t()
		switch {
		case l == len(x.Dims)-1 && ws.lastFolded:
			ws.lastFolded = false // done by the gates (GatesWS.FoldExperts)
		case ws.dropped:
			x.dev.Mul(dy, dy, ws.masks[l].t())
			fallthrough
		default:
			x.actBiasGrad(ws, l, dy)
		}
		if l > 0 {
			prev := ws.y[l-1].t()
			x.dev.GemmStridedBatched(true, false, in, d, rows, 1,
				prev, rows*in, dy, rows*d, 0, ws.dW[l], in*d, x.E)
			x.dev.GemmStridedBatched(false, true, rows, in, d, 1,
				dy, rows*d, x.W[l], in*d, 0, ws.dy[l-1].t(), rows*in, x.E)
			continue
		}
		for g, n := range x.Groups {
			x.dev.GemmStridedBatched(true, false, in, d, rows, 1,
				ws.xs[g], 0, ws.dyGroup[g].get(), rows*d, 0, ws.dwGroup[g], in*d, n)
			if dxs == nil || dxs[g] == nil {
				continue
			}
			// The experts of a group share their input, so its gradient is
			// the sum over the group of dy_e W_e^T: one term per expert.
			for i := 0; i < n; i++ {
				e := x.first[g] + i
				sums.add(x.dev, dxs[g], accumulate || i > 0, ws.dyExpert[e].get(), ws.expW[e])
			}
		}
	}
}
