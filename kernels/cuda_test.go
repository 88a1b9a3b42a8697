//go:build cuda

package kernels_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/cublas"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/kernels/kerneltest"
)

// newCUDA opens GPU 0 or skips the test when the machine has none. Close
// runs at cleanup and fails the test if tensors were left allocated.
func newCUDA(t testing.TB) *kernels.CUDA {
	t.Helper()
	d, err := kernels.NewCUDA(0)
	if err != nil {
		if errors.Is(err, cublas.ErrNoDevice) {
			t.Skipf("no usable CUDA device: %v", err)
		}
		t.Fatalf("NewCUDA(0): %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// emulated reports whether the tests run on the emulated device of
// build/cuda-emu (make test-emulated-gpu).
func emulated(t testing.TB) bool {
	t.Helper()
	d := newCUDA(t)
	return strings.HasPrefix(d.Info().Name, "mtlcuda emulated device")
}

// size returns full on a GPU and small on the emulated device, which runs
// every thread of a launch on the host: the large shapes exercise grid-stride
// loops and per-launch limits that the emulated device (2 SMs, so at most 32
// blocks per grid-stride launch) reaches at the small sizes already.
func size(t testing.TB, full, small int) int {
	if emulated(t) {
		return small
	}
	return full
}

// Without a GPU (CI) the constructor must fail cleanly and say why; with
// one, an index past the last device must fail the same way.
func TestCUDAConstructorErrors(t *testing.T) {
	n, cerr := cublas.DeviceCount()
	_, err := kernels.NewCUDA(n) // one past the last device (0 when there is none)
	require.Error(t, err)
	assert.ErrorIs(t, err, cublas.ErrNoDevice)
	assert.Contains(t, err.Error(), fmt.Sprintf("CUDA device %d", n))
	if n == 0 {
		t.Logf("no CUDA device (%v): %v", cerr, err)
		dev, err := kernels.NewCUDADevice(0)
		require.Error(t, err)
		assert.Nil(t, dev)
		assert.ErrorIs(t, err, cublas.ErrNoDevice)
	} else {
		assert.Contains(t, err.Error(), "does not exist")
	}
	_, err = kernels.NewCUDA(-1)
	assert.ErrorIs(t, err, cublas.ErrNoDevice)
}

// Every op of the Device interface against the CPU device on the shared
// case tables.
func TestCUDACompareDevices(t *testing.T) {
	d := newCUDA(t)
	t.Logf("%s: %+v", d.Name(), d.Info())
	kerneltest.CompareDevices(t, kernels.NewCPU(2), d)
	require.Zero(t, d.LiveTensors(), "CompareDevices released everything")
}

// rig is the parity harness (kerneltest.Harness) over a CPU device and a
// CUDA device, keeping both typed for the methods beyond Device.
type rig struct {
	*kerneltest.Harness
	cpu *kernels.CPU
	gpu *kernels.CUDA
}

func newRig(t *testing.T, seed uint64) *rig {
	cpu, gpu := kernels.NewCPU(2), newCUDA(t)
	return &rig{Harness: kerneltest.NewHarness(t, cpu, gpu, seed), cpu: cpu, gpu: gpu}
}

// gpuF32 copies a GPU tensor to the host.
func (r *rig) gpuF32(x *kernels.Tensor) []float32 { return kerneltest.Download(r.gpu, x) }

// Shapes of a training step at batch 65536 and beyond the per-launch limits
// of the library (experts, multi-tensor optimizer, reduction blocks), which
// the shared case tables do not reach.
func TestCUDALargeShapes(t *testing.T) {
	B := size(t, 65536, 4096)

	t.Run("BiasActBiasGrad", func(t *testing.T) {
		r := newRig(t, 1)
		x := r.RandF(4, B, 64)
		bias := r.RandF(4, 64)
		r.cpu.BiasAct(x.Ref, bias.Ref, 4, kernels.ReLU)
		r.gpu.BiasAct(x.Dev, bias.Dev, 4, kernels.ReLU)
		r.CheckRel("BiasAct", x, 1e-6)
		db := r.RandF(4, 64)
		r.cpu.BiasGrad(x.Ref, db.Ref, 4, true)
		r.gpu.BiasGrad(x.Dev, db.Dev, 4, true)
		r.CheckRel("BiasGrad", db, 1e-4)
	})
	t.Run("Losses", func(t *testing.T) {
		r := newRig(t, 2)
		n := size(t, 1<<20, 1<<16) // more blocks than the reduction keeps partials for (on a GPU)
		z := r.F32(r.Uniform(n, -30, 30), n)
		y := r.F32(r.Uniform(n, 0, 1), n)
		w := r.F32(r.Uniform(n, 0, 2), n)
		dz := r.F32(make([]float32, n), n)
		loss := r.F32([]float32{0.5}, 1)
		r.cpu.BCEWithLogits(loss.Ref, dz.Ref, z.Ref, y.Ref, w.Ref, 1.0/float32(n))
		r.gpu.BCEWithLogits(loss.Dev, dz.Dev, z.Dev, y.Dev, w.Dev, 1.0/float32(n))
		r.CheckRel("BCE dz", dz, 1e-5)
		r.cpu.MSE(loss.Ref, dz.Ref, z.Ref, y.Ref, nil, 1e-3)
		r.gpu.MSE(loss.Dev, dz.Dev, z.Dev, y.Dev, nil, 1e-3)
		r.CheckRel("MSE dz", dz, 1e-5)
		r.cpu.SumSquares(loss.Ref, z.Ref, 1e-6)
		r.gpu.SumSquares(loss.Dev, z.Dev, 1e-6)
		r.CheckRel("loss", loss, 1e-6) // float64 sums on both sides
	})
	t.Run("SoftmaxGate", func(t *testing.T) {
		r := newRig(t, 3)
		B := size(t, 16384, 1024)
		const E, D = 40, 24 // 40 experts: two launches of at most 32
		logits := r.F32(r.Uniform(B*E, -8, 8), B, E)
		w := r.F32(make([]float32, B*E), B, E)
		r.cpu.SoftmaxRows(w.Ref, logits.Ref, 0.7)
		r.gpu.SoftmaxRows(w.Dev, logits.Dev, 0.7)
		r.CheckRel("softmax", w, 1e-5)
		experts := r.RandF(E, B, D)
		out := r.RandF(B, D)
		var exC, exG, dexC, dexG []*kernels.Tensor
		dex := r.RandF(E, B, D)
		for e := range E {
			exC = append(exC, experts.Ref.View(e*B*D, B, D))
			exG = append(exG, experts.Dev.View(e*B*D, B, D))
			dexC = append(dexC, dex.Ref.View(e*B*D, B, D))
			dexG = append(dexG, dex.Dev.View(e*B*D, B, D))
		}
		r.cpu.GateCombine(out.Ref, w.Ref, exC)
		r.gpu.GateCombine(out.Dev, w.Dev, exG)
		r.CheckRel("GateCombine", out, 1e-4)
		dw := r.RandF(B, E)
		r.cpu.GateCombineBackward(out.Ref, w.Ref, exC, dw.Ref, dexC)
		r.gpu.GateCombineBackward(out.Dev, w.Dev, exG, dw.Dev, dexG)
		r.CheckRel("GateCombineBackward dw", dw, 1e-4)
		r.CheckRel("GateCombineBackward dexperts", dex, 1e-4)
		dl := r.RandF(B, E)
		r.cpu.SoftmaxBackward(dl.Ref, dw.Ref, w.Ref, 0.7)
		r.gpu.SoftmaxBackward(dl.Dev, dw.Dev, w.Dev, 0.7)
		r.CheckRel("SoftmaxBackward", dl, 1e-4)
	})
	t.Run("AdamMulti", func(t *testing.T) {
		r := newRig(t, 4)
		var ps, gs, ms, vs []kerneltest.Pair
		for i := range 60 { // more than one launch's 48 tensors
			n := 1 + i*517 // chunk boundaries fall inside tensors
			ps = append(ps, r.RandF(n))
			gs = append(gs, r.RandF(n))
			ms = append(ms, r.F32(make([]float32, n), n))
			vs = append(vs, r.F32(make([]float32, n), n))
		}
		side := func(ws []kerneltest.Pair, gpu bool) []*kernels.Tensor {
			var out []*kernels.Tensor
			for _, w := range ws {
				if gpu {
					out = append(out, w.Dev)
				} else {
					out = append(out, w.Ref)
				}
			}
			return out
		}
		for step := 1; step <= 2; step++ {
			p := kernels.AdamParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: 1e-3, Step: step}
			r.cpu.AdamMulti(side(ps, false), side(gs, false), side(ms, false), side(vs, false), p)
			r.gpu.AdamMulti(side(ps, true), side(gs, true), side(ms, true), side(vs, true), p)
		}
		for i := range ps {
			r.CheckRel(fmt.Sprintf("param%d", i), ps[i], 1e-4)
			r.CheckRel(fmt.Sprintf("v%d", i), vs[i], 1e-4)
		}
	})
	t.Run("EmbeddingBackward", func(t *testing.T) {
		r := newRig(t, 5)
		const rows, dim, n = 1_000_003, 40, 200_000 // dim 40: two column passes of a warp
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(r.Rand().IntN(rows/100)) * 100 // many duplicates
			if i%10 == 0 {
				ids[i] = 4242 // a hot row: summed in pieces
			}
		}
		idt := r.I32(ids, n)
		dout := r.RandF(n, dim+3)
		gc := kernels.SparseGrad{Rows: r.cpu.Alloc(kernels.Int32, n), Values: r.cpu.Alloc(kernels.Float32, n, dim)}
		gg := kernels.SparseGrad{Rows: r.gpu.Alloc(kernels.Int32, n), Values: r.gpu.Alloc(kernels.Float32, n, dim)}
		r.Own(gc.Rows, gc.Values, gg.Rows, gg.Values)
		r.cpu.EmbeddingBackward(&gc, dout.Ref, 2, idt.Ref, nil, kernels.Mean, rows)
		r.gpu.EmbeddingBackward(&gg, dout.Dev, 2, idt.Dev, nil, kernels.Mean, rows)
		r.Sync()
		require.Equal(t, gc.N, gg.N)
		rowsG := make([]int32, gg.N)
		r.gpu.CopyToHostI32(rowsG, gg.Rows.View(0, gg.N))
		require.Equal(t, gc.Rows.I32[:gc.N], rowsG)
		// A row's value sums its ids' gradients in a different order on
		// each device. Beyond the default tolerance, allow the usual
		// statistical bound of float32 summation, 4*u*sqrt(k)*||terms||
		// (k terms, u = 2^-24), which matters for the hot row's 20000.
		at := map[int32]int{}
		for j, row := range gc.Rows.I32[:gc.N] {
			at[row] = j
		}
		host := kerneltest.Download(r.cpu, dout.Ref)
		count := make([]float64, gc.N)
		sumSq := make([]float64, gc.N*dim)
		for i, id := range ids {
			j := at[id]
			count[j]++
			for c := range dim {
				v := float64(host[i*(dim+3)+2+c])
				sumSq[j*dim+c] += v * v
			}
		}
		r.CheckTol("values", kerneltest.Pair{Ref: gc.Values.View(0, gc.N*dim), Dev: gg.Values.View(0, gg.N*dim)}, func(i int) float64 {
			return 4 * 0x1p-24 * math.Sqrt(count[i/dim]*sumSq[i])
		})
	})
}

// The id check reports like the CPU device, immediately by default and at
// Sync when deferred; malformed offsets are reported too.
func TestCUDAIDChecks(t *testing.T) {
	r := newRig(t, 2)
	table := r.RandF(5, 4)
	out := r.RandF(4, 4)
	bad := r.I32([]int32{0, 7, 2, -1}, 4)
	good := r.I32([]int32{0, 1, 2, 3}, 4)

	want := r.cpu.EmbeddingGather(out.Ref, 0, table.Ref, bad.Ref, nil, kernels.Sum)
	var wantErr *kernels.IDRangeError
	require.ErrorAs(t, want, &wantErr)

	got := r.gpu.EmbeddingGather(out.Dev, 0, table.Dev, bad.Dev, nil, kernels.Sum)
	var gotErr *kernels.IDRangeError
	require.ErrorAs(t, got, &gotErr)
	assert.Equal(t, *wantErr, *gotErr)
	require.NoError(t, r.gpu.Sync(), "an immediate error is not reported twice")

	r.gpu.SetImmediateIDCheck(false)
	defer r.gpu.SetImmediateIDCheck(true)
	require.NoError(t, r.gpu.EmbeddingGather(out.Dev, 0, table.Dev, good.Dev, nil, kernels.Sum))
	require.NoError(t, r.gpu.EmbeddingGather(out.Dev, 0, table.Dev, bad.Dev, nil, kernels.Sum), "deferred")
	big := r.RandF(100, 4)
	require.NoError(t, r.gpu.EmbeddingGather(out.Dev, 0, big.Dev, r.I32([]int32{0, 1, 200, 3}, 4).Dev, nil, kernels.Sum))
	err := r.gpu.Sync()
	require.ErrorAs(t, err, &gotErr)
	assert.Equal(t, *wantErr, *gotErr, "the earliest failing gather is reported")
	require.NoError(t, r.gpu.Sync(), "Sync clears the error")
	require.NoError(t, r.gpu.EmbeddingGather(out.Dev, 0, table.Dev, good.Dev, nil, kernels.Sum))
	require.NoError(t, r.gpu.Sync())

	r.gpu.SetImmediateIDCheck(true)
	ids := r.I32([]int32{0, 1, 2, 3}, 4)
	offs := r.I32([]int32{0, 3, 1, 4, 4}, 5) // decreases at row 1
	err = r.gpu.EmbeddingGather(out.Dev, 0, table.Dev, ids.Dev, offs.Dev, kernels.Mean)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "row 1")
	require.NoError(t, r.gpu.Sync())
}

