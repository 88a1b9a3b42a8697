package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// pfStream is a stream of a RowPrefetch as the tests build it.
type pfStream struct {
	t   *Tensor
	ids []int32
}

// wantLines is, computed without the list, the first cache-line address
// of each line that requesting the first units units of streams touches,
// with the row it belongs to ([lo, hi) bytes): one per line a row overlaps,
// ids outside the tensor skipped.
func wantLines(streams []pfStream, units int64) (lines, lo, hi []uintptr) {
	for _, s := range streams {
		dim := s.t.Cols()
		rows := s.t.Len() / dim
		base := uintptr(unsafe.Pointer(&s.t.F32[0]))
		for _, id := range s.ids {
			if units == 0 {
				return
			}
			units--
			if id < 0 || int(id) >= rows {
				continue
			}
			a := base + uintptr(int(id)*4*dim)
			e := a + uintptr(4*dim)
			for line := a &^ 63; line < e; line += 64 {
				lines, lo, hi = append(lines, line), append(lo, a), append(hi, e)
			}
		}
	}
	return
}

func newPrefetch(streams []pfStream) *RowPrefetch {
	l := NewRowPrefetch()
	for _, s := range streams {
		l.Add(s.t, s.ids)
	}
	return l
}

// TestRowPrefetchLines checks the addresses a list requests: every line of
// each row of each stream once per id, in order, only addresses inside the
// row, ids outside the tensor skipped; and that Flush requests them all.
func TestRowPrefetchLines(t *testing.T) {
	c := NewCPU(1)
	rng := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct {
		rows, dim, states int
		ids               []int32
	}{
		{rows: 10, dim: 40, states: 2},                                    // empty list
		{rows: 10, dim: 40, states: 2, ids: []int32{9}},                   // the last row
		{rows: 1, dim: 1, states: 1, ids: []int32{0, 0}},                  // a table smaller than a line
		{rows: 5, dim: 3, states: 0, ids: []int32{4, 0, 2, 4}},            // rows sharing lines
		{rows: 7, dim: 16, states: 2, ids: []int32{6, 0, 3}},              // a line a row (if aligned)
		{rows: 9, dim: 17, states: 1, ids: []int32{8, 1, -1, 9, 1 << 30}}, // outside the table: skipped
		{rows: 1000, dim: 48, states: 2, ids: nil},                        // random below
		{rows: 3000, dim: 40, states: 1, ids: nil},
	} {
		ids := tc.ids
		if ids == nil && tc.rows >= 1000 {
			for range 300 {
				ids = append(ids, int32(rng.IntN(tc.rows)))
			}
			ids = append(ids, int32(tc.rows-1))
		}
		name := fmt.Sprintf("rows%d_dim%d_states%d_ids%d", tc.rows, tc.dim, tc.states, len(ids))
		t.Run(name, func(t *testing.T) {
			var streams []pfStream
			for range 1 + tc.states {
				streams = append(streams, pfStream{c.Alloc(Float32, tc.rows, tc.dim), ids})
			}
			l := newPrefetch(streams)
			defer l.Release()
			units := int64(len(ids) * (1 + tc.states))
			require.Equal(t, units, l.Units())
			for _, u := range []int64{0, units / 3, units} {
				lines, lo, hi := wantLines(streams, u)
				got := l.addresses(0, u)
				require.Len(t, got, len(lines), "units [0, %d)", u)
				for i, a := range got {
					require.Equal(t, lines[i], a&^63, "line %d", i)
					require.True(t, a >= lo[i] && a < hi[i], "line %d: address %#x outside the row [%#x, %#x)", i, a, lo[i], hi[i])
				}
			}
			lines, _, _ := wantLines(streams, units)
			l.Flush()
			gu, gl := l.Issued()
			require.Equal(t, units, gu)
			require.Equal(t, int64(len(lines)), gl)
			l.Flush() // nothing left
			gu, gl = l.Issued()
			require.Equal(t, units, gu)
			require.Equal(t, int64(len(lines)), gl)
		})
	}
}

