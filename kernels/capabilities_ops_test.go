package kernels_test

// Tests of the entry points of the optional capabilities (capabilities_ops.go)
// on the CPU device, which has none of them: the composed paths are the
// reference the fused CUDA kernels are compared with (cuda_fused_test.go),
// so they are checked here against float64 host computations written from
// the definitions, and those against finite differences.

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

// The CPU device fuses nothing: every entry point takes the composed path.
func TestCPUHasNoFusedCapabilities(t *testing.T) {
	var dev kernels.Device = kernels.NewCPU(1)
	_, gate := dev.(kernels.FusedGater)
	_, loss := dev.(kernels.MultiTaskLosser)
	_, metrics := dev.(kernels.MetricReducer)
	assert.False(t, gate || loss || metrics)
}

// fzGateRef is the gate in float64 on the host: w = softmax(logits/T),
// out = sum_e w_e x_e, and for the gradient dout: dx_e = w_e*dout,
// dw_e = <dout, x_e>, dlogits = w*(dw - <w,dw>)/T.
type fzGateRef struct {
	w, out, dlogits []float64
	dx              [][]float64
}

func fzNewGateRef(logits []float32, experts [][]float32, dout []float32, rows, ne, d int, temp float64) fzGateRef {
	r := fzGateRef{w: make([]float64, rows*ne), out: make([]float64, rows*d), dlogits: make([]float64, rows*ne)}
	for e := 0; e < ne; e++ {
		r.dx = append(r.dx, make([]float64, rows*d))
	}
	for b := 0; b < rows; b++ {
		mx := math.Inf(-1)
		for e := 0; e < ne; e++ {
			mx = math.Max(mx, float64(logits[b*ne+e]))
		}
		sum := 0.0
		for e := 0; e < ne; e++ {
			r.w[b*ne+e] = math.Exp((float64(logits[b*ne+e]) - mx) / temp)
			sum += r.w[b*ne+e]
		}
		dw := make([]float64, ne)
		dot := 0.0
		for e := 0; e < ne; e++ {
			r.w[b*ne+e] /= sum
			for j := 0; j < d; j++ {
				r.out[b*d+j] += r.w[b*ne+e] * float64(experts[e][b*d+j])
				dw[e] += float64(dout[b*d+j]) * float64(experts[e][b*d+j])
				r.dx[e][b*d+j] = r.w[b*ne+e] * float64(dout[b*d+j])
			}
			dot += r.w[b*ne+e] * dw[e]
		}
		for e := 0; e < ne; e++ {
			r.dlogits[b*ne+e] = r.w[b*ne+e] * (dw[e] - dot) / temp
		}
	}
	return r
}

// The reference's logit gradient is the derivative of <dout, out(logits)>
// (central differences in float64).
func TestGateRefFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const rows, ne, d, temp = 3, 4, 5, 0.7
	logits := kerneltest.RandF32(rng, rows*ne, -2, 2)
	var experts [][]float32
	for range ne {
		experts = append(experts, kerneltest.RandF32(rng, rows*d, -1, 1))
	}
	dout := kerneltest.RandF32(rng, rows*d, -1, 1)
	ref := fzNewGateRef(logits, experts, dout, rows, ne, d, temp)
	objective := func(l []float64) float64 {
		s := 0.0
		for b := 0; b < rows; b++ {
			mx, sum := math.Inf(-1), 0.0
			for e := 0; e < ne; e++ {
				mx = math.Max(mx, l[b*ne+e])
			}
			for e := 0; e < ne; e++ {
				sum += math.Exp((l[b*ne+e] - mx) / temp)
			}
			for e := 0; e < ne; e++ {
				w := math.Exp((l[b*ne+e]-mx)/temp) / sum
				for j := 0; j < d; j++ {
					s += float64(dout[b*d+j]) * w * float64(experts[e][b*d+j])
				}
			}
		}
		return s
	}
	l := make([]float64, len(logits))
	for i, v := range logits {
		l[i] = float64(v)
	}
	const h = 1e-6
	for i := range l {
		orig := l[i]
		l[i] = orig + h
		fp := objective(l)
		l[i] = orig - h
		fm := objective(l)
		l[i] = orig
		assert.InDelta(t, (fp-fm)/(2*h), ref.dlogits[i], 1e-7, "dlogits[%d]", i)
	}
}

