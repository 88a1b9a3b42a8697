//go:build cuda

package mtl_test

// Model-level parity of the CUDA device with the CPU device, through the
// models' public API only (NewModel, Params, Predict, TrainStep, Release):
// the same seed, configuration and batches on kernels.NewCPU(2) and on GPU
// 0 give the same outputs, the same gradient of every parameter and the
// same losses over 20 training steps, within the tolerances argued below;
// and models created, trained and released repeatedly leave no device
// memory behind. The tests skip when there is no GPU.

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/cublas"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/schema"
)

// gpuParityDevice opens GPU 0 or skips the test. Close at cleanup fails the test
// if tensors were left allocated.
func gpuParityDevice(t *testing.T) *kernels.CUDA {
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

// gpuParitySchema has every kind of input: own-domain ids, a list sharing its
// domain with a scalar feature, a list without value count, a continuous
// feature, a weight column, two binary targets and a regression target.
func gpuParitySchema() *schema.Schema {
	cat := func(name, domain string, max int64, tags ...schema.Tag) *schema.Feature {
		return &schema.Feature{Name: name, DType: schema.Int32, Tags: append([]schema.Tag{schema.TagCategorical}, tags...),
			IntDomain: &schema.IntDomain{Name: domain, Max: max}}
	}
	bin := func(name string) *schema.Feature {
		return &schema.Feature{Name: name, DType: schema.Float32,
			Tags: []schema.Tag{schema.TagBinaryClassification, schema.TagTarget}, IntDomain: &schema.IntDomain{Max: 1}}
	}
	hist := cat("hist", "item", 60, schema.TagList)
	hist.ValueCount = &schema.ValueCount{Min: 0, Max: 5}
	return &schema.Schema{Features: []*schema.Feature{
		cat("user", "", 50),
		cat("item", "item", 60),
		hist,
		cat("tags", "", 12, schema.TagList),
		{Name: "price", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "w", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}}, // weight column, not an input
		bin("click"),
		bin("like"),
		{Name: "watch", DType: schema.Float32, Tags: []schema.Tag{schema.TagRegression, schema.TagTarget}},
	}}
}

// gpuParityConfig switches on every loss term and gives each architecture a
// few layers, experts and gates.
func gpuParityConfig(model string) mtl.Config {
	c := mtl.DefaultConfig()
	c.Model = model
	c.MLPLayers = []int{32, 16}
	c.ExpertMLPLayers = []int{16, 8}
	c.MMoENumExperts = 4
	c.CGCTaskExperts, c.CGCSharedExperts = 2, 1
	c.PLELayers = 2
	c.DCNInteractedLayerNum = 2
	c.EmbeddingsDim = 8
	c.GateDim = 8
	c.GateTemperature = 0.7
	c.TowerLayers = []int{8}
	c.L2Reg = 1e-3
	c.EmbeddingL2Reg = 1e-3
	c.LossWeights = map[string]float32{"click": 0.7, "watch": 0.3}
	c.PosClassWeights = map[string]float32{"like": 3}
	c.WeightColumns = map[string]string{"click": "w"}
	c.SampleSpace = map[string]string{"like": "click"}
	// Dropout stays off: the CPU device cuts batches above a few hundred
	// rows into shards with their own dropout seeds, which the GPU does not
	// do, so the masks would differ by design (the kernels' dropout parity
	// is tested in package kernels).
	c.Dropout = 0
	c.EmbeddingsDim = 8           // deepfm
	c.WNDHashedCrossNumBins = 100 // wide_n_deep: ids collide, crosses of lists have duplicates
	c.MultihotMaxSeqLength = 3
	c.Seed = 11
	return c
}

