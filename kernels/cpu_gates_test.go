package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
)

// plainDevice hides every optional capability of the CPU: only the Device
// methods are reachable through it.
type plainDevice struct{ kernels.Device }

// TestGatesCombineBackward runs the combine backward of several gates over
// the same experts in one pass and checks it bit for bit against the
// composed path (zeroed expert gradients, then GateCombineBackward gate
// after gate) and the expert gradients against sums written out here, in
// float32 in gate order. The expert gradients hold NaN before the call, so
// a pass that added into them instead of writing them shows; some rows of
// dout are zero under negative weights, whose products are -0 and must come
// out as the +0 of the addition into zeros.
func TestGatesCombineBackward(t *testing.T) {
	cases := []struct{ rows, d, ne, gates, threads int }{
		{1, 3, 1, 1, 1},
		{5, 16, 4, 2, 1},
		{33, 20, 5, 5, 1},  // a block of 32 rows and one more; experts 0-3 and 4
		{70, 64, 4, 5, 2},  // mmoe's shape, split over two threads
		{64, 17, 9, 3, 2},  // three chunks of experts, a scalar tail
		{129, 64, 4, 1, 2}, // one gate: the pass only writes
		{100, 40, 2, 4, 2}, // fewer than 4 experts
		{32, 128, 6, 2, 1}, // exactly one block
		{31, 8, 3, 3, 2},   // less than one block
		{96, 33, 7, 2, 2},  // tails everywhere
		{200, 64, 4, 5, 1}, // several blocks in one thread
		{2, 1, 1, 2, 2},    // width 1
	}
	for _, c := range cases {
		name := fmt.Sprintf("rows%d_d%d_e%d_g%d_t%d", c.rows, c.d, c.ne, c.gates, c.threads)
		t.Run(name, func(t *testing.T) {
			cpu := kernels.NewCPU(c.threads)
			rng := newRNG(uint64(c.rows*1000 + c.d*10 + c.ne))
			experts := make([]*kernels.Tensor, c.ne)
			for e := range experts {
				experts[e] = tensor(cpu, randSlice(rng, c.rows*c.d, -1, 1), c.rows, c.d)
			}
			douts := make([]*kernels.Tensor, c.gates)
			ws := make([]*kernels.Tensor, c.gates)
			for g := range douts {
				dh := randSlice(rng, c.rows*c.d, -1, 1)
				wh := randSlice(rng, c.rows*c.ne, -1, 1)
				if g == 0 {
					// row 0 of gate 0: zero gradient under negative weights
					for j := 0; j < c.d; j++ {
						dh[j] = 0
					}
					for e := 0; e < c.ne; e++ {
						wh[e] = -0.5
					}
				}
				douts[g] = tensor(cpu, dh, c.rows, c.d)
				ws[g] = tensor(cpu, wh, c.rows, c.ne)
			}
			newGrads := func(fill float32) ([]*kernels.Tensor, []*kernels.Tensor) {
				dws := make([]*kernels.Tensor, c.gates)
				for g := range dws {
					dws[g] = cpu.Alloc(kernels.Float32, c.rows, c.ne)
					cpu.Fill(dws[g], fill)
				}
				dex := make([]*kernels.Tensor, c.ne)
				for e := range dex {
					dex[e] = cpu.Alloc(kernels.Float32, c.rows, c.d)
					cpu.Fill(dex[e], fill)
				}
				return dws, dex
			}
			nan := float32(math.NaN())
			dwsGot, dexGot := newGrads(nan)
			kernels.GatesCombineBackward(cpu, douts, ws, dwsGot, experts, dexGot)
			dwsWant, dexWant := newGrads(nan)
			kernels.GatesCombineBackward(plainDevice{cpu}, douts, ws, dwsWant, experts, dexWant)

			for g := range dwsGot {
				requireSameBits(t, dwsWant[g].F32, dwsGot[g].F32, "dw of gate %d", g)
			}
			for e := range dexGot {
				requireSameBits(t, dexWant[e].F32, dexGot[e].F32, "gradient of expert %d", e)
				want := make([]float32, c.rows*c.d)
				for b := 0; b < c.rows; b++ {
					for j := 0; j < c.d; j++ {
						var acc float32
						for g := range douts {
							// the conversion rounds the product on its own
							acc += float32(ws[g].F32[b*c.ne+e] * douts[g].F32[b*c.d+j])
						}
						want[b*c.d+j] = acc
					}
				}
				requireSameBits(t, want, dexGot[e].F32, "gradient of expert %d against the sum in gate order", e)
			}
			for g := range dwsGot {
				want := make([]float32, c.rows*c.ne)
				for b := 0; b < c.rows; b++ {
					for e := 0; e < c.ne; e++ {
						var s float64
						for j := 0; j < c.d; j++ {
							s += float64(douts[g].F32[b*c.d+j]) * float64(experts[e].F32[b*c.d+j])
						}
						want[b*c.ne+e] = float32(s)
					}
				}
				assertClose(t, want, dwsGot[g].F32, 1e-5, fmt.Sprintf("dw of gate %d against float64 dots", g))
			}
		})
	}
}

