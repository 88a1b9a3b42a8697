package step

import (
	"fmt"
	"slices"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// CUDA-graph capture of the training step (Config.CUDAGraph).
//
// The first batch after NewModel or SetCUDAGraph runs eagerly (it sizes the
// device's scratch buffers and the batch staging). A later batch with at
// most as many rows as the largest eager one is captured, per batch size
// (rows: a graph replays the launches of one shape), as two graphs per
// stager slot, since the input tensors of the two slots differ: the forward and backward pass with the loss, and the optimizer
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
// the launch savings: models with list features gain little). The
// training batch size need not be the model's maxBatch (which also covers
// the evaluation and prediction batches): the graphs of a slot are kept per
// batch size, the most recent maxGraphsPerSlot sizes (a short last batch of
// an epoch gets its own, without evicting the full-batch one).
type stepGraphs struct {
	sp    kernels.StepParams
	slots [2][]*slotGraphs // per stager slot, most recently used first
	// warmRows is the largest batch an eager step ran on: it sized the
	// device's scratch buffers (a capture cannot grow them), so batches up
	// to that size can be captured.
	warmRows int
	// off is set when capture failed (the step then runs eagerly from
	// then on; err says why).
	off bool
	err error
	// launched counts the steps run through graphs (tests check it).
	launched int
}

// maxGraphsPerSlot bounds the batch sizes whose graphs a slot keeps.
const maxGraphsPerSlot = 4

// slotGraphs are the captured graphs of one stager slot for one batch size
// and the views they were captured with.
type slotGraphs struct {
	rows        int
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

// newStepGraphs prepares graph capture of e's training step.
func newStepGraphs(e *Engine) (*stepGraphs, error) {
	if why := e.caps.WhyNoGraphs(); why != "" {
		return nil, fmt.Errorf("mtl: CUDAGraph needs a device that can capture the training step (the CUDA device): %s (%s)", why, e.dev.Name())
	}
	sp, err := e.caps.StepOps.NewStepParams()
	if err != nil {
		return nil, fmt.Errorf("mtl: CUDAGraph: %w", err)
	}
	return &stepGraphs{sp: sp}, nil
}

func (g *stepGraphs) release() {
	if g == nil {
		return
	}
	for i, gs := range g.slots {
		for _, s := range gs {
			s.release()
		}
		g.slots[i] = nil
	}
	if g.sp != nil {
		g.sp.Release()
		g.sp = nil
	}
}

// SetGraphs turns capture of the training step on or off. Turning it on
// fails on a device that cannot capture the step (Caps.WhyNoGraphs).
func (e *Engine) SetGraphs(on bool) error {
	if !on {
		e.graphs.release()
		e.graphs = nil
		return nil
	}
	if e.dist != nil {
		return errDistGraphs
	}
	if e.graphs == nil {
		g, err := newStepGraphs(e)
		if err != nil {
			return err
		}
		e.graphs = g
	}
	return nil
}

// GraphSteps returns how many training steps ran as captured graphs, and
// the error that turned capture off, if any (the steps then run eagerly).
func (e *Engine) GraphSteps() (int, error) {
	if e.graphs == nil {
		return 0, nil
	}
	return e.graphs.launched, e.graphs.err
}

// graphStep is TrainStep for a batch no larger than an earlier eager one.
func (e *Engine) graphStep(b *loader.Batch) (Stats, error) {
	g, ws := e.graphs, e.train
	seed := e.dropoutSeed()
	if err := ws.input0(b, true); err != nil {
		return Stats{}, err
	}
	fd := ws.feed
	sg := g.take(fd.sigSlot, b.Rows)
	if sg == nil || !slices.Equal(sg.sig, fd.sig) {
		// No graph for these views: capture one (a slot's views change
		// only when a buffer grows, or with list features).
		sg.release()
		var err error
		if sg, err = e.captureStep(); err != nil {
			// Nothing of the failed capture ran: finish this step and
			// the following ones eagerly.
			g.off, g.err = true, err
			return e.eagerAfterInput(b, seed)
		}
		sg.rows = b.Rows
		sg.sig = append([]viewSig(nil), fd.sig...)
	}
	g.put(fd.sigSlot, sg)
	e.upd.begin(e.step)
	lr, adam := e.upd.opt.scalars()
	if err := g.sp.Upload(lr, adam, seed); err != nil {
		return Stats{}, BatchWrap(b, err)
	}
	if err := sg.fwd.Launch(); err != nil {
		return Stats{}, BatchWrap(b, err)
	}
	err := ws.readLoss(b)
	if err == nil {
		err = e.spec.Check(ws.stats, b, e.step)
	}
	if err != nil {
		return Stats{}, err
	}
	if err := sg.update.Launch(); err != nil {
		return Stats{}, BatchWrap(b, err)
	}
	g.launched++
	e.step++
	return ws.stats, nil
}

// take removes and returns the graphs of slot for batches of rows (nil if
// there are none).
func (g *stepGraphs) take(slot, rows int) *slotGraphs {
	gs := g.slots[slot]
	for i, s := range gs {
		if s.rows == rows {
			g.slots[slot] = append(gs[:i], gs[i+1:]...)
			return s
		}
	}
	return nil
}

// put makes sg the most recently used graphs of slot, releasing the least
// recently used beyond maxGraphsPerSlot.
func (g *stepGraphs) put(slot int, sg *slotGraphs) {
	gs := append([]*slotGraphs{sg}, g.slots[slot]...)
	for len(gs) > maxGraphsPerSlot {
		gs[len(gs)-1].release()
		gs = gs[:len(gs)-1]
	}
	g.slots[slot] = gs
}

// captureStep captures the step on the current input (ws.input0 done) as
// a forward/backward graph and an update graph; nothing runs.
func (e *Engine) captureStep() (*slotGraphs, error) {
	capt := e.caps.Graphs
	ws, sg := e.train, &slotGraphs{}
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
	var err, runErr error
	sg.fwd, err = capture("forward and backward", func() {
		runErr = ws.run(passBackward, layers.Mode{Train: true, Seed: e.dropoutSeed(), Step: e.graphs.sp})
		ws.regLoss()
		ws.backward()
	})
	if err == nil && runErr != nil {
		// a device that captures graphs runs one shard, gathered by
		// input0 (never the case; kept as an error, not a panic)
		sg.fwd.Release()
		err = runErr
	}
	if err != nil {
		return nil, err
	}
	sg.update, err = capture("update", func() {
		e.upd.sp = e.graphs.sp
		e.upd.apply(e.step, ws)
		e.upd.sp = nil
	})
	if err != nil {
		sg.release()
		return nil, err
	}
	return sg, nil
}

// eagerAfterInput finishes an eager step whose input0 already ran.
func (e *Engine) eagerAfterInput(b *loader.Batch, seed uint64) (Stats, error) {
	ws := e.train
	if err := ws.run(passBackward, layers.Mode{Train: true, Seed: seed}); err != nil {
		return Stats{}, BatchWrap(b, err)
	}
	ws.regLoss()
	ws.backward()
	if err := ws.readLoss(b); err != nil {
		return Stats{}, err
	}
	return e.finishStep(b)
}
