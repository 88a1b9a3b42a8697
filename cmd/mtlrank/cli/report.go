package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/internal/pathguard"
	"github.com/mtlrank/mtlrank/report"
)

const reportDescription = `Draws one or several training runs as one self-contained HTML page: the loss
and AUC (or RMSE) curves per task over the epochs, the loss over the steps,
the gate weights per expert, the final metrics next to the oracle when the
data is synthetic, and the configuration. Each RUN is the metrics.json that
'mtlrank train' writes, or its --output_path folder. Several runs are drawn
on shared axes for comparison, named by their folders or by --labels.

The page needs no network and holds no script: open it in any browser, mail
it, or keep it with the run. Older metrics.json files render too; what they
do not record is named on the page.`

func runReport(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	var output, labels string
	fs.StringVar(&output, "output", "", "the HTML file to write (default: report.html beside the metrics.json of a single run; required for several)")
	fs.StringVar(&labels, "labels", "", "comma-separated names of the runs, in order (default: their folders)")
	if err := helpOr(e, fs, args, "mtlrank report [--output FILE] [--labels A,B,...] RUN [RUN...]", reportDescription); err != nil {
		return err
	}
	flagArgs, runs := splitPositional(fs, args)
	if _, err := parseFlags(fs, flagArgs); err != nil {
		return err
	}
	if len(runs) == 0 {
		return usagef("give the metrics.json of at least one run (or its --output_path folder)")
	}
	paths := make([]string, len(runs))
	for i, r := range runs {
		p, err := metricsFile(r)
		if err != nil {
			return err
		}
		paths[i] = p
	}
	names := report.Labels(paths)
	if labels != "" {
		names = strings.Split(labels, ",")
		if len(names) != len(paths) {
			return usagef("--labels names %d runs but %d are given", len(names), len(paths))
		}
		for i, n := range names {
			if strings.TrimSpace(n) == "" {
				return usagef("--labels: label %d is empty", i+1)
			}
			if slices.Contains(names[:i], n) {
				return usagef("--labels: %q names two runs", n)
			}
		}
	}
	if output == "" {
		if len(paths) > 1 {
			return usagef("--output is required with several runs: name the HTML file to write")
		}
		output = filepath.Join(filepath.Dir(paths[0]), "report.html")
	}
	if st, err := os.Stat(output); err == nil && st.IsDir() {
		return usagef("--output %s is a folder: name the HTML file to write", output)
	}
	ins := make([]pathguard.Path, len(paths))
	for i, p := range paths {
		ins[i] = pathguard.Path{What: "the run", Path: p}
	}
	if err := checkPaths(ins, []outPath{{what: "--output", path: output}}); err != nil {
		return err
	}

	loaded := make([]*report.Run, len(paths))
	for i, p := range paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := report.Load(p)
		if err != nil {
			return err
		}
		r.Label = names[i]
		loaded[i] = r
	}
	if err := os.MkdirAll(filepath.Dir(output), 0o755); err != nil {
		return err
	}
	if err := atomicfile.Write(output, func(w io.Writer) error { return report.Write(w, loaded) }); err != nil {
		return err
	}
	runsWord := "run"
	if len(loaded) > 1 {
		runsWord = "runs"
	}
	fmt.Fprintf(e.stdout, "Report of %d %s written to %s\n", len(loaded), runsWord, output)
	return nil
}

// metricsFile returns the metrics.json a run argument names: the file, or
// the one in the folder.
func metricsFile(arg string) (string, error) {
	st, err := os.Stat(arg)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("run %s: no such file or folder", arg)
	case err != nil:
		return "", fmt.Errorf("run %s: %w", arg, err)
	case !st.IsDir():
		return arg, nil
	}
	p := filepath.Join(arg, "metrics.json")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("run %s is a folder without metrics.json: give the --output_path of a train run, or the metrics.json itself", arg)
	}
	return p, nil
}

// splitPositional separates the runs from the flags, so that flags may
// come before or after them: an argument that is not a flag, nor the value
// of the non-boolean flag before it, is a run; so is everything after
// "--".
func splitPositional(fs *flag.FlagSet, args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(positional, args[i+1:]...)
		}
		name, _, hasValue := flagName(a)
		if name == "" {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		f := fs.Lookup(name)
		if f == nil || hasValue {
			continue
		}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return flags, positional
}
