// Package mtl builds, trains and serves multi-task ranking models —
// shared-bottom MLP, MMoE, CGC, PLE, DCN and DLRM — over a Merlin-style feature schema,
// on any kernels.Device. The model part (Config, Model, Predictor) follows
// Merlin Models' semantics as described in docs/ARCHITECTURE.md ("Model
// semantics"; the README lists the differences from Merlin); the Trainer,
// metrics and checkpoints build on it.
package mtl

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/mtlrank/mtlrank/schema"
)

// Config describes a model and how it is trained. DefaultConfig gives the
// defaults (Merlin's quick-start ranking script, with the benchmark settings
// of docs/ARCHITECTURE.md where they differ: lr 1e-3 without decay, task towers on, two
// PLE levels, no L2). The zero value is not valid. Its JSON form (a
// checkpoint's config.json) names the fields as the mtlrank CLI's flags
// do, Merlin's where Merlin has one.
type Config struct {
	Model           string   `json:"model"`             // "mlp" | "mmoe" | "cgc" | "ple" | "dcn" | "dlrm" | "deepfm" | "wide_n_deep"
	Tasks           []string `json:"tasks,omitempty"`   // target column names; empty = every target in the schema, sorted by name
	MLPLayers       []int    `json:"mlp_layers"`        // shared-bottom MLP (mlp), deep block (dcn), top MLP (dlrm), deep part (deepfm, wide_n_deep)
	ExpertMLPLayers []int    `json:"expert_mlp_layers"` // every expert's MLP (mmoe, cgc, ple)
	MMoENumExperts  int      `json:"mmoe_num_mlp_experts"`
	// CGCTaskExperts and CGCSharedExperts are the experts per task and the
	// shared experts of every CGC/PLE level.
	CGCTaskExperts   int `json:"cgc_num_task_experts"`
	CGCSharedExperts int `json:"cgc_num_shared_experts"`
	PLELayers        int `json:"ple_num_layers"`
	// PLEGatesOnInput is Merlin's PLE variant: every gate reads the model
	// input instead of the previous level's output.
	PLEGatesOnInput bool `json:"ple_gates_on_input"`
	// DCNInteractedLayerNum is the number of cross layers of dcn.
	DCNInteractedLayerNum int `json:"dcn_interacted_layer_num"`
	// EmbeddingsDim is the width of every embedding table of dlrm (and of
	// its bottom MLP's output) and of deepfm (the FM term needs one
	// width), in place of the inferred widths.
	EmbeddingsDim int `json:"embeddings_dim"`
	// Wide&Deep's wide part (model wide_n_deep): the buckets of each hashed
	// cross of two categorical features, the pairs not to cross ("a:b",
	// either order), and the L2 factor of the wide weights looked up in
	// the batch.
	WNDHashedCrossNumBins int      `json:"wnd_hashed_cross_num_bins"`
	WNDIgnoreCombinations []string `json:"wnd_ignore_combinations,omitempty"`
	WNDWideL2Reg          float64  `json:"wnd_wide_l2_reg"`
	// MultihotMaxSeqLength truncates the lists encoded by the wide part of
	// deepfm and wide_n_deep (multi-hot and crossed) to their first ids.
	MultihotMaxSeqLength int     `json:"multihot_max_seq_length"`
	GateDim              int     `json:"gate_dim"` // width of the gate MLP; 0 = no gate MLP
	GateTemperature      float32 `json:"mtl_gates_softmax_temperature"`
	UseTaskTowers        bool    `json:"use_task_towers"`
	TowerLayers          []int   `json:"tower_layers"`
	Activation           string  `json:"activation"` // a Keras name (kernels.ParseActivation): hidden layers of every MLP, expert and tower
	Dropout              float32 `json:"dropout"`

	EmbeddingDimMultiplier float64        `json:"embedding_sizes_multiplier"`
	EmbeddingDims          map[string]int `json:"embedding_dims,omitempty"` // per feature or domain name
	ListCombiner           string         `json:"list_combiner"`            // "mean" | "sum" | "sqrtn"

	// L2Reg adds L2Reg * sum(W^2) for every Dense kernel (not biases, not
	// embeddings) to the loss, like a Keras l2 kernel regulariser.
	L2Reg float32 `json:"l2_reg"`
	// EmbeddingL2Reg adds EmbeddingL2Reg * sum(e^2) over the embeddings
	// looked up in the batch.
	EmbeddingL2Reg float32 `json:"embeddings_l2_reg"`

	LossWeights     map[string]float32 `json:"loss_weights,omitempty"`      // per target: lambda_t (default 1)
	PosClassWeights map[string]float32 `json:"pos_class_weights,omitempty"` // per binary target: weight of positive examples
	WeightColumns   map[string]string  `json:"weight_columns,omitempty"`    // per target: a column of per-sample weights
	SampleSpace     map[string]string  `json:"sample_space,omitempty"`      // per target: a column; the task trains only where it == 1

	Optimizer    string  `json:"optimizer"` // "adam" | "adagrad" | "sgd"
	LR           float32 `json:"lr"`
	LRDecayRate  float32 `json:"lr_decay_rate"`  // staircase: lr = LR * LRDecayRate^floor(step/LRDecaySteps)
	LRDecaySteps int     `json:"lr_decay_steps"` // 0 = no decay
	AdamBeta1    float32 `json:"adam_beta1"`
	AdamBeta2    float32 `json:"adam_beta2"`
	AdamEps      float32 `json:"adam_epsilon"`
	Seed         int64   `json:"random_seed"`

	// InitOutputBias starts every output head's bias at its task's base
	// rate instead of at 0 (Merlin, Keras): the log-odds of the positive
	// rate for a binary task, the label mean for a regression task. The
	// rates are measured on the first training batch (Model.InitOutputBias,
	// run by the first TrainStep) unless given with Model.SetOutputBias.
	// On in DefaultConfig, a documented difference from Merlin (false gives
	// Merlin's zero biases): a zero-biased head predicts 0.5 for a task
	// whose base rate is a few percent, so its first gradients mostly say
	// "lower every score"; Adam moves the bias by about LR per step, and
	// until it gets there the weights and embeddings do the lowering,
	// most for the ids seen most often. Where positives concentrate on
	// frequent users and items, rare tasks are then ranked backwards (AUC
	// below 0.5) for the first hundreds of steps. A checkpoint keeps the
	// value it was trained with (one written before the option existed
	// loads as false).
	InitOutputBias bool `json:"init_output_bias"`

	// CUDAGraph captures the training step as CUDA graphs and replays them
	// (fewer launches; see Model.TrainStep). It needs a device that can
	// capture the step (the CUDA device): NewModel fails on others. It
	// changes no result: a replayed step is bit-identical to an eager one.
	// An execution option: not saved in checkpoints.
	CUDAGraph bool `json:"-"`
}

