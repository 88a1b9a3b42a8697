package cli

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/mtlrank/mtlrank/internal/pathguard"
	"github.com/mtlrank/mtlrank/mtl"
)

// outPath is one path a command writes. file: a file whose folder is not
// created for it (it must exist); otherwise missing folders are created.
// checkpoint: the path is a checkpoint folder (which may replace an
// earlier checkpoint at the same path).
type outPath struct {
	what, path       string
	file, checkpoint bool
}

// checkPaths runs before any work: no output may be, contain or lie inside
// an input (compared after resolving symlinks) or lie inside a checkpoint
// folder (other than the checkpoint it replaces), and every output must be
// writable: not beneath a regular file, not on a read-only mount, its
// folder present where it is not created. Hours of training are then never
// lost to a mistyped path, and no input is overwritten.
func checkPaths(inputs []pathguard.Path, outputs []outPath) error {
	outs := make([]pathguard.Path, 0, len(outputs))
	for _, o := range outputs {
		if o.path != "" {
			outs = append(outs, pathguard.Path{What: o.what, Path: o.path})
		}
	}
	if err := pathguard.Check(inputs, outs); err != nil {
		return usagef("%v", err)
	}
	// A Parquet file written beside a Parquet input joins its dataset: the
	// folder is read whole, the next run would take it for data.
	var folders, parquetOuts []pathguard.Path
	for _, in := range inputs {
		if st, err := os.Stat(in.Path); err == nil && st.Mode().IsRegular() && strings.HasSuffix(in.Path, ".parquet") {
			folders = append(folders, pathguard.Path{What: "the dataset folder of " + in.What, Path: filepath.Dir(in.Path)})
		}
	}
	for _, o := range outs {
		if strings.HasSuffix(o.Path, ".parquet") {
			parquetOuts = append(parquetOuts, o)
		}
	}
	if err := pathguard.Check(folders, parquetOuts); err != nil {
		return usagef("%v", err)
	}
	for _, o := range outputs {
		if o.path == "" {
			continue
		}
		if err := mtl.CheckOutsideCheckpoint(o.what, o.path, o.checkpoint); err != nil {
			return usagef("%v", err)
		}
		if err := pathguard.Writable(o.what, o.path, o.file); err != nil {
			return err
		}
	}
	return nil
}

// inputs are the paths train, eval and predict read.
func (a *trainArgs) inputs() []pathguard.Path {
	return []pathguard.Path{
		{What: "--train_data_path", Path: a.trainPath},
		{What: "--eval_data_path", Path: a.evalPath},
		{What: "--predict_data_path", Path: a.predictPath},
		{What: "--schema_path", Path: a.schemaArg},
		{What: "--load_model_path", Path: a.loadPath},
	}
}

// predictOutput is the file the predictions go to: --predict_output_path
// when it has the format's extension (its folder must exist), else
// predictions.<format> in that folder, which is created (as Trainer.Predict
// decides).
func (a *trainArgs) predictOutput() outPath {
	out := a.predictOut
	if out == "" {
		out = filepath.Join(a.outputPath, "predictions")
	}
	if strings.HasSuffix(out, "."+a.predictFormat) {
		return outPath{what: "--predict_output_path", path: out, file: true}
	}
	return outPath{what: "--predict_output_path", path: filepath.Join(out, "predictions."+a.predictFormat)}
}

// trainOutputs are the paths train writes: metrics.json, the checkpoint,
// the predictions and, without data flags, the synthetic data.
func (a *trainArgs) trainOutputs() []outPath {
	outs := []outPath{
		{what: "--output_path", path: filepath.Join(a.outputPath, "metrics.json")},
		{what: "--save_model_path", path: a.savePath, checkpoint: true},
	}
	if a.predictPath != "" {
		outs = append(outs, a.predictOutput())
	}
	if a.isSynthetic() {
		outs = append(outs, outPath{what: "--output_path", path: filepath.Join(a.outputPath, "data")})
	}
	return outs
}
