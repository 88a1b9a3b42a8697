package cli

import (
	"path/filepath"

	"github.com/mtlrank/mtlrank/internal/pathguard"
	"github.com/mtlrank/mtlrank/mtl"
)

// outPath is one path a command writes; missing folders are created.
// checkpoint: the path is a checkpoint folder (which may replace an
// earlier checkpoint at the same path).
type outPath struct {
	what, path string
	checkpoint bool
}

// checkPaths runs before any work: no output may be, contain or lie inside
// an input (compared after resolving symlinks) or lie inside a checkpoint
// folder (other than the checkpoint it replaces), and every output must be
// writable: not beneath a regular file, not on a read-only mount (missing
// folders are created). Hours of training are then never
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
	// A Parquet file written beside a Parquet input joins its dataset.
	if err := pathguard.CheckDatasetFolders(inputs, outs); err != nil {
		return usagef("%v", err)
	}
	for _, o := range outputs {
		if o.path == "" {
			continue
		}
		if err := mtl.CheckOutsideCheckpoint(o.what, o.path, o.checkpoint); err != nil {
			return usagef("%v", err)
		}
		if err := pathguard.Writable(o.what, o.path); err != nil {
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

// predictOutput is the file the predictions go to, as Trainer.Predict
// decides it (mtl.PredictionFile): --predict_output_path when it has a
// format's extension, else predictions.<format> in that folder. Missing
// folders are created. A format contradicting the extension is reported by
// the flag checks; here the path is then taken as given.
func (a *trainArgs) predictOutput() outPath {
	out := a.predictOut
	if out == "" {
		out = filepath.Join(a.outputPath, "predictions")
	}
	if file, _, err := mtl.PredictionFile(out, a.predictFormat); err == nil {
		out = file
	}
	return outPath{what: "--predict_output_path", path: out}
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