// DefaultConfig returns the default configuration (an MMoE).
func DefaultConfig() Config {
	return Config{
		Model:                  "mmoe",
		MLPLayers:              []int{128, 64, 32},
		ExpertMLPLayers:        []int{64},
		MMoENumExperts:         4,
		CGCTaskExperts:         1,
		CGCSharedExperts:       2,
		PLELayers:              2,
		DCNInteractedLayerNum:  1,
		EmbeddingsDim:          128,
		GateDim:                64,
		WNDHashedCrossNumBins:  10000,
		WNDWideL2Reg:           1e-5,
		MultihotMaxSeqLength:   5,
		GateTemperature:        1,
		UseTaskTowers:          true,
		TowerLayers:            []int{64},
		Activation:             "relu",
		EmbeddingDimMultiplier: 2.0,
		ListCombiner:           "mean",
		Optimizer:              "adam",
		LR:                     1e-3,
		LRDecayRate:            1,
		AdamBeta1:              0.9,
		AdamBeta2:              0.999,
		AdamEps:                1e-7,
		Seed:                   42,
		InitOutputBias:         true,
	}
}

// Clone returns a deep copy (slices and maps are not shared).
func (c Config) Clone() Config {
	c.Tasks = slices.Clone(c.Tasks)
	c.MLPLayers = slices.Clone(c.MLPLayers)
	c.ExpertMLPLayers = slices.Clone(c.ExpertMLPLayers)
	c.TowerLayers = slices.Clone(c.TowerLayers)
	c.WNDIgnoreCombinations = slices.Clone(c.WNDIgnoreCombinations)
	c.EmbeddingDims = cloneMap(c.EmbeddingDims)
	c.LossWeights = cloneMap(c.LossWeights)
	c.PosClassWeights = cloneMap(c.PosClassWeights)
	c.WeightColumns = cloneMap(c.WeightColumns)
	c.SampleSpace = cloneMap(c.SampleSpace)
	return c
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return nil
	}
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TaskKind is the kind of a task's output.
type TaskKind int

