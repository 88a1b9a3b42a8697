package layers

import (
	"fmt"
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
)

// Dense is y = act(x W + b) with W [In, Out] (Keras kernel layout),
// glorot-uniform initialised, and a zero-initialised bias b [Out].
type Dense struct {
	Name    string
	In, Out int
	Act     kernels.Activation
	W       *kernels.Tensor // [In, Out]
	B       *kernels.Tensor // [Out]; nil for a layer without bias

	dev kernels.Device
	// zeroB stands in for the bias when a bias-free layer has a non-linear
	// activation, so that BiasAct can still fuse the activation.
	zeroB *kernels.Tensor
}

// NewDense creates a Dense layer named name (parameter names are
// name+"/kernel" and name+"/bias").
func NewDense(dev kernels.Device, name string, in, out int, bias bool, act kernels.Activation, rng *rand.Rand) (*Dense, error) {
	if in <= 0 || out <= 0 {
		return nil, fmt.Errorf("layers: dense %q: dimensions must be positive, got in=%d out=%d", name, in, out)
	}
	if err := kernels.CheckActivation(dev, act); err != nil {
		return nil, fmt.Errorf("layers: dense %q: %w", name, err)
	}
	d := &Dense{Name: name, In: in, Out: out, Act: act, dev: dev}
	w := make([]float32, in*out)
	glorotUniform(rng, w, in, out)
	d.W = dev.Alloc(kernels.Float32, in, out)
	dev.CopyFromHostF32(d.W, w)
	if bias {
		d.B = dev.Alloc(kernels.Float32, out)
	} else if act == kernels.ReLU {
		d.zeroB = dev.Alloc(kernels.Float32, out)
	}
	return d, nil
}

// Params lists the kernel (L2-regularised) and the bias.
func (d *Dense) Params() []Param {
	ps := []Param{{Name: d.Name + "/kernel", Value: d.W, L2: true}}
	if d.B != nil {
		ps = append(ps, Param{Name: d.Name + "/bias", Value: d.B})
	}
	return ps
}

// Release frees the parameters.
func (d *Dense) Release() { releaseAll(d.W, d.B, d.zeroB) }

// DenseWS is the per-caller state of a Dense layer.
type DenseWS struct {
	x      *kernels.Tensor
	y, dy  *batchBuf
	z      *batchBuf // the pre-activation, for an Activator activation
	dW, dB *kernels.Tensor
	// actDone: dy already went through the activation's backward and dB
	// holds the bias gradient, done by the layer above (backwardInto)
	actDone bool
}

// NewWorkspace allocates activations for batches of up to maxRows rows, and
// gradient buffers when train is set.
func (d *Dense) NewWorkspace(maxRows int, train bool) *DenseWS {
	ws := &DenseWS{y: newBatchBuf(d.dev, 1, maxRows, d.Out)}
	if train && d.Act.NeedsActivator() {
		ws.z = newBatchBuf(d.dev, 1, maxRows, d.Out)
	}
	if train {
		ws.dy = newBatchBuf(d.dev, 1, maxRows, d.Out)
		ws.dW = d.dev.Alloc(kernels.Float32, d.In, d.Out)
		if d.B != nil {
			ws.dB = d.dev.Alloc(kernels.Float32, d.Out)
		}
	}
	return ws
}

// Y is the output of the last Forward, [B, Out].
func (ws *DenseWS) Y() *kernels.Tensor { return ws.y.t() }

// DY is where consumers put the gradient w.r.t. the output, [B, Out].
func (ws *DenseWS) DY() *kernels.Tensor { return ws.dy.t() }

// Grads returns the gradients matching Params().
func (ws *DenseWS) Grads() []*kernels.Tensor {
	if ws.dB != nil {
		return []*kernels.Tensor{ws.dW, ws.dB}
	}
	return []*kernels.Tensor{ws.dW}
}

// Release frees the workspace.
func (ws *DenseWS) Release() {
	ws.y.release()
	ws.dy.release()
	ws.z.release()
	releaseAll(ws.dW, ws.dB)
}

func (ws *DenseWS) resize(rows int) {
	ws.y.resize(rows)
	if ws.dy != nil {
		ws.dy.resize(rows)
	}
	if ws.z != nil {
		ws.z.resize(rows)
	}
}

