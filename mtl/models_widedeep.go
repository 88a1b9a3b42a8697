package mtl

import (
	"math"
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/schema"
)

// wideDeepBody is DeepFM (Guo et al., IJCAI 2017) and Wide&Deep (Cheng et
// al., DLRS 2016) as Merlin's DeepFMModel and WideAndDeepModel build them
// in its quick-start ranking script. Both sum logits into one [B, 1]
// output that every task's tower reads (Merlin's ParallelBlock with
// element-wise-sum before the prediction tasks):
//
//	deepfm:      wide(x) + fm(e) + Dense_1(MLP(e ++ c))
//	wide_n_deep: wide(x) + Dense_1(MLP(e))
//
// e are the categorical embeddings, c the continuous features, wide(x) the
// sum of the weights of the derived one-/multi-hot and crossed ids
// (wide_inputs.go) plus a bias, fm(e) the FM second-order term over the
// categorical embeddings (layers.FM). Wide&Deep's deep part reads only the
// categorical embeddings: Merlin's script builds its deep input block on
// the categorical schema. Wide&Deep drops out the deep and the wide logit
// (deep_dropout and wide_dropout are the script's --dropout); DeepFM's
// logits have no dropout, and its deep logit no L2 (Merlin's defaults).
type wideDeepBody struct {
	prefix  string
	deepIn  *layers.ColGather
	deep    *layers.MLP
	logit   *layers.MLP // Dense(1), linear
	fmIn    *layers.ColGather
	fm      *layers.FM // nil for wide_n_deep
	wideIn  *layers.ColGather
	wide    *layers.WideLogit
	tasks   int
	logitL2 bool
}

