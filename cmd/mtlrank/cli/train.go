package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/internal/parquetio"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/loader/synth"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/mtl/metrics"
	"github.com/mtlrank/mtlrank/schema"
)

// Prefixes of Merlin's per-target flags.
const (
	lossWeightPrefix = "mtl_loss_weight_"
	posWeightPrefix  = "mtl_pos_class_weight_"
)

// merlinDefaults are the defaults of Merlin's quick-start ranking script.
func merlinDefaults() mtl.Config {
	c := mtl.DefaultConfig()
	c.Model = "mlp"
	c.PLELayers = 1
	c.LR = 1e-4
	c.LRDecayRate = 0.99
	c.LRDecaySteps = 100
	c.L2Reg = 1e-5
	c.Seed = 42
	return c
}

// float32Value is a float32 flag.
type float32Value struct{ v *float32 }

func (f float32Value) String() string {
	if f.v == nil {
		return "0"
	}
	return strconv.FormatFloat(float64(*f.v), 'g', -1, 32)
}

func (f float32Value) Set(s string) error {
	x, err := strconv.ParseFloat(s, 32)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return fmt.Errorf("%q is not a finite number", s)
	}
	*f.v = float32(x)
	return nil
}

// Flags that shape the model; with --load_model_path they come from the
// checkpoint and may not be given.
var architectureFlags = []string{
	"model", "mlp_layers", "expert_mlp_layers", "mmoe_num_mlp_experts", "num_experts",
	"cgc_num_task_experts", "num_task_experts", "cgc_num_shared_experts", "num_shared_experts",
	"ple_num_layers", "ple_gates_on_input", "gate_dim", "mtl_gates_softmax_temperature",
	"use_task_towers", "tower_layers", "activation", "dropout", "embedding_sizes_multiplier",
	"list_combiner", "l2_reg", "embeddings_l2_reg", "optimizer", "lr", "lr_decay_rate",
	"lr_decay_steps", "random_seed", "tasks", "tasks_sample_space", "init_output_bias", "mlp_init",
	"dcn_interacted_layer_num", "embeddings_dim", "wnd_hashed_cross_num_bins", "wnd_wide_l2_reg",
	"wnd_ignore_combinations", "multihot_max_seq_length",
}

// registerModelFlags binds the architecture and optimizer flags to cfg,
// with cfg's current values as defaults. aliases adds the flag names of
// the PyTorch reference benchmark (--num_experts, ...).
func registerModelFlags(fs *flag.FlagSet, cfg *mtl.Config, aliases bool) {
	fs.StringVar(&cfg.Model, "model", cfg.Model, "architecture: mlp (shared-bottom MLP), mmoe, cgc, ple, dcn (cross network, then MLP), dlrm (dot-product interactions, then MLP), deepfm or wide_n_deep")
	fs.Var(intList{&cfg.MLPLayers}, "mlp_layers", "comma-separated widths of the shared-bottom MLP (mlp), the deep block after the cross layers (dcn), the top MLP (dlrm) or the deep part (deepfm, wide_n_deep)")
	fs.IntVar(&cfg.DCNInteractedLayerNum, "dcn_interacted_layer_num", cfg.DCNInteractedLayerNum, "number of cross layers (--model dcn)")
	fs.Var(intList{&cfg.ExpertMLPLayers}, "expert_mlp_layers", "comma-separated widths of every expert's MLP (mmoe, cgc, ple)")
	fs.IntVar(&cfg.MMoENumExperts, "mmoe_num_mlp_experts", cfg.MMoENumExperts, "number of experts shared by all tasks (--model mmoe)")
	fs.IntVar(&cfg.CGCTaskExperts, "cgc_num_task_experts", cfg.CGCTaskExperts, "task-specific experts per task (cgc, ple)")
	fs.IntVar(&cfg.CGCSharedExperts, "cgc_num_shared_experts", cfg.CGCSharedExperts, "shared experts (cgc, ple)")
	fs.IntVar(&cfg.PLELayers, "ple_num_layers", cfg.PLELayers, "number of stacked CGC levels (--model ple)")
	fs.Var(boolValue{&cfg.PLEGatesOnInput}, "ple_gates_on_input", "Merlin's PLE variant: every gate reads the model input instead of the previous level's output (--model ple)")
	fs.IntVar(&cfg.GateDim, "gate_dim", cfg.GateDim, "width of the gate MLP before the softmax; 0 = no gate MLP (mmoe, cgc, ple)")
	fs.Var(float32Value{&cfg.GateTemperature}, "mtl_gates_softmax_temperature", "softmax temperature of the gates (mmoe, cgc, ple)")
	fs.IntVar(&cfg.EmbeddingsDim, "embeddings_dim", cfg.EmbeddingsDim, "width of every embedding, in place of --embedding_sizes_multiplier (dlrm, deepfm), and of the bottom MLP's output (dlrm)")
	fs.IntVar(&cfg.WNDHashedCrossNumBins, "wnd_hashed_cross_num_bins", cfg.WNDHashedCrossNumBins, "buckets of each hashed cross of two categorical features in the wide part (--model wide_n_deep)")
	fs.Float64Var(&cfg.WNDWideL2Reg, "wnd_wide_l2_reg", cfg.WNDWideL2Reg, "L2 factor of the wide weights looked up in each batch (--model wide_n_deep)")
	fs.Var(strList{v: &cfg.WNDIgnoreCombinations}, "wnd_ignore_combinations", "comma-separated pairs a:b of categorical features not to cross in the wide part (--model wide_n_deep)")
	fs.IntVar(&cfg.MultihotMaxSeqLength, "multihot_max_seq_length", cfg.MultihotMaxSeqLength, "lists are cut to their first N ids for the wide part's multi-hot encodings and crosses (deepfm, wide_n_deep)")
	fs.Var(boolValue{&cfg.UseTaskTowers}, "use_task_towers", "put a task-specific MLP tower before each head")
	fs.Var(intList{&cfg.TowerLayers}, "tower_layers", "comma-separated widths of the task towers")
	fs.StringVar(&cfg.Activation, "activation", cfg.Activation, "activation of the hidden layers of every MLP, expert and tower, by its Keras name: relu, selu, elu, gelu, tanh, sigmoid, swish (or silu), leaky_relu (slope 0.2) or linear")
	fs.Var(float32Value{&cfg.Dropout}, "dropout", "dropout rate after every hidden layer")
	fs.Float64Var(&cfg.EmbeddingDimMultiplier, "embedding_sizes_multiplier", cfg.EmbeddingDimMultiplier, "embedding dim = ceil(multiplier * cardinality^0.25) rounded up to a multiple of 8")
	fs.StringVar(&cfg.ListCombiner, "list_combiner", cfg.ListCombiner, "combiner of list (multi-hot) features: mean, sum or sqrtn")
	fs.Var(float32Value{&cfg.L2Reg}, "l2_reg", "L2 regularisation factor of the Dense kernels")
	fs.Var(float32Value{&cfg.EmbeddingL2Reg}, "embeddings_l2_reg", "L2 regularisation factor of the embeddings looked up in each batch")
	fs.StringVar(&cfg.Optimizer, "optimizer", cfg.Optimizer, "adam, adagrad or sgd (embedding tables are updated sparsely: lazy Adam)")
	fs.Var(float32Value{&cfg.LR}, "lr", "learning rate")
	fs.Var(float32Value{&cfg.LRDecayRate}, "lr_decay_rate", "staircase decay: lr * rate^floor(step/lr_decay_steps)")
	fs.IntVar(&cfg.LRDecaySteps, "lr_decay_steps", cfg.LRDecaySteps, "learning-rate decay period in steps; 0 = no decay")
	fs.Int64Var(&cfg.Seed, "random_seed", cfg.Seed, "seed of initialisation, dropout and shuffling")
	fs.Var(boolValue{&cfg.InitOutputBias}, "init_output_bias", "start each output head's bias at its task's base rate measured on the first training batch (log-odds for binary tasks, the label mean for regression); false: 0, as in Merlin, which ranks rare tasks backwards in the first steps")
	if aliases {
		fs.IntVar(&cfg.MMoENumExperts, "num_experts", cfg.MMoENumExperts, "alias of --mmoe_num_mlp_experts (PyTorch reference name)")
		fs.IntVar(&cfg.CGCTaskExperts, "num_task_experts", cfg.CGCTaskExperts, "alias of --cgc_num_task_experts")
		fs.IntVar(&cfg.CGCSharedExperts, "num_shared_experts", cfg.CGCSharedExperts, "alias of --cgc_num_shared_experts")
	}
}

