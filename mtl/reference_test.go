package mtl

// An independent float64 reference of every architecture, written from the
// configuration, the schema and the papers' equations, not from the model's
// layers or kernels: MMoE (Ma et al., KDD 2018), CGC and PLE (Tang et al.,
// RecSys 2020; Merlin's gates-on-input variant), the shared-bottom MLP, the
// input block (embedding lookup with the sum, mean and sqrtn combiners,
// continuous columns), the towers and heads, and the loss of docs/ARCHITECTURE.md ("Model semantics").
// It reads the parameters out of the model by name (Model.Params), the
// inputs and labels out of the raw batch columns, and fails when the model
// has a parameter it does not use or lacks one it needs, so that a new
// parameter cannot slip past it.

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

// Tolerances of the model (float32) against the reference (float64).
// Every output is a chain of at most ~8 dot products of length <= 60 over
// values of magnitude <= ~5; float32 rounds each product and sum to a
// relative 2^-24 ~ 6e-8, so the classic bound n*u*sum|x_i*y_i| allows an
// error of a few 1e-6 on a logit. Measured over every case below: at most
// 2.1e-7 on a Predict output and 8.6e-8 relative on the loss (go test -v
// -run TestReferenceForward logs both per case). The tolerances sit ~100x
// above what is measured and ~10x above the bound, while the architecture
// errors this test exists for (a gate reading the wrong input or mixing
// the wrong experts, a temperature not applied, a wrong combiner) move the
// outputs by 1e-3 or more (TestConfigWiring asserts that margin for every
// option).
const (
	refOutTol  = 2e-5 // absolute, on probabilities and regression outputs
	refLossTol = 2e-5 // relative (plus the same absolute), on losses
)

// refTensor is a parameter as float64 with its shape.
type refTensor struct {
	shape []int
	v     []float64
}

// refNet computes the model's function in float64.
type refNet struct {
	t     *testing.T
	cfg   Config // as the user gave it (Tasks possibly empty)
	s     *schema.Schema
	p     map[string]refTensor
	used  map[string]bool
	tasks []refTask
}

type refTask struct {
	target string
	binary bool
}

// refParams reads every parameter of m by name.
func refParams(m *Model) map[string]refTensor {
	out := map[string]refTensor{}
	for _, p := range m.Params() {
		h := hostT(p.Tensor)
		v := make([]float64, len(h))
		for i, x := range h {
			v[i] = float64(x)
		}
		out[p.Name] = refTensor{shape: append([]int(nil), p.Tensor.Shape...), v: v}
	}
	return out
}

func newRefNet(t *testing.T, m *Model, cfg Config, s *schema.Schema) *refNet {
	r := &refNet{t: t, cfg: cfg, s: s, p: refParams(m), used: map[string]bool{}}
	names := cfg.Tasks
	if len(names) == 0 {
		for _, f := range s.Features {
			if f.IsTarget() {
				names = append(names, f.Name)
			}
		}
		sort.Strings(names)
	}
	for _, n := range names {
		f := s.Feature(n)
		require.NotNil(t, f, "target %s", n)
		r.tasks = append(r.tasks, refTask{target: n,
			binary: f.HasTag(schema.TagBinaryClassification) || f.HasTag(schema.TagBinary)})
	}
	return r
}

func (r *refNet) param(name string) refTensor {
	p, ok := r.p[name]
	if !ok {
		r.t.Fatalf("reference: the model has no parameter %q", name)
	}
	r.used[name] = true
	return p
}

// checkAllUsed fails when the model has parameters the reference did not
// read (an extra parameter changes what the model computes or trains).
func (r *refNet) checkAllUsed(t *testing.T) {
	t.Helper()
	var unused []string
	for n := range r.p {
		if !r.used[n] {
			unused = append(unused, n)
		}
	}
	sort.Strings(unused)
	require.Empty(t, unused, "parameters of the model that the reference does not use")
}

func (r *refNet) act(v []float64) []float64 {
	switch r.cfg.Activation {
	case "relu":
		return relu64(v)
	case "linear":
		return v
	}
	r.t.Fatalf("reference: activation %s", r.cfg.Activation)
	return nil
}

