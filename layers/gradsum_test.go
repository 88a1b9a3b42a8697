package layers

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
)

// GradSums keeps one sum per input gradient, its terms in the order added,
// written or added as its first term asks; Flush computes each as one
// kernels.GemmSum of those terms in that order (the same bits), within
// float32 rounding of the chain of GEMMs that a nil GradSums runs.
func TestGradSumsSumPerInputInOrder(t *testing.T) {
	dev := testDev()
	rng := NewRNG(5)
	const rows = 29
	type term struct {
		dx  int // which input gradient
		acc bool
		k   int
	}
	widths := []int{112, 17, 5} // the kernel's shapes and a thin one (chained)
	cases := []struct {
		name  string
		terms []term
	}{
		{"one_term", []term{{0, false, 64}}},
		{"interleaved", []term{{0, false, 64}, {1, false, 7}, {0, true, 64}, {2, false, 3}, {1, true, 65}, {0, true, 1}, {2, true, 16}}},
		{"accumulating_first", []term{{1, true, 16}, {0, true, 64}, {1, true, 64}, {0, true, 64}}},
		{"later_flags_ignored", []term{{0, false, 16}, {0, false, 64}, {0, true, 9}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			init := make([][]float32, len(widths))
			for i, n := range widths {
				init[i] = randHost(rng, rows*n, 1)
			}
			dxs := make([]*kernels.Tensor, len(widths))
			chain := make([]*kernels.Tensor, len(widths))
			for i, n := range widths {
				dxs[i], chain[i] = dev.Alloc(kernels.Float32, rows, n), dev.Alloc(kernels.Float32, rows, n)
				dev.CopyFromHostF32(dxs[i], init[i])
				dev.CopyFromHostF32(chain[i], init[i])
			}
			var sums GradSums
			dys := make([][]*kernels.Tensor, len(widths))
			ws := make([][]*kernels.Tensor, len(widths))
			first := make([]int, len(widths))
			for i := range first {
				first[i] = -1
			}
			for i, tm := range tc.terms {
				n := widths[tm.dx]
				dy, w := randTensor(dev, rng, 1, rows, tm.k), randTensor(dev, rng, 1, n, tm.k)
				sums.add(dev, dxs[tm.dx], tm.acc, dy, w)
				// the chain: a later term always adds (its flag is only
				// false in the case that checks it is ignored)
				var nilSums *GradSums
				nilSums.add(dev, chain[tm.dx], tm.acc && first[tm.dx] < 0 || first[tm.dx] >= 0, dy, w)
				if first[tm.dx] < 0 {
					first[tm.dx] = i
				}
				dys[tm.dx], ws[tm.dx] = append(dys[tm.dx], dy), append(ws[tm.dx], w)
			}
			sums.Flush()
			require.Zero(t, sums.n, "Flush empties the set")
			for i, n := range widths {
				name := fmt.Sprintf("dx%d", i)
				if first[i] < 0 {
					requireSameBits(t, [][]float32{init[i]}, [][]float32{host(dxs[i])})
					continue
				}
				ref := dev.Alloc(kernels.Float32, rows, n)
				dev.CopyFromHostF32(ref, init[i])
				kernels.GemmSum(dev, dys[i], ws[i], tc.terms[first[i]].acc, ref)
				requireSameBits(t, [][]float32{host(ref)}, [][]float32{host(dxs[i])})
				got, want := host(dxs[i]), host(chain[i])
				for e := range want {
					require.InDelta(t, want[e], got[e], 1e-5*(1+math.Abs(float64(want[e]))), "%s[%d] against the chain", name, e)
				}
			}
		})
	}
}

// MMoE's wiring: the input gradient of gates and experts sharing the input
// is one sum whose terms are the gates' (in gate order, each its first
// Dense layer's) then the experts' (in expert order), the order of the
// chain of GEMMs it replaces; the sum is the bits of kernels.GemmSum over
// those terms listed by hand.
func TestGatesAndExpertsInputGradientOrder(t *testing.T) {
	for _, gateDim := range []int{0, 16} {
		t.Run(fmt.Sprintf("gateDim%d", gateDim), func(t *testing.T) {
			dev := testDev()
			rng := NewRNG(9)
			const rows, in, d, ne, ng = 37, 40, 16, 4, 3
			x, err := NewExperts(dev, "ex", []int{ne}, in, []int{24, d}, kernels.ReLU, 0, rng)
			require.NoError(t, err)
			xws := x.NewWorkspace(rows, true)
			var gates []*Gate
			var gws []*GateWS
			for range ng {
				g, err := NewGate(dev, "g", in, ne, d, gateDim, 1, rng)
				require.NoError(t, err)
				gates, gws = append(gates, g), append(gws, g.NewWorkspace(rows, true))
			}
			s := NewGatesWS(gws)
			s.FoldExperts(x, xws)
			input := randTensor(dev, rng, 1, rows, in)
			x.Forward(xws, []*kernels.Tensor{input}, Mode{Train: true})
			for i, g := range gates {
				g.Forward(gws[i], input, xws.Outputs())
				dev.CopyFromHostF32(gws[i].DY(), randHost(rng, rows*d, 1))
			}
			dx := dev.Alloc(kernels.Float32, rows, in)
			dev.Fill(dx, float32(math.NaN())) // written, not added to
			var sums GradSums
			BackwardGatesTo(gates, gws, s, xws.DY(), xws.DOutputs(), &sums, dx)
			x.BackwardTo(xws, &sums, []*kernels.Tensor{dx}, true)
			sums.Flush()

			var dys, ws []*kernels.Tensor
			for i, g := range gates {
				if g.Hidden != nil {
					dys, ws = append(dys, gws[i].hidden.DY()), append(ws, g.Hidden.W)
				} else {
					dys, ws = append(dys, gws[i].logits.DY()), append(ws, g.Logits.W)
				}
			}
			for e := range ne {
				dys, ws = append(dys, xws.dyExpert[e].get()), append(ws, xws.expW[e])
			}
			ref := dev.Alloc(kernels.Float32, rows, in)
			kernels.GemmSum(dev, dys, ws, false, ref)
			requireSameBits(t, [][]float32{host(ref)}, [][]float32{host(dx)})
		})
	}
}
