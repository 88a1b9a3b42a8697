package layers

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/internal/splitmix"
	"github.com/mtlrank/mtlrank/kernels"
)

// Mode carries what a forward pass needs to know about training.
type Mode struct {
	// Train enables dropout (it needs a training workspace).
	Train bool
	// Seed is the per-step dropout seed; every dropout site mixes in its own
	// identity and layer index, so the masks depend only on (seed, site,
	// layer) and a resumed run reproduces an uninterrupted one.
	Seed uint64
	// Step, when set, holds the step seed on the device (the training step
	// is being captured as a CUDA graph): dropout then derives each site's
	// seed there (kernels.StepParamOps.DropoutSP) from the seed uploaded for
	// the step, which must be Seed. The device must implement
	// kernels.StepParamOps.
	Step kernels.StepParams
}

// dropout applies dropout to x with the seed of (site, layer): from
// mode.Seed on the host, or from the device's step parameters.
func dropout(dev kernels.Device, x, mask *kernels.Tensor, rate float32, mode Mode, site, layer uint64) {
	if mode.Step != nil {
		dev.(kernels.StepParamOps).DropoutSP(x, mask, rate, mode.Step, site, layer)
		return
	}
	dev.Dropout(x, mask, rate, MixSeed(mode.Seed, site, layer))
}

// siteID derives a stable dropout-site identity from a layer name.
func siteID(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// MixSeed combines seeds with splitmix64 finalisers; it is used for the
// per-step dropout seeds.
func MixSeed(parts ...uint64) uint64 {
	var s uint64 = splitmix.Gamma
	for _, p := range parts {
		s = splitmix.Mix((s ^ p) + splitmix.Gamma)
	}
	return s
}

// MLP is a stack of Dense layers, each followed by its activation and, in
// training, by dropout (Merlin's MLPBlock). With lastLinear the last layer
// has no activation.
type MLP struct {
	Name    string
	Layers  []*Dense
	Dropout float32
	site    uint64
	dev     kernels.Device
}

// NewMLP builds Dense layers name+"/0", name+"/1", ... of widths dims over
// an input of width in.
func NewMLP(dev kernels.Device, name string, in int, dims []int, act kernels.Activation, lastLinear bool, dropout float32, rng *rand.Rand) (*MLP, error) {
	if len(dims) == 0 {
		return nil, fmt.Errorf("layers: mlp %q: no layers", name)
	}
	if dropout < 0 || dropout >= 1 {
		return nil, fmt.Errorf("layers: mlp %q: dropout must be in [0, 1), got %g", name, dropout)
	}
	m := &MLP{Name: name, Dropout: dropout, site: siteID(name), dev: dev}
	for i, d := range dims {
		a := act
		if lastLinear && i == len(dims)-1 {
			a = kernels.Linear
		}
		l, err := NewDense(dev, fmt.Sprintf("%s/%d", name, i), in, d, true, a, rng)
		if err != nil {
			m.Release()
			return nil, err
		}
		m.Layers = append(m.Layers, l)
		in = d
	}
	return m, nil
}

// In and Out are the input and output widths.
func (m *MLP) In() int  { return m.Layers[0].In }
func (m *MLP) Out() int { return m.Layers[len(m.Layers)-1].Out }

// Params lists every layer's kernel and bias, first layer first.
func (m *MLP) Params() []Param {
	var ps []Param
	for _, l := range m.Layers {
		ps = append(ps, l.Params()...)
	}
	return ps
}

// Release frees the parameters.
func (m *MLP) Release() {
	for _, l := range m.Layers {
		l.Release()
	}
}

// MLPWS is the per-caller state of an MLP.
type MLPWS struct {
	layers  []*DenseWS
	masks   []*batchBuf // dropout multipliers, training workspaces only
	dropped bool
}

// NewWorkspace allocates the workspace for batches of up to maxRows rows.
func (m *MLP) NewWorkspace(maxRows int, train bool) *MLPWS {
	ws := &MLPWS{}
	for _, l := range m.Layers {
		ws.layers = append(ws.layers, l.NewWorkspace(maxRows, train))
		if train && m.Dropout > 0 {
			ws.masks = append(ws.masks, newBatchBuf(m.dev, 1, maxRows, l.Out))
		}
	}
	return ws
}

// Y is the output of the last Forward; DY the gradient w.r.t. it.
func (ws *MLPWS) Y() *kernels.Tensor  { return ws.layers[len(ws.layers)-1].Y() }
func (ws *MLPWS) DY() *kernels.Tensor { return ws.layers[len(ws.layers)-1].DY() }

// Grads returns the gradients matching Params().
func (ws *MLPWS) Grads() []*kernels.Tensor {
	var gs []*kernels.Tensor
	for _, l := range ws.layers {
		gs = append(gs, l.Grads()...)
	}
	return gs
}

// Release frees the workspace.
func (ws *MLPWS) Release() {
	for _, l := range ws.layers {
		l.Release()
	}
	for _, b := range ws.masks {
		b.release()
	}
}

// Forward runs the stack on x [B, In] and returns [B, Out].
func (m *MLP) Forward(ws *MLPWS, x *kernels.Tensor, mode Mode) *kernels.Tensor {
	ws.dropped = mode.Train && m.Dropout > 0 && ws.masks != nil
	for i, l := range m.Layers {
		x = l.Forward(ws.layers[i], x)
		if ws.dropped {
			mask := ws.masks[i]
			mask.resize(x.Rows())
			dropout(m.dev, x, mask.t(), m.Dropout, mode, m.site, uint64(i))
		}
	}
	return x
}

// Backward propagates ws.DY() down the stack (see the package comment).
func (m *MLP) Backward(ws *MLPWS, dx *kernels.Tensor, accumulate bool) {
	m.BackwardTo(ws, nil, dx, accumulate)
}

// BackwardTo is Backward with the input gradient's GEMM added to sums.
func (m *MLP) BackwardTo(ws *MLPWS, sums *GradSums, dx *kernels.Tensor, accumulate bool) {
	for i := len(m.Layers) - 1; i >= 0; i-- {
		lw := ws.layers[i]
		if ws.dropped {
			// Dropout ran in place on the activation output, so the
			// multiplier applies before the activation's backward; the
			// activation test (y > 0) still holds on the scaled output.
			m.dev.Mul(lw.DY(), lw.DY(), ws.masks[i].t())
		}
		switch {
		case i > 0 && !ws.dropped:
			m.Layers[i].backwardInto(lw, m.Layers[i-1], ws.layers[i-1])
		case i > 0:
			m.Layers[i].Backward(lw, ws.layers[i-1].DY(), false)
		default:
			m.Layers[i].BackwardTo(lw, sums, dx, accumulate)
		}
	}
}
