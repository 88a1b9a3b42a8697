package kernels

import "fmt"

// GatesBackward is the whole backward of a set of gates that mix experts
// of one block (MMoE's task gates over all the experts; CGC's and PLE's
// gates, each over its own list of them), for a GatesFusedBackwarder or
// RunGatesBackward.
type GatesBackward struct {
	// Per gate g: the gradient of its output dout [B, D], its softmax
	// weights w [B, E_g] and temperature, the gradient of its logits
	// dlogits [B, E_g] (written), and the experts its columns mix
	// (Lists[g][i] indexes Experts).
	DOuts, Ws, DLogits []*Tensor
	Temperatures       []float32
	Lists              [][]int
	// Per expert: its output [B, D] and its gradient [B, D] (written).
	Experts, DExperts []*Tensor
	// With DB (one bias gradient [D] per expert, written) the experts'
	// activation backward and bias gradient run too: Act is the experts'
	// activation (Linear or ReLU), whose backward is taken against
	// Experts, their outputs.
	Act Activation
	DB  []*Tensor
}

// GatesFusedBackwarder is implemented by devices that run a GatesBackward
// in one pass over the rows.
type GatesFusedBackwarder interface {
	// GatesBackward writes, bit for bit, what RunGatesBackward's composed
	// path writes: DLogits[g] = SoftmaxBackward(GateCombineBackward's dw
	// of gate g), every expert gradient = 0 + the sum over the gates in
	// order (and their columns in order) that list the expert of the
	// gate's weight times its dout (+0 where no gate lists it), and with
	// DB, ActBiasGrad(DExperts[e], Experts[e], Act, DB[e], 1, false).
	GatesBackward(p *GatesBackward)
}

// check validates p and returns its rows and width.
func (p *GatesBackward) check(op string) (rows, d int) {
	ng, nx := len(p.DOuts), len(p.Experts)
	if ng == 0 || len(p.Ws) != ng || len(p.DLogits) != ng || len(p.Temperatures) != ng || len(p.Lists) != ng {
		panic(fmt.Sprintf("kernels: %s: %d gradients, %d weights, %d logit gradients, %d temperatures, %d lists",
			op, ng, len(p.Ws), len(p.DLogits), len(p.Temperatures), len(p.Lists)))
	}
	if nx == 0 || len(p.DExperts) != nx || (p.DB != nil && len(p.DB) != nx) {
		panic(fmt.Sprintf("kernels: %s: %d experts, %d expert gradients, %d bias gradients", op, nx, len(p.DExperts), len(p.DB)))
	}
	if p.DB != nil && p.Act != Linear && p.Act != ReLU {
		panic(fmt.Sprintf("kernels: %s: folds only Linear or ReLU, not %d", op, p.Act))
	}
	rows, d = p.DOuts[0].Rows(), p.DOuts[0].Cols()
	for g, l := range p.Lists {
		ne := len(l)
		if ne == 0 || p.DOuts[g].Len() != rows*d || p.Ws[g].Rows() != rows || p.Ws[g].Cols() != ne || p.DLogits[g].Len() != rows*ne {
			panic(fmt.Sprintf("kernels: %s: gate %d: dout %v, w %v, dlogits %v for %d experts and %d x %d rows",
				op, g, p.DOuts[g], p.Ws[g], p.DLogits[g], ne, rows, d))
		}
		for i, e := range l {
			if e < 0 || e >= nx {
				panic(fmt.Sprintf("kernels: %s: gate %d column %d mixes expert %d of %d", op, g, i, e, nx))
			}
		}
	}
	for e := range p.Experts {
		if p.Experts[e].Len() != rows*d || p.DExperts[e].Len() != rows*d || (p.DB != nil && p.DB[e].Len() != d) {
			panic(fmt.Sprintf("kernels: %s: expert %d: output %v, gradient %v, want %d x %d", op, e, p.Experts[e], p.DExperts[e], rows, d))
		}
	}
	return rows, d
}

// RunGatesBackward runs p on dev: in one pass on a GatesFusedBackwarder,
// else composed of Device ops (the reference the pass is tested against):
// zeroed expert gradients, then per gate GateCombineBackward into DLogits
// (its dw) and SoftmaxBackward in place, then ActBiasGrad per expert.
func RunGatesBackward(dev Device, p *GatesBackward) {
	if f, ok := dev.(GatesFusedBackwarder); ok {
		f.GatesBackward(p)
		return
	}
	p.check("RunGatesBackward")
	composeGatesBackward(dev, p)
}

func composeGatesBackward(dev Device, p *GatesBackward) {
	for _, dx := range p.DExperts {
		dev.Zero(dx)
	}
	var xs, dxs []*Tensor
	for g, l := range p.Lists {
		xs, dxs = xs[:0], dxs[:0]
		for _, e := range l {
			xs, dxs = append(xs, p.Experts[e]), append(dxs, p.DExperts[e])
		}
		dev.GateCombineBackward(p.DOuts[g], p.Ws[g], xs, p.DLogits[g], dxs)
		// the softmax backward reads a row of dw before writing it
		dev.SoftmaxBackward(p.DLogits[g], p.DLogits[g], p.Ws[g], p.Temperatures[g])
	}
	if p.DB == nil {
		return
	}
	for e := range p.DExperts {
		actBiasGrad(dev, p.DExperts[e], p.Experts[e], p.Act, p.DB[e])
	}
}

// actBiasGrad is ActBiasGrad(dy, y, act, db, 1, false) on dev, composed
// where dev does not fuse it.
func actBiasGrad(dev Device, dy, y *Tensor, act Activation, db *Tensor) {
	if f, ok := dev.(FusedBiasGrad); ok {
		f.ActBiasGrad(dy, y, act, db, 1, false)
		return
	}
	if act != Linear {
		dev.ActBackward(dy, y, act)
	}
	dev.BiasGrad(dy, db, 1, false)
}
