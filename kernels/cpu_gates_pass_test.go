package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
)

// gatesPassCase is a set of gates over nexp experts: lists[g] the experts
// gate g mixes.
type gatesPassCase struct {
	name    string
	rows, d int
	nexp    int
	lists   [][]int
	fold    int // 0 none, 1 Linear, 2 ReLU
	threads int
}

func allExperts(gates, n int) [][]int {
	l := make([][]int, gates)
	for g := range l {
		l[g] = rangeN(0, n)
	}
	return l
}

func rangeN(lo, n int) []int {
	r := make([]int, n)
	for i := range r {
		r[i] = lo + i
	}
	return r
}

// cgcLists: a task gate per task over its nt experts and the ns shared ones
// (after all the tasks'), then the shared gate over all of them.
func cgcLists(tasks, nt, ns int) [][]int {
	var l [][]int
	for t := range tasks {
		l = append(l, append(rangeN(t*nt, nt), rangeN(tasks*nt, ns)...))
	}
	return append(l, rangeN(0, tasks*nt+ns))
}

func gatesPassCases() []gatesPassCase {
	return []gatesPassCase{
		{"mmoe", 70, 64, 4, allExperts(5, 4), 2, 1},
		{"mmoe_2threads", 700, 64, 4, allExperts(5, 4), 2, 2},
		{"mmoe_linear", 33, 64, 4, allExperts(5, 4), 1, 1},
		{"mmoe_nofold", 33, 64, 4, allExperts(5, 4), 0, 2},
		{"cgc", 65, 64, 7, cgcLists(5, 1, 2), 2, 1},
		{"ple_2threads", 513, 32, 8, cgcLists(3, 2, 2), 2, 2},
		{"no_shared_gate", 40, 24, 6, cgcLists(3, 1, 3)[:3], 2, 1},
		{"unlisted_expert", 17, 20, 5, [][]int{{0, 1}, {1, 3}, {4}}, 2, 1},
		{"unordered_lists", 29, 17, 4, [][]int{{2, 0, 1}, {3, 2}, {1, 3, 0, 2}}, 2, 2},
		{"odd_width", 31, 33, 3, allExperts(6, 3), 2, 1},
		{"width1", 5, 1, 2, allExperts(2, 2), 2, 1},
		{"width8", 9, 8, 9, allExperts(2, 9), 1, 1},
		{"width15", 3, 15, 2, allExperts(1, 2), 2, 2},
		{"one_row", 1, 64, 4, allExperts(5, 4), 2, 2},
		{"no_rows", 0, 16, 3, allExperts(2, 3), 2, 1},
		{"wide", 12, 200, 3, allExperts(3, 3), 2, 1},
	}
}

type gatesPassData struct {
	p               kernels.GatesBackward
	douts, ws       [][]float32
	experts         [][]float32
	temps           []float32
	dloHost, dxHost [][]float32
}

// newGatesPass builds the case's tensors on cpu from seeded data, with the
// edge values the kernels must keep: a zero row of dout under negative
// weights (-0 products), -0 and NaN in an expert's output (ReLU masks
// both), and NaN in every output buffer (a pass that adds into them shows).
func newGatesPass(cpu *kernels.CPU, c gatesPassCase) *gatesPassData {
	rng := newRNG(uint64(c.rows*7919 + c.d*31 + c.nexp))
	g := &gatesPassData{}
	p := &g.p
	p.Lists = c.lists
	nan := float32(math.NaN())
	for e := 0; e < c.nexp; e++ {
		x := randSlice(rng, c.rows*c.d, -1, 1)
		if c.rows > 1 && e == 0 {
			x[c.d] = float32(math.Copysign(0, -1))
			x[c.d+c.d-1] = nan
		}
		g.experts = append(g.experts, x)
		p.Experts = append(p.Experts, tensor(cpu, x, c.rows, c.d))
		p.DExperts = append(p.DExperts, tensor(cpu, fillN(c.rows*c.d, nan), c.rows, c.d))
		if c.fold > 0 {
			p.DB = append(p.DB, tensor(cpu, fillN(c.d, nan), c.d))
		}
	}
	p.Act = kernels.Linear
	if c.fold == 2 {
		p.Act = kernels.ReLU
	}
	for gi, l := range c.lists {
		ne := len(l)
		dout := randSlice(rng, c.rows*c.d, -1, 1)
		w := randSlice(rng, c.rows*ne, 0, 1)
		if gi == 0 && c.rows > 0 {
			for j := 0; j < c.d; j++ {
				dout[j] = 0
			}
			for i := 0; i < ne; i++ {
				w[i] = -0.5
			}
		}
		temp := float32(1)
		if gi%2 == 1 {
			temp = 0.7
		}
		g.douts, g.ws, g.temps = append(g.douts, dout), append(g.ws, w), append(g.temps, temp)
		p.DOuts = append(p.DOuts, tensor(cpu, dout, c.rows, c.d))
		p.Ws = append(p.Ws, tensor(cpu, w, c.rows, ne))
		p.DLogits = append(p.DLogits, tensor(cpu, fillN(c.rows*ne, nan), c.rows, ne))
		p.Temperatures = append(p.Temperatures, temp)
	}
	return g
}

