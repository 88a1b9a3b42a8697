package mtl

import (
	"fmt"
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/schema"
)

// dlrmBody is DLRM (Naumov et al., 2019) as Merlin's DLRMModel builds it
// in the quick-start script: every categorical feature has an embedding of
// EmbeddingsDim; a bottom MLP of one layer, [EmbeddingsDim], activated,
// maps the continuous features to one more vector of that width; the
// pairwise dot products of all these vectors (i < j, no self interaction)
// are concatenated after the bottom MLP's output and fed to the top MLP
// (MLPLayers), whose output every task's tower reads. Without continuous
// features there is no bottom MLP and the top MLP reads the interactions
// alone, as in Merlin.
type dlrmBody struct {
	dim    int
	embCol []int  // input-block column of each categorical feature, in input order
	cont   []span // runs of continuous columns in the input block
	nCont  int
	bottom *layers.MLP // nil without continuous features
	inter  *layers.DotInteraction
	top    *layers.MLP
	tasks  int
	dev    kernels.Device
}

// span is a run of columns [col, col+width) of the input block, at off in
// the gathered continuous matrix.
type span struct{ col, width, off int }

// dlrmInputs splits the input block's features into the categorical
// columns and the runs of continuous columns. It refuses what DLRM cannot
// pair: no categorical feature (Merlin: "DLRM requires categorical
// features"), or fewer than two vectors to interact.
func dlrmInputs(feats []layers.InputFeature) (emb []int, cont []span, nCont int, err error) {
	for _, f := range feats {
		if !f.Continuous {
			emb = append(emb, f.Col)
			continue
		}
		if n := len(cont); n > 0 && cont[n-1].col+cont[n-1].width == f.Col {
			cont[n-1].width++
		} else {
			cont = append(cont, span{col: f.Col, width: 1, off: nCont})
		}
		nCont++
	}
	return emb, cont, nCont, checkDLRMInputs(len(emb), nCont)
}

func checkDLRMInputs(nCat, nCont int) error {
	vectors := nCat
	if nCont > 0 {
		vectors++
	}
	switch {
	case nCat == 0:
		return configErr("Model", "dlrm needs categorical input features (it pairs their embeddings), and the schema has none")
	case vectors < 2:
		return configErr("Model", "dlrm pairs the embeddings of the categorical features and the bottom MLP's output of the continuous ones; "+
			"the inputs give only one vector (1 categorical feature, no continuous one), so there is nothing to interact")
	}
	return nil
}

// checkDLRMSchema is Config.Validate's check of the schema for dlrm.
func checkDLRMSchema(s *schema.Schema, c *Config) error {
	nCat, nCont := 0, 0
	for _, f := range inputFeatures(s, c) {
		if f.HasTag(schema.TagCategorical) {
			nCat++
		} else {
			nCont++
		}
	}
	return checkDLRMInputs(nCat, nCont)
}

// inputEmbeddingDims is the per-feature embedding width the input block is
// built with: for dlrm every categorical feature gets EmbeddingsDim (its
// dot products pair vectors of one width, and Merlin's script sets
// dim=embeddings_dim for all); the other models take EmbeddingDims as
// given (deepfm's EmbeddingsDim widths, and the wide inputs' width 1, are
// added by wideDeepInputs).
func (c *Config) inputEmbeddingDims(feats []*schema.Feature) map[string]int {
	if c.Model != "dlrm" {
		return c.EmbeddingDims
	}
	dims := map[string]int{}
	for _, f := range feats {
		if f.HasTag(schema.TagCategorical) {
			dims[f.Name] = c.EmbeddingsDim
		}
	}
	return dims
}

