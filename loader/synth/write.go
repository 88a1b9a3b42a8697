package synth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/internal/parquetio"
	"github.com/mtlrank/mtlrank/internal/readlimit"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

// PartFile is the name of part file i of a dataset.
func PartFile(i int) string { return fmt.Sprintf("part_%04d.parquet", i) }

var partRE = regexp.MustCompile(`^part_(\d{4,})\.parquet$`)

// WriteDataset writes rows [cfg.StartRow, cfg.StartRow+cfg.Rows) of the
// synthetic stream for s into dir: part_0000.parquet, part_0001.parquet, ...
// (cfg.RowGroupsPerFile row groups of cfg.RowGroupRows rows each), then
// schema.pbtxt, then oracle.json. Row groups are generated in parallel and
// written in order, so memory depends on the row-group size and the number
// of workers, not on Rows (up to cfg.OracleExactRows rows, the exact oracle
// AUC keeps 8 bytes per row and binary target; above, a fixed-size
// histogram). Every file is written under a temporary name and renamed.
//
// dir must be missing, empty, or hold an earlier synthetic dataset (its
// oracle.json, or the IncompleteMarker of an interrupted run); any other
// folder is an error, so that a user's own data is never overwritten. Part
// files left by an earlier, larger dataset in dir are removed. Other
// *.parquet files in dir are an error, because a dataset folder is read
// whole. An existing oracle.json is removed first, so after a failure (or
// cancellation) the folder, which may hold some finished part files, has no
// oracle.json (it is incomplete) and holds the IncompleteMarker.
func WriteDataset(dir string, s *schema.Schema, cfg Config) (Oracle, error) {
	return WriteDatasetContext(context.Background(), dir, s, cfg)
}

// WriteDatasetContext is WriteDataset with cancellation.
func WriteDatasetContext(ctx context.Context, dir string, s *schema.Schema, cfg Config) (Oracle, error) {
	if cfg.Rows <= 0 {
		return Oracle{}, fmt.Errorf("synth: write %s: Rows is %d, want > 0", dir, cfg.Rows)
	}
	g, err := NewGenerator(s, cfg)
	if err != nil {
		return Oracle{}, fmt.Errorf("synth: write %s: %w", dir, err)
	}
	return g.write(ctx, dir, g.cfg.StartRow, g.cfg.Rows)
}

// WriteDataset writes rows [start, start+rows) of g's stream to dir, as the
// package-level WriteDataset does.
func (g *Generator) WriteDataset(ctx context.Context, dir string, start, rows int64) (Oracle, error) {
	if rows <= 0 {
		return Oracle{}, fmt.Errorf("synth: write %s: rows is %d, want > 0", dir, rows)
	}
	if start < 0 {
		return Oracle{}, fmt.Errorf("synth: write %s: start row is %d, want >= 0", dir, start)
	}
	return g.write(ctx, dir, start, rows)
}

// source is a row-addressable generator WriteDataset can stream.
type source interface {
	Schema() *schema.Schema
	Generate(start int64, rows int) (*loader.Batch, *Truth)
}

type chunkResult struct {
	batch *loader.Batch
	truth *Truth
	cols  map[string]any
	err   error
}

func (g *Generator) write(ctx context.Context, dir string, start, rows int64) (Oracle, error) {
	acc := newOracleAcc(g.targetInfos(), rows, g.cfg.OracleExactRows)
	cfg := g.cfg
	cfg.StartRow, cfg.Rows = start, rows
	return writeStaged(dir, func(stage string) (Oracle, error) {
		if err := writeParts(ctx, stage, dir, g, start, rows, g.cfg, acc.add); err != nil {
			return Oracle{}, err
		}
		o := acc.result()
		o.Config = cloneConfig(cfg)
		return o, nil
	})
}

// writeStaged checks that dir may be replaced, lets fill write a whole
// dataset (part files, schema.pbtxt) into a new temporary folder beside
// dir, adds the oracle fill returns, and swaps the folder in for dir: a
// failure or a kill at any point leaves the previous complete dataset, never
// new part files beside old ones. Files in dir that a dataset does not
// have (the user's notes) are kept.
func writeStaged(dir string, fill func(stage string) (Oracle, error)) (o Oracle, err error) {
	if err := checkDir(dir); err != nil {
		return Oracle{}, err
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(dir)), 0o755); err != nil {
		return Oracle{}, fmt.Errorf("synth: write %s: %w", dir, err)
	}
	stage, err := atomicfile.MkdirTemp(dir)
	if err != nil {
		return Oracle{}, fmt.Errorf("synth: write %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(stage)
		}
	}()
	if o, err = fill(stage); err != nil {
		return Oracle{}, err
	}
	if err := writeJSONAtomic(filepath.Join(stage, OracleFile), o); err != nil {
		return Oracle{}, fmt.Errorf("synth: write %s: %w", dir, err)
	}
	if err := atomicfile.ReplaceDirKeeping(stage, dir, ownedBySynth); err != nil {
		return Oracle{}, fmt.Errorf("synth: write %s: %w", dir, err)
	}
	return o, nil
}