// host reference of a fused update: the summed sparse gradient of all
// sources (from the CPU device's EmbeddingBackward), applied with the CPU
// device's sparse optimizer.
func fusedReference(t *testing.T, cpu *kernels.CPU, tableRows, dim int, srcs []kernels.EmbeddingSource,
	apply func(g *kernels.SparseGrad)) {
	acc := map[int32][]float32{}
	for _, s := range srcs {
		n := s.IDs.Len()
		g := kernels.SparseGrad{Rows: cpu.Alloc(kernels.Int32, n), Values: cpu.Alloc(kernels.Float32, n, dim)}
		cpu.EmbeddingBackward(&g, s.Dout, s.Col, s.IDs, s.Offsets, s.Comb, tableRows)
		for i, row := range g.Rows.I32[:g.N] {
			v := acc[row]
			if v == nil {
				v = make([]float32, dim)
			}
			for j := range dim {
				v[j] += g.Values.F32[i*dim+j]
			}
			acc[row] = v
		}
	}
	rows := make([]int32, 0, len(acc))
	for row := range acc {
		rows = append(rows, row)
	}
	slices.Sort(rows)
	g := kernels.SparseGrad{Rows: cpu.Alloc(kernels.Int32, max(len(rows), 1)), Values: cpu.Alloc(kernels.Float32, max(len(rows), 1), dim), N: len(rows)}
	for i, row := range rows {
		g.Rows.I32[i] = row
		copy(g.Values.F32[i*dim:], acc[row])
	}
	apply(&g)
}