// checkModelFlags rejects flags that do not apply to the chosen model.
func checkModelFlags(cfg *mtl.Config, set map[string]bool) error {
	applies := map[string][]string{
		"mlp_layers":                    {"mlp", "dcn", "dlrm", "deepfm", "wide_n_deep"},
		"dcn_interacted_layer_num":      {"dcn"},
		"embeddings_dim":                {"dlrm", "deepfm"},
		"wnd_hashed_cross_num_bins":     {"wide_n_deep"},
		"wnd_wide_l2_reg":               {"wide_n_deep"},
		"wnd_ignore_combinations":       {"wide_n_deep"},
		"multihot_max_seq_length":       {"deepfm", "wide_n_deep"},
		"expert_mlp_layers":             {"mmoe", "cgc", "ple"},
		"gate_dim":                      {"mmoe", "cgc", "ple"},
		"mtl_gates_softmax_temperature": {"mmoe", "cgc", "ple"},
		"mmoe_num_mlp_experts":          {"mmoe"},
		"num_experts":                   {"mmoe"},
		"cgc_num_task_experts":          {"cgc", "ple"},
		"num_task_experts":              {"cgc", "ple"},
		"cgc_num_shared_experts":        {"cgc", "ple"},
		"num_shared_experts":            {"cgc", "ple"},
		"ple_num_layers":                {"ple"},
		"ple_gates_on_input":            {"ple"},
	}
	switch cfg.Model {
	case "mlp", "mmoe", "cgc", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep":
	default:
		return usagef("--model must be mlp, mmoe, cgc, ple, dcn, dlrm, deepfm or wide_n_deep, got %q", cfg.Model)
	}
	for _, name := range sortedKeys(applies) {
		if set[name] && !slices.Contains(applies[name], cfg.Model) {
			return usagef("--%s does not apply to --model %s (only to %s)", name, cfg.Model, strings.Join(applies[name], ", "))
		}
	}
	if set["tower_layers"] && !cfg.UseTaskTowers {
		return usagef("--tower_layers is given but --use_task_towers is false")
	}
	if set["lr_decay_rate"] && !set["lr_decay_steps"] && cfg.LRDecaySteps == 0 {
		return usagef("--lr_decay_rate needs --lr_decay_steps > 0")
	}
	return nil
}

// trainArgs are the flags of train (eval and predict use a subset).
type trainArgs struct {
	cfg                                         mtl.Config
	trainPath, evalPath, predictPath, schemaArg string
	outputPath, savePath, loadPath              string
	predictOut, predictFormat                   string
	keepOut                                     []string
	tasks, sampleSpace                          []string
	keepColumns, ignoreColumns                  []string
	trainBatch, evalBatch                       int
	epochs, stepsPerEpoch, validationSteps      int
	trainMetricsSteps, logEvery                 int
	shuffled                                    bool
	shuffleBuffer, prefetch                     int
	device                                      string
	distributed                                 string
	embeddingSharding                           string
	gatherCheckpoint                            bool
	threads                                     int
	quiet                                       bool
	esMetric, esMode                            string
	esPatience                                  int
	esMinDelta                                  float64
	restoreBest                                 bool
	synthRows, synthEvalRows, tableRows         int64
	lossWeights, posWeights                     map[string]float64
	fillNaN                                     *float32
	maxMemory                                   int64
	// Merlin quick-start flags for features mtlrank does not have: the
	// values that mean "off" are accepted, anything else is refused.
	stlPosWeight                          *float32
	mlpInit                               string
	inBatchNegTrain, inBatchNegEval       int
	logToTensorboard, logToWandb          bool
	wandbProject, wandbEntity, wandbGroup string
	metricsLogFrequency                   int
}

// registerDataFlags binds the flags on reading data and sizing memory that
// train, eval and predict share.
func (a *trainArgs) registerDataFlags(fs *flag.FlagSet) {
	fs.Var(optFloat32{&a.fillNaN}, "fill_nan", "replace nulls, NaN and infinities in continuous input features by this value (default: they are errors; targets are never filled)")
	fs.Var(byteSize{&a.maxMemory}, "max_memory", "refuse to build a model whose estimated memory (parameters, optimizer state, workspace for the batch size) exceeds this size, e.g. 16G (default: the memory available: MemAvailable of /proc/meminfo or the cgroup limit, or the free GPU memory with --device cuda)")
}

func (a *trainArgs) register(fs *flag.FlagSet) {
	a.cfg = merlinDefaults()
	registerModelFlags(fs, &a.cfg, false)
	fs.StringVar(&a.trainPath, "train_data_path", "", "training data: a Parquet file or a folder of *.parquet / *.pq files; with no data flag at all, synthetic TenRec-like data is generated")
	fs.StringVar(&a.evalPath, "eval_data_path", "", "evaluation data (validated after every epoch and evaluated at the end)")
	fs.StringVar(&a.predictPath, "predict_data_path", "", "data to score after training; scores go to --predict_output_path")
	fs.StringVar(&a.schemaArg, "schema_path", "", "schema.pbtxt or schema.json (default: the one beside the training data)")
	fs.StringVar(&a.outputPath, "output_path", "./output/", "folder for metrics.json, synthetic data and default outputs")
	fs.StringVar(&a.savePath, "save_model_path", "", "save the trained model (a checkpoint folder) here")
	fs.StringVar(&a.loadPath, "load_model_path", "", "start from this checkpoint instead of a new model (continues its epochs); with --eval_data_path or --predict_data_path but no --train_data_path, only evaluate and predict with it")
	fs.StringVar(&a.predictOut, "predict_output_path", "", "where predictions go: a .parquet, .csv or .tsv file (the extension gives the format) or a folder receiving predictions.<format> (default <output_path>/predictions)")
	fs.StringVar(&a.predictFormat, "predict_output_format", "", "format of the predictions: parquet, csv or tsv (text: a header line, then one line per row; no list columns); default: the extension of --predict_output_path, else parquet")
	fs.Var(strList{v: &a.keepOut}, "predict_output_keep_cols", "comma-separated data columns copied next to the scores, in this order (default: every schema column present in the data); pass-through columns (preprocess --control_features, e.g. a raw string id) keep their type and nulls")
	fs.Var(strList{v: &a.tasks}, "tasks", `comma-separated target columns, or "all" for every target of the schema (default all)`)
	fs.Var(strList{v: &a.sampleSpace, keepEmpty: true}, "tasks_sample_space", "comma-separated columns aligned with --tasks: task i trains only where column i == 1 (empty entry = every row)")
	fs.Var(strList{v: &a.keepColumns}, "keep_columns", "use only these schema columns (targets included)")
	fs.Var(strList{v: &a.ignoreColumns}, "ignore_columns", "leave these schema columns out of the model")
	fs.IntVar(&a.trainBatch, "train_batch_size", 1024, "training batch size (512 in the synthetic run without data flags); lowered to the data's row count when larger")
	fs.IntVar(&a.evalBatch, "eval_batch_size", 1024, "evaluation and prediction batch size; lowered to the data's row count when larger")
	fs.IntVar(&a.epochs, "epochs", 1, "number of epochs (3 in the synthetic run without data flags)")
	fs.IntVar(&a.stepsPerEpoch, "train_steps_per_epoch", 0, "limit the steps of each epoch (0: the whole training set)")
	fs.IntVar(&a.validationSteps, "validation_steps", 10, "validation batches evaluated after each epoch (0: all); the final evaluation always uses the whole evaluation set")
	fs.IntVar(&a.trainMetricsSteps, "train_metrics_steps", 10, "compute training metrics on every N-th batch, or on the last batch of an epoch shorter than N steps (0: never; each costs one forward pass)")
	fs.IntVar(&a.logEvery, "log_every_steps", 0, "log the running loss every N steps (0: per epoch only)")
	a.shuffled = true // before Var, which takes it as the default shown by --help
	fs.Var(boolValue{&a.shuffled}, "shuffled_train", "shuffle the training data every epoch")
	fs.IntVar(&a.shuffleBuffer, "shuffle_buffer", 0, "rows shuffled together (0: within each read chunk of a row group)")
	fs.IntVar(&a.prefetch, "prefetch", 2, "batches read ahead in the background")
	fs.StringVar(&a.device, "device", "cpu", "cpu, or cuda (needs a build with -tags cuda)")
	fs.Var(boolValue{&a.cfg.CUDAGraph}, "cuda_graph", "capture the training step as CUDA graphs and replay them (fewer kernel launches, bit-identical results; needs --device cuda): the first step runs op by op, every later batch as a graph captured once per batch size")
	fs.IntVar(&a.threads, "threads", 0, "CPU threads, at most the number of CPUs (0: all)")
	fs.StringVar(&a.distributed, "distributed", "none", "none, or mpi: this process is one rank of an MPI job started by mpirun -np N (or Slurm, the MPI Operator); needs a build with -tags mpi. Each rank trains on its part of the training data's row groups and the gradients are summed over the ranks: --train_batch_size is the global batch, divided among the ranks. Only rank 0 prints, writes the model and metrics.json")
	fs.StringVar(&a.embeddingSharding, "embedding_sharding", mtl.ShardReplicate, "with --distributed mpi: replicate (every rank holds the embedding tables) or row (rank r of N holds the rows id mod N == r of every table and their optimizer state: about 1/N of the tables' memory per rank, rows fetched from their owners every step).")
	fs.Var(boolValue{&a.gatherCheckpoint}, "gather_checkpoint", "with --embedding_sharding row: write --save_model_path as one process's checkpoint, the tables gathered to rank 0 one at a time (rank 0 then needs the host memory of each full table and its optimizer state), instead of the default, a file per rank with its rows and a manifest (shards.json). Both load anywhere: on any number of ranks in either mode, and in one process (predict, evaluate, serve, export)")
	fs.Var(boolValue{&a.quiet}, "quiet", "no progress bar and no log lines on stderr")
	fs.StringVar(&a.esMetric, "early_stopping_metric", "", `stop when this validation metric stops improving, e.g. auc_avg, loss, click/binary_output/auc`)
	fs.StringVar(&a.esMode, "early_stopping_mode", "", "max or min (default: min for loss/logloss/rmse/mae, else max)")
	fs.IntVar(&a.esPatience, "early_stopping_patience", 1, "epochs without improvement before stopping")
	fs.Float64Var(&a.esMinDelta, "early_stopping_min_delta", 0, "smallest change counted as an improvement")
	fs.Var(boolValue{&a.restoreBest}, "restore_best", "after early stopping, put back the parameters of the best epoch")
	fs.Int64Var(&a.synthRows, "synth_rows", 200000, "rows of synthetic training data (used when no data flag is given)")
	fs.Int64Var(&a.synthEvalRows, "synth_eval_rows", 20000, "rows of synthetic evaluation data")
	fs.Int64Var(&a.tableRows, "table_rows", 0, "synthetic data: user_id and item_id cardinality (0: TenRec-like defaults)")
	a.registerDataFlags(fs)
	fs.Var(optFloat32{&a.stlPosWeight}, "stl_positive_class_weight", "weight of positive examples when a single binary task is trained (Merlin's single-task form of --mtl_pos_class_weight_<target>)")
	fs.StringVar(&a.mlpInit, "mlp_init", "glorot_uniform", "initializer of the Dense kernels; only glorot_uniform (Keras' default)")
	fs.IntVar(&a.inBatchNegTrain, "in_batch_negatives_train", 0, "Merlin's in-batch negative sampling; not implemented, only 0")
	fs.IntVar(&a.inBatchNegEval, "in_batch_negatives_eval", 0, "Merlin's in-batch negative sampling; not implemented, only 0")
	fs.Var(boolValue{&a.logToTensorboard}, "log_to_tensorboard", "write TensorBoard event files to <output_path>/tensorboard/train and .../validation: the running loss every --metrics_log_frequency steps, and per epoch the losses, the training and validation metrics and the gate weights")
	fs.Var(boolValue{&a.logToWandb}, "log_to_wandb", "Merlin's Weights&Biases logging; not implemented, only false")
	fs.StringVar(&a.wandbProject, "wandb_project", "", "Merlin's W&B project; no effect without W&B logging (as in Merlin)")
	fs.StringVar(&a.wandbEntity, "wandb_entity", "", "Merlin's W&B entity; no effect without W&B logging (as in Merlin)")
	fs.StringVar(&a.wandbGroup, "wandb_exp_group", "", "Merlin's W&B experiment group; no effect without W&B logging (as in Merlin)")
	fs.IntVar(&a.metricsLogFrequency, "metrics_log_frequency", 50, "steps between the running losses written with --log_to_tensorboard (0: per epoch only); see --log_every_steps for the log")
}