// ownedBySynth reports whether a file of a dataset folder is one a synth
// run writes (or the marker an older version left).
func ownedBySynth(name string) bool {
	return partRE.MatchString(name) || name == schema.PbtxtFile || name == OracleFile || name == IncompleteMarker
}

// writeParts streams the rows of src into the part files and schema.pbtxt
// of the new folder out (the dataset dir's temporary folder; errors name
// dir), calling sink with each row group's rows and truth in row order.
func writeParts(ctx context.Context, out, dir string, src source, start, rows int64, cfg Config,
	sink func(*loader.Batch, *Truth) error) (err error) {
	s := src.Schema()
	rg := int64(cfg.RowGroupRows)
	groups := (rows + rg - 1) / rg
	perFile := int64(cfg.RowGroupsPerFile)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Futures in row-group order: at most Workers row groups are generated
	// ahead of the writer.
	futures := make(chan chan chunkResult, cfg.Workers)
	go func() {
		defer close(futures)
		for k := int64(0); k < groups; k++ {
			first := start + k*rg
			n := int(min(rg, start+rows-first))
			ch := make(chan chunkResult, 1)
			select {
			case futures <- ch:
			case <-ctx.Done():
				return
			}
			go func() {
				b, t := src.Generate(first, n)
				cols, err := parquetColumns(s, b)
				ch <- chunkResult{batch: b, truth: t, cols: cols, err: err}
			}()
		}
	}()
	defer func() {
		// Let the producer and the in-flight generators finish.
		cancel()
		for ch := range futures {
			<-ch
		}
	}()

	var w *loader.Writer
	defer func() {
		if w != nil {
			_ = w.Abort()
		}
	}()
	var done int64
	k := int64(0)
	for ch := range futures {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("synth: write %s: %w", dir, err)
		}
		r := <-ch
		if r.err != nil {
			return fmt.Errorf("synth: write %s: %w", dir, r.err)
		}
		file := int(k / perFile)
		if w == nil {
			w, err = loader.NewWriter(filepath.Join(out, PartFile(file)), s,
				loader.WriterOptions{RowGroupRows: cfg.RowGroupRows})
			if err != nil {
				return fmt.Errorf("synth: write %s: %w", dir, err)
			}
		}
		if err := w.Write(r.cols); err != nil {
			return fmt.Errorf("synth: write %s: %w", dir, err)
		}
		if err := sink(r.batch, r.truth); err != nil {
			return fmt.Errorf("synth: write %s: %w", dir, err)
		}
		k++
		done += int64(r.batch.Rows)
		if k%perFile == 0 || k == groups {
			err := w.Close()
			w = nil
			if err != nil {
				return fmt.Errorf("synth: write %s: %w", dir, err)
			}
		}
		if cfg.Progress != nil {
			cfg.Progress(done)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("synth: write %s: %w", dir, err)
	}
	if k != groups {
		return fmt.Errorf("synth: write %s: wrote %d of %d row groups", dir, k, groups)
	}
	if err := schema.Save(filepath.Join(out, schema.PbtxtFile), s); err != nil {
		return fmt.Errorf("synth: write %s: %w", dir, err)
	}
	return nil
}

// IncompleteMarker is the file older versions left in a dataset folder
// while they replaced its files in place; the loader refuses a folder that
// holds it, and a new run may replace such a folder.
const IncompleteMarker = loader.IncompleteMarker