// The fused backward + sparse update equals EmbeddingBackward of every
// source, summed, followed by the sparse optimizer; rows no source touches
// stay bit-identical.
func TestCUDAFusedEmbeddingUpdate(t *testing.T) {
	for _, opt := range []string{"adam", "adagrad", "sgd"} {
		t.Run(opt, func(t *testing.T) {
			r := newRig(t, 3)
			const rows, dim, B = 5000, 20, 777
			tableH := r.Uniform(rows*dim, -0.05, 0.05)
			table := r.F32(tableH, rows, dim)
			s1 := r.F32(r.Uniform(rows*dim, 0.1, 0.2), rows, dim)
			s2 := r.F32(r.Uniform(rows*dim, 0, 1e-3), rows, dim)

			// Source 0: one id per row (duplicates); source 1: lists with
			// empty ones, duplicates and a lead before offsets[0]; both
			// share the table and read different dout tensors.
			ids0 := make([]int32, B)
			for i := range ids0 {
				ids0[i] = int32(r.Rand().IntN(rows / 10))
				if i%3 == 0 {
					ids0[i] = 7 // a hot row (over 128 entries): summed in pieces
				}
			}
			ids1 := []int32{int32(rows - 1)} // lead value outside the lists
			offs1 := []int32{1}
			for b := 0; b < B; b++ {
				for j := 0; j < b%4; j++ {
					ids1 = append(ids1, int32(r.Rand().IntN(rows/10)))
				}
				offs1 = append(offs1, int32(len(ids1)))
			}
			i0, i1, o1 := r.I32(ids0, B), r.I32(ids1, len(ids1)), r.I32(offs1, B+1)
			d0, d1 := r.RandF(B, dim+5), r.RandF(B, dim)
			srcC := []kernels.EmbeddingSource{
				{Dout: d0.Ref, Col: 3, IDs: i0.Ref},
				{Dout: d1.Ref, Col: 0, IDs: i1.Ref, Offsets: o1.Ref, Comb: kernels.SqrtN},
			}
			srcG := []kernels.EmbeddingSource{
				{Dout: d0.Dev, Col: 3, IDs: i0.Dev},
				{Dout: d1.Dev, Col: 0, IDs: i1.Dev, Offsets: o1.Dev, Comb: kernels.SqrtN},
			}
			for step := 1; step <= 2; step++ {
				ap := kernels.AdamParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: 1e-3, Step: step}
				gp := kernels.AdagradParams{LR: 0.05, Eps: 1e-7, L2: 1e-3}
				sp := kernels.SGDParams{LR: 0.1, L2: 1e-3}
				fusedReference(t, r.cpu, rows, dim, srcC, func(g *kernels.SparseGrad) {
					switch opt {
					case "adam":
						r.cpu.SparseAdam(table.Ref, s1.Ref, s2.Ref, g, ap)
					case "adagrad":
						r.cpu.SparseAdagrad(table.Ref, s1.Ref, g, gp)
					default:
						r.cpu.SparseSGD(table.Ref, g, sp)
					}
				})
				switch opt {
				case "adam":
					r.gpu.EmbeddingUpdateAdam(table.Dev, s1.Dev, s2.Dev, srcG, ap)
				case "adagrad":
					r.gpu.EmbeddingUpdateAdagrad(table.Dev, s1.Dev, srcG, gp)
				default:
					r.gpu.EmbeddingUpdateSGD(table.Dev, srcG, sp)
				}
			}
			r.CheckRel("table", table, 1e-4)
			r.CheckRel("state1", s1, 1e-4)
			r.CheckRel("state2", s2, 1e-4)
			got := r.gpuF32(table.Dev)
			for row := rows / 10; row < rows; row++ { // never looked up (the lead value is outside the lists)
				require.Equal(t, tableH[row*dim:(row+1)*dim], got[row*dim:(row+1)*dim], "row %d", row)
			}
		})
	}
}