const trainDescription = `Trains a multi-task model with Merlin's quick-start ranking flags, evaluates it
(a metrics table on stdout, metrics.json in --output_path), optionally saves it
and scores --predict_data_path. Without any data flag it first writes synthetic
TenRec-like data (planted signal, oracle AUC reported) to <output_path>/data.
With --load_model_path but no --train_data_path (Merlin's predict-only form) it
trains nothing: the saved model evaluates --eval_data_path and scores
--predict_data_path.

Per-target flags (any target column name in place of <target>):
  --mtl_loss_weight_<target>=W       loss weight of the task (default 1)
  --mtl_pos_class_weight_<target>=W  weight of positive examples (binary tasks)

Defaults follow Merlin's quick-start script: --model mlp, --lr 1e-4 with decay
0.99 every 100 steps, --l2_reg 1e-5, one PLE level, towers [64], 1 epoch. Unlike
Merlin, each output head starts at its task's base rate (--init_output_bias;
=false gives Merlin's zero biases, with which rare tasks rank backwards at first).

Without data flags (the synthetic run) Merlin's optimisation defaults barely
move a model in one pass, so unlike Merlin that run uses
  ` + syntheticPresetText + `
(no learning-rate decay) for each of these flags not given, on --synth_rows
(default 200000) rows, and prints the settings it used. Any flag given is
kept; with --load_model_path the learning rate and its decay come from the
checkpoint. With --train_data_path these defaults are Merlin's.`

// syntheticPreset are the settings of a train run without data flags in
// place of Merlin's defaults (lr 1e-4 decayed by 0.99 every 100 steps,
// batch 1024, 1 epoch), with which a shared-bottom MLP's AUC on 100k
// synthetic rows stays near 0.5. With these the MLP reaches an evaluation
// auc_avg of about 0.75 (oracle about 0.85) in a few seconds on two cores.
// Order matters only for printing.
var syntheticPreset = []struct{ flag, value string }{
	{"epochs", "3"},
	{"train_batch_size", "512"},
	{"lr", "0.002"},
	{"lr_decay_rate", "1"},
	{"lr_decay_steps", "0"},
}

// syntheticPresetText is syntheticPreset as command-line flags.
const syntheticPresetText = "--epochs 3 --train_batch_size 512 --lr 0.002 --lr_decay_rate 1 --lr_decay_steps 0"

// isSynthetic reports whether no data flag was given: train then runs on
// generated data.
func (a *trainArgs) isSynthetic() bool {
	return a.trainPath == "" && a.evalPath == "" && a.predictPath == ""
}

// applySyntheticPreset sets every syntheticPreset flag the user did not
// give, when no data flag is given, and returns the flags it set. The two
// decay flags go together: either given keeps Merlin's decay. With
// --load_model_path the optimizer flags belong to the checkpoint and are
// left alone.
func (a *trainArgs) applySyntheticPreset(fs *flag.FlagSet, set map[string]bool) ([]string, error) {
	if !a.isSynthetic() {
		return nil, nil
	}
	decayGiven := set["lr_decay_rate"] || set["lr_decay_steps"]
	var applied []string
	for _, p := range syntheticPreset {
		if set[p.flag] {
			continue
		}
		if (p.flag == "lr_decay_rate" || p.flag == "lr_decay_steps") && decayGiven {
			continue
		}
		if a.loadPath != "" && slices.Contains(architectureFlags, p.flag) {
			continue
		}
		if err := fs.Set(p.flag, p.value); err != nil {
			return nil, fmt.Errorf("synthetic-data default --%s %s: %w", p.flag, p.value, err)
		}
		applied = append(applied, p.flag)
	}
	return applied, nil
}

// syntheticSettings describes the settings of a synthetic run for stdout:
// the data size, the run and optimizer flags in effect, and which of them
// differ from Merlin's defaults because of syntheticPreset.
func (a *trainArgs) syntheticSettings(applied []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Synthetic TenRec-like data (no data flags): --synth_rows %d --synth_eval_rows %d --model %s --epochs %d --train_batch_size %d",
		a.synthRows, a.synthEvalRows, a.cfg.Model, a.epochs, a.trainBatch)
	if a.loadPath == "" {
		fmt.Fprintf(&b, " --lr %s --lr_decay_rate %s --lr_decay_steps %d --init_output_bias %t",
			float32Value{&a.cfg.LR}.String(), float32Value{&a.cfg.LRDecayRate}.String(), a.cfg.LRDecaySteps, a.cfg.InitOutputBias)
	} else {
		b.WriteString(" (learning rate and decay from the checkpoint)")
	}
	b.WriteString("\n")
	if len(applied) > 0 {
		flags := make([]string, len(applied))
		for i, f := range applied {
			flags[i] = "--" + f
		}
		fmt.Fprintf(&b, "  %s: not Merlin's defaults, chosen so that the synthetic run visibly learns; give them to override (with --train_data_path these defaults are Merlin's)\n",
			strings.Join(flags, ", "))
	}
	return b.String()
}

func parseTrainArgs(e *env, args []string, a *trainArgs, synopsis, desc string) (*flag.FlagSet, map[string]bool, error) {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	a.register(fs)
	if err := helpOr(e, fs, args, synopsis, desc); err != nil {
		return nil, nil, err
	}
	dyn, rest, err := dynamicFloats(args, lossWeightPrefix, posWeightPrefix)
	if err != nil {
		return nil, nil, err
	}
	a.lossWeights, a.posWeights = dyn[lossWeightPrefix], dyn[posWeightPrefix]
	set, err := parseFlags(fs, rest)
	if err != nil {
		return nil, nil, err
	}
	return fs, set, nil
}

// checkDistributed validates --distributed: an MPI job trains on given
// data (every rank would write the synthetic data), without graph capture
// (the step's collectives run on the host between the device's pass and
// update), and scores nothing after training (every rank would write the
// scores). Its ranks run on the CPU or, with --device cuda, one GPU each.
func (a *trainArgs) checkDistributed() error {
	switch {
	case a.distributed == "none":
		return nil
	case a.distributed != "mpi":
		return usagef("--distributed must be none or mpi, got %q", a.distributed)
	case a.trainPath == "":
		return usagef("--distributed mpi needs --train_data_path (synthetic data is generated by one process: run mtlrank synth first)")
	case a.predictPath != "":
		return usagef("--distributed mpi does not score after training: drop --predict_data_path and run mtlrank predict on the saved model")
	case a.cfg.CUDAGraph:
		return usagef("--distributed mpi does not capture the training step as CUDA graphs (its allreduce runs on the host between the GPU's pass and update): drop --cuda_graph")
	}
	return nil
}