// fzGateCase is one shape of the gate case table (shared with the CUDA test).
type fzGateCase struct {
	rows, ne, d int
	temp        float32
}

var fzGateCases = []fzGateCase{
	{1, 1, 1, 1},
	{3, 2, 5, 0.7},
	{17, 4, 64, 1},
	{33, 8, 3, 2.5},
	{5, 40, 7, 1}, // more experts than one fused launch takes
	{1023, 6, 33, 0.5},
}

// The composed gate on the CPU equals the float64 reference. Tolerances:
// the CPU's float32 exp (polynomial, about 1 ulp) and float32 sums over at
// most 64 terms stay within 1e-6 + 1e-5*|x|; the logit gradient subtracts
// <w,dw> from dw, so its error is relative to |dw|, not to the result:
// 1e-5 absolute for |dw| of order d.
func TestGateComposedMatchesReference(t *testing.T) {
	for _, c := range fzGateCases {
		t.Run(fmt.Sprintf("b%d_e%d_d%d_t%g", c.rows, c.ne, c.d, c.temp), func(t *testing.T) {
			dev := kernels.NewCPU(2)
			rng := rand.New(rand.NewPCG(uint64(c.rows), uint64(c.ne)))
			logits := kerneltest.RandF32(rng, c.rows*c.ne, -4, 4)
			var hx [][]float32
			var xs, dxs []*kernels.Tensor
			dx0 := kerneltest.RandF32(rng, c.rows*c.d, -1, 1) // dexperts accumulate onto this
			for range c.ne {
				x := kerneltest.RandF32(rng, c.rows*c.d, -1, 1)
				hx = append(hx, x)
				xs = append(xs, kerneltest.Upload(dev, x, c.rows, c.d))
				dxs = append(dxs, kerneltest.Upload(dev, dx0, c.rows, c.d))
			}
			dout := kerneltest.RandF32(rng, c.rows*c.d, -1, 1)
			ref := fzNewGateRef(logits, hx, dout, c.rows, c.ne, c.d, float64(c.temp))

			lt := kerneltest.Upload(dev, logits, c.rows, c.ne)
			w, out := dev.Alloc(kernels.Float32, c.rows, c.ne), dev.Alloc(kernels.Float32, c.rows, c.d)
			kernels.GateForward(dev, out, w, lt, xs, c.temp)
			kerneltest.CheckClose(t, "w", kerneltest.Download(dev, w), ref.w, 1e-6, 1e-5, nil)
			kerneltest.CheckClose(t, "out", kerneltest.Download(dev, out), ref.out, 1e-6, 1e-5, nil)

			dl, dw := dev.Alloc(kernels.Float32, c.rows, c.ne), dev.Alloc(kernels.Float32, c.rows, c.ne)
			kernels.GateBackward(dev, dl, dw, kerneltest.Upload(dev, dout, c.rows, c.d), w, xs, dxs, c.temp)
			kerneltest.CheckClose(t, "dlogits", kerneltest.Download(dev, dl), ref.dlogits, 1e-5, 1e-5, nil)
			for e := range dxs {
				want := make([]float64, c.rows*c.d)
				for i := range want {
					want[i] = float64(dx0[i]) + ref.dx[e][i]
				}
				kerneltest.CheckClose(t, fmt.Sprintf("dexperts[%d]", e), kerneltest.Download(dev, dxs[e]), want, 1e-6, 1e-5, nil)
			}
			require.Panics(t, func() {
				kernels.GateBackward(dev, dl, nil, kerneltest.Upload(dev, dout, c.rows, c.d), w, xs, dxs, c.temp)
			}, "the composed backward needs dw scratch")
		})
	}
}

// fzLossTask describes one task of a multi-task loss case.
type fzLossTask struct {
	kind          kernels.LossKind
	pos, lambda   float32
	weight, space bool
	zRange        float64
}

// fzLossCase is one entry of the multi-task loss case table.
type fzLossCase struct {
	name          string
	rows          int
	tasks         []fzLossTask
	noTaskLoss    bool
	noTotal       bool
	scale         float32
	initTaskLoss  float32
	initTotalLoss float32
}

