package preprocess

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/internal/parquetio"
	"github.com/mtlrank/mtlrank/internal/pathguard"
	"github.com/mtlrank/mtlrank/schema"
)

// TransformOptions adjusts Transform.
type TransformOptions struct {
	// SkipTargets leaves the targets out: their columns are neither read nor
	// written, for data to be scored.
	SkipTargets bool
}

// Result describes one transformed dataset.
type Result struct {
	Dir   string   `json:"dir"`
	Files []string `json:"files"` // part files, in order
	Rows  int64    `json:"rows"`
	// NullRows and OOVRows count, per categorical column, the rows encoded
	// as NullID and OOVID.
	NullRows map[string]int64 `json:"null_rows,omitempty"`
	OOVRows  map[string]int64 `json:"oov_rows,omitempty"`
	// FilledRows counts, per continuous column, the nulls filled.
	FilledRows map[string]int64 `json:"filled_rows,omitempty"`
	// Positives counts, per binary target, the rows equal to 1.
	Positives map[string]int64 `json:"positives,omitempty"`
	// UnseenLabels counts, per binary target with positive labels, the rows
	// whose label was neither positive nor seen when fitting (encoded 0).
	UnseenLabels map[string]int64 `json:"unseen_labels,omitempty"`
	Warnings     []string         `json:"warnings,omitempty"`
	// Schema is the schema written beside the data.
	Schema *schema.Schema `json:"-"`
}

// Transform applies the fitted workflow to inputs (files, directories or
// glob patterns) and writes outDir/part_<i>.parquet (one part per input
// file with rows, row groups of Spec.ChunkRows rows), schema.pbtxt and
// schema.json. The dataset is built in a temporary directory beside outDir
// and renamed into place; an existing outDir may only hold files Transform
// writes (part_*.parquet, schema.pbtxt, schema.json), which are replaced.
func (w *Workflow) Transform(inputs []string, outDir string) (*Result, error) {
	return w.TransformWith(inputs, outDir, TransformOptions{})
}

// TransformWith is Transform with options.
func (w *Workflow) TransformWith(inputs []string, outDir string, opt TransformOptions) (*Result, error) {
	ins := make([]pathguard.Path, len(inputs))
	for i, p := range inputs {
		ins[i] = pathguard.Path{What: "the input", Path: p}
	}
	if err := pathguard.Check(ins, []pathguard.Path{{What: "the output", Path: outDir}}); err != nil {
		return nil, fmt.Errorf("transform: %w", err)
	}
	res, st, err := w.transform(inputs, [2]string{outDir}, nil, opt)
	if err != nil {
		return nil, err
	}
	if err := st.publish(); err != nil {
		return nil, fmt.Errorf("transform: %w", err)
	}
	return res[0], nil
}

// staged holds finished datasets still in their temporary folders.
type staged []*datasetWriter

// publish moves every dataset into place, in order.
func (st staged) publish() error {
	for _, d := range st {
		if err := d.publish(); err != nil {
			return err
		}
	}
	return nil
}

// abort drops the datasets not yet published.
func (st staged) abort() {
	for _, d := range st {
		d.abort()
	}
}

// encoder produces one output column for the two possible sides (train,
// eval) of a split.
type encoder struct {
	name string
	col  int
	cat  *Categorical
	cont *Continuous
	tgt  *Target

	i32 [2][]int32
	i64 [2][]int64
	f32 [2][]float32

	nulls, oov, filled, positives, unseen [2]int64
	unseenExample                         [2]string
	buf                                   []byte
}

func (e *encoder) arrowType() arrow.DataType {
	if e.cat != nil && e.cat.DType() == schema.Int64 {
		return arrow.PrimitiveTypes.Int64
	}
	if e.cat != nil {
		return arrow.PrimitiveTypes.Int32
	}
	return arrow.PrimitiveTypes.Float32
}