func fillN(n int, v float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = v
	}
	return x
}

// TestGatesBackwardMatchesComposed: the CPU's one-pass gates backward
// (GatesBackward) against the composed Device ops it replaces (zeroing,
// GateCombineBackward and SoftmaxBackward gate after gate, ActBackward and
// BiasGrad per expert), bit for bit, over gate lists of mmoe, cgc and ple,
// an expert no gate lists, widths with vector and scalar tails, rows split
// over two threads, and without, with a linear and with a ReLU fold.
func TestGatesBackwardMatchesComposed(t *testing.T) {
	for _, c := range gatesPassCases() {
		t.Run(c.name, func(t *testing.T) {
			got := newGatesPass(kernels.NewCPU(c.threads), c)
			ref := kernels.NewCPU(1)
			want := newGatesPass(ref, c)
			kernels.RunGatesBackward(kernels.NewCPU(c.threads), &got.p)
			kernels.RunGatesBackward(plainDevice{ref}, &want.p)
			for g := range c.lists {
				requireSameBits(t, want.p.DLogits[g].F32, got.p.DLogits[g].F32, "dlogits of gate %d", g)
			}
			for e := 0; e < c.nexp; e++ {
				requireSameBits(t, want.p.DExperts[e].F32, got.p.DExperts[e].F32, "gradient of expert %d", e)
				if c.fold > 0 {
					requireSameBits(t, want.p.DB[e].F32, got.p.DB[e].F32, "bias gradient of expert %d", e)
				}
			}
		})
	}
}

// TestGatesBackwardReference checks the pass against sums written out
// here: the expert gradients in float32 in gate order from +0, masked
// where the output is not > 0 (-0 and NaN included), exactly; their bias
// gradients as float64 column sums in row order, exactly; the logits'
// gradients against the softmax backward in float64, within rounding.
func TestGatesBackwardReference(t *testing.T) {
	for _, c := range gatesPassCases() {
		t.Run(c.name, func(t *testing.T) {
			cpu := kernels.NewCPU(c.threads)
			g := newGatesPass(cpu, c)
			cpu.GatesBackward(&g.p)
			d := c.d
			for e := 0; e < c.nexp; e++ {
				want := make([]float32, c.rows*d)
				sums := make([]float64, d)
				for b := 0; b < c.rows; b++ {
					for j := 0; j < d; j++ {
						s := float32(0)
						for gi, l := range c.lists {
							for i, x := range l {
								if x == e {
									s += float32(g.ws[gi][b*len(l)+i] * g.douts[gi][b*d+j]) // rounded: no FMA
								}
							}
						}
						if c.fold == 2 && !(g.experts[e][b*d+j] > 0) {
							s = 0
						}
						want[b*d+j] = s
						sums[j] += float64(s)
					}
				}
				requireSameBits(t, want, g.p.DExperts[e].F32, "gradient of expert %d", e)
				if c.fold > 0 {
					wantDB := make([]float32, d)
					for j := range wantDB {
						wantDB[j] = float32(sums[j])
					}
					requireSameBits(t, wantDB, g.p.DB[e].F32, "bias gradient of expert %d", e)
				}
			}
			for gi, l := range c.lists {
				ne := len(l)
				want := make([]float32, c.rows*ne)
				for b := 0; b < c.rows; b++ {
					dw := make([]float64, ne)
					var dot float64
					for i, x := range l {
						for j := 0; j < d; j++ {
							dw[i] += float64(g.douts[gi][b*d+j]) * float64(g.experts[x][b*d+j])
						}
						dot += float64(g.ws[gi][b*ne+i]) * dw[i]
					}
					for i := range dw {
						want[b*ne+i] = float32(float64(g.ws[gi][b*ne+i]) * (dw[i] - dot) / float64(g.temps[gi]))
					}
				}
				gotL := g.p.DLogits[gi].F32
				for i := range want {
					if math.IsNaN(float64(want[i])) {
						require.True(t, math.IsNaN(float64(gotL[i])), "dlogits of gate %d element %d", gi, i)
						want[i], gotL[i] = 0, 0
					}
				}
				assertClose(t, want, gotL, 1e-4, fmt.Sprintf("dlogits of gate %d against float64", gi))
			}
		})
	}
}