var fzBCE, fzMSE = kernels.LossBCE, kernels.LossMSE

var fzLossCases = []fzLossCase{
	{name: "one_bce", rows: 1, tasks: []fzLossTask{{kind: fzBCE, pos: 1, lambda: 1, zRange: 3}}, scale: 1},
	{name: "model_like", rows: 37, scale: 1.0 / 37, initTaskLoss: 0.25, initTotalLoss: -1, tasks: []fzLossTask{
		{kind: fzBCE, pos: 1, lambda: 0.7, weight: true, zRange: 4},
		{kind: fzBCE, pos: 3, lambda: 1, space: true, zRange: 4},
		{kind: fzBCE, pos: 2, lambda: 1.5, weight: true, space: true, zRange: 4},
		{kind: fzMSE, pos: 1, lambda: 0.3, zRange: 5},
		{kind: fzMSE, pos: 1, lambda: 1, weight: true, space: true, zRange: 5},
	}},
	{name: "extreme_logits", rows: 1000, scale: 1e-3, tasks: []fzLossTask{
		{kind: fzBCE, pos: 1, lambda: 1, zRange: 90}, {kind: fzBCE, pos: 5, lambda: 2, weight: true, zRange: 40}}},
	{name: "only_task_losses", rows: 513, scale: 0.5, noTotal: true, tasks: []fzLossTask{
		{kind: fzBCE, pos: 1, lambda: 0.5, zRange: 3}, {kind: fzMSE, pos: 1, lambda: 2, weight: true, zRange: 3}}},
	{name: "only_total", rows: 200, scale: 0.01, noTaskLoss: true, tasks: []fzLossTask{
		{kind: fzBCE, pos: 4, lambda: 0.25, space: true, zRange: 3}, {kind: fzMSE, pos: 1, lambda: 1, zRange: 3}}},
	{name: "seventeen_tasks", rows: 300, scale: 1.0 / 300, tasks: func() []fzLossTask {
		var ts []fzLossTask
		for i := range 17 { // more tasks than one fused launch takes
			k := fzBCE
			if i%3 == 2 {
				k = fzMSE
			}
			ts = append(ts, fzLossTask{kind: k, pos: 1 + float32(i%2), lambda: 0.1 * float32(i+1), weight: i%4 == 1,
				space: i%5 == 3, zRange: 3})
		}
		return ts
	}()},
	{name: "large", rows: 1 << 17, scale: 1.0 / (1 << 17), tasks: []fzLossTask{
		{kind: fzBCE, pos: 1, lambda: 1, weight: true, zRange: 6}, {kind: fzBCE, pos: 1.5, lambda: 0.5, space: true, zRange: 6},
		{kind: fzMSE, pos: 1, lambda: 0.2, zRange: 6}}},
}

// fzLossData is the host data of one loss case and its float64 reference.
type fzLossData struct {
	z, y, w, space [][]float32
	wantDZ         [][]float64
	wantLoss       []float64 // per task, scaled, before lambda
	wantTotal      float64
}

func fzNewLossData(c fzLossCase, rng *rand.Rand) fzLossData {
	var ld fzLossData
	for _, s := range c.tasks {
		z := kerneltest.RandF32(rng, c.rows, -s.zRange, s.zRange)
		y := make([]float32, c.rows)
		for i := range y {
			if s.kind == fzBCE {
				y[i] = float32(rng.IntN(2))
				if i%7 == 3 {
					y[i] = 0.3 // soft label
				}
			} else {
				y[i] = float32(rng.NormFloat64() * 2)
			}
		}
		var w, sp []float32
		if s.weight {
			w = kerneltest.RandF32(rng, c.rows, 0, 2)
		}
		if s.space {
			sp = make([]float32, c.rows)
			for i := range sp {
				sp[i] = float32(rng.IntN(3)) // 0, 1 or 2: only 1 is inside
			}
		}
		dz := make([]float64, c.rows)
		sum := 0.0
		for i := range z {
			wi := 1.0
			if s.pos != 1 {
				wi *= 1 + float64(s.pos-1)*float64(y[i])
			}
			if w != nil {
				wi *= float64(w[i])
			}
			if sp != nil && sp[i] != 1 {
				wi = 0
			}
			zi, yi := float64(z[i]), float64(y[i])
			if s.kind == fzBCE {
				sum += wi * (math.Max(zi, 0) - zi*yi + math.Log1p(math.Exp(-math.Abs(zi))))
				dz[i] = float64(s.lambda) * float64(c.scale) * wi * (1/(1+math.Exp(-zi)) - yi)
			} else {
				sum += wi * (zi - yi) * (zi - yi)
				dz[i] = float64(s.lambda) * float64(c.scale) * wi * 2 * (zi - yi)
			}
		}
		ld.z, ld.y, ld.w, ld.space = append(ld.z, z), append(ld.y, y), append(ld.w, w), append(ld.space, sp)
		ld.wantDZ = append(ld.wantDZ, dz)
		ld.wantLoss = append(ld.wantLoss, float64(c.scale)*sum)
		ld.wantTotal += float64(s.lambda) * float64(c.scale) * sum
	}
	return ld
}