// The cuBLASLt epilogue GEMM equals Gemm + BiasAct, for aligned operands
// and for views at odd offsets (which take other algorithms or the
// fallback), single and strided-batched.
func TestCUDAGemmBiasAct(t *testing.T) {
	newCUDA(t)
	for _, c := range []struct {
		m, n, k, off int
		ta, tb       bool
		act          kernels.Activation
	}{
		{1024, 64, 96, 0, false, false, kernels.ReLU},
		{333, 17, 41, 1, false, true, kernels.Linear},
		{65, 128, 7, 3, true, false, kernels.ReLU},
		{8, 1, 1, 0, true, true, kernels.ReLU},
	} {
		t.Run(fmt.Sprintf("%dx%dx%d_off%d_t%v%v", c.m, c.n, c.k, c.off, c.ta, c.tb), func(t *testing.T) {
			r := newRig(t, uint64(c.m))
			ab := r.RandF(c.off + c.m*c.k)
			bb := r.RandF(c.off + c.k*c.n)
			biasb := r.RandF(c.off + c.n)
			ashape := []int{c.m, c.k}
			if c.ta {
				ashape = []int{c.k, c.m}
			}
			bshape := []int{c.k, c.n}
			if c.tb {
				bshape = []int{c.n, c.k}
			}
			a := kerneltest.Pair{Ref: ab.Ref.View(c.off, ashape...), Dev: ab.Dev.View(c.off, ashape...)}
			b := kerneltest.Pair{Ref: bb.Ref.View(c.off, bshape...), Dev: bb.Dev.View(c.off, bshape...)}
			bias := kerneltest.Pair{Ref: biasb.Ref.View(c.off, c.n), Dev: biasb.Dev.View(c.off, c.n)}
			out := r.RandF(c.m, c.n)
			r.cpu.Gemm(c.ta, c.tb, 1, a.Ref, b.Ref, 0, out.Ref)
			r.cpu.BiasAct(out.Ref, bias.Ref, 1, c.act)
			r.gpu.GemmBiasActT(c.ta, c.tb, a.Dev, b.Dev, bias.Dev, out.Dev, c.act)
			r.CheckRel("out", out, 1e-4)
		})
	}
	t.Run("batched_experts", func(t *testing.T) {
		r := newRig(t, 44)
		const E, B, in, outN = 4, 1000, 96, 64
		x := r.RandF(B, in)
		w := r.RandF(E, in, outN)
		bias := r.RandF(E, outN)
		out := r.RandF(E, B, outN)
		r.cpu.GemmStridedBatched(false, false, B, outN, in, 1, x.Ref, 0, w.Ref, in*outN, 0, out.Ref, B*outN, E)
		r.cpu.BiasAct(out.Ref, bias.Ref, E, kernels.ReLU)
		r.gpu.GemmBiasActBatched(false, false, B, outN, in, x.Dev, 0, w.Dev, in*outN, bias.Dev, outN, out.Dev, B*outN, E, kernels.ReLU)
		r.CheckRel("experts", out, 1e-4)
	})
}

