package mtl

import "github.com/mtlrank/mtlrank/loader"

// Predictor is an inference workspace over a model's weights: it owns its
// activations and shares the parameters read-only. Use one Predictor per
// goroutine; several may run at once, but not while the model trains
// (TrainStep writes the weights they read).
type Predictor struct {
	m  *Model
	ws *workspace
}

// NewPredictor creates a Predictor for batches of up to maxBatch rows
// (maxBatch < 1: the model's MaxBatch).
func (m *Model) NewPredictor(maxBatch int) *Predictor {
	if maxBatch < 1 {
		maxBatch = m.maxBatch
	}
	return &Predictor{m: m, ws: m.newWorkspace(maxBatch, false)}
}

// Tasks lists the outputs in the order Predict writes them.
func (p *Predictor) Tasks() []Task { return p.m.Tasks() }

// Predict has the contract of Model.Predict.
func (p *Predictor) Predict(b *loader.Batch, out [][]float32) error { return p.ws.predict(b, out) }

// Release frees the Predictor's workspace (not the model's weights).
func (p *Predictor) Release() {
	if p.ws != nil {
		p.ws.release()
		p.ws = nil
	}
}