func relu64(v []float64) []float64 {
	for i := range v {
		v[i] = math.Max(v[i], 0)
	}
	return v
}

// affine is x W + b with W [in, out] stored from offset wOff (b from
// bOff; no bias when b is nil).
func affine(x []float64, w refTensor, wOff int, b *refTensor, bOff, out int) []float64 {
	y := make([]float64, out)
	if b != nil {
		copy(y, b.v[bOff:bOff+out])
	}
	for i, xi := range x {
		row := w.v[wOff+i*out : wOff+(i+1)*out]
		for j := range y {
			y[j] += xi * row[j]
		}
	}
	return y
}

// dense applies the Dense layer name ("<name>/kernel", "<name>/bias").
func (r *refNet) dense(name string, x []float64, bias bool) []float64 {
	w := r.param(name + "/kernel")
	if len(w.shape) != 2 || w.shape[0] != len(x) {
		r.t.Fatalf("reference: %s/kernel has shape %v for an input of %d", name, w.shape, len(x))
	}
	var b *refTensor
	if bias {
		bt := r.param(name + "/bias")
		b = &bt
	} else if _, ok := r.p[name+"/bias"]; ok {
		r.t.Fatalf("reference: %s must not have a bias", name)
	}
	return affine(x, w, 0, b, 0, w.shape[1])
}