// checkSharding validates --embedding_sharding: row shards the tables
// among the ranks of an MPI job (on the CPU or on GPU ranks), whose
// lookups are then collective.
func (a *trainArgs) checkSharding(set map[string]bool) error {
	switch {
	case a.embeddingSharding != mtl.ShardReplicate && a.embeddingSharding != mtl.ShardRow:
		return usagef("--embedding_sharding must be replicate or row, got %q", a.embeddingSharding)
	case a.embeddingSharding == mtl.ShardRow && a.distributed != "mpi":
		return usagef("--embedding_sharding row shards the tables among the ranks of a job: it needs --distributed mpi")
	case a.gatherCheckpoint && a.embeddingSharding != mtl.ShardRow:
		return usagef("--gather_checkpoint gathers tables sharded by rows to rank 0: it needs --embedding_sharding row (other checkpoints are one process's already)")
	}
	return nil
}

// shardingWords says how the ranks hold the tables.
func shardingWords(mode string) string {
	if mode == mtl.ShardRow {
		return "sharded by rows"
	}
	return "replicated"
}

// openComm opens the communicator of --distributed (dist.Local for none).
func (a *trainArgs) openComm() (dist.Comm, error) {
	c, err := dist.Open(a.distributed)
	if err != nil {
		return nil, fmt.Errorf("--distributed %s: %w", a.distributed, err)
	}
	return c, nil
}

// checkCommon validates the flags shared by train, eval and predict.
func (a *trainArgs) checkCommon() error {
	switch {
	case a.trainBatch < 1:
		return usagef("--train_batch_size must be >= 1, got %d", a.trainBatch)
	case a.evalBatch < 1:
		return usagef("--eval_batch_size must be >= 1, got %d", a.evalBatch)
	case a.threads < 0:
		return usagef("--threads must be >= 0, got %d", a.threads)
	case a.maxMemory < 0:
		return usagef("--max_memory must be >= 0, got %d", a.maxMemory)
	case a.prefetch < 0:
		return usagef("--prefetch must be >= 0, got %d", a.prefetch)
	case a.shuffleBuffer < 0:
		return usagef("--shuffle_buffer must be >= 0, got %d", a.shuffleBuffer)
	case a.device != "cpu" && a.device != "cuda":
		return usagef("--device must be cpu or cuda, got %q", a.device)
	case a.cfg.CUDAGraph && a.device != "cuda":
		return usagef("--cuda_graph needs --device cuda (got --device %s)", a.device)
	case a.predictFormat != "" && a.predictFormat != "parquet" && a.predictFormat != "csv" && a.predictFormat != "tsv":
		return usagef("--predict_output_format must be parquet, csv or tsv, got %q", a.predictFormat)
	}
	if a.predictOut != "" {
		if _, _, err := mtl.PredictionFile(a.predictOut, a.predictFormat); err != nil {
			return usagef("--predict_output_path and --predict_output_format disagree: %s", strings.TrimPrefix(err.Error(), "mtl: predict: "))
		}
	}
	return checkThreads(a.threads)
}

func (a *trainArgs) check(set map[string]bool) error {
	if err := a.checkCommon(); err != nil {
		return err
	}
	switch {
	case a.epochs < 1:
		return usagef("--epochs must be >= 1, got %d", a.epochs)
	case a.stepsPerEpoch < 0:
		return usagef("--train_steps_per_epoch must be >= 0, got %d", a.stepsPerEpoch)
	case a.validationSteps < 0:
		return usagef("--validation_steps must be >= 0, got %d", a.validationSteps)
	case a.trainMetricsSteps < 0:
		return usagef("--train_metrics_steps must be >= 0, got %d", a.trainMetricsSteps)
	case a.logEvery < 0:
		return usagef("--log_every_steps must be >= 0, got %d", a.logEvery)
	case a.esPatience < 1:
		return usagef("--early_stopping_patience must be >= 1, got %d", a.esPatience)
	case a.esMinDelta < 0:
		return usagef("--early_stopping_min_delta must be >= 0, got %v", a.esMinDelta)
	case a.esMode != "" && a.esMode != "max" && a.esMode != "min":
		return usagef("--early_stopping_mode must be max or min, got %q", a.esMode)
	case a.synthRows < 1 || a.synthEvalRows < 1:
		return usagef("--synth_rows and --synth_eval_rows must be >= 1")
	case a.tableRows < 0:
		return usagef("--table_rows must be >= 0, got %d", a.tableRows)
	case a.mlpInit != "glorot_uniform":
		return usagef("--mlp_init %q is not supported: every Dense kernel is initialised glorot_uniform (Keras' and Merlin's default)", a.mlpInit)
	case a.inBatchNegTrain != 0 || a.inBatchNegEval != 0:
		return usagef("--in_batch_negatives_train/--in_batch_negatives_eval: in-batch negative sampling is not implemented; only 0 (train on the negatives in the data)")
	case a.logToWandb:
		return usagef("--log_to_wandb is not supported: metrics go to <output_path>/metrics.json (and TensorBoard event files with --log_to_tensorboard), and --log_every_steps logs the running loss")
	case a.metricsLogFrequency < 0:
		return usagef("--metrics_log_frequency must be >= 0, got %d", a.metricsLogFrequency)
	case a.stlPosWeight != nil && !(*a.stlPosWeight > 0):
		return usagef("--stl_positive_class_weight must be > 0, got %g", *a.stlPosWeight)
	}
	synthetic := a.isSynthetic()
	if err := a.checkDistributed(); err != nil {
		return err
	}
	if err := a.checkSharding(set); err != nil {
		return err
	}
	if !synthetic && a.trainPath == "" {
		if err := a.checkWithoutTraining(set); err != nil {
			return err
		}
	}
	if synthetic && set["schema_path"] {
		return usagef("--schema_path needs --train_data_path (synthetic data uses the built-in tenrec schema)")
	}
	if !synthetic {
		for _, f := range []string{"synth_rows", "synth_eval_rows", "table_rows"} {
			if set[f] {
				return usagef("--%s applies to synthetic data only, but --train_data_path is given", f)
			}
		}
	}
	if (set["early_stopping_mode"] || set["early_stopping_patience"] || set["early_stopping_min_delta"] || set["restore_best"]) && a.esMetric == "" {
		return usagef("early stopping flags need --early_stopping_metric")
	}
	if a.esMetric != "" && !synthetic && a.evalPath == "" {
		return usagef("--early_stopping_metric needs --eval_data_path")
	}
	if len(a.sampleSpace) > 0 && len(a.tasks) == 0 {
		return usagef("--tasks_sample_space needs an explicit --tasks list to align with")
	}
	if len(a.sampleSpace) > 0 && len(a.sampleSpace) != len(a.tasks) {
		return usagef("--tasks_sample_space has %d entries but --tasks has %d; they must align (use empty entries for tasks trained on every row)", len(a.sampleSpace), len(a.tasks))
	}
	if len(a.keepOut) > 0 && a.predictPath == "" {
		return usagef("--predict_output_keep_cols needs --predict_data_path")
	}
	if a.predictOut != "" && a.predictPath == "" {
		return usagef("--predict_output_path needs --predict_data_path")
	}
	if a.loadPath != "" {
		for _, f := range architectureFlags {
			if set[f] {
				return usagef("--%s cannot be combined with --load_model_path: the model's configuration comes from the checkpoint", f)
			}
		}
		if len(a.lossWeights) > 0 || len(a.posWeights) > 0 || a.stlPosWeight != nil {
			return usagef("--mtl_loss_weight_*, --mtl_pos_class_weight_* and --stl_positive_class_weight cannot be combined with --load_model_path")
		}
		if len(a.keepColumns) > 0 || len(a.ignoreColumns) > 0 {
			return usagef("--keep_columns and --ignore_columns cannot be combined with --load_model_path")
		}
		return nil
	}
	return checkModelFlags(&a.cfg, set)
}

// checkWithoutTraining checks Merlin's form of train without training
// data: with --load_model_path, the saved model evaluates
// --eval_data_path and scores --predict_data_path; nothing is trained.
func (a *trainArgs) checkWithoutTraining(set map[string]bool) error {
	switch {
	case a.loadPath == "":
		return usagef("--train_data_path or --load_model_path is required when --eval_data_path or --predict_data_path is given")
	case a.savePath != "":
		return usagef("--save_model_path needs --train_data_path: without training data nothing is trained, and the model stays at --load_model_path")
	case a.esMetric != "":
		return usagef("--early_stopping_metric needs --train_data_path: without training data nothing is trained")
	}
	return nil
}

