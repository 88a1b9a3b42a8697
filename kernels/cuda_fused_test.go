//go:build cuda

package kernels_test

// The fused kernels of csrc/fused.cu (gate, multi-task loss, metric
// reductions) against their CPU references, the composed paths of
// capabilities_ops.go on the CPU device (themselves checked against float64
// definitions in capabilities_ops_test.go), on the case tables shared with those
// tests plus shapes of a training step at batch 65536.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/kernels/kerneltest"
)

func TestCUDAFusedCapabilities(t *testing.T) {
	var d kernels.Device = newCUDA(t)
	_, gate := d.(kernels.FusedGater)
	_, loss := d.(kernels.MultiTaskLosser)
	_, metrics := d.(kernels.MetricReducer)
	_, gemm := d.(kernels.FusedGemm)
	_, emb := d.(kernels.FusedEmbeddingUpdater)
	_, ids := d.(kernels.AsyncIDChecker)
	_, graphs := d.(kernels.GraphCapturer)
	up, uploads := d.(kernels.AsyncUploader)
	assert.True(t, gate && loss && metrics && gemm && emb && ids && graphs && uploads)
	st, err := up.NewBatchStager(1 << 16)
	require.NoError(t, err)
	st.Release()
}

// gateRun runs the gate forward and backward on dev (fused on a GPU, the
// composed path on the CPU) and returns w, out, dlogits and the expert
// gradients (accumulated onto dx0).
func gateRun(dev kernels.Device, c fzGateCase, logits []float32, experts [][]float32, dout, dx0 []float32) (w, out, dl []float32, dx [][]float32) {
	var owned []*kernels.Tensor
	up := func(x []float32, shape ...int) *kernels.Tensor {
		t := kerneltest.Upload(dev, x, shape...)
		owned = append(owned, t)
		return t
	}
	alloc := func(shape ...int) *kernels.Tensor {
		t := dev.Alloc(kernels.Float32, shape...)
		owned = append(owned, t)
		return t
	}
	defer func() {
		for _, t := range owned {
			t.Release()
		}
	}()
	var xs, dxs []*kernels.Tensor
	for e := range experts {
		xs = append(xs, up(experts[e], c.rows, c.d))
		dxs = append(dxs, up(dx0, c.rows, c.d))
	}
	wt, outT, dlT, dwT := alloc(c.rows, c.ne), alloc(c.rows, c.d), alloc(c.rows, c.ne), alloc(c.rows, c.ne)
	kernels.GateForward(dev, outT, wt, up(logits, c.rows, c.ne), xs, c.temp)
	kernels.GateBackward(dev, dlT, dwT, up(dout, c.rows, c.d), wt, xs, dxs, c.temp)
	for _, x := range dxs {
		dx = append(dx, kerneltest.Download(dev, x))
	}
	return kerneltest.Download(dev, wt), kerneltest.Download(dev, outT), kerneltest.Download(dev, dlT), dx
}

