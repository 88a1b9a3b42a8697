package mtl

import (
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
)

// mlpBody is the shared-bottom model: one MLP whose output every task's
// tower reads.
type mlpBody struct {
	mlp   *layers.MLP
	tasks int
}

func newMLPBody(m *Model, rng *rand.Rand) (*mlpBody, error) {
	mlp, err := layers.NewMLP(m.ldev, "mlp", m.input.OutDim, m.cfg.MLPLayers, m.act, false, m.cfg.Dropout, rng)
	if err != nil {
		return nil, err
	}
	return &mlpBody{mlp: mlp, tasks: len(m.tasks)}, nil
}

func (b *mlpBody) params() []layers.Param { return b.mlp.Params() }
func (b *mlpBody) outDim() int            { return b.mlp.Out() }
func (b *mlpBody) release()               { b.mlp.Release() }

func (b *mlpBody) newWS(maxRows int, train bool) bodyWS {
	return &mlpWS{b: b, ws: b.mlp.NewWorkspace(maxRows, train), reps: make([]*kernels.Tensor, b.tasks)}
}

type mlpWS struct {
	b    *mlpBody
	ws   *layers.MLPWS
	reps []*kernels.Tensor
}

func (w *mlpWS) forward(x *kernels.Tensor, mode layers.Mode) []*kernels.Tensor {
	y := w.b.mlp.Forward(w.ws, x, mode)
	for t := range w.reps {
		w.reps[t] = y
	}
	return w.reps
}

// Every tower adds its gradient into the bottom's output gradient.
func (w *mlpWS) repGrad(t int) (*kernels.Tensor, bool) { return w.ws.DY(), t > 0 }
func (w *mlpWS) backward(dx *kernels.Tensor)           { w.b.mlp.Backward(w.ws, dx, false) }
func (w *mlpWS) grads() []*kernels.Tensor              { return w.ws.Grads() }
func (w *mlpWS) gates() []gateView                     { return nil }
func (w *mlpWS) release()                              { w.ws.Release() }
