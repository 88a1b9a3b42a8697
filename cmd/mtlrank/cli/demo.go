package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

const demoDescription = `Runs the quick start end to end with real CLI commands, printing each one:
  1. mtlrank synth    synthetic TenRec-like train/eval data with planted signal
  2. mtlrank train    an MMoE; the table shows each task's AUC next to the oracle
                      AUC (the AUC of the true probabilities); saves the model
  3. mtlrank eval     reloads the saved model and evaluates it again
  4. mtlrank predict  scores the evaluation data with the reloaded model
  5. mtlrank report   draws the training run as an HTML page (report.html)
Takes well under two minutes on two cores with the defaults.`

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var (
		out            string
		rows, evalRows int64
		epochs         int
		model          string
		threads        int
		quiet          bool
	)
	fs.StringVar(&out, "output_path", "demo-out", "folder for the data, model, metrics and predictions")
	fs.Int64Var(&rows, "rows", 200000, "training rows")
	fs.Int64Var(&evalRows, "eval_rows", 50000, "evaluation rows")
	fs.IntVar(&epochs, "epochs", 2, "training epochs")
	fs.StringVar(&model, "model", "mmoe", "architecture: mlp, mmoe, cgc, ple, dcn, dlrm, deepfm or wide_n_deep")
	fs.IntVar(&threads, "threads", 0, "CPU threads, at most the number of CPUs (0: all)")
	fs.Var(boolValue{&quiet}, "quiet", "no progress bar and no log lines on stderr")
	if err := helpOr(e, fs, args, "mtlrank demo [flags]", demoDescription); err != nil {
		return err
	}
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if threads < 0 {
		return usagef("--threads must be >= 0, got %d", threads)
	}
	if err := checkThreads(threads); err != nil {
		return err
	}
	if rows < 1000 || evalRows < 1000 {
		return usagef("--rows and --eval_rows must be >= 1000")
	}
	if epochs < 1 {
		return usagef("--epochs must be >= 1, got %d", epochs)
	}
	switch model {
	case "mlp", "mmoe", "cgc", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep":
	default:
		return usagef("--model must be mlp, mmoe, cgc, ple, dcn, dlrm, deepfm or wide_n_deep, got %q", model)
	}
	if err := checkPaths(nil, []outPath{{what: "--output_path", path: out}}); err != nil {
		return err
	}
	data := filepath.Join(out, "data")
	ckpt := filepath.Join(out, "model")
	preds := filepath.Join(out, "predictions")
	common := []string{"--threads", strconv.Itoa(threads)}
	if quiet {
		common = append(common, "--quiet")
	}
	steps := [][]string{
		{"synth", "--output_path", data, "--rows", strconv.FormatInt(rows, 10), "--eval_rows", strconv.FormatInt(evalRows, 10), "--random_seed", "42"},
		append([]string{"train", "--train_data_path", filepath.Join(data, "train"), "--eval_data_path", filepath.Join(data, "eval"),
			"--model", model, "--epochs", strconv.Itoa(epochs), "--lr", "0.002", "--lr_decay_rate", "1", "--lr_decay_steps", "0",
			"--train_batch_size", "512", "--validation_steps", "0", "--train_metrics_steps", "0",
			"--save_model_path", ckpt, "--output_path", out}, common...),
		append([]string{"eval", "--load_model_path", ckpt, "--eval_data_path", filepath.Join(data, "eval"), "--output_path", filepath.Join(out, "reloaded")}, common...),
		append([]string{"predict", "--load_model_path", ckpt, "--predict_data_path", filepath.Join(data, "eval"),
			"--predict_output_path", preds, "--predict_output_keep_cols", "user_id,item_id,click,like"}, common...),
		{"report", out},
	}
	if quiet {
		steps[0] = append(steps[0], "--quiet")
	}
	for _, s := range steps {
		fmt.Fprintf(e.stdout, "\n$ mtlrank %s\n", strings.Join(s, " "))
		if code := RunContext(ctx, s, e.stdout, e.stderr); code != 0 {
			return fmt.Errorf("step 'mtlrank %s' failed with exit status %d", s[0], code)
		}
	}
	return showPredictions(ctx, e.stdout, filepath.Join(preds, "predictions.parquet"), 5)
}

// showPredictions prints the first n rows of a predictions file.
func showPredictions(ctx context.Context, w io.Writer, path string, n int) error {
	s := &schema.Schema{Features: []*schema.Feature{
		{Name: "user_id", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}},
		{Name: "item_id", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}},
		{Name: "click", DType: schema.Float32},
		{Name: "click/binary_output", DType: schema.Float32},
		{Name: "like/binary_output", DType: schema.Float32},
		{Name: "watching_times/regression_output", DType: schema.Float32},
	}}
	opt := loader.DefaultOptions()
	opt.BatchSize = n
	opt.CheckDomains = false
	ds, err := loader.Open(path, s, opt)
	if err != nil {
		return err
	}
	it := ds.Epoch(ctx, 0)
	defer it.Close()
	b, err := it.Next()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	defer b.Release()
	fmt.Fprintf(w, "\nFirst rows of %s (%d rows):\n", path, ds.Rows())
	var rows [][]string
	f := func(v float32) string { return strconv.FormatFloat(float64(v), 'f', 4, 32) }
	for i := 0; i < b.Rows; i++ {
		rows = append(rows, []string{
			strconv.Itoa(int(b.Column("user_id").I32[i])), strconv.Itoa(int(b.Column("item_id").I32[i])),
			f(b.Column("click").F32[i]), f(b.Column("click/binary_output").F32[i]),
			f(b.Column("like/binary_output").F32[i]), f(b.Column("watching_times/regression_output").F32[i]),
		})
	}
	table(w, []string{"user_id", "item_id", "click", "click/binary_output", "like/binary_output", "watching_times/regression_output"}, rows)
	return nil
}