const (
	Binary     TaskKind = iota // one logit, sigmoid, binary cross-entropy
	Regression                 // one linear output, mean squared error
)

func (k TaskKind) String() string {
	if k == Regression {
		return "regression"
	}
	return "binary"
}

// Task is one output of a model.
type Task struct {
	Name   string // "<target>/binary_output" or "<target>/regression_output"
	Target string // the target column
	Kind   TaskKind
}

// configErr reports a bad Config field by its Go name and, when it has
// one, its JSON name, which is also the CLI flag's name.
func configErr(field, format string, args ...any) error {
	if name, ok := configJSONNames[field]; ok {
		field += " (" + name + ")"
	}
	return fmt.Errorf("mtl: config %s: %s", field, fmt.Sprintf(format, args...))
}

// configJSONNames maps Config's Go field names to their JSON names
// (fields not written to JSON are left out).
var configJSONNames = func() map[string]string {
	t := reflect.TypeFor[Config]()
	names := make(map[string]string, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names[f.Name] = name
		}
	}
	return names
}()

// kindOf maps a target's tags to a task kind.
func kindOf(f *schema.Feature) (TaskKind, bool) {
	switch {
	case f.HasTag(schema.TagBinaryClassification), f.HasTag(schema.TagBinary):
		return Binary, true
	case f.HasTag(schema.TagRegression), f.HasTag(schema.TagContinuous):
		return Regression, true
	}
	return 0, false
}

// resolveTasks returns the tasks of c over s.
func (c *Config) resolveTasks(s *schema.Schema) ([]Task, error) {
	names := c.Tasks
	if len(names) == 0 {
		for _, f := range s.Features {
			if f.IsTarget() {
				names = append(names, f.Name)
			}
		}
		sort.Strings(names)
		if len(names) == 0 {
			return nil, configErr("Tasks", "the schema has no target column (tag binary_classification or regression)")
		}
	}
	seen := map[string]bool{}
	var tasks []Task
	for _, n := range names {
		f := s.Feature(n)
		switch {
		case seen[n]:
			return nil, configErr("Tasks", "target %q listed twice", n)
		case f == nil:
			return nil, configErr("Tasks", "target %q is not in the schema", n)
		case !f.IsTarget():
			return nil, configErr("Tasks", "column %q is not tagged as a target", n)
		}
		seen[n] = true
		k, ok := kindOf(f)
		if !ok {
			return nil, configErr("Tasks", "target %q is neither binary (binary_classification) nor regression", n)
		}
		name := n + "/binary_output"
		if k == Regression {
			name = n + "/regression_output"
		}
		tasks = append(tasks, Task{Name: name, Target: n, Kind: k})
	}
	return tasks, nil
}

func checkLayers(field string, dims []int, allowEmpty bool) error {
	if len(dims) == 0 && !allowEmpty {
		return configErr(field, "needs at least one layer")
	}
	for i, d := range dims {
		if d <= 0 {
			return configErr(field, "layer %d width must be >= 1, got %d", i, d)
		}
	}
	return nil
}

func finite32(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }

// Validate checks c against the schema s. Fields that the chosen model or
// optimizer does not use are not checked. Errors name the field, e.g.
// "mtl: config MMoENumExperts: must be >= 1, got 0".
func (c *Config) Validate(s *schema.Schema) error {
	if s == nil {
		return configErr("schema", "is nil")
	}
	switch c.Model {
	case "mlp", "dcn", "dlrm":
		if err := checkLayers("MLPLayers", c.MLPLayers, false); err != nil {
			return err
		}
	case "deepfm", "wide_n_deep":
		if err := c.validateWideDeep(s); err != nil {
			return err
		}
	case "mmoe", "cgc", "ple":
		if err := checkLayers("ExpertMLPLayers", c.ExpertMLPLayers, false); err != nil {
			return err
		}
		if c.GateDim < 0 {
			return configErr("GateDim", "must be >= 0, got %d", c.GateDim)
		}
		if !(c.GateTemperature > 0) || !finite32(c.GateTemperature) {
			return configErr("GateTemperature", "must be > 0, got %g", c.GateTemperature)
		}
	default:
		return configErr("Model", "unknown model %q (want mlp, mmoe, cgc, ple, dcn, dlrm, deepfm or wide_n_deep)", c.Model)
	}
	if err := c.validateDCNDLRM(s); err != nil {
		return err
	}
	switch c.Model {
	case "mmoe":
		if c.MMoENumExperts < 1 {
			return configErr("MMoENumExperts", "must be >= 1, got %d", c.MMoENumExperts)
		}
	case "ple", "cgc":
		if c.CGCTaskExperts < 1 {
			return configErr("CGCTaskExperts", "must be >= 1, got %d", c.CGCTaskExperts)
		}
		if c.CGCSharedExperts < 1 {
			return configErr("CGCSharedExperts", "must be >= 1, got %d", c.CGCSharedExperts)
		}
		if c.Model == "ple" && c.PLELayers < 1 {
			return configErr("PLELayers", "must be >= 1, got %d", c.PLELayers)
		}
	}
	if c.UseTaskTowers {
		if err := checkLayers("TowerLayers", c.TowerLayers, true); err != nil {
			return err
		}
	}
	if _, err := parseActivation(c.Activation); err != nil {
		return err
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) {
		return configErr("Dropout", "must be in [0, 1), got %g", c.Dropout)
	}
	if !(c.EmbeddingDimMultiplier > 0) || math.IsInf(c.EmbeddingDimMultiplier, 0) {
		return configErr("EmbeddingDimMultiplier", "must be > 0, got %g", c.EmbeddingDimMultiplier)
	}
	if _, err := parseCombiner(c.ListCombiner); err != nil {
		return err
	}
	for _, k := range sortedKeys(c.EmbeddingDims) {
		d := c.EmbeddingDims[k]
		if d <= 0 {
			return configErr("EmbeddingDims", "%q: dim must be >= 1, got %d", k, d)
		}
		if !namesCategorical(s, k) {
			return configErr("EmbeddingDims", "%q is not a categorical feature or domain of the schema", k)
		}
	}
	if !(c.L2Reg >= 0) || !finite32(c.L2Reg) {
		return configErr("L2Reg", "must be >= 0, got %g", c.L2Reg)
	}
	if !(c.EmbeddingL2Reg >= 0) || !finite32(c.EmbeddingL2Reg) {
		return configErr("EmbeddingL2Reg", "must be >= 0, got %g", c.EmbeddingL2Reg)
	}

	tasks, err := c.resolveTasks(s)
	if err != nil {
		return err
	}
	kinds := map[string]TaskKind{}
	for _, t := range tasks {
		kinds[t.Target] = t.Kind
	}
	for _, k := range sortedKeys(c.LossWeights) {
		if _, ok := kinds[k]; !ok {
			return configErr("LossWeights", "%q is not one of the tasks %v", k, taskTargets(tasks))
		}
		if w := c.LossWeights[k]; !(w >= 0) || !finite32(w) {
			return configErr("LossWeights", "%q: weight must be >= 0, got %g", k, w)
		}
	}
	for _, k := range sortedKeys(c.PosClassWeights) {
		kind, ok := kinds[k]
		if !ok {
			return configErr("PosClassWeights", "%q is not one of the tasks %v", k, taskTargets(tasks))
		}
		if kind != Binary {
			return configErr("PosClassWeights", "%q is a regression task; positive-class weights need a binary task", k)
		}
		if w := c.PosClassWeights[k]; !(w > 0) || !finite32(w) {
			return configErr("PosClassWeights", "%q: weight must be > 0, got %g", k, w)
		}
	}
	for _, field := range []struct {
		name string
		m    map[string]string
	}{{"WeightColumns", c.WeightColumns}, {"SampleSpace", c.SampleSpace}} {
		for _, k := range sortedKeys(field.m) {
			if _, ok := kinds[k]; !ok {
				return configErr(field.name, "%q is not one of the tasks %v", k, taskTargets(tasks))
			}
			col := field.m[k]
			f := s.Feature(col)
			if f == nil {
				return configErr(field.name, "%q: column %q is not in the schema", k, col)
			}
			if f.IsList() {
				return configErr(field.name, "%q: column %q is a list; it must hold one number per row", k, col)
			}
		}
	}

	switch c.Optimizer {
	case "adam":
		if !(c.AdamBeta1 >= 0 && c.AdamBeta1 < 1) {
			return configErr("AdamBeta1", "must be in [0, 1), got %g", c.AdamBeta1)
		}
		if !(c.AdamBeta2 >= 0 && c.AdamBeta2 < 1) {
			return configErr("AdamBeta2", "must be in [0, 1), got %g", c.AdamBeta2)
		}
		if !(c.AdamEps > 0) || !finite32(c.AdamEps) {
			return configErr("AdamEps", "must be > 0, got %g", c.AdamEps)
		}
	case "adagrad", "sgd":
	default:
		return configErr("Optimizer", "unknown optimizer %q (want adam, adagrad or sgd)", c.Optimizer)
	}
	if !(c.LR > 0) || !finite32(c.LR) {
		return configErr("LR", "must be > 0, got %g", c.LR)
	}
	if !(c.LRDecayRate > 0) || !finite32(c.LRDecayRate) {
		return configErr("LRDecayRate", "must be > 0, got %g", c.LRDecayRate)
	}
	if c.LRDecaySteps < 0 {
		return configErr("LRDecaySteps", "must be >= 0, got %d", c.LRDecaySteps)
	}
	return nil
}

