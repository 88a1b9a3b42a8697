package layers

import (
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
)

// Tower is a task's optional MLP followed by its output head, a linear
// Dense(1) producing one logit (binary) or value (regression) per row.
type Tower struct {
	Name string
	MLP  *MLP // nil without tower layers
	Head *Dense
}

// NewTower creates name+"/mlp/<i>" layers of widths dims (may be empty) and
// the head name+"/head".
func NewTower(dev kernels.Device, name string, in int, dims []int, act kernels.Activation, dropout float32, rng *rand.Rand) (*Tower, error) {
	t := &Tower{Name: name}
	if len(dims) > 0 {
		m, err := NewMLP(dev, name+"/mlp", in, dims, act, false, dropout, rng)
		if err != nil {
			return nil, err
		}
		t.MLP = m
		in = m.Out()
	}
	h, err := NewDense(dev, name+"/head", in, 1, true, kernels.Linear, rng)
	if err != nil {
		t.Release()
		return nil, err
	}
	t.Head = h
	return t, nil
}

// Params lists the tower MLP's parameters, then the head's.
func (t *Tower) Params() []Param {
	var ps []Param
	if t.MLP != nil {
		ps = t.MLP.Params()
	}
	return append(ps, t.Head.Params()...)
}

// Release frees the parameters.
func (t *Tower) Release() {
	if t.MLP != nil {
		t.MLP.Release()
	}
	if t.Head != nil {
		t.Head.Release()
	}
}

// TowerWS is the per-caller state of a Tower.
type TowerWS struct {
	mlp  *MLPWS
	head *DenseWS
}

// NewWorkspace allocates the workspace for batches of up to maxRows rows.
func (t *Tower) NewWorkspace(maxRows int, train bool) *TowerWS {
	ws := &TowerWS{head: t.Head.NewWorkspace(maxRows, train)}
	if t.MLP != nil {
		ws.mlp = t.MLP.NewWorkspace(maxRows, train)
	}
	return ws
}

// Y is the head output of the last Forward, [B, 1]; DY its gradient.
func (ws *TowerWS) Y() *kernels.Tensor  { return ws.head.Y() }
func (ws *TowerWS) DY() *kernels.Tensor { return ws.head.DY() }

// Grads returns the gradients matching Params().
func (ws *TowerWS) Grads() []*kernels.Tensor {
	var gs []*kernels.Tensor
	if ws.mlp != nil {
		gs = ws.mlp.Grads()
	}
	return append(gs, ws.head.Grads()...)
}

// Release frees the workspace.
func (ws *TowerWS) Release() {
	if ws.mlp != nil {
		ws.mlp.Release()
	}
	ws.head.Release()
}

// Forward maps x [B, In] to the head output [B, 1].
func (t *Tower) Forward(ws *TowerWS, x *kernels.Tensor, mode Mode) *kernels.Tensor {
	if t.MLP != nil {
		x = t.MLP.Forward(ws.mlp, x, mode)
	}
	return t.Head.Forward(ws.head, x)
}

// Backward propagates ws.DY() to the parameters and into dx.
func (t *Tower) Backward(ws *TowerWS, dx *kernels.Tensor, accumulate bool) {
	t.BackwardTo(ws, nil, dx, accumulate)
}

// BackwardTo is Backward with the input gradient's GEMM added to sums (the
// towers over one representation share its gradient).
func (t *Tower) BackwardTo(ws *TowerWS, sums *GradSums, dx *kernels.Tensor, accumulate bool) {
	if t.MLP == nil {
		t.Head.BackwardTo(ws.head, sums, dx, accumulate)
		return
	}
	if ws.mlp.dropped {
		t.Head.Backward(ws.head, ws.mlp.DY(), false)
	} else {
		last := len(t.MLP.Layers) - 1
		t.Head.backwardInto(ws.head, t.MLP.Layers[last], ws.mlp.layers[last])
	}
	t.MLP.BackwardTo(ws.mlp, sums, dx, accumulate)
}