// runWithoutTraining is train without training data (Merlin's
// predict-only form): the model of --load_model_path is evaluated on
// --eval_data_path and scores --predict_data_path, as by 'mtlrank eval' and
// 'mtlrank predict', and the report goes to <output_path>/metrics.json.
func (a *trainArgs) runWithoutTraining(ctx context.Context, e *env, set map[string]bool, start time.Time) error {
	batch := 1
	for _, path := range []string{a.evalPath, a.predictPath} {
		if path == "" {
			continue
		}
		b, err := capBatch(a.evalBatch, path)
		if err != nil {
			return err
		}
		batch = max(batch, b)
	}
	m, tr, err := loadForServe(e, a, batch)
	if err != nil {
		return err
	}
	defer m.Release()
	fmt.Fprintf(e.stdout, "No --train_data_path: no training; the model of %s (%d steps) is used as saved\n", a.loadPath, m.Step())
	report := map[string]any{"command": "train", "model": m.Config().String(), "load_model_path": a.loadPath,
		"epochs": []mtl.EpochResult{}, "steps": m.Step()}
	if a.evalPath != "" {
		res, _, oracle, err := evaluateSaved(ctx, e, a, m, tr, batch)
		if err != nil {
			return err
		}
		report["eval_data"], report["eval"] = a.evalPath, res
		if oracle != nil {
			report["oracle"] = oracle
		}
	}
	fallback := m.Schema()
	if a.schemaArg != "" {
		if fallback, err = schema.Load(a.schemaArg); err != nil {
			return fmt.Errorf("--schema_path: %w", err)
		}
	}
	return a.predictAndReport(ctx, e, tr, fallback, batch, set, report, start)
}

// predictAndReport ends a train run: it scores --predict_data_path, when
// given, with the schema beside the data or fallback, and writes the
// report to <output_path>/metrics.json.
func (a *trainArgs) predictAndReport(ctx context.Context, e *env, tr *mtl.Trainer, fallback *schema.Schema, batch int,
	set map[string]bool, report map[string]any, start time.Time) error {
	if a.predictPath != "" {
		out := a.predictOut
		if out == "" {
			out = filepath.Join(a.outputPath, "predictions")
		}
		n, err := predictTo(ctx, e, tr, a.predictPath, a.schemaArg, fallback, out, a.predictFormat, a.keepOut, set["predict_output_keep_cols"], batch, a.prefetch, a.fillNaN)
		if err != nil {
			return err
		}
		report["predictions"] = map[string]any{"path": out, "rows": n}
	}
	report["seconds"] = time.Since(start).Seconds()
	path := filepath.Join(a.outputPath, "metrics.json")
	if err := writeJSON(path, report); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	fmt.Fprintf(e.stdout, "Metrics written to %s\n", path)
	return nil
}

// applyTasks fills cfg's task list, per-task weights and sample spaces
// from the flags, checking them against the schema.
func (a *trainArgs) applyTasks(s *schema.Schema) error {
	tasks := a.tasks
	if len(tasks) == 1 && tasks[0] == "all" {
		tasks = nil
	}
	for _, t := range tasks {
		if t == "all" {
			return usagef(`--tasks: "all" cannot be combined with column names`)
		}
		f := s.Feature(t)
		if f == nil {
			return usagef("--tasks: %q is not a column of the schema", t)
		}
		if !f.IsTarget() {
			return usagef("--tasks: column %q is not tagged as a target in the schema", t)
		}
	}
	a.cfg.Tasks = tasks
	resolved := tasks
	if len(resolved) == 0 {
		for _, f := range s.Features {
			if f.IsTarget() {
				resolved = append(resolved, f.Name)
			}
		}
	}
	if len(a.sampleSpace) > 0 {
		a.cfg.SampleSpace = map[string]string{}
		for i, col := range a.sampleSpace {
			if col == "" {
				continue
			}
			if s.Feature(col) == nil {
				return usagef("--tasks_sample_space: %q is not a column of the schema", col)
			}
			if col == tasks[i] {
				return usagef("--tasks_sample_space: task %q cannot be its own sample space", col)
			}
			a.cfg.SampleSpace[tasks[i]] = col
		}
	}
	checkTargets := func(flagPrefix string, m map[string]float64, binaryOnly bool) (map[string]float32, error) {
		if len(m) == 0 {
			return nil, nil
		}
		out := map[string]float32{}
		for _, t := range sortedKeys(m) {
			if !slices.Contains(resolved, t) {
				return nil, usagef("--%s%s: %q is not one of the tasks (%s)", flagPrefix, t, t, strings.Join(resolved, ","))
			}
			if f := s.Feature(t); binaryOnly && !f.HasTag(schema.TagBinary) {
				return nil, usagef("--%s%s: %q is not a binary target", flagPrefix, t, t)
			}
			if binaryOnly && m[t] == 0 {
				return nil, usagef("--%s%s: must be > 0", flagPrefix, t)
			}
			out[t] = float32(m[t])
		}
		return out, nil
	}
	posWeights := a.posWeights
	if w := a.stlPosWeight; w != nil && *w != 1 {
		// Merlin applies it to single-task models only; a weight of 1
		// changes nothing either way.
		if len(resolved) != 1 {
			return usagef("--stl_positive_class_weight applies when one task is trained, but there are %d (%s); use --mtl_pos_class_weight_<target>", len(resolved), strings.Join(resolved, ","))
		}
		t := resolved[0]
		if _, dup := posWeights[t]; dup {
			return usagef("--stl_positive_class_weight and --%s%s both weight task %q; give one", posWeightPrefix, t, t)
		}
		if !s.Feature(t).HasTag(schema.TagBinary) {
			return usagef("--stl_positive_class_weight: the task %q is not a binary target", t)
		}
		posWeights = maps.Clone(posWeights)
		if posWeights == nil {
			posWeights = map[string]float64{}
		}
		posWeights[t] = float64(*w)
	}
	var err error
	if a.cfg.LossWeights, err = checkTargets(lossWeightPrefix, a.lossWeights, false); err != nil {
		return err
	}
	if a.cfg.PosClassWeights, err = checkTargets(posWeightPrefix, posWeights, true); err != nil {
		return err
	}
	return nil
}

// selectColumns applies --keep_columns and --ignore_columns to s.
// checkModel checks the model's configuration against the schema s as
// training will (column selection, tasks, Config.Validate).
func (a *trainArgs) checkModel(s *schema.Schema) error {
	s, err := a.selectColumns(s)
	if err != nil {
		return err
	}
	if err := a.applyTasks(s); err != nil {
		return err
	}
	if err := a.cfg.Validate(s); err != nil {
		return &usageError{err.Error()}
	}
	return nil
}

func (a *trainArgs) selectColumns(s *schema.Schema) (*schema.Schema, error) {
	if len(a.keepColumns) == 0 && len(a.ignoreColumns) == 0 {
		return s, nil
	}
	for _, flagCols := range []struct {
		name string
		cols []string
	}{{"keep_columns", a.keepColumns}, {"ignore_columns", a.ignoreColumns}} {
		for _, c := range flagCols.cols {
			if s.Feature(c) == nil {
				return nil, usagef("--%s: %q is not a column of the schema", flagCols.name, c)
			}
		}
	}
	out := s.Clone()
	out.Features = nil
	for _, f := range s.Clone().Features {
		if len(a.keepColumns) > 0 && !slices.Contains(a.keepColumns, f.Name) {
			continue
		}
		if slices.Contains(a.ignoreColumns, f.Name) {
			continue
		}
		out.Features = append(out.Features, f)
	}
	return out, nil
}

// loadSchema reads --schema_path or the schema beside data.
func loadSchema(schemaArg, data string) (*schema.Schema, error) {
	if schemaArg != "" {
		s, err := schema.Load(schemaArg)
		if err != nil {
			return nil, fmt.Errorf("--schema_path: %w", err)
		}
		return s, nil
	}
	dir := data
	if st, err := os.Stat(data); err == nil && !st.IsDir() {
		dir = filepath.Dir(data)
	} else if err != nil {
		return nil, fmt.Errorf("data path %s: %w", data, err)
	}
	s, err := schema.Load(dir)
	if err != nil {
		hint := "give --schema_path"
		if !looksLikeParquet(data) {
			hint += "; mtlrank reads Parquet: encode CSV or raw data with 'mtlrank preprocess', which writes Parquet and its schema"
		}
		return nil, fmt.Errorf("no schema beside %s (%s): %w", data, hint, err)
	}
	return s, nil
}

// looksLikeParquet reports whether path is a Parquet file (by name) or a
// folder holding a dataset's Parquet files (loader.ListFiles).
func looksLikeParquet(path string) bool {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		_, err := loader.ListFiles(path)
		return err == nil
	}
	return parquetio.HasExtension(path)
}

func openDataset(path string, s *schema.Schema, cols []string, batch int, shuffle bool, seed int64, buffer, prefetch int, fill *float32) (*loader.Dataset, error) {
	opt := loader.DefaultOptions()
	opt.FillNaN = fill
	opt.BatchSize = batch
	opt.Columns = cols
	opt.Shuffle = shuffle
	opt.Seed = seed
	opt.ShuffleBuffer = buffer
	opt.Prefetch = prefetch
	ds, err := loader.Open(path, s, opt)
	if err != nil {
		return nil, err
	}
	return ds, nil
}