func requireSameBits(t *testing.T, want, got []float32, format string, args ...any) {
	t.Helper()
	require.Equal(t, len(want), len(got), fmt.Sprintf(format, args...))
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			t.Fatalf("%s: element %d is %g (%#08x), want %g (%#08x)", fmt.Sprintf(format, args...), i,
				got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

// TestGatesCombineBackwardShapes: mismatched shapes panic with the op's name
// instead of reading past a tensor.
func TestGatesCombineBackwardShapes(t *testing.T) {
	cpu := kernels.NewCPU(1)
	t2 := func(r, c int) *kernels.Tensor { return cpu.Alloc(kernels.Float32, r, c) }
	ex := []*kernels.Tensor{t2(4, 8), t2(4, 8)}
	ok := func() ([]*kernels.Tensor, []*kernels.Tensor, []*kernels.Tensor, []*kernels.Tensor) {
		return []*kernels.Tensor{t2(4, 8), t2(4, 8)}, []*kernels.Tensor{t2(4, 2), t2(4, 2)},
			[]*kernels.Tensor{t2(4, 2), t2(4, 2)}, []*kernels.Tensor{t2(4, 8), t2(4, 8)}
	}
	cases := map[string]func(){
		"no gates": func() { cpu.GatesCombineBackward(nil, nil, nil, ex, nil) },
		"weights for one gate of two": func() {
			d, w, dw, dx := ok()
			cpu.GatesCombineBackward(d, w[:1], dw, ex, dx)
		},
		"dw of the wrong size": func() {
			d, w, dw, dx := ok()
			dw[1] = t2(4, 3)
			cpu.GatesCombineBackward(d, w, dw, ex, dx)
		},
		"gradient of another batch": func() {
			d, w, dw, dx := ok()
			d[1] = t2(3, 8)
			cpu.GatesCombineBackward(d, w, dw, ex, dx)
		},
		"one expert gradient for two experts": func() {
			d, w, dw, dx := ok()
			cpu.GatesCombineBackward(d, w, dw, ex, dx[:1])
		},
		"expert gradient of the wrong size": func() {
			d, w, dw, dx := ok()
			dx[0] = t2(4, 7)
			cpu.GatesCombineBackward(d, w, dw, ex, dx)
		},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				r := recover()
				require.NotNil(t, r, "no panic")
				require.Contains(t, fmt.Sprint(r), "GatesCombineBackward")
			}()
			f()
		})
	}
}