// The fused gate equals the composed gate on the CPU.
//
// Tolerances: w and out use the default 1e-5 + 1e-4*|x| (float64 exp on
// the GPU, float32 exp within about 1 ulp on the CPU; out sums E float32
// products). The expert gradients are one multiply-add: the same. The logit
// gradient w_e*(dw_e - <w,dw>)/T cancels, so its error is relative to the
// terms, not the result: both devices compute dw_e = <dout, x_e> in float32
// over d terms in different orders, each within d*2^-24*sum_j|dout_j x_ej|
// (= E_e), which gives the allowance (w_e*(E_e + sum_k w_k E_k))/T on top.
func TestCUDAFusedGate(t *testing.T) {
	cases := append([]fzGateCase{}, fzGateCases...)
	cases = append(cases,
		fzGateCase{size(t, 65536, 4096), 8, 64, 1}, // MMoE-sized at batch 65536
		fzGateCase{4096, 32, 16, 0.8},              // the most experts one fused launch takes
		fzGateCase{100, 33, 8, 1.3},                // one more: the composed path on the GPU
	)
	for _, c := range cases {
		t.Run(fmt.Sprintf("b%d_e%d_d%d_t%g", c.rows, c.ne, c.d, c.temp), func(t *testing.T) {
			gpu := newCUDA(t)
			cpu := kernels.NewCPU(2)
			rng := rand.New(rand.NewPCG(uint64(c.rows), uint64(c.ne)))
			logits := kerneltest.RandF32(rng, c.rows*c.ne, -6, 6)
			var experts [][]float32
			for range c.ne {
				experts = append(experts, kerneltest.RandF32(rng, c.rows*c.d, -1, 1))
			}
			dout, dx0 := kerneltest.RandF32(rng, c.rows*c.d, -1, 1), kerneltest.RandF32(rng, c.rows*c.d, -1, 1)
			wc, oc, lc, xc := gateRun(cpu, c, logits, experts, dout, dx0)
			wg, og, lg, xg := gateRun(gpu, c, logits, experts, dout, dx0)
			require.NoError(t, gpu.Sync())
			kerneltest.CheckClose(t, "w", wg, kerneltest.Widen(wc), 1e-5, 1e-4, nil)
			kerneltest.CheckClose(t, "out", og, kerneltest.Widen(oc), 1e-5, 1e-4, nil)
			for e := range xc {
				kerneltest.CheckClose(t, fmt.Sprintf("dexperts[%d]", e), xg[e], kerneltest.Widen(xc[e]), 1e-5, 1e-4, nil)
			}
			errDW := make([]float64, c.rows*c.ne) // E_e per row
			for b := 0; b < c.rows; b++ {
				for e := 0; e < c.ne; e++ {
					s := 0.0
					for j := 0; j < c.d; j++ {
						s += math.Abs(float64(dout[b*c.d+j]) * float64(experts[e][b*c.d+j]))
					}
					errDW[b*c.ne+e] = 2 * float64(c.d) * 0x1p-24 * s
				}
			}
			invT := 1 / float64(c.temp)
			kerneltest.CheckClose(t, "dlogits", lg, kerneltest.Widen(lc), 1e-5, 1e-4, func(i int) float64 {
				b := i / c.ne
				sum := 0.0
				for k := 0; k < c.ne; k++ {
					sum += float64(wc[b*c.ne+k]) * errDW[b*c.ne+k]
				}
				return invT * float64(wc[i]) * (errDW[i] + sum)
			})
			require.Zero(t, gpu.LiveTensors())
		})
	}
}

// The fused gate computes what the GPU's own unfused ops compute (same
// order of operations), to float32 rounding.
func TestCUDAFusedGateMatchesUnfusedGPU(t *testing.T) {
	r := newRig(t, 21)
	const B, E, D, T = 3000, 6, 40, 0.9
	logits := r.F32(r.Uniform(B*E, -5, 5), B, E).Dev
	var xs, dx1, dx2 []*kernels.Tensor
	dx0 := r.Uniform(B*D, -1, 1)
	for range E {
		xs = append(xs, r.RandF(B, D).Dev)
		dx1 = append(dx1, r.F32(dx0, B, D).Dev)
		dx2 = append(dx2, r.F32(dx0, B, D).Dev)
	}
	dout := r.RandF(B, D).Dev
	w1, w2 := r.F32(make([]float32, B*E), B, E).Dev, r.F32(make([]float32, B*E), B, E).Dev
	o1, o2 := r.F32(make([]float32, B*D), B, D).Dev, r.F32(make([]float32, B*D), B, D).Dev
	l1, l2, dw := r.F32(make([]float32, B*E), B, E).Dev, r.F32(make([]float32, B*E), B, E).Dev, r.F32(make([]float32, B*E), B, E).Dev
	r.gpu.GateForward(o1, w1, logits, xs, T)
	r.gpu.GateBackward(l1, dout, w1, xs, dx1, T)
	r.gpu.SoftmaxRows(w2, logits, T)
	r.gpu.GateCombine(o2, w2, xs)
	r.gpu.GateCombineBackward(dout, w2, xs, dw, dx2)
	r.gpu.SoftmaxBackward(l2, dw, w2, T)
	r.Sync()
	for _, p := range [][3]any{{"w", w1, w2}, {"out", o1, o2}, {"dlogits", l1, l2}} {
		kerneltest.CheckClose(t, p[0].(string), r.gpuF32(p[1].(*kernels.Tensor)), kerneltest.Widen(r.gpuF32(p[2].(*kernels.Tensor))), 1e-7, 1e-6, nil)
	}
	for e := range dx1 {
		kerneltest.CheckClose(t, fmt.Sprintf("dexperts[%d]", e), r.gpuF32(dx1[e]), kerneltest.Widen(r.gpuF32(dx2[e])), 1e-7, 1e-6, nil)
	}
}