// inputFeatures are the model inputs in output order: the non-target
// categorical and continuous columns, without the weight and sample-space
// columns, sorted by name.
func (r *refNet) inputFeatures() []*schema.Feature {
	skip := map[string]bool{}
	for _, c := range r.cfg.WeightColumns {
		skip[c] = true
	}
	for _, c := range r.cfg.SampleSpace {
		skip[c] = true
	}
	var fs []*schema.Feature
	for _, f := range r.s.Features {
		if !f.IsTarget() && !skip[f.Name] && (f.HasTag(schema.TagCategorical) || f.HasTag(schema.TagContinuous)) {
			fs = append(fs, f)
		}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	return fs
}

func colID(c *loader.Column, k int) int {
	if c.I64 != nil {
		return int(c.I64[k])
	}
	return int(c.I32[k])
}

// input is row i of the input block: every feature's embedding (combined
// over a list) or value, concatenated; emb2 is the sum of squares of the
// embedding part (the batch L2 term).
func (r *refNet) input(b *loader.Batch, i int) (x []float64, emb2 float64) {
	for _, f := range r.inputFeatures() {
		c := b.Column(f.Name)
		if !f.HasTag(schema.TagCategorical) {
			x = append(x, float64(c.F32[i]))
			continue
		}
		tab := r.param("input/emb/" + f.DomainName())
		dim := tab.shape[1]
		lo, hi := i, i+1
		if c.Offsets != nil {
			lo, hi = int(c.Offsets[i]), int(c.Offsets[i+1])
		}
		e := make([]float64, dim)
		for k := lo; k < hi; k++ {
			id := colID(c, k)
			for j := range e {
				e[j] += tab.v[id*dim+j]
			}
		}
		if n := float64(hi - lo); c.Offsets != nil && n > 0 {
			scale := 1.0
			switch r.cfg.ListCombiner {
			case "sum":
			case "mean":
				scale = 1 / n
			case "sqrtn":
				scale = 1 / math.Sqrt(n)
			default:
				r.t.Fatalf("reference: combiner %s", r.cfg.ListCombiner)
			}
			for j := range e {
				e[j] *= scale
			}
		}
		for _, v := range e {
			emb2 += v * v
		}
		x = append(x, e...)
	}
	return x, emb2
}

// mlp applies Dense layers name+"/0", name+"/1", ... of the given count,
// each with the hidden activation (Merlin's MLPBlock).
func (r *refNet) mlp(name string, n int, x []float64) []float64 {
	for l := range n {
		x = r.act(r.dense(fmt.Sprintf("%s/%d", name, l), x, true))
	}
	return x
}

// expert is expert e of the block prefix ([E, in, out] kernels and [E, out]
// biases per layer, every layer activated).
func (r *refNet) expert(prefix string, e int, x []float64) []float64 {
	for l := range r.cfg.ExpertMLPLayers {
		w := r.param(fmt.Sprintf("%s/%d/kernel", prefix, l))
		b := r.param(fmt.Sprintf("%s/%d/bias", prefix, l))
		in, out := w.shape[1], w.shape[2]
		if in != len(x) || out != r.cfg.ExpertMLPLayers[l] {
			r.t.Fatalf("reference: %s/%d/kernel has shape %v for an input of %d", prefix, l, w.shape, len(x))
		}
		x = r.act(affine(x, w, e*in*out, &b, e*out, out))
	}
	return x
}

// gate mixes experts by softmax(Dense_E(h) / temperature), h the gate
// input through a ReLU Dense(GateDim) when GateDim > 0; it returns the
// mixture and the weights.
func (r *refNet) gate(name string, in []float64, experts [][]float64) ([]float64, []float64) {
	h := in
	if r.cfg.GateDim > 0 {
		h = relu64(r.dense(name+"/mlp", in, true))
	}
	logits := r.dense(name+"/logits", h, false)
	if len(logits) != len(experts) {
		r.t.Fatalf("reference: gate %s has %d logits for %d experts", name, len(logits), len(experts))
	}
	w := softmax64(logits, float64(r.cfg.GateTemperature))
	out := make([]float64, len(experts[0]))
	for e, ex := range experts {
		for j := range out {
			out[j] += w[e] * ex[j]
		}
	}
	return out, w
}

func softmax64(z []float64, temperature float64) []float64 {
	mx := math.Inf(-1)
	for _, v := range z {
		mx = math.Max(mx, v/temperature)
	}
	w := make([]float64, len(z))
	s := 0.0
	for i, v := range z {
		w[i] = math.Exp(v/temperature - mx)
		s += w[i]
	}
	for i := range w {
		w[i] /= s
	}
	return w
}

// body maps the input row to one representation per task, and records
// every gate's weights under GateWeights' names.
func (r *refNet) body(x []float64, gates map[string][]float64) [][]float64 {
	T := len(r.tasks)
	reps := make([][]float64, T)
	switch r.cfg.Model {
	case "mlp":
		y := r.mlp("mlp", len(r.cfg.MLPLayers), x)
		for t := range reps {
			reps[t] = y
		}
	case "mmoe":
		experts := make([][]float64, r.cfg.MMoENumExperts)
		for e := range experts {
			experts[e] = r.expert("mmoe/experts", e, x)
		}
		for t, task := range r.tasks {
			var w []float64
			reps[t], w = r.gate("mmoe/gate/"+task.target, x, experts)
			gates[task.target] = w
		}
	case "cgc", "ple":
		reps = r.ple(x, gates)
	case "dcn", "dlrm":
		y := r.dcnDLRM(x)
		for t := range reps {
			reps[t] = y
		}
	default:
		r.t.Fatalf("reference: model %s", r.cfg.Model)
	}
	return reps
}

// ple is PLE (CGC: one level). Level l has nt experts per task and ns
// shared experts. Task t's experts read task t's input of the level, the
// shared experts the shared input; task t's gate mixes [task t's experts,
// shared experts] and (below the last level) the shared gate mixes every
// expert. The level's task outputs are the next level's task inputs and
// the shared output its shared input; level 0's inputs are x. Gates read
// their own input of the level, or x with PLEGatesOnInput.
func (r *refNet) ple(x []float64, gates map[string][]float64) [][]float64 {
	T, nt, ns := len(r.tasks), r.cfg.CGCTaskExperts, r.cfg.CGCSharedExperts
	levels := 1
	if r.cfg.Model == "ple" {
		levels = r.cfg.PLELayers
	}
	taskIn := make([][]float64, T)
	for t := range taskIn {
		taskIn[t] = x
	}
	sharedIn := x
	for l := range levels {
		prefix, gname := "cgc", ""
		if r.cfg.Model == "ple" {
			prefix, gname = fmt.Sprintf("ple/level_%d", l), fmt.Sprintf("level_%d/", l)
		}
		gateIn := func(own []float64) []float64 {
			if r.cfg.PLEGatesOnInput {
				return x
			}
			return own
		}
		var all, shared [][]float64 // experts in parameter order: tasks, then shared
		own := make([][][]float64, T)
		for t := range T {
			for k := range nt {
				y := r.expert(prefix+"/experts", t*nt+k, taskIn[t])
				own[t] = append(own[t], y)
				all = append(all, y)
			}
		}
		for k := range ns {
			y := r.expert(prefix+"/experts", T*nt+k, sharedIn)
			shared = append(shared, y)
			all = append(all, y)
		}
		taskOut := make([][]float64, T)
		for t, task := range r.tasks {
			mix := append(append([][]float64(nil), own[t]...), shared...)
			var w []float64
			taskOut[t], w = r.gate(prefix+"/gate/"+task.target, gateIn(taskIn[t]), mix)
			gates[gname+task.target] = w
		}
		if l < levels-1 {
			var w []float64
			sharedIn, w = r.gate(prefix+"/gate/shared", gateIn(sharedIn), all)
			gates[gname+"shared"] = w
		}
		taskIn = taskOut
	}
	return taskIn
}

// refResult is the reference on one batch.
type refResult struct {
	z, out   [][]float64          // per task, per row: logit (or value) and output
	taskLoss []float64            // per task: mean_i(w_i * l_i), before lambda
	loss     float64              // sum_t lambda_t * taskLoss[t] + regularisation
	gates    map[string][]float64 // per gate: the mean weight of each expert
}

// forward runs the reference on every row of b; headShift, when set, is
// added to task t's logit (an output bias moved by InitOutputBias).
func (r *refNet) forward(b *loader.Batch, headShift []float64) refResult {
	T := len(r.tasks)
	res := refResult{z: make([][]float64, T), out: make([][]float64, T), gates: map[string][]float64{}}
	emb2 := 0.0
	for i := 0; i < b.Rows; i++ {
		x, e2 := r.input(b, i)
		emb2 += e2
		rowGates := map[string][]float64{}
		reps := r.body(x, rowGates)
		for name, w := range rowGates {
			if res.gates[name] == nil {
				res.gates[name] = make([]float64, len(w))
			}
			for e, v := range w {
				res.gates[name][e] += v / float64(b.Rows)
			}
		}
		for t, task := range r.tasks {
			h := reps[t]
			if r.cfg.UseTaskTowers {
				h = r.mlp("tower/"+task.target+"/mlp", len(r.cfg.TowerLayers), h)
			}
			z := r.dense("tower/"+task.target+"/head", h, true)
			if len(z) != 1 {
				r.t.Fatalf("reference: a head has one output")
			}
			zi := z[0]
			if headShift != nil {
				zi += headShift[t]
			}
			res.z[t] = append(res.z[t], zi)
			o := zi
			if task.binary {
				o = 1 / (1 + math.Exp(-zi))
			}
			res.out[t] = append(res.out[t], o)
		}
	}
	res.taskLoss, res.loss = r.loss(b, res.z)
	res.loss += float64(r.cfg.EmbeddingL2Reg) * emb2
	return res
}

// loss is the objective of docs/ARCHITECTURE.md without the batch embedding term:
// sum_t lambda_t * (1/B) sum_i w_ti l_ti + L2Reg * sum of squared Dense
// kernels, w_ti = (1 + (posW-1) y) * weight column * [space column == 1],
// l = binary cross-entropy of the logit or squared error.
func (r *refNet) loss(b *loader.Batch, z [][]float64) ([]float64, float64) {
	taskLoss := make([]float64, len(r.tasks))
	total := 0.0
	for t, task := range r.tasks {
		y := b.Column(task.target).F32
		s := 0.0
		for i := 0; i < b.Rows; i++ {
			yi, zi := float64(y[i]), z[t][i]
			w := 1.0
			if pw, ok := r.cfg.PosClassWeights[task.target]; ok {
				w = 1 + (float64(pw)-1)*yi
			}
			if c, ok := r.cfg.WeightColumns[task.target]; ok {
				w *= float64(colF32(b, c)[i])
			}
			if c, ok := r.cfg.SampleSpace[task.target]; ok && colF32(b, c)[i] != 1 {
				w = 0
			}
			var l float64
			if task.binary {
				// -y log s(z) - (1-y) log(1-s(z)) = softplus(z) - y z
				l = math.Max(zi, 0) + math.Log1p(math.Exp(-math.Abs(zi))) - yi*zi
			} else {
				l = (zi - yi) * (zi - yi)
			}
			s += w * l
		}
		taskLoss[t] = s / float64(b.Rows)
		lambda := 1.0
		if v, ok := r.cfg.LossWeights[task.target]; ok {
			lambda = float64(v)
		}
		total += lambda * taskLoss[t]
	}
	if r.cfg.L2Reg > 0 {
		for name, p := range r.p {
			// every Dense kernel; Merlin's cross layers have no regulariser
			if strings.HasSuffix(name, "/kernel") && !strings.HasPrefix(name, "dcn/cross/") {
				for _, v := range p.v {
					total += float64(r.cfg.L2Reg) * v * v
				}
			}
		}
	}
	return taskLoss, total
}

// refCheck compares Predict, Loss and GateWeights of m on b with the
// reference and returns the reference.
func refCheck(t *testing.T, m *Model, cfg Config, s *schema.Schema, b *loader.Batch) refResult {
	t.Helper()
	r := newRefNet(t, m, cfg, s)
	want := r.forward(b, nil)
	r.checkAllUsed(t)
	tasks := m.Tasks()
	require.Len(t, tasks, len(r.tasks))
	for i, task := range r.tasks {
		require.Equal(t, task.target, tasks[i].Target, "task order")
	}

	out := make([][]float32, len(tasks))
	for i := range out {
		out[i] = make([]float32, b.Rows)
	}
	require.NoError(t, m.Predict(b, out))
	worst := 0.0
	for ti := range out {
		for i, v := range out[ti] {
			d := math.Abs(float64(v) - want.out[ti][i])
			worst = math.Max(worst, d)
			if d > refOutTol {
				t.Fatalf("Predict %s row %d: model %.8g, reference %.8g (|diff| %.3g > %.0e)", tasks[ti].Name, i, v, want.out[ti][i], d, refOutTol)
			}
		}
	}
	st, err := m.Loss(b)
	require.NoError(t, err)
	for ti := range tasks {
		requireClose(t, want.taskLoss[ti], st.TaskLoss[ti], refLossTol, "Loss: task loss of %s", tasks[ti].Name)
	}
	requireClose(t, want.loss, st.Loss, refLossTol, "Loss: objective")
	gw := m.GateWeights()
	require.Len(t, gw, len(want.gates), "gates: model %v, reference %v", gw, want.gates)
	for name, w := range want.gates {
		require.Contains(t, gw, name)
		require.InDeltaSlice(t, w, gw[name], refOutTol, "mean weights of gate %s", name)
	}
	lossDiff := math.Abs(st.Loss-want.loss) / (1 + math.Abs(want.loss))
	t.Logf("largest |Predict - reference| %.2g; |Loss - reference| / (1 + reference) %.2g", worst, lossDiff)
	return want
}

// requireClose fails unless |got - want| <= tol * (1 + |want|).
func requireClose(t *testing.T, want, got, tol float64, format string, args ...any) {
	t.Helper()
	if d := math.Abs(got - want); !(d <= tol*(1+math.Abs(want))) {
		t.Fatalf("%s: model %.10g, reference %.10g (|diff| %.3g)", fmt.Sprintf(format, args...), got, want, d)
	}
}

// refScramble gives the parameters values that make every term matter:
// biases (zero at initialisation) become U(-0.3, 0.3) and the embeddings
// (U(-0.05, 0.05)) are scaled by 10, so that the combiners and the inputs
// move the outputs visibly. Kernels keep their seeded initialisation, so
// that Config.Seed still shows.
func refScramble(m *Model, seed uint64) {
	rng := layers.NewRNG(int64(seed))
	for _, p := range m.Params() {
		v := hostT(p.Tensor)
		switch {
		case strings.HasPrefix(p.Name, "input/emb/"):
			for i := range v {
				v[i] *= 10
			}
		case strings.HasSuffix(p.Name, "/bias"):
			for i := range v {
				v[i] = float32(rng.Float64()-0.5) * 0.6
			}
		default:
			continue
		}
		p.Tensor.Dev.CopyFromHostF32(p.Tensor, v)
	}
}

// refConfig is gradConfig (every loss term on, temperature 0.7) with
// InitOutputBias set explicitly, so that a change of its default changes
// nothing here.
func refConfig(model string) Config {
	c := gradConfig(model)
	c.InitOutputBias = false
	return c
}

// refDevices are the devices the reference runs on, with the batch size
// each needs to exercise its path: one CPU thread; three threads, which
// cut a training batch of more than 256 rows into shards; and fusedCPU,
// which goes through every fused entry point.
var refDevices = []struct {
	name string
	dev  func() kernels.Device
	rows int
}{
	{"cpu", func() kernels.Device { return testDev() }, 13},
	{"sharded", func() kernels.Device { return kernels.NewCPU(3) }, 600},
	{"fused", func() kernels.Device { return newFusedCPU() }, 13},
}

// TestReferenceForward compares every architecture and every option that
// changes the computation with the float64 reference: Predict, Loss (with
// each loss term) and the gate weights on fixed batches, then the loss
// TrainStep reports (computed before its update).
func TestReferenceForward(t *testing.T) {
	cases := []struct {
		name   string
		model  string
		mutate func(*Config)
		data   func(*schema.Schema, *loader.Batch) // changes to gradSchema and gradBatch
	}{
		{"mlp", "mlp", nil, nil},
		{"mlp_linear_sum", "mlp", func(c *Config) { c.Activation = "linear"; c.ListCombiner = "sum" }, nil},
		{"mlp_sqrtn_no_towers", "mlp", func(c *Config) { c.ListCombiner = "sqrtn"; c.UseTaskTowers = false }, nil},
		{"mlp_plain_loss", "mlp", func(c *Config) {
			c.L2Reg, c.EmbeddingL2Reg = 0, 0
			c.LossWeights, c.PosClassWeights, c.WeightColumns, c.SampleSpace = nil, nil, nil, nil
		}, nil},
		{"mmoe", "mmoe", nil, nil},
		{"mmoe_no_gate_mlp_hot", "mmoe", func(c *Config) { c.GateDim = 0; c.GateTemperature = 0.25 }, nil},
		{"mmoe_cold_deep_towers_sqrtn", "mmoe", func(c *Config) {
			c.GateTemperature = 3
			c.TowerLayers = []int{7, 3}
			c.ListCombiner = "sqrtn"
		}, nil},
		{"cgc", "cgc", nil, nil},
		{"cgc_one_task_expert_three_shared", "cgc", func(c *Config) {
			c.CGCTaskExperts, c.CGCSharedExperts = 1, 3
			c.GateTemperature = 0.4
		}, nil},
		{"ple_one_level", "ple", func(c *Config) { c.PLELayers = 1 }, nil},
		{"ple_two_levels", "ple", func(c *Config) { c.PLELayers = 2 }, nil},
		{"ple_three_levels", "ple", nil, nil},
		{"ple_gates_on_input", "ple", func(c *Config) { c.PLEGatesOnInput = true }, nil},
		{"ple_no_gate_mlp_sum_linear", "ple", func(c *Config) {
			c.GateDim = 0
			c.ListCombiner = "sum"
			c.Activation = "linear"
		}, nil},
		{"ple_dropout_is_off_outside_training", "ple", func(c *Config) { c.Dropout = 0.3 }, nil},
		{"mmoe_dropout_is_off_outside_training", "mmoe", func(c *Config) { c.Dropout = 0.5 }, nil},
		{"ple_tasks_subset_reordered", "ple", func(c *Config) {
			c.Tasks = []string{"watch", "like"}
			c.LossWeights = map[string]float32{"watch": 2}
			c.WeightColumns = map[string]string{"like": "w"}
		}, nil},
		{"dcn", "dcn", nil, nil},
		{"dcn_three_cross_layers_linear_no_towers", "dcn", func(c *Config) {
			c.DCNInteractedLayerNum = 3
			c.Activation = "linear"
			c.UseTaskTowers = false
		}, nil},
		{"dlrm", "dlrm", nil, nil},
		{"dlrm_dropout_is_off_outside_training", "dlrm", func(c *Config) { c.Dropout = 0.3 }, nil},
		{"dlrm_without_continuous_features", "dlrm", func(c *Config) {
			// a weight column is not an input: price leaves the inputs
			c.WeightColumns = map[string]string{"click": "w", "watch": "price"}
		}, nil},
		{"dlrm_single_task_wide_embeddings", "dlrm", func(c *Config) {
			c.Tasks = []string{"like"}
			c.LossWeights, c.WeightColumns = nil, nil
			c.EmbeddingsDim = 9
		}, nil},
		{"dcn_single_task", "dcn", func(c *Config) {
			c.Tasks = []string{"watch"}
			c.LossWeights, c.WeightColumns, c.PosClassWeights, c.SampleSpace = nil, nil, nil, nil
		}, nil},
		{"cgc_single_task", "cgc", func(c *Config) {
			c.Tasks = []string{"like"}
			c.LossWeights, c.WeightColumns = nil, nil
		}, nil},
		{"mmoe_embedding_dims", "mmoe", func(c *Config) {
			c.EmbeddingDims = map[string]int{"item": 3, "user": 5}
			c.EmbeddingDimMultiplier = 1
		}, nil},
		{"targets_unsorted_in_schema", "mmoe", nil, func(s *schema.Schema, _ *loader.Batch) {
			// the default task order is by name, not the schema's
			slices.Reverse(s.Features)
		}},
		{"sample_space_only_where_one", "ple", func(c *Config) {
			c.SampleSpace = map[string]string{"like": "click", "watch": "grade", "click": "grade"}
		}, func(s *schema.Schema, b *loader.Batch) {
			// a sample-space column with values other than 0 and 1
			s.Features = append(s.Features, contFeature("grade"))
			grade := make([]float32, b.Rows)
			for i := range grade {
				grade[i] = []float32{0, 1, 2, 0.5, -1, 1, 1}[i%7]
			}
			b.Columns["grade"] = &loader.Column{Name: "grade", F32: grade}
		}},
	}
	for _, d := range refDevices {
		for _, c := range cases {
			if d.name != "cpu" && !(c.mutate == nil || strings.Contains(c.name, "dropout")) {
				continue // the other devices run each architecture (and dropout)
			}
			t.Run(d.name+"/"+c.name, func(t *testing.T) {
				cfg := refConfig(c.model)
				if c.mutate != nil {
					c.mutate(&cfg)
				}
				s, b := gradSchema(), gradBatch(layers.NewRNG(21), d.rows)
				if c.data != nil {
					c.data(s, b)
				}
				m, err := NewModel(s, cfg, d.dev(), d.rows)
				require.NoError(t, err)
				defer m.Release()
				refScramble(m, 11)
				want := refCheck(t, m, cfg, s, b)

				st, err := m.TrainStep(b)
				require.NoError(t, err)
				if cfg.Dropout == 0 {
					requireClose(t, want.loss, st.Loss, refLossTol, "TrainStep loss")
					for ti := range want.taskLoss {
						requireClose(t, want.taskLoss[ti], st.TaskLoss[ti], refLossTol, "TrainStep task loss %d", ti)
					}
				} else {
					// dropout is on in training: the step's loss is another one
					require.Greater(t, math.Abs(st.Loss-want.loss), 1e-3, "TrainStep with dropout %g", cfg.Dropout)
				}
			})
		}
	}
}
