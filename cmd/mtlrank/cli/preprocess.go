package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/mtlrank/mtlrank/internal/pathguard"
	"github.com/mtlrank/mtlrank/preprocess"
)

// kvList is a comma-separated list of key=value pairs.
type kvList struct{ v *map[string]string }

func (l kvList) String() string {
	if l.v == nil || *l.v == nil {
		return ""
	}
	var parts []string
	for _, k := range sortedKeys(*l.v) {
		parts = append(parts, k+"="+(*l.v)[k])
	}
	return strings.Join(parts, ",")
}

func (l kvList) Set(s string) error {
	out := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		if strings.TrimSpace(p) == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || v == "" {
			return fmt.Errorf("%q is not key=value", p)
		}
		if _, dup := out[k]; dup {
			return fmt.Errorf("key %q given twice", k)
		}
		out[k] = v
	}
	*l.v = out
	return nil
}

const preprocessDescription = `Fits NVTabular-style preprocessing on the training data and writes
<output_path>/train, <output_path>/eval (from --eval_data_path, or a split of
the training data) and <output_path>/workflow.json (the fitted state, to apply
the same encoding at serving time). Categorical columns are Categorify'd
(0 = null, 1 = out-of-vocabulary or rarer than --categ_min_freq_capping,
2.. by decreasing frequency), continuous columns filled and z-scored, targets
mapped to 0/1 or float. Flags follow Merlin's quick-start preprocessing script;
each output folder holds part_*.parquet and schema.pbtxt, ready for
'mtlrank train --train_data_path <output_path>/train'.

With --workflow_path it fits nothing: it applies a saved workflow.json to
--data_path, encoding new data (data to be scored, a later day's data) exactly
as the training data was, and writes part_*.parquet and schema.pbtxt to
--output_path. Values not seen when fitting become out-of-vocabulary (id 1).
The input options (--input_data_format, --csv_*) default to the workflow's;
--skip_targets leaves the targets out, for data without target columns.`