// Batches uploaded through the double-buffered stager arrive intact and in
// order while compute runs on the previous ones.
func TestCUDAStager(t *testing.T) {
	r := newRig(t, 5)
	const n, batches = 10000, 9
	st, err := r.gpu.NewStager(3 * 4 * n)
	require.NoError(t, err)
	defer st.Release()
	var in [2]*kernels.Tensor
	var ids [2]*kernels.Tensor
	for i := range in {
		in[i] = r.gpu.Alloc(kernels.Float32, n)
		ids[i] = r.gpu.Alloc(kernels.Int32, n)
		r.Own(in[i], ids[i])
	}
	sum := r.gpu.Alloc(kernels.Float32, n)
	r.Own(sum)
	want := make([]float64, n)
	host := make([]float32, n)
	hostIDs := make([]int32, n)
	for k := range batches {
		for i := range host {
			host[i] = float32(k*n + i)
			hostIDs[i] = int32(k)
			want[i] += float64(k+1) * float64(host[i])
		}
		s := st.Slot()
		require.Equal(t, k%2, s)
		require.NoError(t, st.UploadF32Async(in[s], host))
		require.NoError(t, st.UploadI32Async(ids[s], hostIDs))
		clear(host) // the stager copied it already
		require.NoError(t, st.Commit())
		// The "step": sum += (k+1) * batch.
		r.gpu.Axpy(float32(k+1), in[s], sum)
	}
	require.NoError(t, r.gpu.Sync())
	got := r.gpuF32(sum)
	for i := range got {
		require.InDelta(t, want[i], float64(got[i]), 1e-6*want[i]+1e-3, "element %d", i)
	}
	lastIDs := make([]int32, n)
	r.gpu.CopyToHostI32(lastIDs, ids[(batches-1)%2])
	assert.Equal(t, int32(batches-1), lastIDs[n-1])

	tooBig := make([]float32, 4*n)
	big := r.gpu.Alloc(kernels.Float32, 4*n)
	r.Own(big)
	err = st.UploadF32Async(big, tooBig)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "do not fit")
}