func taskTargets(tasks []Task) []string {
	out := make([]string, len(tasks))
	for i, t := range tasks {
		out[i] = t.Target
	}
	return out
}

func namesCategorical(s *schema.Schema, name string) bool {
	for _, f := range s.Features {
		if f.HasTag(schema.TagCategorical) && !f.IsTarget() && (f.Name == name || f.DomainName() == name) {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// LearningRate is the staircase-decayed learning rate used for the update
// of step (0-based): LR * LRDecayRate^floor(step/LRDecaySteps).
func (c *Config) LearningRate(step int) float32 {
	if c.LRDecaySteps <= 0 || c.LRDecayRate == 1 {
		return c.LR
	}
	return float32(float64(c.LR) * math.Pow(float64(c.LRDecayRate), float64(step/c.LRDecaySteps)))
}

// String gives a one-line summary for logs.
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "model=%s", c.Model)
	switch c.Model {
	case "mlp":
		fmt.Fprintf(&b, " mlp_layers=%v", c.MLPLayers)
	case "dcn":
		fmt.Fprintf(&b, " cross_layers=%d mlp_layers=%v", c.DCNInteractedLayerNum, c.MLPLayers)
	case "dlrm":
		fmt.Fprintf(&b, " embeddings_dim=%d top_mlp_layers=%v", c.EmbeddingsDim, c.MLPLayers)
	case "deepfm":
		fmt.Fprintf(&b, " mlp_layers=%v embeddings_dim=%d", c.MLPLayers, c.EmbeddingsDim)
	case "wide_n_deep":
		fmt.Fprintf(&b, " mlp_layers=%v cross_bins=%d", c.MLPLayers, c.WNDHashedCrossNumBins)
	case "mmoe":
		fmt.Fprintf(&b, " experts=%d expert_layers=%v gate_dim=%d", c.MMoENumExperts, c.ExpertMLPLayers, c.GateDim)
	case "cgc", "ple":
		fmt.Fprintf(&b, " task_experts=%d shared_experts=%d expert_layers=%v gate_dim=%d",
			c.CGCTaskExperts, c.CGCSharedExperts, c.ExpertMLPLayers, c.GateDim)
		if c.Model == "ple" {
			fmt.Fprintf(&b, " levels=%d", c.PLELayers)
		}
	}
	if c.UseTaskTowers {
		fmt.Fprintf(&b, " towers=%v", c.TowerLayers)
	}
	fmt.Fprintf(&b, " optimizer=%s lr=%g", c.Optimizer, c.LR)
	return b.String()
}