func runPreprocess(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("preprocess", flag.ContinueOnError)
	var (
		spec               preprocess.Spec
		dataPath, evalPath string
		out, format        string
		naValues           []string
		hash               map[string]string
		quiet              bool
		workflowPath       string
		skipTargets        bool
		testPath           string
		merlin             merlinPreprocFlags
	)
	spec.CSVHeader = true
	spec.Normalize = true
	fs.StringVar(&dataPath, "data_path", "", "training input: a file, a folder or a glob (required)")
	fs.StringVar(&evalPath, "eval_data_path", "", "evaluation input, already split from the training data")
	fs.StringVar(&testPath, "test_data_path", "", "data to be scored: encoded without targets into <output_path>/test")
	fs.StringVar(&format, "input_data_format", "", "csv, tsv or parquet (default: by file extension; .parquet/.pq are Parquet)")
	fs.StringVar(&spec.CSVSep, "csv_sep", ",", `CSV field separator ("tab" for tabs)`)
	fs.Var(strList{v: &naValues}, "csv_na_values", `comma-separated CSV values read as null, e.g. "?"`)
	fs.Var(boolValue{&spec.CSVHeader}, "csv_header", "the first CSV row holds the column names")
	fs.Var(strList{v: &spec.CSVColumnNames}, "csv_column_names", "comma-separated CSV column names (required without a header)")
	fs.StringVar(&out, "output_path", "./results/", "output folder")
	fs.Var(strList{v: &spec.Categorical}, "categorical_features", "comma-separated categorical columns (Categorify)")
	fs.Var(strList{v: &spec.Continuous}, "continuous_features", "comma-separated continuous columns (filled, z-scored)")
	fs.StringVar(&spec.ContinuousFillNA, "continuous_features_fillna", "", `fill nulls of continuous columns: a number, "median" or "mean" (default: a null is an error)`)
	fs.Var(strList{v: &spec.BinaryTargets}, "binary_classif_targets", "comma-separated binary target columns")
	fs.Var(strList{v: &spec.RegressionTargets}, "regression_targets", "comma-separated regression target columns")
	fs.Var(kvList{&spec.BinaryTargetMap}, "binary_target_map", `target=label pairs: the label read as 1 (several labels separated by "|"), e.g. income=>50K|>50K.`)
	fs.Var(kvList{&spec.TargetSource}, "target_source", "target=column pairs deriving a target from another column")
	fs.Var(strList{v: &spec.UserFeatures}, "user_features", "comma-separated columns tagged user")
	fs.Var(strList{v: &spec.ItemFeatures}, "item_features", "comma-separated columns tagged item")
	fs.StringVar(&spec.UserID, "user_id_feature", "", "the user id column (tagged user_id)")
	fs.StringVar(&spec.ItemID, "item_id_feature", "", "the item id column (tagged item_id)")
	fs.IntVar(&spec.CategMinFreq, "categ_min_freq_capping", 0, "categorical values seen fewer times are encoded as out-of-vocabulary")
	fs.Var(kvList{&hash}, "hash_buckets", "column=buckets pairs: hash these categorical columns instead of keeping a vocabulary")
	fs.Var(boolValue{&spec.Normalize}, "normalize", "z-score continuous columns")
	fs.Var(strList{v: &spec.LogContinuous}, "log_continuous", "comma-separated continuous columns replaced by log1p(max(x, 0))")
	fs.StringVar(&spec.SplitStrategy, "dataset_split_strategy", "", "split the training data into train/eval: random (each row), random_by_user (a share of every user's rows, as in Merlin), by_user_holdout (every row of a share of the users: unseen users in eval) or temporal (rows at or after --dataset_split_temporal_timestamp in eval)")
	fs.Float64Var(&spec.EvalPerc, "random_split_eval_perc", 0, "fraction sent to eval by the split, in (0, 1)")
	fs.Int64Var(&spec.Seed, "random_seed", 42, "seed of the split")
	fs.Var(boolValue{&quiet}, "quiet", "no log lines on stderr")
	fs.StringVar(&workflowPath, "workflow_path", "", "apply this saved workflow.json to --data_path instead of fitting one")
	fs.Var(boolValue{&skipTargets}, "skip_targets", "with --workflow_path: leave the targets out (data without target columns)")
	merlin.register(fs, &spec)
	if err := helpOr(e, fs, args, "mtlrank preprocess --data_path PATH [flags]", preprocessDescription); err != nil {
		return err
	}
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if dataPath == "" {
		return usagef("--data_path is required")
	}
	if err := checkPaths([]pathguard.Path{{What: "--data_path", Path: dataPath}, {What: "--eval_data_path", Path: evalPath},
		{What: "--test_data_path", Path: testPath}, {What: "--workflow_path", Path: workflowPath}},
		[]outPath{{what: "--output_path", path: out}}); err != nil {
		return err
	}
	if workflowPath != "" {
		spec.CSVNAValues = naValues
		return runTransform(e, set, &spec, workflowPath, dataPath, out, format, skipTargets, quiet)
	}
	if set["skip_targets"] {
		return usagef("--skip_targets applies only with --workflow_path")
	}
	if err := merlin.check(&spec); err != nil {
		return err
	}
	if err := setInputFormat(&spec, format); err != nil {
		return err
	}
	spec.CSVNAValues = naValues
	if len(hash) > 0 {
		spec.HashBuckets = map[string]int{}
		for k, v := range hash {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return usagef("--hash_buckets: %s=%s: buckets must be a positive integer", k, v)
			}
			spec.HashBuckets[k] = n
		}
	}
	if spec.SplitStrategy != "" && evalPath != "" {
		return usagef("--dataset_split_strategy and --eval_data_path are both given; use one")
	}
	switch {
	case spec.SplitStrategy == preprocess.SplitTemporal:
		if spec.EvalPerc != 0 {
			return usagef("--random_split_eval_perc does not apply to the temporal split (--dataset_split_temporal_timestamp sets the cut)")
		}
		if !set["dataset_split_temporal_timestamp"] {
			return usagef("--dataset_split_strategy temporal needs --dataset_split_temporal_timestamp")
		}
	case (spec.SplitStrategy == "") != (spec.EvalPerc == 0):
		return usagef("--dataset_split_strategy and --random_split_eval_perc go together")
	}
	if err := spec.Validate(); err != nil {
		return &usageError{err.Error()}
	}
	log := logger(e, quiet)
	spec.Progress = func(stage string, rows int64) {
		log.Debug("preprocess", "stage", stage, "rows", rows)
	}
	in := preprocess.Inputs{Train: []string{dataPath}}
	if evalPath != "" {
		in.Eval = []string{evalPath}
	}
	if testPath != "" {
		in.Test = []string{testPath}
	}
	log.Info("preprocessing", "data", dataPath, "output", out)
	rep, err := preprocess.RunInputs(spec, in, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Fitted on %d rows; wrote %s (%d rows)", rep.FitRows, rep.Train.Dir, rep.Train.Rows)
	if rep.Eval != nil {
		fmt.Fprintf(e.stdout, ", %s (%d rows)", rep.Eval.Dir, rep.Eval.Rows)
	}
	if rep.Test != nil {
		fmt.Fprintf(e.stdout, ", %s (%d rows, no targets)", rep.Test.Dir, rep.Test.Rows)
	}
	fmt.Fprintf(e.stdout, "; workflow %s\n", rep.WorkflowPath)
	if f := rep.Filter; f != nil {
		fmt.Fprintf(e.stdout, "Filters kept %d of %d training rows (%d removed by --filter_query, %d by frequency", f.RemainingRows, f.Rows, f.RemovedQuery, f.RemovedFreq)
		if f.Rounds > 0 {
			fmt.Fprintf(e.stdout, " in %d rounds", f.Rounds)
			if !f.Stable {
				fmt.Fprint(e.stdout, ", still changing at --num_max_rounds_filtering")
			}
		}
		fmt.Fprintln(e.stdout, ")")
	}
	var rows [][]string
	for _, c := range sortedKeys(rep.Cardinalities) {
		rows = append(rows, []string{c, strconv.FormatInt(rep.Cardinalities[c], 10)})
	}
	if len(rows) > 0 {
		table(e.stdout, []string{"categorical", "cardinality"}, rows)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintln(e.stderr, "warning:", w)
	}
	return nil
}

