package layers

import "github.com/mtlrank/mtlrank/kernels"

// GradSums collects the input gradients of layers that read the same input
// (MMoE's gates and experts, a CGC/PLE level's gates and expert groups,
// the towers over a shared representation): each such gradient is the sum
// over the layers s of dy_s W_s^T. The layers' Backward...To methods add
// their term to the sum of their input's gradient instead of running its
// GEMM; Flush then computes each sum as one kernels.GemmSum, a single GEMM
// over the terms' concatenated depths on the CPU (one FMA chain per
// element, instead of a chain of GEMMs each adding a rounded partial
// product into dx). The terms of a sum are added, and summed, in the order
// of the calls: the order today's chains of GEMMs ran in.
//
// A nil *GradSums runs each term at once as its own GEMM (the chain), which
// is what the plain Backward methods do.
type GradSums struct {
	dev  kernels.Device
	sums []gradSum
	n    int // sums in use
}

// gradSum is the pending gradient of one input.
type gradSum struct {
	dx         *kernels.Tensor
	accumulate bool
	dys, ws    []*kernels.Tensor
}

// add adds the term dy W^T to dx's sum. The first term added to a dx
// decides whether the sum is written into dx or added to it (accumulate);
// the flags of later terms are ignored, as they could only ask to add to
// what the earlier terms wrote. A nil dx has no gradient to compute.
func (s *GradSums) add(dev kernels.Device, dx *kernels.Tensor, accumulate bool, dy, w *kernels.Tensor) {
	if dx == nil {
		return
	}
	if s == nil {
		dev.Gemm(false, true, 1, dy, w, beta(accumulate), dx)
		return
	}
	s.dev = dev
	for i := range s.sums[:s.n] {
		if g := &s.sums[i]; g.dx == dx {
			g.dys, g.ws = append(g.dys, dy), append(g.ws, w)
			return
		}
	}
	if s.n == len(s.sums) {
		s.sums = append(s.sums, gradSum{})
	}
	g := &s.sums[s.n]
	s.n++
	g.dx, g.accumulate = dx, accumulate
	g.dys, g.ws = append(g.dys[:0], dy), append(g.ws[:0], w)
}

// Flush computes every pending sum into its dx, in the order the dx were
// first added, and empties the set. Call it before anything reads those
// gradients.
func (s *GradSums) Flush() {
	for i := range s.sums[:s.n] {
		g := &s.sums[i]
		kernels.GemmSum(s.dev, g.dys, g.ws, g.accumulate, g.dx)
		g.dx = nil
		clear(g.dys)
		clear(g.ws)
	}
	s.n = 0
}