// The fused multi-task loss equals the composed loss on the CPU and the
// float64 definition.
//
// Tolerances: a gradient is a few float32 operations on a sigmoid (float64
// exp on the GPU, float32 within about 1 ulp on the CPU), so 1e-5 relative
// plus an absolute 1e-6*scale (gradients are proportional to the scale,
// 1/batch in a model, so a fixed absolute tolerance would be vacuous at
// large batches). The loss sums are float64 on both devices over
// non-negative float32-accurate terms: 1e-5 relative, plus the float32
// rounding of the stored scalar.
func TestCUDAFusedMultiTaskLoss(t *testing.T) {
	newCUDA(t)
	cases := append([]fzLossCase{}, fzLossCases...)
	big := size(t, 1<<20, 1<<16)
	cases = append(cases, fzLossCase{name: "batch_1M", rows: big, scale: 1.0 / float32(big), tasks: []fzLossTask{
		{kind: fzBCE, pos: 1, lambda: 1, weight: true, zRange: 8}, {kind: fzBCE, pos: 3, lambda: 0.5, space: true, zRange: 8},
		{kind: fzBCE, pos: 1, lambda: 1, zRange: 8}, {kind: fzBCE, pos: 1, lambda: 1, zRange: 8},
		{kind: fzMSE, pos: 1, lambda: 0.1, zRange: 8}}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gpu := newCUDA(t)
			cpu := kernels.NewCPU(2)
			ld := fzNewLossData(c, rand.New(rand.NewPCG(uint64(c.rows), 3)))
			dzc, tlc, totc := fzLossRun(cpu, c, ld, true)
			dzg, tlg, totg := fzLossRun(gpu, c, ld, false)
			require.NoError(t, gpu.Sync())
			for i, tk := range c.tasks {
				// dz = lambda*scale*w*(sigmoid(z) - y): a float32 sigmoid near 1
				// is resolved to 2^-24, so two correct computations may differ
				// by a few such steps times lambda*scale*w (w <= pos*2).
				wmax := math.Max(float64(tk.pos), 1)
				if tk.weight {
					wmax *= 2
				}
				abs := math.Max(1e-6*float64(c.scale), 0x1p-22*float64(tk.lambda)*float64(c.scale)*wmax)
				kerneltest.CheckClose(t, fmt.Sprintf("dz[%d] vs cpu", i), dzg[i], kerneltest.Widen(dzc[i]), abs, 1e-5, nil)
				kerneltest.CheckClose(t, fmt.Sprintf("dz[%d] vs float64", i), dzg[i], ld.wantDZ[i], abs, 1e-5, nil)
				if tlg != nil {
					want := float64(c.initTaskLoss) + ld.wantLoss[i]
					assert.InDelta(t, want, float64(tlg[i]), 1e-5*ld.wantLoss[i]+1e-7*math.Abs(want)+1e-9, "task loss %d", i)
					assert.InDelta(t, float64(tlc[i]), float64(tlg[i]), 2e-5*ld.wantLoss[i]+1e-7*math.Abs(want)+1e-9, "task loss %d vs cpu", i)
				}
			}
			if !c.noTotal {
				want := float64(c.initTotalLoss) + ld.wantTotal
				assert.InDelta(t, want, float64(totg), 1e-5*ld.wantTotal+1e-7*math.Abs(want)+1e-9, "total")
				assert.InDelta(t, float64(totc), float64(totg), 2e-5*ld.wantTotal+1e-7*math.Abs(want)+1e-9, "total vs cpu")
			}
			// deterministic: the same inputs give the same bits
			dz2, tl2, tot2 := fzLossRun(gpu, c, ld, false)
			assert.Equal(t, dzg, dz2)
			assert.Equal(t, tlg, tl2)
			assert.Equal(t, totg, tot2)
			require.Zero(t, gpu.LiveTensors())
		})
	}
}

// metricCase is one entry of the metric reduction case table: tasks (binary
// or not, masked or not) over batches of the given sizes.
type metricCase struct {
	name    string
	binary  []bool
	masked  []bool
	batches []int
}