// A captured step replays exactly what the same ops compute eagerly; ops
// that need the host fail the capture with a clear error.
func TestCUDAGraphCapture(t *testing.T) {
	r := newRig(t, 6)
	d := r.gpu
	const B, rows, dim, hidden = 512, 1000, 16, 32
	ids := make([]int32, B)
	for i := range ids {
		ids[i] = int32(r.Rand().IntN(rows))
	}
	tableH := r.Uniform(rows*dim, -0.05, 0.05)
	wH := r.Uniform(dim*hidden, -0.3, 0.3)
	yH := make([]float32, B*hidden)
	for i := range yH {
		yH[i] = float32(i % 2)
	}

	type net struct{ table, m, v, w, act, dact, dw, y, loss *kernels.Tensor }
	newNet := func() net {
		n := net{}
		n.table = r.F32(tableH, rows, dim).Dev
		n.m = r.F32(make([]float32, rows*dim), rows, dim).Dev
		n.v = r.F32(make([]float32, rows*dim), rows, dim).Dev
		n.w = r.F32(wH, dim, hidden).Dev
		n.act = r.F32(make([]float32, B*dim), B, dim).Dev
		n.dact = r.F32(make([]float32, B*dim), B, dim).Dev
		n.dw = r.F32(make([]float32, dim*hidden), dim, hidden).Dev
		n.y = r.F32(yH, B, hidden).Dev
		n.loss = r.F32([]float32{0}, 1).Dev
		return n
	}
	idt := r.I32(ids, B).Dev
	z := r.F32(make([]float32, B*hidden), B, hidden).Dev
	dz := r.F32(make([]float32, B*hidden), B, hidden).Dev
	step := func(n net, k int) {
		require.NoError(t, d.EmbeddingGather(n.act, 0, n.table, idt, nil, kernels.Mean))
		d.Gemm(false, false, 1, n.act, n.w, 0, z)
		d.BCEWithLogits(n.loss, dz, z, n.y, nil, 1.0/B)
		d.Gemm(true, false, 1, n.act, dz, 0, n.dw)
		d.Gemm(false, true, 1, dz, n.w, 0, n.dact)
		d.SGD(n.w, n.dw, kernels.SGDParams{LR: 0.1})
		d.EmbeddingUpdateAdam(n.table, n.m, n.v, []kernels.EmbeddingSource{{Dout: n.dact, IDs: idt}},
			kernels.AdamParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, Step: k})
	}
	eager, graphed := newNet(), newNet()
	for k := 1; k <= 4; k++ {
		step(eager, k)
	}
	step(graphed, 1) // sizes the scratch buffers
	require.NoError(t, d.Sync())
	require.NoError(t, d.BeginCapture())
	step(graphed, 2)
	g, err := d.EndCapture()
	require.NoError(t, err)
	defer g.Release()
	require.NoError(t, g.Launch()) // replays step 2 (the step number is baked in)
	// Steps 3 and 4 have other Adam step sizes: capture is per step
	// number here, which is enough to check replay equality.
	step(graphed, 3)
	step(graphed, 4)
	require.NoError(t, d.Sync())
	for _, pair := range [][2]*kernels.Tensor{{eager.table, graphed.table}, {eager.w, graphed.w}, {eager.loss, graphed.loss}} {
		assert.Equal(t, r.gpuF32(pair[0]), r.gpuF32(pair[1]))
	}

	{ // a host copy fails the capture
		require.NoError(t, d.BeginCapture())
		host := make([]float32, B*hidden)
		d.CopyToHostF32(host, z)
		_, err := d.EndCapture()
		require.ErrorIs(t, err, cublas.ErrCapture)
		assert.Contains(t, err.Error(), "capturing")
		require.NoError(t, d.Sync())
	}
	{ // Alloc while capturing panics and queues nothing
		require.NoError(t, d.BeginCapture())
		assert.Panics(t, func() { d.Alloc(kernels.Float32, 10) })
		g, err := d.EndCapture()
		require.NoError(t, err, "the failed allocation queued nothing")
		g.Release()
	}
	{ // a captured gather's id check is reported by the Sync after Launch
		bad := r.I32(append([]int32{int32(rows)}, ids[1:]...), B).Dev
		out := r.F32(make([]float32, B*dim), B, dim).Dev
		require.NoError(t, d.BeginCapture())
		require.NoError(t, d.EmbeddingGather(out, 0, eager.table, bad, nil, kernels.Mean))
		g, err := d.EndCapture()
		require.NoError(t, err)
		defer g.Release()
		require.NoError(t, g.Launch())
		var ie *kernels.IDRangeError
		require.ErrorAs(t, d.Sync(), &ie)
		assert.Equal(t, kernels.IDRangeError{Row: 0, ID: rows, Rows: rows}, *ie)
	}
}

