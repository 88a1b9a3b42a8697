package layers

import (
	"fmt"

	"github.com/mtlrank/mtlrank/kernels"
)

// This file holds the pieces of the factorization-machine and wide&deep
// models (DeepFM, Wide&Deep): a column gather, the FM second-order term and
// the wide logit. Each is composed from Device ops (Gemm, Mul, Axpy,
// CopyCols, BiasAct), so every device runs them unchanged.

// ColRange is the columns [Col, Col+Width) of a matrix.
type ColRange struct{ Col, Width int }

// ColGather packs column ranges of an [B, In] input side by side into
// [B, Out] (Out = the sum of the widths), and scatters the gradient back.
// Adjacent ranges are merged, so a contiguous block costs one copy.
type ColGather struct {
	In, Out int
	Ranges  []ColRange // merged
	dev     kernels.Device
}

// NewColGather checks the ranges against an input of width in.
func NewColGather(dev kernels.Device, in int, ranges []ColRange) (*ColGather, error) {
	g := &ColGather{In: in, dev: dev}
	for _, r := range ranges {
		if r.Width <= 0 || r.Col < 0 || r.Col+r.Width > in {
			return nil, fmt.Errorf("layers: column gather: range [%d, %d) outside the %d input columns", r.Col, r.Col+r.Width, in)
		}
		g.Out += r.Width
		if n := len(g.Ranges); n > 0 && g.Ranges[n-1].Col+g.Ranges[n-1].Width == r.Col {
			g.Ranges[n-1].Width += r.Width
			continue
		}
		g.Ranges = append(g.Ranges, r)
	}
	if g.Out == 0 {
		return nil, fmt.Errorf("layers: column gather: no columns")
	}
	return g, nil
}

// ColGatherWS is the per-caller state of a ColGather.
type ColGatherWS struct{ y, dy *batchBuf }

// NewWorkspace allocates the output (and with train its gradient).
func (g *ColGather) NewWorkspace(maxRows int, train bool) *ColGatherWS {
	ws := &ColGatherWS{y: newBatchBuf(g.dev, 1, maxRows, g.Out)}
	if train {
		ws.dy = newBatchBuf(g.dev, 1, maxRows, g.Out)
	}
	return ws
}

// DY is where the consumer puts the gradient w.r.t. the output.
func (ws *ColGatherWS) DY() *kernels.Tensor { return ws.dy.t() }

// Release frees the workspace.
func (ws *ColGatherWS) Release() {
	ws.y.release()
	ws.dy.release()
}

// Forward packs x's ranges into the output.
func (g *ColGather) Forward(ws *ColGatherWS, x *kernels.Tensor) *kernels.Tensor {
	ws.y.resize(x.Rows())
	if ws.dy != nil {
		ws.dy.resize(x.Rows())
	}
	y, col := ws.y.t(), 0
	for _, r := range g.Ranges {
		g.dev.CopyCols(y, col, x, r.Col, r.Width, false)
		col += r.Width
	}
	return y
}

// Backward adds ws.DY() into dx's ranges; without accumulate the other
// columns of dx are zeroed first.
func (g *ColGather) Backward(ws *ColGatherWS, dx *kernels.Tensor, accumulate bool) {
	if !accumulate && g.Out != g.In {
		g.dev.Zero(dx)
	}
	dy, col := ws.dy.t(), 0
	for _, r := range g.Ranges {
		g.dev.CopyCols(dx, r.Col, dy, col, r.Width, accumulate)
		col += r.Width
	}
}

// FM is the second-order term of a factorization machine (Rendle, ICDM
// 2010) over F fields of width K packed side by side in x [B, F*K]:
//
//	y = 1/2 sum_k ((sum_f x_fk)^2 - sum_f x_fk^2) = sum_{f<g} <x_f, x_g>
//
// per row ([B, 1]), Merlin's FMPairwiseInteraction summed over k. With
// S = sum_f x_f the gradient is dx_f = dy (S - x_f). The sums over the
// fields and the tiling of S are column copies (O(B*F*K), where a GEMM
// with stacked identities would cost F times more).
type FM struct {
	Fields, K int
	halfK     *kernels.Tensor // [K, 1] of 1/2
	negHalf   *kernels.Tensor // [F*K, 1] of -1/2
	ones      *kernels.Tensor // [1, F*K] of 1
	dev       kernels.Device
}