var metricCases = []metricCase{
	{"one_binary_row", []bool{true}, []bool{false}, []int{1}},
	{"model_like", []bool{true, true, true, false}, []bool{false, true, false, false}, []int{1000, 37, 4096}},
	{"seventeen_tasks", func() []bool {
		b := make([]bool, 17)
		for i := range b {
			b[i] = i%4 != 3
		}
		return b
	}(), make([]bool, 17), []int{300, 5}},
	{"large", []bool{true, false}, []bool{true, false}, []int{300001, 65536}},
}

// metricBatch makes the host data of one batch: probabilities with exact
// 0, 0.5 and 1, NaNs, labels with a few bad values, masks with values other
// than 0 and 1.
func metricBatch(rng *rand.Rand, binary, masked bool, rows int) (pred, label, mask []float32) {
	pred, label = make([]float32, rows), make([]float32, rows)
	for i := range pred {
		if binary {
			pred[i] = rng.Float32()
			switch rng.IntN(50) {
			case 0:
				pred[i] = 0
			case 1:
				pred[i] = 1
			case 2:
				pred[i] = 0.5
			case 3:
				pred[i] = float32(math.NaN())
			}
			label[i] = float32(rng.IntN(2))
			if rng.IntN(200) == 0 {
				label[i] = 0.5
			}
		} else {
			pred[i] = float32(rng.NormFloat64() * 3)
			label[i] = float32(rng.NormFloat64() * 3)
			if rng.IntN(100) == 0 {
				pred[i] = float32(math.NaN())
			}
		}
	}
	if masked {
		mask = make([]float32, rows)
		for i := range mask {
			mask[i] = float32(rng.IntN(3))
		}
	}
	return pred, label, mask
}

// The device metric reductions equal MetricSums.Add on the host: counts
// exactly; float64 sums of non-negative terms (logloss, squared and
// absolute errors) to 1e-10 relative (the GPU's log against Go's, within an
// ulp each, and another summation order); the label sum of a regression
// task, which cancels, to 1e-10 of the sum of |labels|.
func TestCUDAFusedMetrics(t *testing.T) {
	newCUDA(t)
	for _, c := range metricCases {
		t.Run(c.name, func(t *testing.T) {
			gpu := newCUDA(t)
			cpu := kernels.NewCPU(2)
			rng := rand.New(rand.NewPCG(uint64(len(c.binary)), 9))
			const eps, thr = 1e-7, 0.5
			acc, err := kernels.NewMetricAccumulator(gpu, len(c.binary), eps, thr)
			require.NoError(t, err)
			hostAcc, err := kernels.NewMetricAccumulator(cpu, len(c.binary), eps, thr)
			require.NoError(t, err)
			want := make([]kernels.MetricSums, len(c.binary))
			absLabels := make([]float64, len(c.binary))
			var owned []*kernels.Tensor
			for _, rows := range c.batches {
				var gt, ct []kernels.MetricTask
				for k, bin := range c.binary {
					p, l, m := metricBatch(rng, bin, c.masked[k], rows)
					want[k].Add(bin, p, l, m, eps, thr)
					for i, y := range l {
						if m == nil || m[i] == 1 {
							absLabels[k] += math.Abs(float64(y))
						}
					}
					g := kernels.MetricTask{Binary: bin, Pred: kerneltest.Upload(gpu, p, rows), Label: kerneltest.Upload(gpu, l, rows)}
					cc := kernels.MetricTask{Binary: bin, Pred: kerneltest.Upload(cpu, p, rows), Label: kerneltest.Upload(cpu, l, rows)}
					owned = append(owned, g.Pred, g.Label)
					if m != nil {
						g.Mask, cc.Mask = kerneltest.Upload(gpu, m, rows), kerneltest.Upload(cpu, m, rows)
						owned = append(owned, g.Mask)
					}
					gt, ct = append(gt, g), append(ct, cc)
				}
				acc.Add(gt)
				hostAcc.Add(ct)
			}
			got, err := acc.Sums()
			require.NoError(t, err)
			host, err := hostAcc.Sums()
			require.NoError(t, err)
			assert.Equal(t, want, host, "the composed accumulator is MetricSums.Add")
			for k := range want {
				w, g := want[k], got[k]
				assert.Equal(t, []float64{w.Count, w.Positives, w.TP, w.FP, w.TN, w.FN, w.NaN, w.BadLabels},
					[]float64{g.Count, g.Positives, g.TP, g.FP, g.TN, g.FN, g.NaN, g.BadLabels}, "task %d counts", k)
				assert.InDelta(t, w.LogLoss, g.LogLoss, 1e-10*w.LogLoss, "task %d logloss", k)
				assert.InDelta(t, w.SqErr, g.SqErr, 1e-10*w.SqErr, "task %d squared error", k)
				assert.InDelta(t, w.AbsErr, g.AbsErr, 1e-10*w.AbsErr, "task %d absolute error", k)
				assert.InDelta(t, w.LabelSum, g.LabelSum, 1e-10*absLabels[k], "task %d label sum", k)
			}
			if c.name == "model_like" { // the cases have what they are meant to
				assert.Positive(t, got[0].NaN)
				assert.Positive(t, got[0].BadLabels)
				assert.Positive(t, got[0].TP*got[0].FP*got[0].TN*got[0].FN)
				assert.Less(t, got[1].Count, float64(1000+37+4096)*0.5, "the mask drops rows")
			}
			acc.Reset()
			got, err = acc.Sums()
			require.NoError(t, err)
			assert.Equal(t, make([]kernels.MetricSums, len(c.binary)), got)
			for _, x := range owned {
				x.Release()
			}
			acc.Release()
			require.Zero(t, gpu.LiveTensors())
		})
	}
}