// setInputFormat sets spec's input format from --input_data_format.
func setInputFormat(spec *preprocess.Spec, format string) error {
	switch format {
	case "", "csv", "parquet":
		spec.InputFormat = format
	case "tsv":
		spec.InputFormat = "csv"
		spec.CSVSep = "tab"
	default:
		return usagef("--input_data_format must be csv, tsv or parquet, got %q", format)
	}
	return nil
}

// transformFlags are the preprocess flags that mean something when a saved
// workflow is applied; every other one fits a workflow.
var transformFlags = map[string]bool{
	"data_path": true, "output_path": true, "workflow_path": true, "skip_targets": true, "quiet": true,
	"input_data_format": true, "csv_sep": true, "csv_na_values": true, "csv_header": true, "csv_column_names": true,
	"device": true, "output_num_partitions": true, "persist_intermediate_files": true,
	"visible_gpu_devices": true, "gpu_device_spill_frac": true,
}

// merlinPreprocFlags are flags of Merlin's quick-start preprocessing
// script that mtlrank has no use for or does not implement, and its row
// filters and temporal split, which set spec. The execution settings (GPU,
// partitions, caching, casts to smaller types) are accepted and change
// nothing in the encoded data; the features mtlrank lacks are refused when
// given, so that no Merlin command line is silently run differently.
type merlinPreprocFlags struct {
	device                   string
	partitions               int
	persist                  bool
	gpus                     string
	spill                    float64
	toInt32, toInt16, toInt8 []string
	toFloat32                []string
}

func (m *merlinPreprocFlags) register(fs *flag.FlagSet, spec *preprocess.Spec) {
	fs.StringVar(&m.device, "device", "cpu", "Merlin's preprocessing device, cpu or gpu; mtlrank preprocesses on the CPU either way")
	fs.IntVar(&m.partitions, "output_num_partitions", 10, "Merlin's output file count; mtlrank writes one part file per input file")
	fs.Var(boolValue{&m.persist}, "persist_intermediate_files", "Merlin's caching of intermediate files; mtlrank streams, no effect")
	fs.StringVar(&m.gpus, "visible_gpu_devices", "0", "Merlin's GPU list for preprocessing; no effect")
	fs.Float64Var(&m.spill, "gpu_device_spill_frac", 0.7, "Merlin's GPU memory spill fraction; no effect")
	fs.Var(strList{v: &m.toInt32}, "to_int32", "Merlin's casts to save memory; no effect (ids are int32, values float32); not for continuous columns")
	fs.Var(strList{v: &m.toInt16}, "to_int16", "see --to_int32")
	fs.Var(strList{v: &m.toInt8}, "to_int8", "see --to_int32")
	fs.Var(strList{v: &m.toFloat32}, "to_float32", "see --to_int32")
	fs.Var(strList{v: &spec.ControlFeatures}, "control_features", "comma-separated pass-through columns (Merlin's control features): copied unchanged into every output, listed in its schema without tags, never model inputs; e.g. a raw user id to keep beside predictions")
	fs.StringVar(&spec.TimestampFeature, "timestamp_feature", "", "the timestamp column (integers): tagged time when it is a feature; read by the temporal split")
	fs.StringVar(&spec.SessionIDFeature, "session_id_feature", "", "the session id column, a categorical feature, tagged session_id, session and id")
	fs.StringVar(&spec.FilterQuery, "filter_query", "", "keep the rows (of every input, as in Merlin) that match, in pandas' DataFrame.query syntax restricted to comparisons of a column with a literal (==, !=, <, <=, >, >=), in/not in lists, and/or/not (&, |, ~) and parentheses, e.g. \"click == 1 or watching_times > 0\"; runs before the other filters and the split")
	fs.Int64Var(&spec.MinUserFreq, "min_user_freq", 0, "keep the users with at least this many training rows (0: no bound; rows with a null id are removed); the user and item filters alternate for up to --num_max_rounds_filtering rounds, after --filter_query and before the split")
	fs.Int64Var(&spec.MaxUserFreq, "max_user_freq", 0, "keep the users with at most this many training rows (0: no bound)")
	fs.Int64Var(&spec.MinItemFreq, "min_item_freq", 0, "keep the items with at least this many training rows (0: no bound)")
	fs.Int64Var(&spec.MaxItemFreq, "max_item_freq", 0, "keep the items with at most this many training rows (0: no bound)")
	fs.IntVar(&spec.FilterRounds, "num_max_rounds_filtering", 5, "rounds of user and item frequency filtering at most; they stop early when a round removes nothing")
	fs.Int64Var(&spec.SplitTemporalTimestamp, "dataset_split_temporal_timestamp", 0, "the temporal split's cut: rows whose --timestamp_feature is at or after it go to eval")
}