// synthData writes synthetic train and eval datasets under dir.
func synthData(ctx context.Context, dir string, s *schema.Schema, rows, evalRows, seed int64) (train, eval string, oracle *synth.Oracle, err error) {
	train, eval = filepath.Join(dir, "train"), filepath.Join(dir, "eval")
	cfg := synth.DefaultConfig(rows, seed)
	o, err := synth.WriteDatasetContext(ctx, train, s, cfg)
	if err != nil {
		return "", "", nil, err
	}
	ecfg := synth.DefaultConfig(evalRows, seed)
	ecfg.StartRow = rows
	eo, err := synth.WriteDatasetContext(ctx, eval, s, ecfg)
	if err != nil {
		return "", "", nil, err
	}
	_ = o
	return train, eval, &eo, nil
}

func runTrain(ctx context.Context, e *env, args []string) error {
	var a trainArgs
	fs, set, err := parseTrainArgs(e, args, &a, "mtlrank train [flags]", trainDescription)
	if err != nil {
		return err
	}
	preset, err := a.applySyntheticPreset(fs, set)
	if err != nil {
		return err
	}
	if err := a.check(set); err != nil {
		return err
	}
	if err := checkPaths(a.inputs(), a.trainOutputs()); err != nil {
		return err
	}
	if a.device == "cuda" {
		// A build without CUDA says so before MPI starts or data is
		// generated.
		if _, err := kernels.CUDADevices(); errors.Is(err, kernels.ErrNoCUDA) {
			return fmt.Errorf("--device cuda: %w", err)
		}
	}
	comm, err := a.openComm()
	if err != nil {
		return err
	}
	defer comm.Close()
	ranks, rank0 := comm.Size(), comm.Rank() == 0
	if !rank0 {
		a.quiet = true // rank 0 speaks for the job
	}
	log := logger(e, a.quiet)
	start := time.Now()
	if _, onNode := dist.NodeRanks(comm); ranks > 1 {
		if p := rankProcs(os.Getenv("GOMAXPROCS"), runtime.NumCPU(), runtime.GOMAXPROCS(0), onNode, a.threads); p > 0 {
			runtime.GOMAXPROCS(p)
			log.Info("each rank runs on its share of the machine's CPUs (set GOMAXPROCS to choose)",
				"gomaxprocs", p, "cpus", runtime.NumCPU(), "ranks_on_machine", onNode)
		}
	}
	if p := rankPrefetch(a.prefetch, set["prefetch"], ranks, runtime.GOMAXPROCS(0)); p != a.prefetch {
		a.prefetch = p
		log.Info("each rank reads its batches in the training step: it has one P (GOMAXPROCS 1), which a prefetch goroutine would hold when the rank's MPI calls return (set --prefetch to choose)")
	}

	var oracle *synth.Oracle
	synthetic := a.isSynthetic()
	if !synthetic && a.trainPath == "" {
		return a.runWithoutTraining(ctx, e, set, start)
	}
	if synthetic {
		fmt.Fprint(e.stdout, a.syntheticSettings(preset))
		s := schema.TenrecWithRows(a.tableRows)
		if a.loadPath == "" {
			// The model is checked against the schema the data will have
			// before any is generated, so that a refused configuration
			// leaves nothing behind.
			if err := a.checkModel(s); err != nil {
				return err
			}
		}
		dataDir := filepath.Join(a.outputPath, "data")
		log.Info("generating synthetic TenRec-like data", "folder", dataDir, "train_rows", a.synthRows, "eval_rows", a.synthEvalRows)
		a.trainPath, a.evalPath, oracle, err = synthData(ctx, dataDir, s, a.synthRows, a.synthEvalRows, a.cfg.Seed)
		if err != nil {
			return err
		}
	}
	s, err := loadSchema(a.schemaArg, a.trainPath)
	if err != nil {
		return err
	}
	gpu := 0
	if ranks > 1 && a.device == "cuda" {
		if gpu, err = rankGPU(os.Getenv, kernels.CUDADevices); err != nil {
			return err
		}
	}
	dev, err := newDeviceOn(a.device, a.threads, gpu)
	if err != nil {
		return err
	}
	// The model's workspace is sized for the largest batch it will see,
	// which is never more rows than a dataset holds.
	trainBatch, err := capBatch(a.trainBatch, a.trainPath)
	if err != nil {
		return err
	}
	if trainBatch%ranks != 0 {
		return usagef("--train_batch_size %d is not a multiple of the %d ranks: each rank's batch is the global batch divided by the ranks", trainBatch, ranks)
	}
	rankBatch := trainBatch / ranks
	maxBatch, evalBatch, predictBatch := rankBatch, a.evalBatch, a.evalBatch
	if a.evalPath != "" {
		if evalBatch, err = capBatch(a.evalBatch, a.evalPath); err != nil {
			return err
		}
		maxBatch = max(maxBatch, evalBatch)
	}
	if a.predictPath != "" {
		if predictBatch, err = capBatch(a.evalBatch, a.predictPath); err != nil {
			return err
		}
		maxBatch = max(maxBatch, predictBatch)
	}

	var m *mtl.Model
	var state *mtl.TrainState
	rowSharded := a.embeddingSharding == mtl.ShardRow && ranks > 1
	if a.loadPath != "" {
		cs, ccfg, err := mtl.ReadCheckpointModel(a.loadPath)
		if err != nil {
			return err
		}
		if err := checkRankMemory(cs, ccfg, dev, maxBatch, a.maxMemory, 0, ranks, rowSharded); err != nil {
			return err
		}
		if a.embeddingSharding == mtl.ShardRow {
			m, state, err = mtl.LoadShardedCheckpoint(a.loadPath, dev, maxBatch, comm)
		} else {
			m, state, err = mtl.LoadCheckpoint(a.loadPath, dev, maxBatch)
		}
		if err != nil {
			return err
		}
		if err := m.CheckDataSchema(s, true); err != nil {
			m.Release()
			return fmt.Errorf("training data %s: %w", a.trainPath, err)
		}
		// The option is not saved with the checkpoint.
		if err := m.SetCUDAGraph(a.cfg.CUDAGraph); err != nil {
			m.Release()
			return err
		}
	} else {
		if s, err = a.selectColumns(s); err != nil {
			return err
		}
		if err := a.applyTasks(s); err != nil {
			return err
		}
		if err := checkRankMemory(s, a.cfg, dev, maxBatch, a.maxMemory, 0, ranks, rowSharded); err != nil {
			return err
		}
		if a.embeddingSharding == mtl.ShardRow {
			m, err = mtl.NewShardedModel(s, a.cfg, dev, maxBatch, comm)
		} else {
			m, err = mtl.NewModel(s, a.cfg, dev, maxBatch)
		}
		if err != nil {
			return &usageError{err.Error()}
		}
	}
	defer m.Release()
	log.Info("model", "config", m.Config().String(), "device", dev.Name())

	cols := m.TrainColumns()
	train, err := openDataset(a.trainPath, s, cols, rankBatch, a.shuffled, m.Config().Seed, a.shuffleBuffer, a.prefetch, a.fillNaN)
	if err != nil {
		return err
	}
	var eval *loader.Dataset
	if a.evalPath != "" {
		es, err := schemaFor(a.schemaArg, a.evalPath, s)
		if err != nil {
			return err
		}
		if err := m.CheckDataSchema(es, true); err != nil {
			return fmt.Errorf("evaluation data %s: %w", a.evalPath, err)
		}
		if eval, err = openDataset(a.evalPath, es, cols, evalBatch, false, 0, 0, a.prefetch, a.fillNaN); err != nil {
			return err
		}
		if oracle == nil {
			// Synthetic data written by 'mtlrank synth' carries its oracle.
			if o, err := synth.ReadOracle(filepath.Join(dirOf(a.evalPath), synth.OracleFile)); err == nil {
				oracle = &o
			}
		}
	}

	startEpoch := 0
	if state != nil {
		startEpoch = state.Epoch
	}
	opts := mtl.TrainerOptions{
		Epochs: startEpoch + a.epochs, StepsPerEpoch: a.stepsPerEpoch, ValidationSteps: a.validationSteps,
		TrainMetricsSteps: a.trainMetricsSteps, LogEvery: a.logEvery,
		EarlyStopping: mtl.EarlyStopping{Metric: a.esMetric, Mode: a.esMode, Patience: a.esPatience,
			MinDelta: a.esMinDelta, RestoreBest: a.restoreBest},
		Logger: log, OnProgress: trainerProgress(e, a.quiet),
		LossCurveEvery: lossCurveEvery(train.Rows(), trainBatch, a.stepsPerEpoch),
		Comm:           comm, EmbeddingSharding: a.embeddingSharding,
	}
	var tb *tbSink
	if a.logToTensorboard && rank0 {
		tb = newTBSink(filepath.Join(a.outputPath, "tensorboard"))
		opts.Events, opts.EventEvery = tb, a.metricsLogFrequency
	}
	tr, err := mtl.NewTrainer(m, opts)
	if err != nil {
		return &usageError{err.Error()}
	}
	if state != nil {
		tr.Resume(&mtl.TrainState{Epoch: state.Epoch, Seed: state.Seed, BestValue: math.NaN()})
	}
	startSteps := m.Step()
	hist, err := tr.Fit(ctx, train, eval)
	if tb != nil {
		if cerr := tb.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return err
	}
	report := map[string]any{
		"command": "train", "model": m.Config().String(), "device": dev.Name(),
		"train_data": a.trainPath, "epochs": hist.Epochs, "steps": m.Step(),
		"config": m.Config(), "tasks": taskList(m.Tasks()), "args": args,
		"train_batch_size": trainBatch,
	}
	if a.cfg.CUDAGraph {
		// Whether capture engaged, and why not if it was turned off.
		n, gerr := m.GraphSteps()
		report["cuda_graph_steps"] = n
		fmt.Fprintf(e.stdout, "CUDA graphs: %d of %d steps replayed from captured graphs\n", n, m.Step())
		if gerr != nil {
			report["cuda_graph_error"] = gerr.Error()
			fmt.Fprintf(e.stdout, "CUDA graphs turned off, the other steps ran op by op: %v\n", gerr)
		}
	}
	if hist.StoppedEarly {
		report["stopped_early"] = true
		report["best_epoch"] = hist.BestEpoch
	}
	var results metrics.Results
	if eval != nil {
		results, err = tr.Evaluate(ctx, eval)
		if err != nil {
			return err
		}
		report["eval_data"] = a.evalPath
		report["eval"] = results
		if rank0 {
			fmt.Fprintf(e.stdout, "Evaluation on %s (%d rows) after %d epochs, %d steps:\n", a.evalPath, eval.Rows(), len(hist.Epochs)+startEpoch, m.Step())
		}
		if rank0 {
			printMetrics(e.stdout, m.Tasks(), results, oracle)
		}
	} else if len(hist.Epochs) > 0 && rank0 {
		last := hist.Epochs[len(hist.Epochs)-1]
		fmt.Fprintf(e.stdout, "Trained %d epochs, %d steps; last epoch loss %.5f (no --eval_data_path: no evaluation)\n", len(hist.Epochs), m.Step(), last.Loss)
	}
	if ranks > 1 {
		if !rank0 {
			if m.RowSharded() && a.savePath != "" {
				// The save is collective: this rank writes its shard of
				// the tables, or sends its rows to rank 0.
				return a.saveCheckpoint(m, &hist.State)
			}
			return nil // the model, metrics.json and the scores are rank 0's to write
		}
		perStep := float64(m.CommBytes()) / float64(max(m.Step()-startSteps, 1))
		report["distributed"] = map[string]any{"ranks": ranks, "rank_batch_size": rankBatch, "bytes_received_per_rank_per_step": perStep,
			"embedding_sharding": a.embeddingSharding}
		fmt.Fprintf(e.stdout, "Distributed: %d ranks of %d rows per step, embedding tables %s; rank 0 received %.0f bytes per step\n", ranks, rankBatch, shardingWords(a.embeddingSharding), perStep)
	}
	if oracle != nil {
		report["oracle"] = oracle
	}
	if len(preset) > 0 {
		report["synthetic_preset"] = preset
	}
	if a.savePath != "" {
		st := hist.State
		st.Metrics = results
		if err := a.saveCheckpoint(m, &st); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "Saved model to %s\n", a.savePath)
		report["saved_model"] = a.savePath
	}
	return a.predictAndReport(ctx, e, tr, s, predictBatch, set, report, start)
}