// The fused ops can be captured in a graph; a replay computes what the
// eager ops computed, bit for bit (the reductions are deterministic).
func TestCUDAFusedCapture(t *testing.T) {
	r := newRig(t, 23)
	d := r.gpu
	const B, E, D, T = 2048, 4, 32, 1.0
	logits := r.F32(r.Uniform(B*E, -3, 3), B, E).Dev
	var xs, dxs []*kernels.Tensor
	for range E {
		xs = append(xs, r.RandF(B, D).Dev)
		dxs = append(dxs, r.F32(make([]float32, B*D), B, D).Dev)
	}
	dout := r.RandF(B, D).Dev
	w, out, dl := r.F32(make([]float32, B*E), B, E).Dev, r.F32(make([]float32, B*D), B, D).Dev, r.F32(make([]float32, B*E), B, E).Dev
	z, y := r.F32(r.Uniform(B, -4, 4), B, 1).Dev, r.F32(r.Uniform(B, 0, 1), B, 1).Dev
	dz, dz2 := r.F32(make([]float32, B), B, 1).Dev, r.F32(make([]float32, B), B, 1).Dev
	tl, tot := r.F32(make([]float32, 2), 2).Dev, r.F32(make([]float32, 1), 1).Dev
	prob := r.F32(r.Uniform(B, 0, 1), B).Dev
	label := r.F32(make([]float32, B), B).Dev
	r.gpu.Fill(label, 1)
	acc, err := d.NewMetricAccumulator(1, 1e-7, 0.5)
	require.NoError(t, err)
	defer acc.Release()
	step := func() {
		for _, x := range dxs {
			d.Zero(x)
		}
		d.Zero(tl)
		d.Zero(tot)
		d.GateForward(out, w, logits, xs, T)
		d.GateBackward(dl, dout, w, xs, dxs, T)
		d.MultiTaskLoss(tl, tot, []kernels.LossTask{
			{Kind: kernels.LossBCE, Z: z, DZ: dz, Y: y, PosWeight: 2, Lambda: 0.5},
			{Kind: kernels.LossMSE, Z: z, DZ: dz2, Y: y, Weight: y, PosWeight: 1, Lambda: 1},
		}, 1.0/B)
		acc.Add([]kernels.MetricTask{{Binary: true, Pred: prob, Label: label}})
	}
	snap := func() [][]float32 {
		r.Sync()
		res := [][]float32{r.gpuF32(w), r.gpuF32(out), r.gpuF32(dl), r.gpuF32(dz), r.gpuF32(dz2), r.gpuF32(tl), r.gpuF32(tot)}
		for _, x := range dxs {
			res = append(res, r.gpuF32(x))
		}
		return res
	}
	step()
	eager := snap()
	eagerSums, err := acc.Sums()
	require.NoError(t, err)
	acc.Reset()
	d.Zero(w)
	d.Zero(out)
	require.NoError(t, d.BeginCapture())
	step()
	g, err := d.EndCapture()
	require.NoError(t, err)
	defer g.Release()
	require.NoError(t, g.Launch())
	assert.Equal(t, eager, snap())
	require.NoError(t, g.Launch()) // the metric sums accumulate over launches
	graphSums, err := acc.Sums()
	require.NoError(t, err)
	require.Equal(t, eagerSums[0].Count*2, graphSums[0].Count)
	assert.InDelta(t, 2*eagerSums[0].LogLoss, graphSums[0].LogLoss, 1e-12*eagerSums[0].LogLoss)
}