func newDLRMBody(m *Model, rng *rand.Rand) (*dlrmBody, error) {
	cfg := &m.cfg
	emb, cont, nCont, err := dlrmInputs(m.input.Features)
	if err != nil {
		return nil, err
	}
	E := cfg.EmbeddingsDim
	for _, f := range m.input.Features {
		if !f.Continuous && f.Dim != E {
			return nil, fmt.Errorf("dlrm: feature %q has an embedding of width %d, not embeddings_dim %d", f.Name, f.Dim, E)
		}
	}
	b := &dlrmBody{dim: E, embCol: emb, cont: cont, nCont: nCont, tasks: len(m.tasks), dev: m.ldev}
	vectors := len(emb)
	topIn := 0
	if nCont > 0 {
		b.bottom, err = layers.NewMLP(m.ldev, "dlrm/bottom", nCont, []int{E}, m.act, false, cfg.Dropout, rng)
		if err != nil {
			return nil, err
		}
		vectors++
		topIn = E
	}
	if b.inter, err = layers.NewDotInteraction(m.ldev, vectors, E); err != nil {
		b.release()
		return nil, err
	}
	topIn += b.inter.Out()
	if b.top, err = layers.NewMLP(m.ldev, "dlrm/top", topIn, cfg.MLPLayers, m.act, false, cfg.Dropout, rng); err != nil {
		b.release()
		return nil, err
	}
	return b, nil
}

func (b *dlrmBody) params() []layers.Param {
	var ps []layers.Param
	if b.bottom != nil {
		ps = b.bottom.Params()
	}
	return append(ps, b.top.Params()...)
}

func (b *dlrmBody) outDim() int { return b.top.Out() }

func (b *dlrmBody) release() {
	if b.bottom != nil {
		b.bottom.Release()
	}
	if b.top != nil {
		b.top.Release()
	}
}

// vectors is the number of interacted vectors, F.
func (b *dlrmBody) vectors() int { return b.inter.F }

// interCol is the first column of the interactions in the top MLP's input.
func (b *dlrmBody) interCol() int {
	if b.bottom != nil {
		return b.dim
	}
	return 0
}

type dlrmWS struct {
	b      *dlrmBody
	bottom *layers.MLPWS // nil without continuous features
	top    *layers.MLPWS
	inter  *layers.DotInteractionWS
	bufs   []*rowBuf
	// cont [B, nCont]: the continuous columns; z [B, F*E]: the stacked
	// vectors; topIn [B, E + F(F-1)/2]: the bottom output and the pairs.
	// Their gradients (training): dCont, dz, dTop.
	cont, z, topIn, dCont, dz, dTop *rowBuf
	reps                            []*kernels.Tensor
}

func (b *dlrmBody) newWS(maxRows int, train bool) bodyWS {
	w := &dlrmWS{b: b, top: b.top.NewWorkspace(maxRows, train), inter: b.inter.NewWorkspace(maxRows),
		reps: make([]*kernels.Tensor, b.tasks)}
	buf := func(cols int) *rowBuf {
		r := newRowBuf(b.dev, maxRows, cols)
		w.bufs = append(w.bufs, r)
		return r
	}
	F := b.vectors()
	w.z, w.topIn = buf(F*b.dim), buf(b.top.In())
	if train {
		w.dz, w.dTop = buf(F*b.dim), buf(b.top.In())
	}
	if b.bottom != nil {
		w.bottom = b.bottom.NewWorkspace(maxRows, train)
		w.cont = buf(b.nCont)
		if train {
			w.dCont = buf(b.nCont)
		}
	}
	return w
}

func (w *dlrmWS) forward(x *kernels.Tensor, mode layers.Mode) []*kernels.Tensor {
	b, dev := w.b, w.b.dev
	rows, E := x.Rows(), b.dim
	for _, r := range w.bufs {
		r.resize(rows)
	}
	z, topIn := w.z.t(), w.topIn.t()
	for k, col := range b.embCol {
		dev.CopyCols(z, k*E, x, col, E, false)
	}
	if b.bottom != nil {
		cont := w.cont.t()
		for _, s := range b.cont {
			dev.CopyCols(cont, s.off, x, s.col, s.width, false)
		}
		h := b.bottom.Forward(w.bottom, cont, mode)
		dev.CopyCols(z, len(b.embCol)*E, h, 0, E, false)
		dev.CopyCols(topIn, 0, h, 0, E, false)
	}
	b.inter.Forward(w.inter, z, topIn, b.interCol())
	y := b.top.Forward(w.top, topIn, mode)
	for t := range w.reps {
		w.reps[t] = y
	}
	return w.reps
}

// Every tower adds its gradient into the top MLP's output gradient.
func (w *dlrmWS) repGrad(t int) (*kernels.Tensor, bool) { return w.top.DY(), t > 0 }