// gpuParityBatch is batch number i of a fixed sequence (the same on both
// devices): Zipf-like ids, lists with empty rows, labels that correlate with
// the ids so that training has something to learn.
func gpuParityBatch(i, rows int) *loader.Batch {
	rng := rand.New(rand.NewPCG(uint64(i), 77))
	ids := func(max int64) []int32 {
		out := make([]int32, rows)
		for r := range out {
			out[r] = int32(math.Min(float64(max), math.Floor(math.Pow(rng.Float64(), 2)*float64(max+1))))
		}
		return out
	}
	list := func(maxLen int, max int64) ([]int32, []int32) {
		offs := []int32{0}
		var vals []int32
		for r := 0; r < rows; r++ {
			for range rng.IntN(maxLen + 1) {
				vals = append(vals, int32(rng.Int64N(max+1)))
			}
			offs = append(offs, int32(len(vals)))
		}
		return vals, offs
	}
	f32 := func(gen func(r int) float32) []float32 {
		out := make([]float32, rows)
		for r := range out {
			out[r] = gen(r)
		}
		return out
	}
	user, item := ids(50), ids(60)
	cols := map[string]*loader.Column{
		"user":  {I32: user},
		"item":  {I32: item},
		"price": {F32: f32(func(int) float32 { return float32(rng.NormFloat64()) })},
		"w":     {F32: f32(func(int) float32 { return 0.5 + rng.Float32() })},
		"click": {F32: f32(func(r int) float32 { return gpuB2F(item[r]%3 == 0 || rng.IntN(5) == 0) })},
		"watch": {F32: f32(func(r int) float32 { return float32(user[r]%5) + float32(rng.NormFloat64()*0.3) })},
	}
	cols["like"] = &loader.Column{F32: f32(func(r int) float32 { return gpuB2F(cols["click"].F32[r] == 1 && user[r]%2 == 0) })}
	v, o := list(5, 60)
	cols["hist"] = &loader.Column{I32: v, Offsets: o}
	v, o = list(3, 12)
	cols["tags"] = &loader.Column{I32: v, Offsets: o}
	for k, c := range cols {
		c.Name = k
	}
	return loader.NewBatch(rows, cols, fmt.Sprintf("parity batch %d", i), nil)
}