// check refuses the Merlin features mtlrank does not implement.
func (m *merlinPreprocFlags) check(spec *preprocess.Spec) error {
	switch {
	case m.device != "cpu" && m.device != "gpu":
		return usagef("--device must be cpu or gpu, got %q", m.device)
	case m.partitions < 1:
		return usagef("--output_num_partitions must be >= 1, got %d", m.partitions)
	}
	for _, cast := range [][]string{m.toInt32, m.toInt16, m.toInt8} {
		for _, c := range cast {
			if slices.Contains(spec.Continuous, c) || slices.Contains(spec.RegressionTargets, c) {
				return usagef("--to_int32/--to_int16/--to_int8: %q is continuous; mtlrank keeps continuous values as float32 and does not truncate them", c)
			}
		}
	}
	return nil
}

// runTransform is preprocess --workflow_path: it encodes dataPath with a
// saved workflow into out.
// The input options set on the command line (in set, parsed into input)
// replace the workflow's: the data to encode may come in another format
// than the fitted data.
func runTransform(e *env, set map[string]bool, input *preprocess.Spec, workflowPath, dataPath, out, format string,
	skipTargets, quiet bool) error {
	var fitting []string
	for name := range set {
		if !transformFlags[name] {
			fitting = append(fitting, "--"+name)
		}
	}
	if len(fitting) > 0 {
		slices.Sort(fitting)
		return usagef("%s fit a workflow; with --workflow_path the saved workflow's settings apply", strings.Join(fitting, ", "))
	}
	if !set["output_path"] {
		return usagef("--output_path is required with --workflow_path")
	}
	w, err := preprocess.LoadWorkflow(workflowPath)
	if err != nil {
		return err
	}
	spec := &w.Spec
	if set["csv_sep"] {
		spec.CSVSep = input.CSVSep
	}
	if set["csv_na_values"] {
		spec.CSVNAValues = input.CSVNAValues
	}
	if set["csv_header"] {
		spec.CSVHeader = input.CSVHeader
	}
	if set["csv_column_names"] {
		spec.CSVColumnNames = input.CSVColumnNames
	}
	switch {
	case set["input_data_format"]:
		if err := setInputFormat(spec, format); err != nil {
			return err
		}
	case spec.InputFormat == preprocess.FormatCSV && looksLikeParquet(dataPath):
		// fitted on CSV, given Parquet (a .parquet file or a folder of them)
		spec.InputFormat = preprocess.FormatParquet
	}
	log := logger(e, quiet)
	log.Info("transforming", "data", dataPath, "workflow", workflowPath, "output", out)
	res, err := w.TransformWith([]string{dataPath}, out, preprocess.TransformOptions{SkipTargets: skipTargets})
	if err != nil {
		return err
	}
	what := "with targets"
	if skipTargets {
		what = "without targets"
	}
	fmt.Fprintf(e.stdout, "Encoded %d rows of %s with %s (%s); wrote %s\n", res.Rows, dataPath, workflowPath, what, res.Dir)
	var rows [][]string
	for _, c := range w.Categorical {
		rows = append(rows, []string{c.Name, strconv.FormatInt(res.NullRows[c.Name], 10), strconv.FormatInt(res.OOVRows[c.Name], 10)})
	}
	if len(rows) > 0 {
		table(e.stdout, []string{"categorical", "null rows", "out-of-vocabulary rows"}, rows)
	}
	for _, msg := range res.Warnings {
		fmt.Fprintln(e.stderr, "warning:", msg)
	}
	return nil
}