func (w *dlrmWS) backward(dx *kernels.Tensor) {
	b, dev := w.b, w.b.dev
	E := b.dim
	dTop, dz := w.dTop.t(), w.dz.t()
	b.top.Backward(w.top, dTop, false)
	b.inter.Backward(w.inter, dTop, b.interCol(), dz, false)
	for k, col := range b.embCol {
		dev.CopyCols(dx, col, dz, k*E, E, false)
	}
	if b.bottom != nil {
		dh := w.bottom.DY()
		dev.CopyCols(dh, 0, dTop, 0, E, false)
		dev.CopyCols(dh, 0, dz, len(b.embCol)*E, E, true)
		dCont := w.dCont.t()
		b.bottom.Backward(w.bottom, dCont, false)
		for _, s := range b.cont {
			dev.CopyCols(dx, s.col, dCont, s.off, s.width, false)
		}
	}
}

func (w *dlrmWS) grads() []*kernels.Tensor {
	var gs []*kernels.Tensor
	if w.bottom != nil {
		gs = w.bottom.Grads()
	}
	return append(gs, w.top.Grads()...)
}

func (w *dlrmWS) gates() []gateView { return nil }

func (w *dlrmWS) release() {
	if w.bottom != nil {
		w.bottom.Release()
	}
	w.top.Release()
	w.inter.Release()
	for _, r := range w.bufs {
		r.release()
	}
}

// rowBuf is a per-row workspace tensor for up to maxRows rows of cols
// columns, with a view of the current batch's rows that resize re-points
// without allocating.
type rowBuf struct {
	full *kernels.Tensor
	cols int
	h    layers.Header
}

func newRowBuf(dev kernels.Device, maxRows, cols int) *rowBuf {
	r := &rowBuf{full: dev.Alloc(kernels.Float32, maxRows, cols), cols: cols}
	r.resize(maxRows)
	return r
}

func (r *rowBuf) resize(rows int)    { r.h.View(r.full, 0, rows, r.cols) }
func (r *rowBuf) t() *kernels.Tensor { return r.h.Tensor() }
func (r *rowBuf) release()           { r.full.Release() }

// validateDCNDLRM is Config.Validate's part for dcn and dlrm.
func (c *Config) validateDCNDLRM(s *schema.Schema) error {
	switch c.Model {
	case "dcn":
		if c.DCNInteractedLayerNum < 1 {
			return configErr("DCNInteractedLayerNum", "the number of cross layers must be >= 1, got %d", c.DCNInteractedLayerNum)
		}
	case "dlrm":
		if c.EmbeddingsDim < 1 {
			return configErr("EmbeddingsDim", "must be >= 1, got %d", c.EmbeddingsDim)
		}
		for _, k := range sortedKeys(c.EmbeddingDims) {
			if d := c.EmbeddingDims[k]; d != c.EmbeddingsDim {
				return configErr("EmbeddingDims", "%q: dim %d differs from embeddings_dim %d; dlrm pairs embeddings of one width (embeddings_dim)",
					k, d, c.EmbeddingsDim)
			}
		}
		return checkDLRMSchema(s, c)
	}
	return nil
}

// dlrm counts the bottom MLP, the interaction and the top MLP
// (EstimateMemory) and returns the output width.
func (c *counter) dlrm(feats []*schema.Feature, cfg *Config, act func(float64) float64) float64 {
	var nCat, nCont float64
	for _, f := range feats {
		if f.HasTag(schema.TagCategorical) {
			nCat++
		} else {
			nCont++
		}
	}
	E, F, topIn := float64(cfg.EmbeddingsDim), nCat, 0.0
	if nCont > 0 {
		c.mlp(nCont, []int{cfg.EmbeddingsDim}, act)
		c.row += 2 * nCont // the gathered continuous columns and their gradient
		F++
		topIn = E
	}
	topIn += F * (F - 1) / 2
	// the stacked vectors and their gradient, the Gram matrices, the top
	// MLP's input and its gradient
	c.row += 2*F*E + F*F + 2*topIn
	return c.mlp(topIn, cfg.MLPLayers, act)
}