// saveCheckpoint saves m to --save_model_path, gathered with
// --gather_checkpoint.
func (a *trainArgs) saveCheckpoint(m *mtl.Model, st *mtl.TrainState) error {
	if a.gatherCheckpoint {
		return mtl.SaveGatheredCheckpoint(a.savePath, m, st)
	}
	return mtl.SaveCheckpoint(a.savePath, m, st)
}

// lossCurvePoints is about how many points of the loss curve an epoch
// records in metrics.json: enough to draw, few enough to stay small.
const lossCurvePoints = 100

// lossCurveEvery is the window of the loss curve (mtl.TrainerOptions.
// LossCurveEvery) that gives an epoch about lossCurvePoints points.
func lossCurveEvery(rows int64, batch, stepsPerEpoch int) int {
	steps := (rows + int64(batch) - 1) / int64(batch)
	if stepsPerEpoch > 0 {
		steps = min(steps, int64(stepsPerEpoch))
	}
	return int(max(1, (steps+lossCurvePoints-1)/lossCurvePoints))
}

// taskEntry is a task as metrics.json lists it.
type taskEntry struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	Kind   string `json:"kind"`
}

func taskList(tasks []mtl.Task) []taskEntry {
	out := make([]taskEntry, len(tasks))
	for i, t := range tasks {
		out[i] = taskEntry{t.Name, t.Target, t.Kind.String()}
	}
	return out
}

// schemaFor returns the schema of another dataset: --schema_path, the one
// beside it, or fallback when it has none.
func schemaFor(schemaArg, data string, fallback *schema.Schema) (*schema.Schema, error) {
	if schemaArg != "" {
		return fallback, nil
	}
	dir := data
	if st, err := os.Stat(data); err != nil {
		return nil, fmt.Errorf("data path %s: %w", data, err)
	} else if !st.IsDir() {
		dir = filepath.Dir(data)
	}
	for _, n := range []string{"schema.pbtxt", "schema.json"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return schema.Load(dir)
		}
	}
	return fallback, nil
}

// predictTo scores data with the trainer's model and writes out.
func predictTo(ctx context.Context, e *env, tr *mtl.Trainer, data, schemaArg string, fallback *schema.Schema,
	out, format string, keep []string, keepGiven bool, batch, prefetch int, fill *float32) (int64, error) {
	m := tr.Model()
	s, err := schemaFor(schemaArg, data, fallback)
	if err != nil {
		return 0, err
	}
	if err := m.CheckDataSchema(s, false); err != nil {
		return 0, fmt.Errorf("prediction data %s: %w", data, err)
	}
	present, err := parquetColumns(data)
	if err != nil {
		return 0, err
	}
	if !keepGiven {
		// Merlin keeps every column: here every schema column in the data.
		keep = nil
		for _, f := range s.Features {
			if present[f.Name] {
				keep = append(keep, f.Name)
			}
		}
	}
	cols := slices.Clone(m.InputColumns())
	for _, c := range keep {
		if s.Feature(c) == nil {
			return 0, usagef("--predict_output_keep_cols: %q is not a column of the schema", c)
		}
		if !present[c] {
			return 0, usagef("--predict_output_keep_cols: %q is not in the data %s", c, data)
		}
		// A pass-through column (a raw id from --control_features) is
		// not read by the loader: Predict reads it from the files.
		if !slices.Contains(cols, c) && !s.Feature(c).IsPassThrough() {
			cols = append(cols, c)
		}
	}
	ds, err := openDataset(data, s, cols, batch, false, 0, 0, prefetch, fill)
	if err != nil {
		return 0, err
	}
	// Kept columns are written with the data schema's types.
	n, err := tr.Predict(ctx, ds, out, mtl.PredictOptions{KeepColumns: keep, Schema: s, Format: format})
	if err != nil {
		return 0, err
	}
	if file, _, err := mtl.PredictionFile(out, format); err == nil {
		out = file
	}
	fmt.Fprintf(e.stdout, "Wrote %d predictions to %s\n", n, out)
	return n, nil
}

// parquetColumns returns the top-level column names of the first Parquet
// file of path (a file or folder, listed by loader.ListFiles).
func parquetColumns(path string) (map[string]bool, error) {
	files, err := loader.ListFiles(path)
	if err != nil {
		return nil, err
	}
	first := files[0]
	r, err := file.OpenParquetFile(first, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", first, err)
	}
	defer r.Close()
	root := r.MetaData().Schema.Root()
	out := map[string]bool{}
	for i := 0; i < root.NumFields(); i++ {
		out[root.Field(i).Name()] = true
	}
	return out, nil
}

// printMetrics writes the per-task metrics table.
func printMetrics(w io.Writer, tasks []mtl.Task, r metrics.Results, oracle *synth.Oracle) {
	f := func(v float64, ok bool) string {
		if !ok || math.IsNaN(v) {
			return "n/a"
		}
		return strconv.FormatFloat(v, 'f', 4, 64)
	}
	get := func(k string) string { v, ok := r[k]; return f(v, ok) }
	header := []string{"task", "auc", "pr_auc", "logloss", "precision", "recall", "accuracy", "rmse", "mae", "rows"}
	if oracle != nil {
		header = slices.Insert(header, 2, "oracle_auc")
	}
	var rows [][]string
	for _, t := range tasks {
		k := func(m string) string { return metrics.Key(t.Name, m) }
		count := strconv.FormatFloat(r[k(metrics.Count)], 'f', 0, 64)
		var row []string
		if t.Kind == mtl.Binary {
			row = []string{t.Name, get(k(metrics.AUC)), get(k(metrics.PRAUC)), get(k(metrics.LogLoss)),
				get(k(metrics.Precision)), get(k(metrics.Recall)), get(k(metrics.BinaryAccuracy)), "", "", count}
		} else {
			row = []string{t.Name, "", "", "", "", "", "", get(k(metrics.RMSE)), get(k(metrics.MAE)), count}
		}
		if oracle != nil {
			o := ""
			if t.Kind == mtl.Binary {
				v, ok := oracle.AUC[t.Target]
				o = f(v, ok)
			} else if v, ok := oracle.RMSE[t.Target]; ok {
				o = "rmse " + f(v, true)
			}
			row = slices.Insert(row, 2, o)
		}
		rows = append(rows, row)
	}
	table(w, header, rows)
	var tail []string
	if v, ok := r[metrics.AUCAvg]; ok {
		tail = append(tail, "auc_avg "+f(v, true))
	}
	if v, ok := r[mtl.LossKey]; ok {
		tail = append(tail, "loss "+f(v, true))
	}
	if len(tail) > 0 {
		fmt.Fprintln(w, strings.Join(tail, "   "))
	}
}