// NewFM builds the term for fields fields of width k.
func NewFM(dev kernels.Device, fields, k int) (*FM, error) {
	if fields < 1 || k < 1 {
		return nil, fmt.Errorf("layers: fm: needs fields >= 1 and width >= 1, got %d fields of %d", fields, k)
	}
	n := fields * k
	f := &FM{Fields: fields, K: k, dev: dev, halfK: dev.Alloc(kernels.Float32, k, 1),
		negHalf: dev.Alloc(kernels.Float32, n, 1), ones: dev.Alloc(kernels.Float32, 1, n)}
	dev.Fill(f.halfK, 0.5)
	dev.Fill(f.negHalf, -0.5)
	dev.Fill(f.ones, 1)
	return f, nil
}

// Release frees the constants.
func (f *FM) Release() { releaseAll(f.halfK, f.negHalf, f.ones) }

// FMWS is the per-caller state of an FM.
type FMWS struct {
	x     *kernels.Tensor
	s, s2 *batchBuf // [B, K]: sum over fields, its square
	x2    *batchBuf // [B, F*K]: x^2 (forward), then the gradient's scratch
	dyb   *batchBuf // [B, F*K]: dy broadcast along the row
	y, dy *batchBuf // [B, 1]
}

// NewWorkspace allocates the workspace for batches of up to maxRows rows.
func (f *FM) NewWorkspace(maxRows int, train bool) *FMWS {
	n := f.Fields * f.K
	ws := &FMWS{s: newBatchBuf(f.dev, 1, maxRows, f.K), s2: newBatchBuf(f.dev, 1, maxRows, f.K),
		x2: newBatchBuf(f.dev, 1, maxRows, n), y: newBatchBuf(f.dev, 1, maxRows, 1)}
	if train {
		ws.dyb = newBatchBuf(f.dev, 1, maxRows, n)
		ws.dy = newBatchBuf(f.dev, 1, maxRows, 1)
	}
	return ws
}

// Y is the output of the last Forward, [B, 1]; DY its gradient.
func (ws *FMWS) Y() *kernels.Tensor  { return ws.y.t() }
func (ws *FMWS) DY() *kernels.Tensor { return ws.dy.t() }

// Release frees the workspace.
func (ws *FMWS) Release() {
	for _, b := range []*batchBuf{ws.s, ws.s2, ws.x2, ws.dyb, ws.y, ws.dy} {
		b.release()
	}
}

// Forward computes the term for x [B, F*K].
func (f *FM) Forward(ws *FMWS, x *kernels.Tensor) *kernels.Tensor {
	rows := x.Rows()
	for _, b := range []*batchBuf{ws.s, ws.s2, ws.x2, ws.dyb, ws.y, ws.dy} {
		if b != nil {
			b.resize(rows)
		}
	}
	ws.x = x
	s, s2, x2, y := ws.s.t(), ws.s2.t(), ws.x2.t(), ws.y.t()
	for i := range f.Fields {
		f.dev.CopyCols(s, 0, x, i*f.K, f.K, i > 0) // sum over the fields
	}
	f.dev.Mul(s2, s, s)
	f.dev.Mul(x2, x, x)
	f.dev.Gemm(false, false, 1, s2, f.halfK, 0, y)
	f.dev.Gemm(false, false, 1, x2, f.negHalf, 1, y)
	return y
}

// Backward writes (or with accumulate adds) dx = dy * (S P^T - x) from
// ws.DY().
func (f *FM) Backward(ws *FMWS, dx *kernels.Tensor, accumulate bool) {
	g, dyb := ws.x2.t(), ws.dyb.t()
	for i := range f.Fields {
		f.dev.CopyCols(g, i*f.K, ws.s.t(), 0, f.K, false) // S for every field
	}
	f.dev.Axpy(-1, ws.x, g)
	f.dev.Gemm(false, false, 1, ws.dy.t(), f.ones, 0, dyb)
	if !accumulate {
		f.dev.Mul(dx, g, dyb)
		return
	}
	f.dev.Mul(g, g, dyb)
	f.dev.Axpy(1, g, dx)
}