// encode fills the side buffers from chunk c; side[i] is row i's side (nil:
// all rows on side 0), sizes the number of rows per side.
func (e *encoder) encode(c *chunk, side []uint8, sizes [2]int) error {
	col := &c.cols[e.col]
	wide := e.cat != nil && e.cat.DType() == schema.Int64
	for s := 0; s < 2; s++ {
		switch {
		case e.cat != nil && wide:
			e.i64[s] = resize(e.i64[s], sizes[s])
		case e.cat != nil:
			e.i32[s] = resize(e.i32[s], sizes[s])
		default:
			e.f32[s] = resize(e.f32[s], sizes[s])
		}
	}
	var at [2]int
	for i := 0; i < c.n; i++ {
		s := 0
		if side != nil {
			s = int(side[i])
		}
		if s == sideDropped {
			continue
		}
		k := at[s]
		at[s]++
		switch {
		case e.cat != nil:
			var id int64
			switch {
			case col.isNull(i):
				id = NullID
				e.nulls[s]++
			case col.kind == kindString:
				id = e.cat.Encode(col.str[i])
			default:
				e.buf = col.appendKey(e.buf[:0], i)
				id = e.cat.encodeBytes(e.buf)
			}
			if id == OOVID {
				e.oov[s]++
			}
			if wide {
				e.i64[s][k] = id
			} else {
				e.i32[s][k] = int32(id)
			}
		case e.cont != nil:
			v, null, err := numberAt(c, col, i, e.name)
			if err != nil {
				return err
			}
			if null {
				f, err := e.cont.ApplyNull()
				if err != nil {
					return c.errAt(e.name, i, "null value and no fill for missing continuous values (set --continuous_features_fillna on the command line, Spec.ContinuousFillNA in the library)")
				}
				if math.IsInf(float64(f), 0) {
					return c.errAt(e.name, i, "null value: the fill value %g becomes %g, outside float32's range", e.cont.FillValue, f)
				}
				e.filled[s]++
				e.f32[s][k] = f
				continue
			}
			f := e.cont.Apply(v)
			if math.IsInf(float64(f), 0) {
				return c.errAt(e.name, i, "value %g becomes %g after the fitted transforms (%s), outside float32's range; clip it or log-transform it (--log_continuous)", v, f, e.cont.describe())
			}
			e.f32[s][k] = f
		default:
			v, label, err := e.tgt.valueAt(c, col, i, &e.buf)
			if err != nil {
				return err
			}
			if v == 1 {
				e.positives[s]++
			}
			if label != "" && !e.tgt.NegativeOverflow && !e.tgt.negative[label] {
				if e.unseen[s] == 0 {
					e.unseenExample[s] = strings.Clone(label)
				}
				e.unseen[s]++
			}
			e.f32[s][k] = v
		}
	}
	return nil
}