// evalArgs / predictArgs reuse trainArgs' flags that apply.
func registerServeFlags(fs *flag.FlagSet, a *trainArgs) {
	fs.StringVar(&a.loadPath, "load_model_path", "", "the checkpoint folder to use (required)")
	fs.StringVar(&a.schemaArg, "schema_path", "", "schema of the data (default: the one beside the data, else the model's)")
	fs.IntVar(&a.evalBatch, "eval_batch_size", 1024, "batch size; lowered to the data's row count when larger")
	fs.IntVar(&a.prefetch, "prefetch", 2, "batches read ahead in the background")
	fs.StringVar(&a.device, "device", "cpu", "cpu, or cuda (needs a build with -tags cuda)")
	fs.IntVar(&a.threads, "threads", 0, "CPU threads, at most the number of CPUs (0: all)")
	fs.Var(boolValue{&a.quiet}, "quiet", "no progress bar and no log lines on stderr")
	a.registerDataFlags(fs)
	a.trainBatch = 1
}

// loadForServe loads --load_model_path for batches of up to batch rows,
// after checking that it fits in memory.
func loadForServe(e *env, a *trainArgs, batch int) (*mtl.Model, *mtl.Trainer, error) {
	if a.loadPath == "" {
		return nil, nil, usagef("--load_model_path is required")
	}
	dev, err := newDevice(a.device, a.threads)
	if err != nil {
		return nil, nil, err
	}
	s, cfg, err := mtl.ReadCheckpointModel(a.loadPath)
	if err != nil {
		return nil, nil, err
	}
	if err := checkMemory(s, cfg, dev, batch, a.maxMemory, 0); err != nil {
		return nil, nil, err
	}
	m, err := mtl.LoadInference(a.loadPath, dev, batch)
	if err != nil {
		return nil, nil, err
	}
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{Logger: logger(e, a.quiet), OnProgress: trainerProgress(e, a.quiet)})
	if err != nil {
		m.Release()
		return nil, nil, err
	}
	return m, tr, nil
}

func runEval(ctx context.Context, e *env, args []string) error {
	var a trainArgs
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	registerServeFlags(fs, &a)
	fs.StringVar(&a.evalPath, "eval_data_path", "", "data to evaluate: a .parquet file or a folder (required)")
	fs.StringVar(&a.outputPath, "output_path", defaultEvalOutput, "folder receiving metrics.json")
	if err := helpOr(e, fs, args, "mtlrank eval --load_model_path DIR --eval_data_path PATH [flags]", evalDescription); err != nil {
		return err
	}
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := a.checkCommon(); err != nil {
		return err
	}
	if a.evalPath == "" {
		return usagef("--eval_data_path is required")
	}
	if a.outputPath == "" {
		return usagef("--output_path must name a folder (default %s)", defaultEvalOutput)
	}
	if a.loadPath == "" {
		return usagef("--load_model_path is required")
	}
	if err := checkPaths(a.inputs(), []outPath{{what: "--output_path", path: filepath.Join(a.outputPath, "metrics.json")}}); err != nil {
		return err
	}
	batch, err := capBatch(a.evalBatch, a.evalPath)
	if err != nil {
		return err
	}
	m, tr, err := loadForServe(e, &a, batch)
	if err != nil {
		return err
	}
	defer m.Release()
	res, rows, oracle, err := evaluateSaved(ctx, e, &a, m, tr, batch)
	if err != nil {
		return err
	}
	path := filepath.Join(a.outputPath, "metrics.json")
	report := map[string]any{"command": "eval", "model": a.loadPath, "eval_data": a.evalPath, "rows": rows, "eval": res}
	if oracle != nil {
		report["oracle"] = oracle
	}
	if err := writeJSON(path, report); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	fmt.Fprintf(e.stdout, "Metrics written to %s\n", path)
	return nil
}

// evaluateSaved evaluates a loaded model on --eval_data_path (read with
// --schema_path, else the schema beside the data, else the model's) and
// prints the metrics table. It returns the metrics, the rows evaluated and
// the data's oracle when 'mtlrank synth' wrote one.
func evaluateSaved(ctx context.Context, e *env, a *trainArgs, m *mtl.Model, tr *mtl.Trainer, batch int) (metrics.Results, int64, *synth.Oracle, error) {
	s, err := schemaFor(a.schemaArg, a.evalPath, m.Schema())
	if a.schemaArg != "" {
		s, err = schema.Load(a.schemaArg)
	}
	if err != nil {
		return nil, 0, nil, err
	}
	if err := m.CheckDataSchema(s, true); err != nil {
		return nil, 0, nil, fmt.Errorf("evaluation data %s: %w", a.evalPath, err)
	}
	ds, err := openDataset(a.evalPath, s, m.TrainColumns(), batch, false, 0, 0, a.prefetch, a.fillNaN)
	if err != nil {
		return nil, 0, nil, err
	}
	res, err := tr.Evaluate(ctx, ds)
	if err != nil {
		return nil, 0, nil, err
	}
	fmt.Fprintf(e.stdout, "Evaluation of %s on %s (%d rows):\n", a.loadPath, a.evalPath, ds.Rows())
	var oracle *synth.Oracle
	if o, err := synth.ReadOracle(filepath.Join(dirOf(a.evalPath), synth.OracleFile)); err == nil {
		oracle = &o
	}
	printMetrics(e.stdout, m.Tasks(), res, oracle)
	return res, ds.Rows(), oracle, nil
}

// defaultEvalOutput is where eval writes metrics.json without
// --output_path: beside train's default ./output/metrics.json, never over
// it, and outside the checkpoint folder (which a later save replaces
// whole).
const defaultEvalOutput = "./output/eval"

const evalDescription = `Evaluates a saved model: a metrics table on stdout (per task: AUC, PR-AUC,
logloss, precision/recall/accuracy at 0.5, RMSE, MAE; the oracle AUC for data
written by 'mtlrank synth') and the same metrics as JSON in
<output_path>/metrics.json (default ` + defaultEvalOutput + `/metrics.json, beside
train's default ./output/metrics.json).`

func dirOf(path string) string {
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		return filepath.Dir(path)
	}
	return path
}

func runPredict(ctx context.Context, e *env, args []string) error {
	var a trainArgs
	fs := flag.NewFlagSet("predict", flag.ContinueOnError)
	registerServeFlags(fs, &a)
	fs.StringVar(&a.predictPath, "predict_data_path", "", "data to score: a .parquet file or a folder (required)")
	fs.StringVar(&a.predictOut, "predict_output_path", "", "output: a .parquet, .csv or .tsv file (the extension gives the format), or a folder receiving predictions.<format> (required)")
	fs.Var(strList{v: &a.keepOut}, "predict_output_keep_cols", "comma-separated data columns copied next to the scores, in this order (default: every schema column present in the data); pass-through columns (preprocess --control_features, e.g. a raw string id) keep their type and nulls")
	fs.StringVar(&a.predictFormat, "predict_output_format", "", "format of the predictions: parquet, csv or tsv (text: a header line, then one line per row; no list columns); default: the extension of --predict_output_path, else parquet")
	if err := helpOr(e, fs, args, "mtlrank predict --load_model_path DIR --predict_data_path PATH --predict_output_path OUT [flags]",
		"Scores every row of a dataset, in order, and writes one float32 column per task\n(named like the task, e.g. click/binary_output: the probability) next to the kept columns."); err != nil {
		return err
	}
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := a.checkCommon(); err != nil {
		return err
	}
	switch {
	case a.predictPath == "" && a.predictOut == "":
		return usagef("--predict_data_path and --predict_output_path are required")
	case a.predictPath == "":
		return usagef("--predict_data_path is required")
	case a.predictOut == "":
		return usagef("--predict_output_path is required")
	}
	if a.loadPath == "" {
		return usagef("--load_model_path is required")
	}
	if err := checkPaths(a.inputs(), []outPath{a.predictOutput()}); err != nil {
		return err
	}
	batch, err := capBatch(a.evalBatch, a.predictPath)
	if err != nil {
		return err
	}
	m, tr, err := loadForServe(e, &a, batch)
	if err != nil {
		return err
	}
	defer m.Release()
	fallback := m.Schema()
	if a.schemaArg != "" {
		if fallback, err = schema.Load(a.schemaArg); err != nil {
			return fmt.Errorf("--schema_path: %w", err)
		}
	}
	_, err = predictTo(ctx, e, tr, a.predictPath, a.schemaArg, fallback, a.predictOut, a.predictFormat, a.keepOut, set["predict_output_keep_cols"], batch, a.prefetch, a.fillNaN)
	return err
}
