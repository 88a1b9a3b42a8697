package layers

import (
	"fmt"
	"math/rand/v2"

	"github.com/mtlrank/mtlrank/kernels"
)

// CrossNet is the cross network of DCN-V2 (Wang et al., WWW 2021, eq. 1,
// full rank), Merlin's CrossBlock: depth layers over an input x0 [B, Dim],
//
//	x_{l+1} = x0 * (x_l W_l + b_l) + x_l
//
// with * element-wise, W_l [Dim, Dim] (Keras kernel layout) and b_l [Dim].
// As in Merlin, the kernels start from a truncated normal (stddev 0.05,
// redrawn beyond two deviations: Keras' "truncated_normal") and the biases
// at zero, and no regulariser covers them (Param.L2 is false).
type CrossNet struct {
	Name string
	Dim  int
	W    []*kernels.Tensor // per layer [Dim, Dim]
	B    []*kernels.Tensor // per layer [Dim]
	dev  kernels.Device
}

// NewCrossNet creates depth cross layers over inputs of width dim, with
// parameters name+"/<l>/kernel" and name+"/<l>/bias".
func NewCrossNet(dev kernels.Device, name string, dim, depth int, rng *rand.Rand) (*CrossNet, error) {
	if dim <= 0 {
		return nil, fmt.Errorf("layers: cross %q: input width must be positive, got %d", name, dim)
	}
	if depth <= 0 {
		return nil, fmt.Errorf("layers: cross %q: depth (number of cross layers) must be positive, got %d", name, depth)
	}
	c := &CrossNet{Name: name, Dim: dim, dev: dev}
	w := make([]float32, dim*dim)
	for range depth {
		truncatedNormal(rng, w, 0.05)
		t := dev.Alloc(kernels.Float32, dim, dim)
		dev.CopyFromHostF32(t, w)
		c.W = append(c.W, t)
		c.B = append(c.B, dev.Alloc(kernels.Float32, dim))
	}
	return c, nil
}

// truncatedNormal fills dst with N(0, std) draws, redrawing those beyond
// two standard deviations (Keras' TruncatedNormal).
func truncatedNormal(rng *rand.Rand, dst []float32, std float64) {
	for i := range dst {
		v := rng.NormFloat64()
		for v < -2 || v > 2 {
			v = rng.NormFloat64()
		}
		dst[i] = float32(v * std)
	}
}

// Depth is the number of cross layers.
func (c *CrossNet) Depth() int { return len(c.W) }

// Params lists each layer's kernel and bias, first layer first. The
// kernels are not L2-regularised: Merlin's CrossBlock has no regulariser.
func (c *CrossNet) Params() []Param {
	var ps []Param
	for l := range c.W {
		ps = append(ps,
			Param{Name: fmt.Sprintf("%s/%d/kernel", c.Name, l), Value: c.W[l]},
			Param{Name: fmt.Sprintf("%s/%d/bias", c.Name, l), Value: c.B[l]})
	}
	return ps
}

// Release frees the parameters.
func (c *CrossNet) Release() {
	releaseAll(c.W...)
	releaseAll(c.B...)
}

// CrossWS is the per-caller state of a CrossNet.
type CrossWS struct {
	x0     *kernels.Tensor
	u, y   []*batchBuf // per layer: x_l W_l + b_l, and the output x_{l+1}
	dy     []*batchBuf // per layer: the gradient w.r.t. its output (training)
	du, t  *batchBuf   // backward scratch (training)
	dW, dB []*kernels.Tensor
}

// NewWorkspace allocates the workspace for batches of up to maxRows rows,
// with gradient buffers when train is set.
func (c *CrossNet) NewWorkspace(maxRows int, train bool) *CrossWS {
	ws := &CrossWS{}
	for range c.W {
		ws.u = append(ws.u, newBatchBuf(c.dev, 1, maxRows, c.Dim))
		ws.y = append(ws.y, newBatchBuf(c.dev, 1, maxRows, c.Dim))
		if train {
			ws.dy = append(ws.dy, newBatchBuf(c.dev, 1, maxRows, c.Dim))
			ws.dW = append(ws.dW, c.dev.Alloc(kernels.Float32, c.Dim, c.Dim))
			ws.dB = append(ws.dB, c.dev.Alloc(kernels.Float32, c.Dim))
		}
	}
	if train {
		ws.du = newBatchBuf(c.dev, 1, maxRows, c.Dim)
		ws.t = newBatchBuf(c.dev, 1, maxRows, c.Dim)
	}
	return ws
}