// transform writes inputs to dirs[0], or, with a splitter, the train side to
// dirs[0] and the eval side to dirs[1].
//
// The datasets are left finished in temporary folders beside their
// directories: the caller publishes them (or aborts them) once everything
// that belongs with them has been written.
func (w *Workflow) transform(inputs []string, dirs [2]string, split *splitter, opt TransformOptions) (_ [2]*Result, _ staged, err error) {
	var res [2]*Result
	spec := &w.Spec
	for _, t := range w.Targets {
		if t.positive == nil {
			t.buildSets()
		}
	}
	for _, c := range w.Categorical {
		if c.index == nil && c.Op == OpCategorify {
			c.buildIndex()
		}
	}
	files, err := expandInputs(inputs, spec.InputFormat)
	if err != nil {
		return res, nil, fmt.Errorf("transform: %w", err)
	}
	// The columns come from the fitted ops, not from the spec, so that a
	// spec edited after fitting cannot misalign them.
	cols := w.sourceColumns(!opt.SkipTargets)
	cols = split.addColumns(cols)
	for _, name := range spec.ControlFeatures {
		if !contains(cols, name) {
			cols = append(cols, name)
		}
	}
	pos := indexOf(cols)
	ctrls := make([]*passThrough, len(spec.ControlFeatures))
	for i, name := range spec.ControlFeatures {
		ctrls[i] = &passThrough{name: name, col: pos[name]}
	}
	var encs []*encoder
	for _, c := range w.Categorical {
		encs = append(encs, &encoder{name: c.Name, col: pos[c.Name], cat: c})
	}
	for _, c := range w.Continuous {
		encs = append(encs, &encoder{name: c.Name, col: pos[c.Name], cont: c})
	}
	if !opt.SkipTargets {
		for _, t := range w.Targets {
			encs = append(encs, &encoder{name: t.Name, col: pos[t.Source], tgt: t})
		}
	}
	fields := make([]arrow.Field, len(encs), len(encs)+len(ctrls))
	for i, e := range encs {
		fields[i] = arrow.Field{Name: e.name, Type: e.arrowType()}
	}
	// The pass-through columns' types are those of their values, known
	// from the first chunk read; asch is built then.
	var asch *arrow.Schema
	outSchema := w.Schema(!opt.SkipTargets)
	mem := spec.allocator()

	nsides := 1
	if split.splits() {
		nsides = 2
	}
	split.bind(pos)
	var writers [2]*datasetWriter
	defer func() {
		if err != nil {
			for _, dw := range writers {
				if dw != nil {
					dw.abort()
				}
			}
		}
	}()
	for s := 0; s < nsides; s++ {
		if writers[s], err = newDatasetWriter(dirs[s], nil, mem); err != nil {
			return res, nil, fmt.Errorf("transform: %w", err)
		}
	}
	builders := make([]array.Builder, len(encs), len(encs)+len(ctrls))
	for i, e := range encs {
		builders[i] = array.NewBuilder(mem, e.arrowType())
	}
	defer func() {
		for _, b := range builders {
			b.Release()
		}
	}()
	start := func(c *chunk) {
		for _, p := range ctrls {
			if c != nil {
				p.kind = c.cols[p.col].kind
			}
			fields = append(fields, arrow.Field{Name: p.name, Type: p.arrowType(), Nullable: true})
			builders = append(builders, array.NewBuilder(mem, p.arrowType()))
			outSchema.Features = append(outSchema.Features, &schema.Feature{Name: p.name, DType: p.dtype()})
		}
		asch = arrow.NewSchema(fields, nil)
		for _, dw := range writers[:nsides] {
			dw.sch = asch
		}
	}
	arrs := make([]arrow.Array, len(encs)+len(ctrls))
	var side []uint8
	split.beginPass()
	err = scan(spec, files, cols, "transform", func(c *chunk) error {
		if asch == nil {
			start(c)
		}
		for _, p := range ctrls {
			if k := c.cols[p.col].kind; k != p.kind {
				return &InputError{File: c.file, Column: p.name, Row: c.firstRow,
					Err: fmt.Errorf("control feature holds %s values here but %s values in the rows before; it must have one type in every input", k, p.kind)}
			}
		}
		var sizes [2]int
		if split != nil {
			var err error
			if side, err = split.sides(c, side); err != nil {
				return err
			}
			for _, s := range side {
				if s != sideDropped {
					sizes[s]++
				}
			}
		} else {
			side = nil
			sizes[0] = c.n
		}
		for _, e := range encs {
			if err := e.encode(c, side, sizes); err != nil {
				return err
			}
		}
		for s := 0; s < nsides; s++ {
			if sizes[s] == 0 {
				continue
			}
			for i, e := range encs {
				switch b := builders[i].(type) {
				case *array.Int32Builder:
					b.AppendValues(e.i32[s], nil)
				case *array.Int64Builder:
					b.AppendValues(e.i64[s], nil)
				case *array.Float32Builder:
					b.AppendValues(e.f32[s], nil)
				}
				arrs[i] = builders[i].NewArray()
			}
			for j, p := range ctrls {
				b := builders[len(encs)+j]
				p.appendTo(b, c, side, s)
				arrs[len(encs)+j] = b.NewArray()
			}
			rec := array.NewRecordBatch(asch, arrs, int64(sizes[s]))
			for _, a := range arrs {
				a.Release()
			}
			err := writers[s].write(c.file, rec)
			rec.Release()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = split.endPass()
	}
	if err != nil {
		return res, nil, fmt.Errorf("transform: %w", err)
	}
	if asch == nil { // no rows: the control columns are written as strings
		start(nil)
	}
	for s := 0; s < nsides; s++ {
		dw := writers[s]
		r := &Result{Dir: dirs[s], Schema: outSchema, NullRows: map[string]int64{}, OOVRows: map[string]int64{},
			FilledRows: map[string]int64{}, Positives: map[string]int64{}, UnseenLabels: map[string]int64{}}
		for _, e := range encs {
			switch {
			case e.cat != nil:
				r.NullRows[e.name] = e.nulls[s]
				r.OOVRows[e.name] = e.oov[s]
			case e.cont != nil:
				r.FilledRows[e.name] = e.filled[s]
			case e.tgt.Kind == TargetBinary:
				r.Positives[e.name] = e.positives[s]
				if len(e.tgt.Positive) > 0 {
					r.UnseenLabels[e.name] = e.unseen[s]
				}
			}
		}
		if err := dw.finish(outSchema); err != nil {
			return res, nil, fmt.Errorf("transform: %w", err)
		}
		r.Rows = dw.rows
		for _, p := range dw.parts {
			r.Files = append(r.Files, filepath.Join(dirs[s], p))
		}
		r.Warnings = transformWarnings(r, encs, s)
		res[s] = r
	}
	return res, staged(writers[:nsides]), nil
}

// passThrough copies one control feature unchanged to the outputs.
type passThrough struct {
	name string
	col  int
	kind valueKind
}

func (k valueKind) String() string {
	switch k {
	case kindInt:
		return "integer"
	case kindFloat:
		return "floating-point"
	}
	return "string"
}

func (p *passThrough) arrowType() arrow.DataType {
	switch p.kind {
	case kindInt:
		return arrow.PrimitiveTypes.Int64
	case kindFloat:
		return arrow.PrimitiveTypes.Float64
	}
	return arrow.BinaryTypes.String
}

func (p *passThrough) dtype() schema.DType {
	switch p.kind {
	case kindInt:
		return schema.Int64
	case kindFloat:
		return schema.Float64
	}
	return schema.String
}

// appendTo appends the values of chunk c's rows on side s (side nil: every
// row is on side 0) to b, a builder of p.arrowType().
func (p *passThrough) appendTo(b array.Builder, c *chunk, side []uint8, s int) {
	col := &c.cols[p.col]
	for i := 0; i < c.n; i++ {
		switch {
		case side != nil && int(side[i]) != s:
		case col.isNull(i):
			b.AppendNull()
		case p.kind == kindInt:
			b.(*array.Int64Builder).Append(col.i64[i])
		case p.kind == kindFloat:
			b.(*array.Float64Builder).Append(col.f64[i])
		default:
			b.(*array.StringBuilder).Append(col.str[i])
		}
	}
}

// sourceColumns lists the input columns the fitted ops read.
func (w *Workflow) sourceColumns(withTargets bool) []string {
	var cols []string
	add := func(c string) {
		if !contains(cols, c) {
			cols = append(cols, c)
		}
	}
	for _, c := range w.Categorical {
		add(c.Name)
	}
	for _, c := range w.Continuous {
		add(c.Name)
	}
	if withTargets {
		for _, t := range w.Targets {
			add(t.Source)
		}
	}
	return cols
}

func transformWarnings(r *Result, encs []*encoder, s int) []string {
	var out []string
	if r.Rows == 0 {
		return []string{fmt.Sprintf("%s: no rows", r.Dir)}
	}
	for _, e := range encs {
		switch {
		case e.cat != nil:
			if e.oov[s]*2 > r.Rows {
				out = append(out, fmt.Sprintf("%s: column %q: %d of %d rows are out of vocabulary", r.Dir, e.name, e.oov[s], r.Rows))
			}
		case e.tgt != nil && e.tgt.Kind == TargetBinary:
			if e.unseen[s] > 0 {
				out = append(out, fmt.Sprintf("%s: binary target %q: %d rows hold labels not seen when fitting (e.g. %q), encoded as 0; positive labels: %s",
					r.Dir, e.name, e.unseen[s], e.unseenExample[s], quoteList(e.tgt.Positive)))
			}
			if e.positives[s] == 0 {
				out = append(out, fmt.Sprintf("%s: binary target %q has no positive row", r.Dir, e.name))
			}
		}
	}
	return out
}

// ---- dataset directory ----

var partName = regexp.MustCompile(`^part_[0-9]+\.parquet$`)

// ownedByDataset reports whether name is a file Transform writes.
func ownedByDataset(name string) bool {
	return partName.MatchString(name) || name == "schema.pbtxt" || name == "schema.json"
}

// checkReplaceable errors when dir exists and holds anything Transform did
// not write (which it would otherwise delete).
func checkReplaceable(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !ownedByDataset(e.Name()) {
			return fmt.Errorf("output %s holds %s, which is not part of a transformed dataset; choose an empty or new directory", dir, e.Name())
		}
	}
	return nil
}

type datasetWriter struct {
	dir, tmp string
	sch      *arrow.Schema
	mem      memory.Allocator
	fw       *parquetio.Writer // the part being written
	curSrc   string
	parts    []string
	rows     int64
}

func newDatasetWriter(dir string, sch *arrow.Schema, mem memory.Allocator) (*datasetWriter, error) {
	if err := checkReplaceable(dir); err != nil {
		return nil, err
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("output: %w", err)
	}
	tmp, err := atomicfile.MkdirTemp(dir)
	if err != nil {
		return nil, fmt.Errorf("output: %w", err)
	}
	return &datasetWriter{dir: dir, tmp: tmp, sch: sch, mem: mem}, nil
}

// write appends rec to the part of input file src (a new part per input).
func (d *datasetWriter) write(src string, rec arrow.RecordBatch) error {
	if d.fw == nil || src != d.curSrc {
		if err := d.closePart(); err != nil {
			return err
		}
		if err := d.openPart(); err != nil {
			return err
		}
		d.curSrc = src
	}
	if err := d.fw.Write(rec); err != nil {
		return err
	}
	d.rows += rec.NumRows()
	return nil
}

func (d *datasetWriter) openPart() error {
	name := "part_" + strconv.Itoa(len(d.parts)) + ".parquet"
	fw, err := parquetio.Create(filepath.Join(d.tmp, name), d.sch, parquetio.WriterOptions{
		// Dictionary pages pay off for ids and 0/1 targets, not for
		// continuous values, which are mostly distinct.
		Dictionary:  func(f arrow.Field) bool { return f.Type.ID() != arrow.FLOAT32 },
		StoreSchema: true,
		CreatedBy:   "mtlrank preprocess",
		Allocator:   d.mem,
	})
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	d.fw = fw
	d.parts = append(d.parts, name)
	return nil
}

func (d *datasetWriter) closePart() error {
	if d.fw == nil {
		return nil
	}
	err := d.fw.Close() // seals, syncs and renames the part
	d.fw = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", d.parts[len(d.parts)-1], err)
	}
	return nil
}