// TestGemmPrefetchSameBits runs the GEMMs (plain, transposed operands, the
// data gradient with its epilogue) with and without an armed prefetch list
// at every kernel level and thread count: the same bits, and the list pays
// for the small kernels' calls as their shape says, each unit requested once.
func TestGemmPrefetchSameBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	defer setGemmLevel(gemmLevel)
	for _, lt := range levelsThreads() {
		l, th := lt[0], lt[1]
		setGemmLevel(l)
		c := NewCPU(th)
		table := c.Alloc(Float32, 2000, 40)
		m, v := c.Alloc(Float32, 2000, 40), c.Alloc(Float32, 2000, 40)
		ids := make([]int32, 700)
		for i := range ids {
			ids[i] = int32(rng.IntN(2000))
		}
		ids[len(ids)-1] = 1999
		streams := []pfStream{{table, ids}, {m, ids}, {v, ids}}
		for _, s := range gemmShapes {
			for _, op := range []struct {
				ta, tb, grad bool
			}{{false, false, false}, {true, false, false}, {false, true, false}, {false, true, true}} {
				name := fmt.Sprintf("level%d_threads%d_m%d_n%d_k%d_ta%v_tb%v_grad%v", l, th, s.m, s.n, s.k, op.ta, op.tb, op.grad)
				ar, ac := s.m, s.k
				if op.ta {
					ar, ac = s.k, s.m
				}
				br, bc := s.k, s.n
				if op.tb {
					br, bc = s.n, s.k
				}
				a := WrapF32(c, randF32(rng, ar*ac, -1, 1), ar, ac)
				b := WrapF32(c, randF32(rng, br*bc, -1, 1), br, bc)
				y := WrapF32(c, randF32(rng, s.m*s.n, -1, 1), s.m, s.n)
				run := func(pf *RowPrefetch) (*Tensor, *Tensor) {
					out, db := c.Alloc(Float32, s.m, s.n), c.Alloc(Float32, s.n)
					c.SetRowPrefetch(pf)
					defer c.SetRowPrefetch(nil)
					if op.grad {
						c.GemmActBiasGrad(a, b, y, ReLU, out, db)
					} else {
						c.Gemm(op.ta, op.tb, 1, a, b, 0, out)
					}
					return out, db
				}
				want, wantDB := run(nil)
				pf := newPrefetch(streams)
				pf.SetPace(97)
				got, gotDB := run(pf)
				requireBits(t, want.F32, got.F32, name)
				requireBits(t, wantDB.F32, gotDB.F32, name+": db")
				units := int64(0)
				if l > 0 && smallGemm(op.ta, op.tb, s.m, s.n, s.k) {
					// one unit per 97 multiply-adds, at most 2 per 6 x 64 tile of C
					tiles := int64((s.m+5)/6) * int64((s.n+63)/64)
					units = min(int64(s.m)*int64(s.n)*int64(s.k)/97, 2*tiles, pf.Units())
				}
				lines, _, _ := wantLines(streams, units)
				gu, gl := pf.Issued()
				require.Equal(t, units, gu, name)
				require.Equal(t, int64(len(lines)), gl, name)
				// disarmed: pays nothing
				run(nil)
				gu2, gl2 := pf.Issued()
				require.Equal(t, [2]int64{gu, gl}, [2]int64{gu2, gl2}, name)
				pf.Release()
			}
		}
	}
}

// levelsThreads lists each small-GEMM kernel level from the CPU's down to 0
// (OpenBLAS), with 1 and 2 threads.
func levelsThreads() [][2]int {
	var out [][2]int
	for l := gemmLevel; l >= 0; l-- {
		out = append(out, [2]int{l, 1}, [2]int{l, 2})
	}
	return out
}

// TestGemmPrefetchDrains: GEMMs with more work than the list needs request
// every unit of it once (the list drained fully), and later GEMMs nothing.
func TestGemmPrefetchDrains(t *testing.T) {
	if gemmLevel == 0 {
		t.Skip("no small-GEMM kernels on this CPU")
	}
	rng := rand.New(rand.NewPCG(13, 14))
	for _, th := range []int{1, 2} {
		c := NewCPU(th)
		table := c.Alloc(Float32, 100, 48)
		acc := c.Alloc(Float32, 100, 48)
		ids := []int32{99, 0, 50, 99, 3}
		streams := []pfStream{{table, ids}, {acc, ids}}
		pf := newPrefetch(streams)
		pf.SetPace(1000)
		a := WrapF32(c, randF32(rng, 256*64, -1, 1), 256, 64)
		b := WrapF32(c, randF32(rng, 64*128, -1, 1), 64, 128)
		out := c.Alloc(Float32, 256, 128)
		c.SetRowPrefetch(pf)
		for range 3 {
			c.Gemm(false, false, 1, a, b, 0, out) // 2 M multiply-adds each
		}
		c.SetRowPrefetch(nil)
		lines, _, _ := wantLines(streams, pf.Units())
		gu, gl := pf.Issued()
		require.Equal(t, pf.Units(), gu)
		require.Equal(t, int64(len(lines)), gl)
		pf.Release()
	}
}
