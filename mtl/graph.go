package mtl

import (
	"fmt"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// CUDA-graph capture of the training step (Config.CUDAGraph).
//
// The first full batch after NewModel or SetCUDAGraph runs eagerly (it
// sizes the device's scratch buffers and the batch staging). A later full batch (maxBatch rows) is captured as
// two graphs per stager slot, since the input tensors of the two slots
// differ: the forward and backward pass with the loss, and the optimizer
// update. They are two because the loss is read (and checked for NaN)
// between them: a step with a non-finite loss applies no update, as in
// the eager path. Before each launch the batch is uploaded and its input
// block run as usual, and the step's scalars (learning rate, Adam step
// size, dropout seed) are uploaded into a kernels.StepParams block that
// the captured ops read on the device, so a replay computes exactly what
// an eager step would (bit for bit: the same kernels, the same order).
//
// A captured step is bound to the device views of its slot's columns: a
// batch whose views differ (list features with another total length, a
// buffer that grew) is captured anew for its slot (correct, but without
// the launch savings: models with list features gain little). A batch
// with fewer rows runs eagerly.
type stepGraphs struct {
	sp    kernels.StepParams
	slots [2]*slotGraphs
	// warm is set by the first eager step on a full batch, which sizes
	// the device's scratch buffers (a capture cannot grow them).
	warm bool
	// off is set when capture failed (the step then runs eagerly from
	// then on; err says why).
	off bool
	err error
	// launched counts the steps run through graphs (tests check it).
	launched int
}

// slotGraphs are the captured graphs of one stager slot and the views
// they were captured with.
type slotGraphs struct {
	sig         []viewSig
	fwd, update kernels.Graph
}

func (s *slotGraphs) release() {
	if s == nil {
		return
	}
	if s.fwd != nil {
		s.fwd.Release()
	}
	if s.update != nil {
		s.update.Release()
	}
}

// graphsSupported reports why dev cannot capture the training step ("" if
// it can).
func graphsSupported(m *Model) string {
	if _, ok := m.dev.(kernels.GraphCapturer); !ok {
		return "the device cannot capture graphs"
	}
	switch {
	case m.sharder != nil:
		return "the device shards batches"
	case m.ldev != m.dev:
		return "the layers run on another device"
	}
	if _, ok := m.dev.(kernels.StepParamOps); !ok {
		return "the device has no step-parameter ops"
	}
	if _, ok := m.dev.(kernels.FusedEmbeddingUpdater); !ok {
		return "the device has no fused embedding update"
	}
	if _, ok := m.dev.(kernels.AsyncUploader); !ok {
		return "the device has no asynchronous batch uploads"
	}
	return ""
}

// newStepGraphs prepares graph capture for m (Config.CUDAGraph).
func newStepGraphs(m *Model) (*stepGraphs, error) {
	if why := graphsSupported(m); why != "" {
		return nil, fmt.Errorf("mtl: CUDAGraph needs a device that can capture the training step (the CUDA device): %s (%s)", why, m.dev.Name())
	}
	sp, err := m.dev.(kernels.StepParamOps).NewStepParams()
	if err != nil {
		return nil, fmt.Errorf("mtl: CUDAGraph: %w", err)
	}
	return &stepGraphs{sp: sp}, nil
}

func (g *stepGraphs) release() {
	if g == nil {
		return
	}
	for i, s := range g.slots {
		s.release()
		g.slots[i] = nil
	}
	if g.sp != nil {
		g.sp.Release()
		g.sp = nil
	}
}

// SetCUDAGraph turns capture of the training step on or off
// (Config.CUDAGraph; a loaded checkpoint starts with it off). Turning it
// on fails on a device that cannot capture the step.
func (m *Model) SetCUDAGraph(on bool) error {
	if !on {
		m.graphs.release()
		m.graphs, m.cfg.CUDAGraph = nil, false
		return nil
	}
	if m.graphs == nil {
		g, err := newStepGraphs(m)
		if err != nil {
			return err
		}
		m.graphs = g
	}
	m.cfg.CUDAGraph = true
	return nil
}

// GraphSteps returns how many training steps ran as captured CUDA graphs
// (0 without Config.CUDAGraph), and the error that turned capture off, if
// any (the steps then run eagerly).
func (m *Model) GraphSteps() (int, error) {
	if m.graphs == nil {
		return 0, nil
	}
	return m.graphs.launched, m.graphs.err
}

func sameSig(a, b []viewSig) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// graphStep is TrainStep for a full batch after an eager one.
func (m *Model) graphStep(b *loader.Batch) (StepStats, error) {
	g, ws := m.graphs, m.ws
	seed := m.dropoutSeed()
	if err := ws.input0(b, true); err != nil {
		return StepStats{}, err
	}
	fd := ws.feed
	sg := g.slots[fd.sigSlot]
	if sg == nil || !sameSig(sg.sig, fd.sig) {
		// No graph for these views: capture one (a slot's views change
		// only when a buffer grows, or with list features).
		sg.release()
		g.slots[fd.sigSlot] = nil
		var err error
		if sg, err = m.captureStep(); err != nil {
			// Nothing of the failed capture ran: finish this step and
			// the following ones eagerly.
			g.off, g.err = true, err
			return m.eagerAfterInput(b, seed)
		}
		sg.sig = append([]viewSig(nil), fd.sig...)
		g.slots[fd.sigSlot] = sg
	}
	m.opt.setParams(m.step)
	if err := g.sp.Upload(m.opt.ada.LR, m.opt.adam, seed); err != nil {
		return StepStats{}, batchWrap(b, err)
	}
	if err := sg.fwd.Launch(); err != nil {
		return StepStats{}, batchWrap(b, err)
	}
	err := ws.readLoss(b)
	if err == nil {
		err = m.checkFinite(&ws.stats, b)
	}
	if err != nil {
		return StepStats{}, err
	}
	if err := sg.update.Launch(); err != nil {
		return StepStats{}, batchWrap(b, err)
	}
	g.launched++
	m.step++
	return ws.stats, nil
}

// captureStep captures the step on the current input (ws.input0 done) as
// a forward/backward graph and an update graph; nothing runs.
func (m *Model) captureStep() (*slotGraphs, error) {
	capt := m.dev.(kernels.GraphCapturer)
	ws, sg := m.ws, &slotGraphs{}
	capture := func(what string, queue func()) (kernels.Graph, error) {
		if err := capt.BeginCapture(); err != nil {
			return nil, fmt.Errorf("mtl: capturing the training step (%s): %w", what, err)
		}
		queue()
		gr, err := capt.EndCapture()
		if err != nil {
			return nil, fmt.Errorf("mtl: capturing the training step (%s): %w", what, err)
		}
		return gr, nil
	}
	var err error
	sg.fwd, err = capture("forward and backward", func() {
		ws.run(passBackward, layers.Mode{Train: true, Seed: m.dropoutSeed(), Step: m.graphs.sp})
		regLoss(ws, ws.reg)
		ws.backward()
	})
	if err != nil {
		return nil, err
	}
	sg.update, err = capture("update", func() {
		m.opt.sp = m.graphs.sp
		m.opt.apply(m.step, ws)
		m.opt.sp = nil
	})
	if err != nil {
		sg.release()
		return nil, err
	}
	return sg, nil
}

// eagerAfterInput finishes an eager step whose input0 already ran.
func (m *Model) eagerAfterInput(b *loader.Batch, seed uint64) (StepStats, error) {
	ws := m.ws
	ws.run(passBackward, layers.Mode{Train: true, Seed: seed})
	regLoss(ws, ws.reg)
	ws.backward()
	err := ws.readLoss(b)
	if err == nil {
		err = m.checkFinite(&ws.stats, b)
	}
	if err != nil {
		return StepStats{}, err
	}
	m.opt.apply(m.step, ws)
	m.step++
	return ws.stats, nil
}