// Beyond one launch's experts the gate backward needs scratch memory, which
// cannot be allocated while capturing: a clear error, not a fault.
func TestCUDAFusedGateManyExpertsCapture(t *testing.T) {
	r := newRig(t, 24)
	d := r.gpu
	const B, E, D = 8, 40, 4
	var xs []*kernels.Tensor
	for range E {
		xs = append(xs, r.RandF(B, D).Dev)
	}
	w, dl, dout := r.RandF(B, E).Dev, r.RandF(B, E).Dev, r.RandF(B, D).Dev
	require.NoError(t, d.BeginCapture())
	d.GateBackward(dl, dout, w, xs, xs, 1)
	_, err := d.EndCapture()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "capturing")
	require.NoError(t, d.Sync())
}

// The CUDA device's FusedGemm (what layers.Dense and layers.Experts call)
// equals Gemm + BiasAct on the CPU, with a bias and without one (nil:
// act(x*w)), single and strided-batched with the input broadcast (stride 0)
// or per entry. Tolerance as TestCUDAGemmBiasAct (1e-5 + 1e-4*|x|).
func TestCUDAFusedGemm(t *testing.T) {
	var _ kernels.FusedGemm = newCUDA(t)
	for _, c := range []struct {
		m, n, k, batch, strideA int // strideA 0: one input for every entry
		bias                    bool
		act                     kernels.Activation
	}{
		{300, 64, 96, 1, 0, true, kernels.ReLU},
		{300, 8, 33, 1, 0, false, kernels.ReLU}, // a gate's bias-free logits layer with an activation
		{17, 5, 9, 1, 0, false, kernels.Linear},
		{1000, 64, 96, 4, 0, true, kernels.ReLU},         // expert layer 0: broadcast input
		{1000, 32, 64, 4, 1000 * 64, true, kernels.ReLU}, // expert layer l > 0
		{129, 16, 20, 3, 129 * 20, false, kernels.ReLU},
	} {
		t.Run(fmt.Sprintf("%dx%dx%d_b%d_sa%d_bias%v_act%d", c.m, c.n, c.k, c.batch, c.strideA, c.bias, c.act), func(t *testing.T) {
			r := newRig(t, uint64(c.m*c.n))
			inputs := 1
			if c.strideA > 0 {
				inputs = c.batch
			}
			a := r.RandF(inputs*c.m, c.k)
			b := r.RandF(c.batch, c.k, c.n)
			out := r.RandF(c.batch, c.m, c.n)
			bias := r.F32(make([]float32, c.batch*c.n), c.batch, c.n) // zeros: the CPU reference of "no bias"
			var gbias *kernels.Tensor
			if c.bias {
				bias = r.RandF(c.batch, c.n)
				gbias = bias.Dev
			}
			r.cpu.GemmStridedBatched(false, false, c.m, c.n, c.k, 1, a.Ref, c.strideA, b.Ref, c.k*c.n, 0, out.Ref, c.m*c.n, c.batch)
			r.cpu.BiasAct(out.Ref, bias.Ref, c.batch, c.act)
			if c.batch == 1 {
				x := a.Dev.View(0, c.m, c.k)
				r.gpu.GemmBiasAct(x, b.Dev.View(0, c.k, c.n), gbias, c.act, out.Dev.View(0, c.m, c.n))
			} else {
				r.gpu.GemmStridedBatchedBiasAct(c.m, c.n, c.k, a.Dev, c.strideA, b.Dev, c.k*c.n, gbias, c.act, out.Dev, c.batch)
			}
			r.CheckRel("out", out, 1e-4)
		})
	}
}