// WideLogit is the linear part of a wide model over weights already looked
// up per feature (dim-1 embedding tables, one column per feature of x
// [B, N]): y = sum_j x_j + b, then dropout in training (Merlin's
// MLPBlock([1]) over one-hot encodings, whose kernel rows are the looked-up
// weights). The bias is named name+"/bias".
type WideLogit struct {
	Name    string
	N       int
	B       *kernels.Tensor // [1]
	Dropout float32
	ones    *kernels.Tensor // [N, 1]
	site    uint64
	dev     kernels.Device
}

// NewWideLogit builds the logit over n columns.
func NewWideLogit(dev kernels.Device, name string, n int, dropout float32) (*WideLogit, error) {
	if n < 1 {
		return nil, fmt.Errorf("layers: wide logit %q: no columns", name)
	}
	if dropout < 0 || dropout >= 1 {
		return nil, fmt.Errorf("layers: wide logit %q: dropout must be in [0, 1), got %g", name, dropout)
	}
	w := &WideLogit{Name: name, N: n, Dropout: dropout, site: siteID(name), dev: dev,
		B: dev.Alloc(kernels.Float32, 1), ones: dev.Alloc(kernels.Float32, n, 1)}
	dev.Fill(w.ones, 1)
	return w, nil
}

// Params lists the bias (not L2-regularised: the weights are embedding
// tables, regularised by the input block).
func (w *WideLogit) Params() []Param { return []Param{{Name: w.Name + "/bias", Value: w.B}} }

// Release frees the parameters.
func (w *WideLogit) Release() { releaseAll(w.B, w.ones) }

// WideLogitWS is the per-caller state of a WideLogit.
type WideLogitWS struct {
	y, dy, mask *batchBuf
	db          *kernels.Tensor
	dropped     bool
}

// NewWorkspace allocates the workspace for batches of up to maxRows rows.
func (w *WideLogit) NewWorkspace(maxRows int, train bool) *WideLogitWS {
	ws := &WideLogitWS{y: newBatchBuf(w.dev, 1, maxRows, 1)}
	if train {
		ws.dy = newBatchBuf(w.dev, 1, maxRows, 1)
		ws.db = w.dev.Alloc(kernels.Float32, 1)
		if w.Dropout > 0 {
			ws.mask = newBatchBuf(w.dev, 1, maxRows, 1)
		}
	}
	return ws
}

// Y is the output of the last Forward, [B, 1]; DY its gradient.
func (ws *WideLogitWS) Y() *kernels.Tensor  { return ws.y.t() }
func (ws *WideLogitWS) DY() *kernels.Tensor { return ws.dy.t() }

// Grads matches Params.
func (ws *WideLogitWS) Grads() []*kernels.Tensor { return []*kernels.Tensor{ws.db} }

// Release frees the workspace.
func (ws *WideLogitWS) Release() {
	ws.y.release()
	ws.dy.release()
	ws.mask.release()
	releaseAll(ws.db)
}

// Forward computes the logit of x [B, N].
func (w *WideLogit) Forward(ws *WideLogitWS, x *kernels.Tensor, mode Mode) *kernels.Tensor {
	rows := x.Rows()
	ws.y.resize(rows)
	if ws.dy != nil {
		ws.dy.resize(rows)
	}
	y := ws.y.t()
	w.dev.Gemm(false, false, 1, x, w.ones, 0, y)
	w.dev.BiasAct(y, w.B, 1, kernels.Linear)
	ws.dropped = mode.Train && w.Dropout > 0 && ws.mask != nil
	if ws.dropped {
		ws.mask.resize(rows)
		dropout(w.dev, y, ws.mask.t(), w.Dropout, mode, w.site, 0)
	}
	return y
}

// Backward turns ws.DY() into the bias gradient and writes (or with
// accumulate adds) dy to every column of dx [B, N].
func (w *WideLogit) Backward(ws *WideLogitWS, dx *kernels.Tensor, accumulate bool) {
	dy := ws.dy.t()
	if ws.dropped {
		w.dev.Mul(dy, dy, ws.mask.t())
	}
	w.dev.BiasGrad(dy, ws.db, 1, false)
	w.dev.Gemm(false, true, 1, dy, w.ones, beta(accumulate), dx)
}
