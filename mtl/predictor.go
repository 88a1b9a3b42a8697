package mtl

import (
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl/internal/step"
)

// Predictor is an inference workspace over a model's weights: it owns its
// activations and shares the parameters read-only. Use one Predictor per
// goroutine; several may run at once, but not while the model trains
// (TrainStep writes the weights they read).
type Predictor struct {
	m  *Model
	ws *step.Workspace
}

// NewPredictor creates a Predictor for batches of up to maxBatch rows
// (maxBatch < 1: the model's MaxBatch).
func (m *Model) NewPredictor(maxBatch int) *Predictor {
	return &Predictor{m: m, ws: m.exec.NewWorkspace(maxBatch)}
}

// Tasks lists the outputs in the order Predict writes them.
func (p *Predictor) Tasks() []Task { return p.m.Tasks() }

// Predict has the contract of Model.Predict.
func (p *Predictor) Predict(b *loader.Batch, out [][]float32) error { return p.ws.Predict(b, out) }

// Release frees the Predictor's workspace (not the model's weights).
func (p *Predictor) Release() {
	if p.ws != nil {
		p.ws.Release()
		p.ws = nil
	}
}