// checkDir checks that dir's files may be replaced: dir is missing, an
// empty folder or one written by an earlier run (an oracle.json of a
// synthetic dataset, or the marker of an interrupted run). A folder of the
// user's own data, which may well hold part_0000.parquet and schema.pbtxt,
// is never replaced. Parquet files that are not part files are refused
// even then, because a dataset folder is read whole.
func checkDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("synth: write %s: %w", dir, err)
	}
	if len(ents) > 0 && !writtenBySynth(dir) {
		var names []string
		for _, e := range ents {
			if len(names) == 3 {
				names = append(names, "...")
				break
			}
			names = append(names, e.Name())
		}
		return fmt.Errorf("synth: write %s: the folder is not empty (%s) and holds no %s of an earlier synthetic dataset; "+
			"refusing to replace its files: use an empty or new folder", dir, strings.Join(names, ", "), OracleFile)
	}
	for _, e := range ents {
		name := e.Name()
		if parquetio.IsDataName(name) && !partRE.MatchString(name) {
			return fmt.Errorf("synth: write %s: the folder holds %s, which is not a part file of a synthetic dataset; use an empty folder", dir, name)
		}
	}
	return nil
}

// writtenBySynth reports whether dir holds the output of an earlier run: an
// oracle.json that parses as a synthetic dataset's oracle, or the marker
// of an interrupted run.
func writtenBySynth(dir string) bool {
	if st, err := os.Stat(filepath.Join(dir, IncompleteMarker)); err == nil && st.Mode().IsRegular() {
		return true
	}
	b, err := readlimit.ReadFile(filepath.Join(dir, OracleFile), maxOracleSize)
	if err != nil {
		return false
	}
	var o Oracle
	return json.Unmarshal(b, &o) == nil && o.Rows > 0
}

// parquetColumns converts a batch to the Go slices loader.Writer expects
// for each feature's dtype (ids are int32 inside, labels float32).
func parquetColumns(s *schema.Schema, b *loader.Batch) (map[string]any, error) {
	cols := make(map[string]any, len(s.Features))
	for _, f := range s.Features {
		c := b.Column(f.Name)
		if c == nil {
			return nil, fmt.Errorf("batch has no column %q", f.Name)
		}
		var vals any
		switch {
		case c.I32 != nil || (c.F32 == nil && c.I64 == nil):
			vals = convertInts(c.I32, f.DType)
		case c.F32 != nil:
			vals = convertFloats(c.F32, f.DType)
		default:
			return nil, fmt.Errorf("column %q: unexpected int64 values", f.Name)
		}
		if vals == nil {
			return nil, fmt.Errorf("column %q: cannot store as dtype %s", f.Name, f.DType)
		}
		if c.Offsets == nil {
			cols[f.Name] = vals
			continue
		}
		// Lists of int32, int64 and float32 go as a Column (no copy);
		// other element types as slices of slices.
		switch v := vals.(type) {
		case []int32:
			cols[f.Name] = &loader.Column{Name: f.Name, I32: v, Offsets: c.Offsets}
		case []int64:
			cols[f.Name] = &loader.Column{Name: f.Name, I64: v, Offsets: c.Offsets}
		case []float32:
			cols[f.Name] = &loader.Column{Name: f.Name, F32: v, Offsets: c.Offsets}
		default:
			cols[f.Name] = listColumn(vals, c.Offsets)
		}
	}
	return cols, nil
}

func convertInts(v []int32, t schema.DType) any {
	switch t {
	case schema.Int32:
		return v
	case schema.Int64:
		return convertSlice[int32, int64](v)
	case schema.Int16:
		return convertSlice[int32, int16](v)
	case schema.Int8:
		return convertSlice[int32, int8](v)
	}
	return nil
}

func convertFloats(v []float32, t schema.DType) any {
	switch t {
	case schema.Float32:
		return v
	case schema.Float64:
		return convertSlice[float32, float64](v)
	case schema.Int64:
		return convertSlice[float32, int64](v)
	case schema.Int32:
		return convertSlice[float32, int32](v)
	case schema.Int16:
		return convertSlice[float32, int16](v)
	case schema.Int8:
		return convertSlice[float32, int8](v)
	case schema.Bool:
		out := make([]bool, len(v))
		for i, x := range v {
			out[i] = x != 0
		}
		return out
	}
	return nil
}

type number interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~float32 | ~float64
}

func convertSlice[From, To number](v []From) []To {
	out := make([]To, len(v))
	for i, x := range v {
		out[i] = To(x)
	}
	return out
}

// listColumn rebuilds a list column as a slice of slices over the values.
func listColumn(vals any, off []int32) any {
	switch v := vals.(type) {
	case []int8:
		return split(v, off)
	case []int16:
		return split(v, off)
	case []float64:
		return split(v, off)
	}
	return nil
}

func split[T any](v []T, off []int32) [][]T {
	out := make([][]T, len(off)-1)
	for i := range out {
		out[i] = v[off[i]:off[i+1]:off[i+1]]
	}
	return out
}

func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'))
}
