package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strconv"

	"github.com/mtlrank/mtlrank/internal/pathguard"
	"github.com/mtlrank/mtlrank/loader/synth"
	"github.com/mtlrank/mtlrank/schema"
)

const baseRatePrefix = "base_rate_"

const synthDescription = `Writes a synthetic dataset: part_*.parquet, schema.pbtxt and oracle.json (the
AUC and logloss of the true probabilities, the RMSE of the true means). With
--eval_rows it writes <output_path>/train and <output_path>/eval, disjoint rows
of the same hidden world.

--generator schema (default) plants signal for any schema (the built-in
TenRec-like one by default): Zipf-distributed ids with hidden latent vectors,
per-task logits mixing a shared and a task-specific component
(--task_correlation) with pairwise interactions, biases solved to match the
base rates. Set a target's base rate with --base_rate_<target>=P.
--generator mmoe_paper writes the MMoE paper's two regression tasks (Ma et
al., KDD 2018) whose correlation is set by --rho.`

func runSynth(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("synth", flag.ContinueOnError)
	var (
		out, schemaArg, generator string
		rows, evalRows, tableRows int64
		seed                      int64
		corr, signal, zipf, rho   float64
		rowGroup, dim             int
		quiet                     bool
	)
	def := synth.DefaultConfig(0, 0)
	fs.StringVar(&out, "output_path", "", "output folder (required)")
	fs.Int64Var(&rows, "rows", 100000, "rows to write (training rows when --eval_rows is given)")
	fs.Int64Var(&evalRows, "eval_rows", 0, "also write this many evaluation rows (then output_path/train and output_path/eval)")
	fs.StringVar(&schemaArg, "schema_path", "", "schema.pbtxt/schema.json to generate (default: the built-in tenrec schema)")
	fs.Int64Var(&tableRows, "table_rows", 0, "built-in tenrec schema: user_id and item_id cardinality (0: 100001 and 179281)")
	fs.Int64Var(&seed, "random_seed", 42, "seed of the hidden world and the rows")
	fs.Float64Var(&corr, "task_correlation", def.TaskCorrelation, "0..1: share of the signal common to all tasks")
	fs.Float64Var(&signal, "signal_scale", def.SignalScale, "strength of the planted signal (sets the oracle AUC)")
	fs.Float64Var(&zipf, "zipf", def.Zipf, "Zipf exponent of id popularity")
	fs.IntVar(&rowGroup, "row_group_rows", def.RowGroupRows, "rows per Parquet row group")
	fs.StringVar(&generator, "generator", "schema", "schema (planted signal for the schema) or mmoe_paper")
	fs.Float64Var(&rho, "rho", 0.5, "mmoe_paper: cosine of the two tasks' weight vectors, in [-1, 1]")
	fs.IntVar(&dim, "dim", 100, "mmoe_paper: input dimension")
	fs.Var(boolValue{&quiet}, "quiet", "no log lines on stderr")
	if err := helpOr(e, fs, args, "mtlrank synth --output_path DIR [flags]", synthDescription); err != nil {
		return err
	}
	dyn, rest, err := dynamicFloats(args, baseRatePrefix)
	if err != nil {
		return err
	}
	set, err := parseFlags(fs, rest)
	if err != nil {
		return err
	}
	switch {
	case out == "":
		return usagef("--output_path is required")
	case rows < 1:
		return usagef("--rows must be >= 1, got %d", rows)
	case evalRows < 0:
		return usagef("--eval_rows must be >= 0, got %d", evalRows)
	case tableRows < 0:
		return usagef("--table_rows must be >= 0, got %d", tableRows)
	case tableRows > 0 && schemaArg != "":
		return usagef("--table_rows applies to the built-in schema, not to --schema_path")
	case corr < 0 || corr > 1:
		return usagef("--task_correlation must be in [0, 1], got %v", corr)
	case signal < 0:
		return usagef("--signal_scale must be >= 0, got %v", signal)
	case zipf <= 0:
		return usagef("--zipf must be > 0, got %v", zipf)
	case rowGroup < 1:
		return usagef("--row_group_rows must be >= 1, got %d", rowGroup)
	}
	if err := checkPaths([]pathguard.Path{{What: "--schema_path", Path: schemaArg}}, []outPath{{what: "--output_path", path: out}}); err != nil {
		return err
	}
	log := logger(e, quiet)
	if generator == "mmoe_paper" {
		for _, f := range []string{"schema_path", "table_rows", "task_correlation", "signal_scale", "zipf"} {
			if set[f] {
				return usagef("--%s does not apply to --generator mmoe_paper", f)
			}
		}
		if len(dyn[baseRatePrefix]) > 0 {
			return usagef("--base_rate_* does not apply to --generator mmoe_paper (regression tasks)")
		}
		if rho < -1 || rho > 1 || math.IsNaN(rho) {
			return usagef("--rho must be in [-1, 1], got %v", rho)
		}
		if dim < 2 {
			return usagef("--dim must be >= 2, got %d", dim)
		}
		write := func(dir string, start, n int64) (synth.Oracle, error) {
			log.Info("writing MMoE-paper data", "folder", dir, "rows", n, "rho", rho)
			return synth.WriteMMoEPaper(ctx, dir, rho, seed, synth.MMoEPaperConfig{Dim: dim, Rows: n, StartRow: start, RowGroupRows: rowGroup})
		}
		return synthWrite(e, out, rows, evalRows, write)
	}
	if generator != "schema" {
		return usagef("--generator must be schema or mmoe_paper, got %q", generator)
	}
	for _, f := range []string{"rho", "dim"} {
		if set[f] {
			return usagef("--%s applies to --generator mmoe_paper only", f)
		}
	}
	var s *schema.Schema
	if schemaArg != "" {
		if s, err = schema.Load(schemaArg); err != nil {
			return fmt.Errorf("--schema_path: %w", err)
		}
	} else {
		s = schema.TenrecWithRows(tableRows)
	}
	rates := map[string]float64{}
	for t, r := range dyn[baseRatePrefix] {
		f := s.Feature(t)
		if f == nil || !f.IsTarget() || !f.HasTag(schema.TagBinary) {
			return usagef("--%s%s: %q is not a binary target of the schema", baseRatePrefix, t, t)
		}
		if !(r > 0 && r < 1) {
			return usagef("--%s%s must be strictly between 0 and 1, got %v", baseRatePrefix, t, r)
		}
		rates[t] = r
	}
	write := func(dir string, start, n int64) (synth.Oracle, error) {
		cfg := synth.DefaultConfig(n, seed)
		cfg.StartRow = start
		cfg.TaskCorrelation = corr
		cfg.SignalScale = signal
		cfg.Zipf = zipf
		cfg.RowGroupRows = rowGroup
		if len(rates) > 0 {
			cfg.BaseRates = rates
		}
		if signal == 0 {
			cfg.NoSignal = true
		}
		log.Info("writing synthetic data", "folder", dir, "rows", n)
		return synth.WriteDatasetContext(ctx, dir, s, cfg)
	}
	return synthWrite(e, out, rows, evalRows, write)
}