// finish finishes the parts (an empty part_0 when no row was written) and
// writes the schema files; publish then moves the dataset into place.
func (d *datasetWriter) finish(s *schema.Schema) error {
	if err := d.closePart(); err != nil {
		return err
	}
	if len(d.parts) == 0 {
		if err := d.openPart(); err != nil {
			return err
		}
		if err := d.closePart(); err != nil {
			return err
		}
	}
	var pb, js bytes.Buffer
	if err := s.WritePbtxt(&pb); err != nil {
		return err
	}
	if err := s.WriteJSON(&js); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(d.tmp, "schema.pbtxt"), pb.Bytes()); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(d.tmp, "schema.json"), js.Bytes()); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	return nil
}

// publish moves the finished dataset into place.
func (d *datasetWriter) publish() error {
	if err := replaceDir(d.dir, d.tmp); err != nil {
		return err
	}
	d.tmp = ""
	return nil
}

// replaceDir moves the finished directory tmp to dir, replacing a previous
// dataset there.
func replaceDir(dir, tmp string) error {
	if err := checkReplaceable(dir); err != nil {
		return err
	}
	if err := atomicfile.ReplaceDir(tmp, dir); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	return nil
}

// abort drops the partial dataset.
func (d *datasetWriter) abort() {
	if d.fw != nil {
		_ = d.fw.Abort()
		d.fw = nil
	}
	if d.tmp != "" {
		os.RemoveAll(d.tmp)
		d.tmp = ""
	}
}