// fzLossRun uploads a case to dev, runs MultiTaskLoss and returns dz, the task
// losses and the total as they come back.
func fzLossRun(dev kernels.Device, c fzLossCase, ld fzLossData, scratch bool) (dz [][]float32, taskLoss []float32, total float32) {
	var owned []*kernels.Tensor
	up := func(x []float32) *kernels.Tensor {
		if x == nil {
			return nil
		}
		t := kerneltest.Upload(dev, x, len(x), 1)
		owned = append(owned, t)
		return t
	}
	defer func() {
		for _, t := range owned {
			t.Release()
		}
	}()
	var tasks []kernels.LossTask
	for i, s := range c.tasks {
		dzT := dev.Alloc(kernels.Float32, c.rows, 1)
		owned = append(owned, dzT)
		tasks = append(tasks, kernels.LossTask{Kind: s.kind, Z: up(ld.z[i]), DZ: dzT, Y: up(ld.y[i]), Weight: up(ld.w[i]),
			Space: up(ld.space[i]), PosWeight: s.pos, Lambda: s.lambda})
	}
	var tl, tot *kernels.Tensor
	if !c.noTaskLoss {
		init := make([]float32, len(c.tasks))
		for i := range init {
			init[i] = c.initTaskLoss
		}
		tl = up(init)
	}
	if !c.noTotal {
		tot = up([]float32{c.initTotalLoss})
	}
	var sc *kernels.Tensor
	if scratch {
		sc = dev.Alloc(kernels.Float32, kernels.MultiTaskLossScratch(c.rows))
		owned = append(owned, sc)
	}
	kernels.MultiTaskLoss(dev, tl, tot, tasks, c.scale, sc)
	for _, k := range tasks {
		dz = append(dz, kerneltest.Download(dev, k.DZ))
	}
	if tl != nil {
		taskLoss = kerneltest.Download(dev, tl)
	}
	if tot != nil {
		total = kerneltest.Download(dev, tot)[0]
	}
	return dz, taskLoss, total
}

// The composed multi-task loss on the CPU equals the float64 reference.
// Tolerances: each gradient is a few float32 operations on the CPU's
// float32 sigmoid (about 1 ulp): 1e-7 + 1e-5*|dz|; the loss terms are
// computed in float32 and summed in float64, so the sums of non-negative
// terms are within 1e-5 relative (plus the float32 rounding of the scalar).
func TestMultiTaskLossComposedMatchesReference(t *testing.T) {
	for _, c := range fzLossCases {
		for _, scratch := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/scratch=%v", c.name, scratch), func(t *testing.T) {
				dev := kernels.NewCPU(2)
				ld := fzNewLossData(c, rand.New(rand.NewPCG(uint64(c.rows), 3)))
				dz, tl, tot := fzLossRun(dev, c, ld, scratch)
				for i := range c.tasks {
					kerneltest.CheckClose(t, fmt.Sprintf("dz[%d]", i), dz[i], ld.wantDZ[i], 1e-7, 1e-5, nil)
					if tl != nil {
						assert.InDelta(t, float64(c.initTaskLoss)+ld.wantLoss[i], float64(tl[i]),
							1e-6+1e-5*ld.wantLoss[i], "task loss %d", i)
					}
				}
				if !c.noTotal {
					assert.InDelta(t, float64(c.initTotalLoss)+ld.wantTotal, float64(tot), 1e-6+1e-5*ld.wantTotal, "total")
				}
			})
		}
	}
}

