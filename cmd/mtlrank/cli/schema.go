package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/mtlrank/mtlrank/internal/pathguard"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

const schemaDescription = `Subcommands:
  print PATH             a table of the features (name, dtype, tags, domain, list)
  validate PATH          check the schema (exit 1 with the problem otherwise)
  convert IN OUT         rewrite IN as OUT; the format follows OUT's extension
                         (.pbtxt: Merlin/tensorflow-metadata text, .json: mtlrank JSON)
  infer PARQUET [flags]  build a schema from a Parquet file or folder and its statistics
                         (integers -> categorical [0, max], floats -> continuous)

PATH is a schema.pbtxt or schema.json file, or a folder holding one.`

// parseInterleaved parses flags and positional arguments in any order.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	rest := args
	for {
		if err := fs.Parse(joinBoolValues(fs, rest)); err != nil {
			_, perr := parseFlags(fs, rest) // same error, formatted
			return nil, perr
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
}

func runSchema(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("schema", flag.ContinueOnError)
	var (
		output                  string
		binary, regression      []string
		continuous, exclude     []string
		infer                   = len(args) > 0 && args[0] == "infer"
		binaryName, regressName = "binary_classif_targets", "regression_targets"
	)
	if infer {
		fs.StringVar(&output, "output", "", "write the inferred schema here (.pbtxt or .json); default: print pbtxt to stdout")
		fs.Var(strList{v: &binary}, binaryName, "comma-separated binary target columns")
		fs.Var(strList{v: &regression}, regressName, "comma-separated regression target columns")
		fs.Var(strList{v: &continuous}, "continuous_features", "integer columns to treat as continuous values")
		fs.Var(strList{v: &exclude}, "exclude", "columns to leave out")
	}
	desc := schemaDescription
	if !infer {
		desc += "\nRun 'mtlrank schema infer --help' for the flags of infer."
	}
	if err := helpOr(e, fs, args, "mtlrank schema print|validate|convert|infer ARGS", desc); err != nil {
		return err
	}
	if len(args) == 0 {
		return usagef("a subcommand is required: print, validate, convert or infer")
	}
	sub := args[0]
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	need := map[string]int{"print": 1, "validate": 1, "convert": 2, "infer": 1}
	n, ok := need[sub]
	if !ok {
		return usagef("unknown subcommand %q (want print, validate, convert or infer)", sub)
	}
	if len(pos) != n {
		return usagef("schema %s takes %d path argument(s), got %d", sub, n, len(pos))
	}
	switch sub {
	case "print":
		s, err := schema.Load(pos[0])
		if err != nil {
			return err
		}
		printSchema(e.stdout, s)
	case "validate":
		s, err := schema.Load(pos[0])
		if err != nil {
			return err
		}
		if err := s.Validate(); err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		fmt.Fprintf(e.stdout, "%s: valid, %d features (%d categorical, %d continuous, %d targets)\n", pos[0],
			len(s.Features), len(s.Categorical()), len(s.Continuous()), len(s.Targets()))
	case "convert":
		s, err := schema.Load(pos[0])
		if err != nil {
			return err
		}
		if !strings.HasSuffix(pos[1], ".pbtxt") && !strings.HasSuffix(pos[1], ".json") {
			return usagef("output %q must end in .pbtxt or .json", pos[1])
		}
		if err := checkPaths([]pathguard.Path{{What: "the input", Path: pos[0]}}, []outPath{{what: "the output", path: pos[1]}}); err != nil {
			return err
		}
		if err := schema.Save(pos[1], s); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "Wrote %s (%d features)\n", pos[1], len(s.Features))
	case "infer":
		if err := checkPaths([]pathguard.Path{{What: "the data", Path: pos[0]}}, []outPath{{what: "--output", path: output}}); err != nil {
			return err
		}
		opt := loader.InferOptions{Targets: map[string]schema.Tag{}, Continuous: continuous, Exclude: exclude}
		for _, t := range binary {
			opt.Targets[t] = schema.TagBinaryClassification
		}
		for _, t := range regression {
			if _, dup := opt.Targets[t]; dup {
				return usagef("%q is both a binary and a regression target", t)
			}
			opt.Targets[t] = schema.TagRegression
		}
		s, err := loader.InferSchema(pos[0], opt)
		if err != nil {
			return err
		}
		if output == "" {
			return s.WritePbtxt(e.stdout)
		}
		if !strings.HasSuffix(output, ".pbtxt") && !strings.HasSuffix(output, ".json") {
			return usagef("--output %q must end in .pbtxt or .json", output)
		}
		if err := schema.Save(output, s); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "Wrote %s (%d features)\n", output, len(s.Features))
	}
	return nil
}

func printSchema(w io.Writer, s *schema.Schema) {
	var rows [][]string
	for _, f := range s.Features {
		tags := make([]string, len(f.Tags))
		for i, t := range f.Tags {
			tags[i] = string(t)
		}
		dom := ""
		switch {
		case f.IntDomain != nil:
			dom = fmt.Sprintf("int [%d, %d]", f.IntDomain.Min, f.IntDomain.Max)
			if f.IntDomain.Name != "" && f.IntDomain.Name != f.Name {
				dom += " table " + f.IntDomain.Name
			}
		case f.FloatDomain != nil:
			dom = fmt.Sprintf("float [%g, %g]", f.FloatDomain.Min, f.FloatDomain.Max)
		}
		list := ""
		if f.IsList() {
			list = "list"
			if f.ValueCount != nil {
				list += " " + strconv.FormatInt(f.ValueCount.Min, 10) + ".." + strconv.FormatInt(f.ValueCount.Max, 10)
			}
		}
		rows = append(rows, []string{f.Name, string(f.DType), strings.Join(tags, ","), dom, list})
	}
	table(w, []string{"feature", "dtype", "tags", "domain", "list"}, rows)
}