// TestGateSetsCombineBackward runs the combine backward of CGC/PLE-style
// gates (task gate t over task t's experts and the shared ones, then a
// shared gate over all of them, or none as at PLE's last level) in one pass
// and checks it bit for bit against zeroed expert gradients and
// GateCombineBackward gate after gate, and the expert gradients against
// sums written out here in gate order. Expert chunks of 4 mix experts a gate
// writes first with experts an earlier gate wrote; the gradients hold NaN
// before the call; zero rows of dout under negative weights give -0
// products, which must come out +0.
func TestGateSetsCombineBackward(t *testing.T) {
	cases := []struct{ rows, d, tasks, nt, ns, threads int }{
		{70, 64, 5, 1, 2, 2},  // cgc's shape, split over two threads
		{200, 64, 4, 1, 2, 1}, // several blocks in one thread
		{33, 20, 2, 2, 3, 1},  // task 1's first chunk: its own (first) and shared experts
		{31, 17, 3, 5, 0, 2},  // no shared experts: every task gate writes its own
		{96, 33, 2, 3, 6, 2},  // chunks of 4 across the own/shared boundary, tails
		{1, 8, 1, 1, 1, 1},
	}
	for _, c := range cases {
		for _, sharedGate := range []bool{true, false} {
			name := fmt.Sprintf("rows%d_d%d_tasks%d_nt%d_ns%d_shared%v_t%d", c.rows, c.d, c.tasks, c.nt, c.ns, sharedGate, c.threads)
			t.Run(name, func(t *testing.T) {
				cpu := kernels.NewCPU(c.threads)
				rng := newRNG(uint64(c.rows*1000 + c.d*10 + c.nt))
				ne := c.tasks*c.nt + c.ns
				experts := make([]*kernels.Tensor, ne)
				for e := range experts {
					experts[e] = tensor(cpu, randSlice(rng, c.rows*c.d, -1, 1), c.rows, c.d)
				}
				// lists[g]: the experts (indices) of gate g
				var lists [][]int
				for tk := range c.tasks {
					var l []int
					for i := range c.nt {
						l = append(l, tk*c.nt+i)
					}
					for i := range c.ns {
						l = append(l, c.tasks*c.nt+i)
					}
					lists = append(lists, l)
				}
				if sharedGate {
					var l []int
					for e := range ne {
						l = append(l, e)
					}
					lists = append(lists, l)
				}
				gates := len(lists)
				douts, ws := make([]*kernels.Tensor, gates), make([]*kernels.Tensor, gates)
				exLists := make([][]*kernels.Tensor, gates)
				for g, l := range lists {
					dh := randSlice(rng, c.rows*c.d, -1, 1)
					wh := randSlice(rng, c.rows*len(l), -1, 1)
					if g == gates-1 {
						for j := 0; j < c.d; j++ {
							dh[j] = 0
						}
						for i := range l {
							wh[i] = -0.5
						}
					}
					douts[g], ws[g] = tensor(cpu, dh, c.rows, c.d), tensor(cpu, wh, c.rows, len(l))
					for _, e := range l {
						exLists[g] = append(exLists[g], experts[e])
					}
				}
				nan := float32(math.NaN())
				newGrads := func() ([]*kernels.Tensor, []*kernels.Tensor, [][]*kernels.Tensor) {
					dws := make([]*kernels.Tensor, gates)
					for g, l := range lists {
						dws[g] = cpu.Alloc(kernels.Float32, c.rows, len(l))
						cpu.Fill(dws[g], nan)
					}
					dex := make([]*kernels.Tensor, ne)
					for e := range dex {
						dex[e] = cpu.Alloc(kernels.Float32, c.rows, c.d)
						cpu.Fill(dex[e], nan)
					}
					dl := make([][]*kernels.Tensor, gates)
					for g, l := range lists {
						for _, e := range l {
							dl[g] = append(dl[g], dex[e])
						}
					}
					return dws, dex, dl
				}
				dwsGot, dexGot, dlGot := newGrads()
				cpu.GateSetsCombineBackward(douts, ws, dwsGot, exLists, dlGot)
				dwsWant, dexWant, dlWant := newGrads()
				for _, x := range dexWant {
					cpu.Zero(x)
				}
				for g := range lists {
					cpu.GateCombineBackward(douts[g], ws[g], exLists[g], dwsWant[g], dlWant[g])
				}
				for g := range dwsGot {
					requireSameBits(t, dwsWant[g].F32, dwsGot[g].F32, "dw of gate %d", g)
				}
				for e := range dexGot {
					requireSameBits(t, dexWant[e].F32, dexGot[e].F32, "gradient of expert %d", e)
					want := make([]float32, c.rows*c.d)
					for b := 0; b < c.rows; b++ {
						for j := 0; j < c.d; j++ {
							var acc float32
							for g, l := range lists {
								for i, le := range l {
									if le == e {
										acc += float32(ws[g].F32[b*len(l)+i] * douts[g].F32[b*c.d+j])
									}
								}
							}
							want[b*c.d+j] = acc
						}
					}
					requireSameBits(t, want, dexGot[e].F32, "gradient of expert %d against the sum in gate order", e)
				}
			})
		}
	}
}