// Shape errors are panics naming the task; a short scratch too.
func TestMultiTaskLossBadArguments(t *testing.T) {
	dev := kernels.NewCPU(1)
	z, y, dz := dev.Alloc(kernels.Float32, 4), dev.Alloc(kernels.Float32, 4), dev.Alloc(kernels.Float32, 4)
	short := dev.Alloc(kernels.Float32, 3)
	ok := kernels.LossTask{Kind: kernels.LossBCE, Z: z, DZ: dz, Y: y, PosWeight: 1, Lambda: 1}
	cases := map[string]struct {
		tasks   []kernels.LossTask
		scratch *kernels.Tensor
		want    string
	}{
		"rows":    {[]kernels.LossTask{ok, {Kind: kernels.LossMSE, Z: short, DZ: short, Y: short, PosWeight: 1, Lambda: 1}}, nil, "task 1"},
		"kind":    {[]kernels.LossTask{{Kind: 9, Z: z, DZ: dz, Y: y}}, nil, "unknown loss kind"},
		"missing": {[]kernels.LossTask{{Kind: kernels.LossBCE, Z: z, Y: y}}, nil, "required"},
		"weight":  {[]kernels.LossTask{{Kind: kernels.LossBCE, Z: z, DZ: dz, Y: y, Weight: short, PosWeight: 1, Lambda: 1}}, nil, "task 0"},
		"scratch": {[]kernels.LossTask{ok}, short, "scratch"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				v := recover()
				require.NotNil(t, v)
				assert.Contains(t, fmt.Sprint(v), c.want)
			}()
			kernels.MultiTaskLoss(dev, nil, dev.Alloc(kernels.Float32, 1), c.tasks, 1, c.scratch)
		})
	}
}

// MetricSums.Add on a batch whose sums are worked out by hand.
func TestMetricSumsByHand(t *testing.T) {
	const eps = 1e-7
	var s kernels.MetricSums
	pred := []float32{0.9, 0.2, 0.5, 0.7, float32(math.NaN()), 1, 0.4, 0.6}
	label := []float32{1, 0, 1, 0, 1, 0, 2, 1}
	mask := []float32{1, 1, 1, 1, 1, 1, 1, 0} // the last row is outside
	s.Add(true, pred, label, mask, eps, 0.5)
	// counted: rows 0..5 (row 6 has label 2, row 7 is masked out)
	// 0.9/1 TP, 0.2/0 TN, 0.5/1 FN (not > 0.5), 0.7/0 FP, NaN/1, 1/0 FP (clipped)
	f := func(x float32) float64 { return float64(x) } // the float32 inputs, exactly
	want := kernels.MetricSums{Count: 6, Positives: 3, LabelSum: 3, TP: 1, FP: 2, TN: 1, FN: 1, NaN: 1, BadLabels: 1,
		// -log(p) for label 1, -log(1-p) for 0; p = 1 is clipped to 1-eps
		LogLoss: -math.Log(f(0.9)) - math.Log(1-f(0.2)) - math.Log(f(0.5)) - math.Log(1-f(0.7)) - math.Log(eps)}
	assert.InDelta(t, want.LogLoss, s.LogLoss, 1e-8)
	s.LogLoss = want.LogLoss
	assert.Equal(t, want, s)

	var r kernels.MetricSums
	r.Add(false, []float32{1, 2.5, float32(math.NaN()), -1}, []float32{0, 3, 1, -1}, nil, eps, 0.5)
	assert.Equal(t, kernels.MetricSums{Count: 4, LabelSum: 3, SqErr: 1 + 0.25, AbsErr: 1 + 0.5, NaN: 1}, r)
}