func gpuB2F(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// gpuHostParams reads every parameter of m.
func gpuHostParams(m *mtl.Model) map[string][]float32 {
	out := map[string][]float32{}
	for _, p := range m.Params() {
		v := make([]float32, p.Tensor.Len())
		p.Tensor.Dev.CopyToHostF32(v, p.Tensor)
		out[p.Name] = v
	}
	return out
}

// gpuPredict returns the outputs of every task for b.
func gpuPredict(t *testing.T, m *mtl.Model, b *loader.Batch) [][]float32 {
	out := make([][]float32, len(m.Tasks()))
	for i := range out {
		out[i] = make([]float32, b.Rows)
	}
	require.NoError(t, m.Predict(b, out))
	return out
}

const (
	gpuParityRows  = 300 // two shards on the CPU device, one pass on the GPU
	gpuParitySteps = 20
	gpuGradLR      = 1 // SGD step used to read gradients: p1 = p0 - gpuGradLR*g
)

// TestCUDAModelParity compares, for each architecture, the CPU device and
// the GPU on the same model and batches.
//
// Tolerances, and why:
//   - Outputs (sigmoid probabilities, regression values) of the first
//     forward pass: 2e-5 + 2e-4*|x|. Only rounding differs: GEMMs sum in
//     other orders (cuBLAS, the CPU's blocked kernels), which costs up to
//     k*2^-24 (k <= 64: 4e-6) relative to the sum of |terms| per layer, over
//     about six layers (input, two expert layers, gate, tower, head), plus
//     float64 vs float32 exponentials in softmax and sigmoid (1e-7).
//   - Gradients, read back as g = (p0 - p1)/lr from one SGD step (lr = 1):
//     1e-3*|g| + 1e-4*max|g over the tensor| + the rounding of p1 and p0
//     (2^-24*(|p0|+|p1|)/lr on each device). A gradient is a sum over the
//     batch (300 rows) of backward-chain products, summed in different
//     orders (and over two shards on the CPU); entries that cancel have
//     errors relative to the tensor's larger entries, not to themselves.
//   - Losses of 20 Adam steps (lr 5e-3): 1e-4 + 2e-3*|loss|. Step 1 has only
//     forward rounding; afterwards parameter differences of ~1e-6 relative
//     grow through the updates (Adam divides by sqrt(v), so entries with
//     gradients near the rounding level can move by up to lr*1e-2).
//
// The activation cases run the same comparisons with the hidden layers'
// activation computed by the devices' Activator (pre-activation kept,
// derivative taken there), each activation on two of the architectures, and
// fewer Adam steps: the activation kernels' own accuracy is held to the
// float64 definitions in package kernels (TestCUDAActivationParity, within
// 1e-6 relative), far inside these tolerances.
func TestCUDAModelParity(t *testing.T) {
	gpu := gpuParityDevice(t)
	for _, c := range []struct {
		model, act string
		steps      int
	}{
		{"mlp", "relu", gpuParitySteps},
		{"mmoe", "relu", gpuParitySteps},
		{"cgc", "relu", gpuParitySteps},
		{"ple", "relu", gpuParitySteps},
		{"mlp", "gelu", 4},
		{"mlp", "tanh", 4},
		{"mmoe", "selu", 4},
		{"mmoe", "sigmoid", 4},
		{"cgc", "swish", 4},
		{"cgc", "elu", 4},
		{"ple", "leaky_relu", 4},
		{"ple", "gelu", 4},
		{"deepfm", "relu", gpuParitySteps},
		{"wide_n_deep", "relu", gpuParitySteps},
		{"deepfm", "gelu", 4},
		{"dcn", "relu", gpuParitySteps},
		{"dlrm", "relu", gpuParitySteps},
		{"dcn", "tanh", 4},
		{"dlrm", "selu", 4},
	} {
		t.Run(c.model+"/"+c.act, func(t *testing.T) {
			cfg := gpuParityConfig(c.model)
			cfg.Activation = c.act
			gpuModelParity(t, kernels.NewCPU(2), gpu, cfg, c.steps)
		})
	}
	require.Zero(t, gpu.LiveTensors(), "every model released its tensors")
}

// gpuModelParity runs the comparisons of TestCUDAModelParity for the model
// of base (its optimizer and learning rate replaced) between the devices
// cpu and gpu, with steps Adam steps.
func gpuModelParity(t *testing.T, cpu, gpu kernels.Device, base mtl.Config, steps int) {
	s := gpuParitySchema()
	newPair := func(cfg mtl.Config) (*mtl.Model, *mtl.Model) {
		mc, err := mtl.NewModel(s, cfg, cpu, gpuParityRows)
		require.NoError(t, err)
		mg, err := mtl.NewModel(s, cfg, gpu, gpuParityRows)
		require.NoError(t, err)
		return mc, mg
	}

	// Forward outputs and gradients: one SGD step with lr 1.
	cfg := base
	cfg.Optimizer, cfg.LR = "sgd", gpuGradLR
	mc, mg := newPair(cfg)
	p0c, p0g := gpuHostParams(mc), gpuHostParams(mg)
	require.Equal(t, p0c, p0g, "the same seed initialises the same parameters on both devices")
	b := gpuParityBatch(0, gpuParityRows)
	oc, og := gpuPredict(t, mc, b), gpuPredict(t, mg, b)
	for k := range oc {
		gpuCheck(t, fmt.Sprintf("output %s", mc.Tasks()[k].Name), og[k], oc[k], 2e-5, 2e-4)
	}
	sc, err := mc.TrainStep(b)
	require.NoError(t, err)
	sg, err := mg.TrainStep(b)
	require.NoError(t, err)
	// TrainStep and Predict report device errors themselves (their Sync);
	// nothing may be left for this one
	require.NoError(t, gpu.Sync(), "device errors of the forward pass and the gradient step")
	assert.InDelta(t, sc.Loss, sg.Loss, 2e-5+2e-4*math.Abs(sc.Loss), "loss of the gradient step")
	p1c, p1g := gpuHostParams(mc), gpuHostParams(mg)
	nonzero := 0
	for _, p := range mc.Params() {
		name := p.Name
		gc, gg := make([]float32, len(p0c[name])), make([]float32, len(p0c[name]))
		var round []float64
		maxG := 0.0
		for i, v := range p0c[name] {
			gc[i] = float32((float64(v) - float64(p1c[name][i])) / gpuGradLR)
			gg[i] = float32((float64(v) - float64(p1g[name][i])) / gpuGradLR)
			maxG = math.Max(maxG, math.Abs(float64(gc[i])))
			round = append(round, 0x1p-24*(2*math.Abs(float64(v))+math.Abs(float64(p1c[name][i]))+
				math.Abs(float64(p1g[name][i])))/gpuGradLR)
		}
		if maxG > 0 {
			nonzero++
		}
		gpuCheckFn(t, "gradient "+name, gg, gc, func(i int) float64 { return 1e-4*maxG + round[i] }, 1e-3)
	}
	assert.Greater(t, nonzero, len(p0c)*3/4, "most parameters have a non-zero gradient on this batch")
	mc.Release()
	mg.Release()

	// 20 training steps with the default optimizer (Adam).
	cfg = base
	cfg.LR = 5e-3
	mc, mg = newPair(cfg)
	defer mc.Release()
	defer mg.Release()
	var first, last float64
	for step := 1; step <= steps; step++ {
		b := gpuParityBatch(step, gpuParityRows)
		sc, err := mc.TrainStep(b)
		require.NoError(t, err)
		sg, err := mg.TrainStep(b)
		require.NoError(t, err)
		assert.InDelta(t, sc.Loss, sg.Loss, 1e-4+2e-3*math.Abs(sc.Loss), "loss at step %d", step)
		for k := range sc.TaskLoss {
			assert.InDelta(t, sc.TaskLoss[k], sg.TaskLoss[k], 1e-4+2e-3*math.Abs(sc.TaskLoss[k]),
				"task %d loss at step %d", k, step)
		}
		if step == 1 {
			first = sc.Loss
		}
		last = sc.Loss
	}
	require.NoError(t, gpu.Sync())
	t.Logf("%s, %s: loss %.5f -> %.5f over %d steps", base.Model, base.Activation, first, last, steps)
}

// gpuCheck reports elements with |gpu-cpu| > abs + rel*|cpu|.
func gpuCheck(t *testing.T, name string, gpu, cpu []float32, abs, rel float64) {
	t.Helper()
	gpuCheckFn(t, name, gpu, cpu, func(int) float64 { return abs }, rel)
}

// gpuCheckFn reports elements with |gpu-cpu| > abs(i) + rel*|cpu|.
func gpuCheckFn(t *testing.T, name string, gpu, cpu []float32, abs func(i int) float64, rel float64) {
	t.Helper()
	require.Equal(t, len(cpu), len(gpu), name)
	bad := 0
	for i := range cpu {
		tol := abs(i) + rel*math.Abs(float64(cpu[i]))
		if d := math.Abs(float64(gpu[i]) - float64(cpu[i])); !(d <= tol) {
			if bad < 5 {
				t.Errorf("%s[%d]: gpu %.8g, cpu %.8g (tolerance %.3g)", name, i, gpu[i], cpu[i], tol)
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d elements differ", name, bad, len(cpu))
	}
}

// TestCUDAModelNoLeak creates, trains, uses and releases every architecture
// (with a predictor of its own) several times: the device's count of live
// tensors and bytes, and the allocation pool's bytes in use, return to the
// baseline after every round; after the first round (which sizes the
// context's own caches: cuBLAS plans, sort scratch) the driver's free
// memory stays where it was.
func TestCUDAModelNoLeak(t *testing.T) {
	gpu := gpuParityDevice(t)
	s := gpuParitySchema()
	require.NoError(t, gpu.Sync())
	require.NoError(t, gpu.Trim())
	base, err := gpu.MemInfo()
	require.NoError(t, err)
	baseBytes, baseLive := gpu.MemoryInUse(), gpu.LiveTensors()
	var afterFirst cublas.MemInfo
	const rounds = 4
	for round := range rounds {
		for _, model := range []string{"mlp", "mmoe", "cgc", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep"} {
			m, err := mtl.NewModel(s, gpuParityConfig(model), gpu, gpuParityRows)
			require.NoError(t, err)
			for step := range 3 {
				_, err := m.TrainStep(gpuParityBatch(100+step, gpuParityRows-step*50))
				require.NoError(t, err)
			}
			p := m.NewPredictor(64)
			out := make([][]float32, len(m.Tasks()))
			for i := range out {
				out[i] = make([]float32, 64)
			}
			require.NoError(t, p.Predict(gpuParityBatch(200, 64), out))
			require.NoError(t, gpu.Sync(), "round %d, %s: device errors", round, model)
			p.Release()
			m.Release()
		}
		require.NoError(t, gpu.Sync())
		require.NoError(t, gpu.Trim())
		mi, err := gpu.MemInfo()
		require.NoError(t, err)
		assert.Equal(t, baseBytes, gpu.MemoryInUse(), "round %d: bytes of live tensors", round)
		assert.Equal(t, baseLive, gpu.LiveTensors(), "round %d: live tensors", round)
		assert.Equal(t, base.PoolUsed, mi.PoolUsed, "round %d: pool bytes in use", round)
		if round == 0 {
			afterFirst = mi
			continue
		}
		const slack = 4 << 20 // driver bookkeeping
		assert.GreaterOrEqual(t, mi.Free, afterFirst.Free-slack, "round %d: free device memory %d, after round 0 %d",
			round, mi.Free, afterFirst.Free)
	}
	t.Logf("device memory free: %d MiB at the start, %d MiB after round 0", base.Free>>20, afterFirst.Free>>20)
}

// TestCUDAFitDistributed is TestFitDistributed on 2 CUDA ranks, each on a
// CUDA context of its own: Fit with validation and a checkpoint, every
// rank ending with the same parameter bits and metrics.
func TestCUDAFitDistributed(t *testing.T) {
	checkFitDistributed(t, []int{2}, func(t *testing.T) kernels.Device { return gpuParityDevice(t) })
}

// TestCUDAFitRowShardedResumes: the checkpoint of a CPU job of 2 ranks with
// the tables sharded by rows resumes on 3 CUDA ranks with the tables
// sharded by rows (LoadShardedCheckpoint on the device) and replicated:
// both reach the same losses, metrics and checkpoint bits (the sharded
// job's gathered from the ranks' devices), as TestFitRowShardedResumes
// shows on the CPU.
func TestCUDAFitRowShardedResumes(t *testing.T) {
	gpuParityDevice(t)
	trainPath, evalPath := trData(t, 3000, 700)
	dir := t.TempDir()
	ck := func(name string) string { return filepath.Join(dir, name) }
	rowJob{n: 2, sharding: mtl.ShardRow, save: ck("row2"), epochs: 1}.run(t, trainPath, evalPath)
	gpu := func() kernels.Device { return gpuParityDevice(t) }
	var hists [][]*mtl.History
	for _, j := range []rowJob{
		{n: 3, sharding: mtl.ShardRow, load: ck("row2"), save: ck("row2-row3"), epochs: 2, trainMetrics: 4, dev: gpu},
		{n: 3, sharding: mtl.ShardReplicate, load: ck("row2"), save: ck("row2-rep3"), epochs: 2, trainMetrics: 4, dev: gpu},
	} {
		h := j.run(t, trainPath, evalPath)
		require.Len(t, h[0].Epochs, 1, "the second epoch only")
		require.EqualValues(t, 3000, h[0].Epochs[0].Examples)
		hists = append(hists, h)
	}
	row, rep := hists[0][0].Epochs[0], hists[1][0].Epochs[0]
	require.Equal(t, rep.Loss, row.Loss)
	require.Equal(t, rep.Validation, row.Validation)
	require.NotEmpty(t, row.Train)
	require.Equal(t, rep.Train, row.Train)
	sameCheckpoint(t, ck("row2-row3"), ck("row2-rep3"))
}