// Forward computes y = act(x W + b) for x [B, In].
func (d *Dense) Forward(ws *DenseWS, x *kernels.Tensor) *kernels.Tensor {
	ws.resize(x.Rows())
	ws.x = x
	y := ws.y.t()
	act := d.Act
	if act.NeedsActivator() {
		act = kernels.Linear // applied after the bias, below
	}
	if f, ok := d.dev.(kernels.FusedGemm); ok {
		// one pass over y (a bias-free layer with an activation passes nil:
		// act(x W + 0) = act(x W))
		f.GemmBiasAct(x, d.W, d.B, act, y)
	} else {
		d.dev.Gemm(false, false, 1, x, d.W, 0, y)
		switch {
		case d.B != nil:
			d.dev.BiasAct(y, d.B, 1, act)
		case d.zeroB != nil:
			d.dev.BiasAct(y, d.zeroB, 1, act)
		}
	}
	if act != d.Act {
		activate(d.dev, ws.z, y, d.Act)
	}
	return y
}

// Backward turns ws.DY() into dW, dB and (when dx is not nil) the input
// gradient, written into dx or added to it when accumulate is set.
func (d *Dense) Backward(ws *DenseWS, dx *kernels.Tensor, accumulate bool) {
	d.BackwardTo(ws, nil, dx, accumulate)
}

// BackwardTo is Backward with the input gradient's GEMM added to sums
// (computed by its Flush, with the other layers reading the same input).
func (d *Dense) BackwardTo(ws *DenseWS, sums *GradSums, dx *kernels.Tensor, accumulate bool) {
	d.backwardParams(ws)
	sums.add(d.dev, dx, accumulate, ws.dy.t(), d.W)
}

// backwardInto is Backward with dx the output gradient of below, the layer
// whose output this one reads, with nothing between the two (no dropout).
// Where the device folds a layer's activation backward and bias gradient
// into the GEMM that produces its output gradient (kernels.FusedDataGrad),
// this GEMM does below's, and below's Backward skips them: one pass over
// below's gradient less, the same bits.
func (d *Dense) backwardInto(ws *DenseWS, below *Dense, bws *DenseWS) {
	f, ok := d.dev.(kernels.FusedDataGrad)
	if !ok || below.B == nil || (below.Act != kernels.Linear && below.Act != kernels.ReLU) {
		d.Backward(ws, bws.dy.t(), false)
		return
	}
	d.backwardParams(ws)
	f.GemmActBiasGrad(ws.dy.t(), d.W, bws.y.t(), below.Act, bws.dy.t(), bws.dB)
	bws.actDone = true
}

// backwardParams applies the activation's backward to ws.DY() (unless the
// layer above did) and computes dW and dB.
func (d *Dense) backwardParams(ws *DenseWS) {
	dy := ws.dy.t()
	if ws.actDone {
		ws.actDone = false
		d.dev.Gemm(true, false, 1, ws.x, dy, 0, ws.dW)
		return
	}
	act := d.Act
	if act.NeedsActivator() {
		d.dev.(kernels.Activator).ActivateBackward(dy, ws.z.t(), act)
		act = kernels.Linear
	}
	f, fused := d.dev.(kernels.FusedBiasGrad)
	switch {
	case fused && d.B != nil:
		f.ActBiasGrad(dy, ws.y.t(), act, ws.dB, 1, false)
	case d.B != nil:
		if act != kernels.Linear {
			d.dev.ActBackward(dy, ws.y.t(), act)
		}
		d.dev.BiasGrad(dy, ws.dB, 1, false)
	case act != kernels.Linear:
		d.dev.ActBackward(dy, ws.y.t(), act)
	}
	d.dev.Gemm(true, false, 1, ws.x, dy, 0, ws.dW)
}

// activate applies an Activator activation to y in place. With a
// pre-activation buffer z (training) it first keeps y's pre-activation
// there for the backward pass; without one (inference) it works in place.
func activate(dev kernels.Device, z *batchBuf, y *kernels.Tensor, act kernels.Activation) {
	a := dev.(kernels.Activator)
	if z == nil {
		a.Activate(y, y, act)
		return
	}
	dev.Copy(z.t(), y)
	a.Activate(y, z.t(), act)
}

func beta(accumulate bool) float32 {
	if accumulate {
		return 1
	}
	return 0
}