// NewMetricAccumulator on a device without a reduction sums on the host,
// batch after batch, until Reset.
func TestMetricAccumulatorHost(t *testing.T) {
	dev := kernels.NewCPU(2)
	_, err := kernels.NewMetricAccumulator(dev, 0, 1e-7, 0.5)
	require.Error(t, err)
	_, err = kernels.NewMetricAccumulator(dev, 1, 0.7, 0.5)
	require.ErrorContains(t, err, "eps")
	acc, err := kernels.NewMetricAccumulator(dev, 2, 1e-7, 0.5)
	require.NoError(t, err)
	defer acc.Release()
	rng := rand.New(rand.NewPCG(1, 2))
	var want [2]kernels.MetricSums
	for _, rows := range []int{5, 100, 1} {
		p0, p1 := kerneltest.RandF32(rng, rows, 0, 1), kerneltest.RandF32(rng, rows, -2, 2)
		l0, l1 := make([]float32, rows), kerneltest.RandF32(rng, rows, -2, 2)
		m0 := make([]float32, rows)
		for i := range l0 {
			l0[i] = float32(rng.IntN(2))
			m0[i] = float32(rng.IntN(2))
		}
		want[0].Add(true, p0, l0, m0, 1e-7, 0.5)
		want[1].Add(false, p1, l1, nil, 1e-7, 0.5)
		acc.Add([]kernels.MetricTask{
			{Binary: true, Pred: kerneltest.Upload(dev, p0, rows), Label: kerneltest.Upload(dev, l0, rows), Mask: kerneltest.Upload(dev, m0, rows)},
			{Pred: kerneltest.Upload(dev, p1, rows), Label: kerneltest.Upload(dev, l1, rows)},
		})
	}
	got, err := acc.Sums()
	require.NoError(t, err)
	assert.Equal(t, want[:], got)
	assert.Positive(t, got[0].Count)
	acc.Reset()
	got, err = acc.Sums()
	require.NoError(t, err)
	assert.Equal(t, []kernels.MetricSums{{}, {}}, got)
	assert.Panics(t, func() { acc.Add(nil) }, "task count")
}

// checkPinned checks NewPinned's buffer on dev: downloads of the first
// elements of float32 and int32 tensors land at their offsets after the
// ops queued before them, once the device is synced, and nowhere else;
// uploads reach the first elements of a tensor before the ops queued after
// them, and nothing more.
func checkPinned(t *testing.T, dev kernels.Device) {
	const n = 1000
	p, err := kernels.NewPinned(dev, 2*n)
	require.NoError(t, err)
	defer p.Release()
	require.Len(t, p.F32(), 2*n)
	require.Len(t, p.I32(), 2*n)
	f := dev.Alloc(kernels.Float32, n/2, 2)
	i := dev.Alloc(kernels.Int32, n)
	defer f.Release()
	defer i.Release()
	for k := range p.F32() {
		p.F32()[k] = -1
	}
	dev.Fill(f, 3)
	dev.Fill(i, 7)
	p.Download(10, f, 600)
	p.Download(700, i, 200)
	require.NoError(t, dev.Sync())
	for k, v := range p.F32() {
		switch {
		case k >= 10 && k < 610:
			require.Equal(t, float32(3), v, "element %d", k)
		case k >= 700 && k < 900:
			require.Equal(t, int32(7), p.I32()[k], "element %d", k)
		default:
			require.Equal(t, float32(-1), v, "element %d: outside the downloads", k)
		}
	}

	for k := range n {
		p.F32()[k] = float32(k)
		p.I32()[n+k] = int32(-k)
	}
	p.Upload(f, 0, n)
	dev.Scale(f, 2) // queued after the upload: sees its data
	p.Upload(i, n, 100)
	require.NoError(t, dev.Sync())
	gf, gi := make([]float32, n), make([]int32, n)
	dev.CopyToHostF32(gf, f)
	dev.CopyToHostI32(gi, i)
	for k := range n {
		require.Equal(t, float32(2*k), gf[k], "uploaded float %d", k)
		if k < 100 {
			require.Equal(t, int32(-k), gi[k], "uploaded id %d", k)
		} else {
			require.Equal(t, int32(7), gi[k], "id %d: past the upload", k)
		}
	}
	_, err = kernels.NewPinned(dev, -1)
	require.Error(t, err)
}

// NewPinned on a device without a PinnedStager (the CPU) is host memory
// with the device's synchronous copies.
func TestNewPinnedHostFallback(t *testing.T) {
	var dev kernels.Device = kernels.NewCPU(1)
	_, ok := dev.(kernels.PinnedStager)
	require.False(t, ok)
	checkPinned(t, dev)
}