func synthWrite(e *env, out string, rows, evalRows int64, write func(dir string, start, n int64) (synth.Oracle, error)) error {
	dirs := []string{out}
	if evalRows > 0 {
		dirs = []string{filepath.Join(out, "train"), filepath.Join(out, "eval")}
	}
	var start int64
	for i, dir := range dirs {
		n := rows
		if i == 1 {
			n = evalRows
		}
		o, err := write(dir, start, n)
		if err != nil {
			return err
		}
		start += n
		fmt.Fprintf(e.stdout, "Wrote %d rows to %s\n", o.Rows, dir)
		printOracle(e.stdout, o)
	}
	return nil
}

func printOracle(w io.Writer, o synth.Oracle) {
	var rows [][]string
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }
	for _, t := range sortedKeys(o.AUC) {
		rows = append(rows, []string{t, "binary", f(o.BaseRate[t]), f(o.AUC[t]), f(o.LogLoss[t]), ""})
	}
	for _, t := range sortedKeys(o.BaseRate) {
		if _, ok := o.AUC[t]; !ok {
			rows = append(rows, []string{t, "binary", f(o.BaseRate[t]), "n/a", "", ""})
		}
	}
	for _, t := range sortedKeys(o.RMSE) {
		rows = append(rows, []string{t, "regression", "", "", "", f(o.RMSE[t]) + " (constant " + f(o.ConstantRMSE[t]) + ")"})
	}
	table(w, []string{"target", "kind", "positive_rate", "oracle_auc", "oracle_logloss", "oracle_rmse"}, rows)
}