// TestGatesBackwardShapes: inconsistent arguments panic with the op's name
// instead of reading past a tensor.
func TestGatesBackwardShapes(t *testing.T) {
	cpu := kernels.NewCPU(1)
	c := gatesPassCase{rows: 4, d: 8, nexp: 3, lists: allExperts(2, 3), fold: 2}
	for _, tc := range []struct {
		name string
		bad  func(p *kernels.GatesBackward)
	}{
		{"list out of range", func(p *kernels.GatesBackward) { p.Lists = [][]int{{0, 1, 3}, {0, 1, 2}} }},
		{"short expert", func(p *kernels.GatesBackward) { p.Experts[1] = cpu.Alloc(kernels.Float32, 3, 8) }},
		{"missing temperature", func(p *kernels.GatesBackward) { p.Temperatures = p.Temperatures[:1] }},
		{"weights of another width", func(p *kernels.GatesBackward) { p.Ws[0] = cpu.Alloc(kernels.Float32, 4, 2) }},
		{"bias gradient of another width", func(p *kernels.GatesBackward) { p.DB[2] = cpu.Alloc(kernels.Float32, 7) }},
		{"fold of another activation", func(p *kernels.GatesBackward) { p.Act = kernels.Activation(99) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGatesPass(cpu, c)
			tc.bad(&g.p)
			defer func() {
				msg, _ := recover().(string)
				require.Contains(t, msg, "kernels: GatesBackward: ")
			}()
			cpu.GatesBackward(&g.p)
		})
	}
}

// BenchmarkGatesBackward: a training shard's gates backward (256 rows,
// experts of width 64, one thread as in a shard), the separate passes it
// replaces (GateSetsCombineBackward, SoftmaxBackward per gate, the
// experts' ActBiasGrad) against GatesBackward, for mmoe's gates (5 over 4
// experts) and cgc's and ple's (5 task gates over 1 expert each and 2
// shared, and the shared gate).
func BenchmarkGatesBackward(b *testing.B) {
	for _, bc := range []struct {
		name  string
		nexp  int
		lists [][]int
	}{{"mmoe", 4, allExperts(5, 4)}, {"cgc", 7, cgcLists(5, 1, 2)}} {
		const rows, d = 256, 64
		cpu := kernels.NewCPU(1)
		g := newGatesPass(cpu, gatesPassCase{rows: rows, d: d, nexp: bc.nexp, lists: bc.lists, fold: 2})
		// the experts as views of stacked tensors, as in a model
		const st = rows * d
		y, dy := cpu.Alloc(kernels.Float32, bc.nexp, rows, d), cpu.Alloc(kernels.Float32, bc.nexp, rows, d)
		db := cpu.Alloc(kernels.Float32, bc.nexp, d)
		for e := 0; e < bc.nexp; e++ {
			copy(y.F32[e*st:], g.experts[e])
			g.p.Experts[e], g.p.DExperts[e] = y.View(e*st, rows, d), dy.View(e*st, rows, d)
			g.p.DB[e] = db.View(e*d, d)
		}
		var xs, dxs [][]*kernels.Tensor
		for _, l := range bc.lists {
			var a, da []*kernels.Tensor
			for _, e := range l {
				a, da = append(a, g.p.Experts[e]), append(da, g.p.DExperts[e])
			}
			xs, dxs = append(xs, a), append(dxs, da)
		}
		b.Run(bc.name+"/separate", func(b *testing.B) {
			for range b.N {
				cpu.GateSetsCombineBackward(g.p.DOuts, g.p.Ws, g.p.DLogits, xs, dxs)
				for i := range g.p.DLogits {
					cpu.SoftmaxBackward(g.p.DLogits[i], g.p.DLogits[i], g.p.Ws[i], 1)
				}
				cpu.ActBiasGrad(dy, y, kernels.ReLU, db, bc.nexp, false)
			}
		})
		b.Run(bc.name+"/pass", func(b *testing.B) {
			for range b.N {
				cpu.GatesBackward(&g.p)
			}
		})
	}
}