// Creating and releasing tensors (as models do) returns every byte: the
// device's own count and the allocation pool agree before and after.
func TestCUDANoLeak(t *testing.T) {
	d := newCUDA(t)
	require.NoError(t, d.Sync())
	before, err := d.MemInfo()
	require.NoError(t, err)
	live := d.MemoryInUse()
	for round := range 20 {
		var ts []*kernels.Tensor
		for i := range 50 {
			ts = append(ts, d.Alloc(kernels.Float32, 1+i*round*37, 3))
			ts = append(ts, d.Alloc(kernels.Int32, i))
		}
		v := ts[2].View(1, 2) // views own nothing (ts[2] has at least 3 elements)
		v.Release()
		d.Fill(ts[5], 1)
		for _, x := range ts {
			x.Release()
			x.Release() // a second Release is a no-op
		}
	}
	require.NoError(t, d.Sync())
	after, err := d.MemInfo()
	require.NoError(t, err)
	assert.Equal(t, live, d.MemoryInUse())
	assert.Zero(t, d.LiveTensors())
	assert.Equal(t, before.PoolUsed, after.PoolUsed, "pool bytes in use")

	// Freeing memory the device does not own is reported, not done.
	x := d.Alloc(kernels.Float32, 8)
	alias := *x
	x.Release()
	d.Free(&alias)
	err = d.Sync()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not allocated by this device")
}

// Out of memory is a panic carrying an error that says so.
func TestCUDAAllocOutOfMemory(t *testing.T) {
	d := newCUDA(t)
	defer func() {
		v := recover()
		require.NotNil(t, v, "Alloc of 4 TiB must fail")
		err, ok := v.(error)
		require.True(t, ok, "panic value %v is an error", v)
		assert.ErrorIs(t, err, cublas.ErrNoMemory)
	}()
	d.Alloc(kernels.Float32, 1<<40)
}

// A gradient capacity smaller than the unique rows is an error, not an
// overrun.
func TestCUDAEmbeddingBackwardCapacity(t *testing.T) {
	r := newRig(t, 8)
	ids := r.I32([]int32{1, 2, 3, 4, 5, 6}, 6)
	dout := r.RandF(6, 4)
	g := kernels.SparseGrad{Rows: r.gpu.Alloc(kernels.Int32, 3), Values: r.gpu.Alloc(kernels.Float32, 3, 4)}
	r.Own(g.Rows, g.Values)
	r.gpu.EmbeddingBackward(&g, dout.Dev, 0, ids.Dev, nil, kernels.Sum, 10)
	err := r.gpu.Sync()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "capacity")
	assert.Equal(t, 3, g.N)
}