func newWideDeepBody(m *Model, rng *rand.Rand) (body, error) {
	cfg := &m.cfg
	b := &wideDeepBody{prefix: cfg.Model, tasks: len(m.tasks), logitL2: cfg.Model == "wide_n_deep"}
	var deepCols, fmCols, wideCols []layers.ColRange
	for _, f := range m.input.Features {
		r := layers.ColRange{Col: f.Col, Width: f.Dim}
		switch {
		case m.wide.has(f.Name):
			wideCols = append(wideCols, r)
		case f.Continuous:
			if cfg.Model == "deepfm" {
				deepCols = append(deepCols, r)
			}
		default:
			deepCols = append(deepCols, r)
			fmCols = append(fmCols, r)
		}
	}
	dev, in := m.ldev, m.input.OutDim
	logitDropout := float32(0)
	if cfg.Model == "wide_n_deep" {
		logitDropout = cfg.Dropout
	}
	var err error
	defer func() {
		if err != nil {
			b.release()
		}
	}()
	if b.deepIn, err = layers.NewColGather(dev, in, deepCols); err != nil {
		return nil, err
	}
	if b.deep, err = layers.NewMLP(dev, b.prefix+"/deep", b.deepIn.Out, cfg.MLPLayers, m.act, false, cfg.Dropout, rng); err != nil {
		return nil, err
	}
	if b.logit, err = layers.NewMLP(dev, b.prefix+"/deep_logit", b.deep.Out(), []int{1}, kernels.Linear, true, logitDropout, rng); err != nil {
		return nil, err
	}
	if b.wideIn, err = layers.NewColGather(dev, in, wideCols); err != nil {
		return nil, err
	}
	if b.wide, err = layers.NewWideLogit(dev, b.prefix+"/wide", b.wideIn.Out, logitDropout); err != nil {
		return nil, err
	}
	if cfg.Model == "deepfm" {
		if b.fmIn, err = layers.NewColGather(dev, in, fmCols); err != nil {
			return nil, err
		}
		if b.fm, err = layers.NewFM(dev, len(fmCols), cfg.EmbeddingsDim); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *wideDeepBody) params() []layers.Param {
	ps := b.deep.Params()
	for _, p := range b.logit.Params() {
		p.L2 = p.L2 && b.logitL2
		ps = append(ps, p)
	}
	return append(ps, b.wide.Params()...)
}

func (b *wideDeepBody) outDim() int { return 1 }

func (b *wideDeepBody) release() {
	if b.deep != nil {
		b.deep.Release()
	}
	if b.logit != nil {
		b.logit.Release()
	}
	if b.wide != nil {
		b.wide.Release()
	}
	if b.fm != nil {
		b.fm.Release()
	}
}

type wideDeepWS struct {
	b              *wideDeepBody
	deepIn, wideIn *layers.ColGatherWS
	fmIn           *layers.ColGatherWS
	deep, logit    *layers.MLPWS
	wide           *layers.WideLogitWS
	fm             *layers.FMWS
	reps           []*kernels.Tensor
	dev            kernels.Device
}

func (b *wideDeepBody) newWS(maxRows int, train bool) bodyWS {
	w := &wideDeepWS{b: b, dev: b.wide.B.Dev,
		deepIn: b.deepIn.NewWorkspace(maxRows, train), deep: b.deep.NewWorkspace(maxRows, train),
		logit: b.logit.NewWorkspace(maxRows, train), wideIn: b.wideIn.NewWorkspace(maxRows, train),
		wide: b.wide.NewWorkspace(maxRows, train), reps: make([]*kernels.Tensor, b.tasks)}
	if b.fm != nil {
		w.fmIn, w.fm = b.fmIn.NewWorkspace(maxRows, train), b.fm.NewWorkspace(maxRows, train)
	}
	return w
}

// forward sums the logits into the deep logit's output, which is the
// representation: the linear Dense(1) and its dropout backward never read
// their output, so it may hold the sum.
func (w *wideDeepWS) forward(x *kernels.Tensor, mode layers.Mode) []*kernels.Tensor {
	b := w.b
	h := b.deep.Forward(w.deep, b.deepIn.Forward(w.deepIn, x), mode)
	y := b.logit.Forward(w.logit, h, mode)
	w.dev.Axpy(1, b.wide.Forward(w.wide, b.wideIn.Forward(w.wideIn, x), mode), y)
	if b.fm != nil {
		w.dev.Axpy(1, b.fm.Forward(w.fm, b.fmIn.Forward(w.fmIn, x)), y)
	}
	for t := range w.reps {
		w.reps[t] = y
	}
	return w.reps
}

// Every tower adds its gradient into the summed logit's gradient.
func (w *wideDeepWS) repGrad(t int) (*kernels.Tensor, bool) { return w.logit.DY(), t > 0 }

func (w *wideDeepWS) backward(dx *kernels.Tensor) {
	b := w.b
	dy := w.logit.DY()
	w.dev.Copy(w.wide.DY(), dy)
	if b.fm != nil {
		w.dev.Copy(w.fm.DY(), dy)
	}
	b.logit.Backward(w.logit, w.deep.DY(), false)
	b.deep.Backward(w.deep, w.deepIn.DY(), false)
	b.deepIn.Backward(w.deepIn, dx, false)
	b.wide.Backward(w.wide, w.wideIn.DY(), false)
	b.wideIn.Backward(w.wideIn, dx, true)
	if b.fm != nil {
		b.fm.Backward(w.fm, w.fmIn.DY(), false)
		b.fmIn.Backward(w.fmIn, dx, true)
	}
}

func (w *wideDeepWS) grads() []*kernels.Tensor {
	gs := append(w.deep.Grads(), w.logit.Grads()...)
	return append(gs, w.wide.Grads()...)
}

func (w *wideDeepWS) gates() []gateView { return nil }

func (w *wideDeepWS) release() {
	w.deepIn.Release()
	w.deep.Release()
	w.logit.Release()
	w.wideIn.Release()
	w.wide.Release()
	if w.fm != nil {
		w.fmIn.Release()
		w.fm.Release()
	}
}

// validateWideDeep checks the settings of deepfm and wide_n_deep.
func (c *Config) validateWideDeep(s *schema.Schema) error {
	if err := checkLayers("MLPLayers", c.MLPLayers, false); err != nil {
		return err
	}
	if c.MultihotMaxSeqLength < 1 {
		return configErr("MultihotMaxSeqLength", "must be >= 1, got %d", c.MultihotMaxSeqLength)
	}
	sources := wideSources(inputFeatures(s, c))
	if len(sources) == 0 {
		return configErr("Model", "%s needs a categorical input other than the user id (tag user_id) for its wide part", c.Model)
	}
	if c.Model == "deepfm" {
		if c.EmbeddingsDim < 1 {
			return configErr("EmbeddingsDim", "must be >= 1, got %d", c.EmbeddingsDim)
		}
		if len(c.EmbeddingDims) > 0 {
			return configErr("EmbeddingDims", "deepfm gives every embedding EmbeddingsDim (embeddings_dim) columns: the FM term needs one width")
		}
		return nil
	}
	if c.WNDHashedCrossNumBins < 1 || c.WNDHashedCrossNumBins > math.MaxInt32 {
		return configErr("WNDHashedCrossNumBins", "must be in [1, %d], got %d", math.MaxInt32, c.WNDHashedCrossNumBins)
	}
	if !(c.WNDWideL2Reg >= 0) || math.IsInf(c.WNDWideL2Reg, 0) {
		return configErr("WNDWideL2Reg", "must be >= 0, got %g", c.WNDWideL2Reg)
	}
	_, err := parseIgnoreCombinations(c.WNDIgnoreCombinations, sources)
	return err
}

// wideDeepInputConfig returns cfg with the embedding widths the input
// block of deepfm and wide_n_deep gets (EmbeddingDims), and their derived
// wide inputs; other models get cfg as it is (EstimateMemory).
func wideDeepInputConfig(cfg *Config, feats []*schema.Feature) (Config, []*schema.Feature, error) {
	opt := layers.InputOptions{Dims: cloneMap(cfg.EmbeddingDims)}
	w, err := wideDeepInputs(cfg, feats, &opt)
	if err != nil || w == nil {
		return *cfg, nil, err
	}
	c := cfg.Clone()
	c.EmbeddingDims = opt.Dims
	return c, w.feats, nil
}

// wideDeep counts the body of deepfm and wide_n_deep over the input
// features feats (without the nWide derived ones; cfg carries the
// embedding widths) and returns its output width, 1.
func (c *counter) wideDeep(cfg *Config, feats []*schema.Feature, nWide int, act func(float64) float64) float64 {
	var deepIn, fmIn, fields float64
	for _, f := range feats {
		if !f.HasTag(schema.TagCategorical) {
			if cfg.Model == "deepfm" {
				deepIn++
			}
			continue
		}
		d, ok := cfg.EmbeddingDims[f.Name]
		if !ok {
			d, ok = cfg.EmbeddingDims[f.DomainName()]
		}
		if !ok {
			d = layers.InferDim(f.Cardinality(), cfg.EmbeddingDimMultiplier)
		}
		deepIn += float64(d)
		fmIn += float64(d)
		fields++
	}
	c.row += 2 * deepIn // gathered deep input and its gradient
	h := c.mlp(deepIn, cfg.MLPLayers, act)
	c.dense += h + 1 // deep logit
	c.row += act(1)
	w := float64(nWide)
	c.dense++            // wide bias
	c.row += 2*w + 2 + 1 // gathered wide weights, logit, dropout multipliers
	if cfg.Model == "deepfm" {
		k := float64(cfg.EmbeddingsDim)
		// (its constants, about fmIn*k floats, are not parameters)
		c.row += 4*fmIn + 2*k + 2 // gathered fields and gradient, squares, sums, output
	}
	return 1
}