// Y is the output of the last Forward, [B, Dim]; DY the gradient w.r.t. it.
func (ws *CrossWS) Y() *kernels.Tensor  { return ws.y[len(ws.y)-1].t() }
func (ws *CrossWS) DY() *kernels.Tensor { return ws.dy[len(ws.dy)-1].t() }

// Grads returns the gradients matching Params().
func (ws *CrossWS) Grads() []*kernels.Tensor {
	var gs []*kernels.Tensor
	for l := range ws.dW {
		gs = append(gs, ws.dW[l], ws.dB[l])
	}
	return gs
}

// Release frees the workspace.
func (ws *CrossWS) Release() {
	for _, bufs := range [][]*batchBuf{ws.u, ws.y, ws.dy, {ws.du, ws.t}} {
		for _, b := range bufs {
			b.release()
		}
	}
	releaseAll(ws.dW...)
	releaseAll(ws.dB...)
}

func (ws *CrossWS) resize(rows int) {
	for _, bufs := range [][]*batchBuf{ws.u, ws.y, ws.dy} {
		for _, b := range bufs {
			b.resize(rows)
		}
	}
	if ws.du != nil {
		ws.du.resize(rows)
		ws.t.resize(rows)
	}
}

// Forward runs the cross layers on x0 [B, Dim] and returns x_depth [B, Dim].
// x0 must stay unchanged until Backward.
func (c *CrossNet) Forward(ws *CrossWS, x0 *kernels.Tensor) *kernels.Tensor {
	ws.resize(x0.Rows())
	ws.x0 = x0
	x := x0
	for l := range c.W {
		u, y := ws.u[l].t(), ws.y[l].t()
		if f, ok := c.dev.(kernels.FusedGemm); ok {
			f.GemmBiasAct(x, c.W[l], c.B[l], kernels.Linear, u)
		} else {
			c.dev.Gemm(false, false, 1, x, c.W[l], 0, u)
			c.dev.BiasAct(u, c.B[l], 1, kernels.Linear)
		}
		c.dev.Mul(y, x0, u)
		c.dev.Axpy(1, x, y)
		x = y
	}
	return x
}

// Backward turns ws.DY() into the parameter gradients and the gradient
// w.r.t. x0, written into dx or added to it when accumulate is set. With
// g the gradient w.r.t. x_{l+1} and du = g * x0:
//
//	dW_l = x_l^T du,  db_l = sum_rows du,
//	dx_l = g + du W_l^T,  dx0 += g * (x_l W_l + b_l)
//
// (x0 is also x_0, so the first layer's dx_l lands in dx too).
func (c *CrossNet) Backward(ws *CrossWS, dx *kernels.Tensor, accumulate bool) {
	d := c.dev
	x0, du, tmp := ws.x0, ws.du.t(), ws.t.t()
	wrote := accumulate // dx holds something to add to
	for l := len(c.W) - 1; l >= 0; l-- {
		g, u := ws.dy[l].t(), ws.u[l].t()
		xin := x0
		if l > 0 {
			xin = ws.y[l-1].t()
		}
		d.Mul(du, g, x0)
		if wrote {
			d.Mul(tmp, g, u)
			d.Axpy(1, tmp, dx)
		} else {
			d.Mul(dx, g, u)
			wrote = true
		}
		d.Gemm(true, false, 1, xin, du, 0, ws.dW[l])
		d.BiasGrad(du, ws.dB[l], 1, false)
		if l > 0 {
			prev := ws.dy[l-1].t()
			d.Copy(prev, g)
			d.Gemm(false, true, 1, du, c.W[l], 1, prev)
		} else {
			d.Axpy(1, g, dx)
			d.Gemm(false, true, 1, du, c.W[0], 1, dx)
		}
	}
}