// trainTiny runs steps of a small model through the Device interface only,
// the way the layers compose ops: two embedding features (one id per row,
// and mean-combined lists), a ReLU layer with dropout, a logit, weighted
// BCE, the hand-written backward, lazy sparse Adam on the tables and
// AdamMulti on the dense weights. It returns the loss of every step and the
// final weights.
func trainTiny(t *testing.T, dev kernels.Device, steps int) (losses []float32, weights [][]float32) {
	const B, rows, dim, hidden = 300, 50, 8, 16
	rng := rand.New(rand.NewPCG(11, 12))
	uni := func(n int, a float32) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = a * (2*rng.Float32() - 1)
		}
		return x
	}
	var owned []*kernels.Tensor
	f32 := func(data []float32, shape ...int) *kernels.Tensor {
		x := dev.Alloc(kernels.Float32, shape...)
		if data != nil {
			dev.CopyFromHostF32(x, data)
		}
		owned = append(owned, x)
		return x
	}
	i32 := func(data []int32) *kernels.Tensor {
		x := dev.Alloc(kernels.Int32, len(data))
		dev.CopyFromHostI32(x, data)
		owned = append(owned, x)
		return x
	}
	defer func() {
		for _, x := range owned {
			x.Release()
		}
	}()
	tab0, tab1 := f32(uni(rows*dim, 0.05), rows, dim), f32(uni(rows*dim, 0.05), rows, dim)
	m0, v0, m1, v1 := f32(nil, rows, dim), f32(nil, rows, dim), f32(nil, rows, dim), f32(nil, rows, dim)
	w1, b1 := f32(uni(2*dim*hidden, 0.3), 2*dim, hidden), f32(uni(hidden, 0.1), hidden)
	w2, b2 := f32(uni(hidden, 0.3), hidden, 1), f32(nil, 1)
	dense := []*kernels.Tensor{w1, b1, w2, b2}
	var grads, ms, vs []*kernels.Tensor
	for _, p := range dense {
		grads = append(grads, f32(nil, p.Shape...))
		ms = append(ms, f32(nil, p.Shape...))
		vs = append(vs, f32(nil, p.Shape...))
	}
	x, h, mask, dh, dx := f32(nil, B, 2*dim), f32(nil, B, hidden), f32(nil, B, hidden), f32(nil, B, hidden), f32(nil, B, 2*dim)
	z, dz, loss := f32(nil, B, 1), f32(nil, B, 1), f32(nil, 1)
	g0 := kernels.SparseGrad{Rows: dev.Alloc(kernels.Int32, 4*B), Values: dev.Alloc(kernels.Float32, 4*B, dim)}
	g1 := kernels.SparseGrad{Rows: dev.Alloc(kernels.Int32, 4*B), Values: dev.Alloc(kernels.Float32, 4*B, dim)}
	owned = append(owned, g0.Rows, g0.Values, g1.Rows, g1.Values)
	host := make([]float32, 1)
	for s := 1; s <= steps; s++ {
		// A fresh batch: ids, lists (some empty), labels and weights.
		ids0 := make([]int32, B)
		var ids1, offs1 []int32
		offs1 = append(offs1, 0)
		y, w := make([]float32, B), make([]float32, B)
		for b := range B {
			ids0[b] = int32(rng.IntN(rows))
			for range rng.IntN(4) {
				ids1 = append(ids1, int32(rng.IntN(rows)))
			}
			offs1 = append(offs1, int32(len(ids1)))
			if ids0[b]%3 == 0 {
				y[b] = 1
			}
			w[b] = 0.5 + rng.Float32()
		}
		i0, i1, o1 := i32(ids0), i32(ids1), i32(offs1)
		yt, wt := f32(y, B, 1), f32(w, B, 1)

		require.NoError(t, dev.EmbeddingGather(x, 0, tab0, i0, nil, kernels.Mean))
		require.NoError(t, dev.EmbeddingGather(x, dim, tab1, i1, o1, kernels.Mean))
		dev.Gemm(false, false, 1, x, w1, 0, h)
		dev.BiasAct(h, b1, 1, kernels.ReLU)
		dev.Dropout(h, mask, 0.2, uint64(s))
		dev.Gemm(false, false, 1, h, w2, 0, z)
		dev.BiasAct(z, b2, 1, kernels.Linear)
		dev.Zero(loss)
		dev.BCEWithLogits(loss, dz, z, yt, wt, 1.0/B)
		dev.CopyToHostF32(host, loss)
		losses = append(losses, host[0])

		dev.Gemm(true, false, 1, h, dz, 0, grads[2])
		dev.BiasGrad(dz, grads[3], 1, false)
		dev.Gemm(false, true, 1, dz, w2, 0, dh)
		dev.Mul(dh, dh, mask)
		dev.ActBackward(dh, h, kernels.ReLU)
		dev.Gemm(true, false, 1, x, dh, 0, grads[0])
		dev.BiasGrad(dh, grads[1], 1, false)
		dev.Gemm(false, true, 1, dh, w1, 0, dx)
		dev.EmbeddingBackward(&g0, dx, 0, i0, nil, kernels.Mean, rows)
		dev.EmbeddingBackward(&g1, dx, dim, i1, o1, kernels.Mean, rows)
		ap := kernels.AdamParams{LR: 0.02, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: 1e-4, Step: s}
		dev.SparseAdam(tab0, m0, v0, &g0, ap)
		dev.SparseAdam(tab1, m1, v1, &g1, ap)
		dev.AdamMulti(dense, grads, ms, vs, ap)
		require.NoError(t, dev.Sync())
	}
	for _, p := range append(dense, tab0, tab1) {
		out := make([]float32, p.Len())
		dev.CopyToHostF32(out, p)
		weights = append(weights, out)
	}
	return losses, weights
}

// Ops composed as in a training step give the same losses and weights on
// the GPU as on the CPU.
func TestCUDATrainingStepParity(t *testing.T) {
	d := newCUDA(t)
	const steps = 25
	lc, wc := trainTiny(t, kernels.NewCPU(2), steps)
	lg, wg := trainTiny(t, d, steps)
	require.Less(t, lc[steps-1], lc[0], "the tiny model learns on the CPU")
	for s := range lc {
		assert.InDelta(t, lc[s], lg[s], 1e-4+1e-3*math.Abs(float64(lc[s])), "loss at step %d", s+1)
	}
	for i := range wc {
		for j := range wc[i] {
			if math.Abs(float64(wc[i][j]-wg[i][j])) > 1e-3+1e-2*math.Abs(float64(wc[i][j])) {
				t.Fatalf("weight tensor %d element %d: cpu %g, gpu %g", i, j, wc[i][j], wg[i][j])
			}
		}
	}
	require.Zero(t, d.LiveTensors())
}

// The parity model itself, checked where no GPU is needed: it learns, and
// the CPU reproduces it exactly (so a GPU mismatch is the GPU's).
func TestCUDATinyModelOnCPU(t *testing.T) {
	l1, w1 := trainTiny(t, kernels.NewCPU(2), 25)
	l2, w2 := trainTiny(t, kernels.NewCPU(1), 25)
	assert.Equal(t, l1, l2)
	assert.Equal(t, w1, w2)
	assert.Less(t, l1[24], 0.8*l1[0], "losses %v", l1)
}

// The CUDA device's Pinned: pinned memory with copies queued on the
// compute stream (checkPinned), which a Sync waits for.
func TestCUDAPinned(t *testing.T) {
	d := newCUDA(t)
	var dev kernels.Device = d
	_, ok := dev.(kernels.PinnedStager)
	require.True(t, ok)
	checkPinned(t, d)
	require.Zero(t, d.LiveTensors())
}
