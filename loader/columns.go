package loader

import (
	"fmt"
	"math"
	"sort"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// colData is one column of a chunk: a view of the record's Arrow buffer for
// int32/int64/float32 data, or a Go slice converted once when the record was
// read. For lists, offs (len rows+1) indexes the value slice; it is a view of
// the Arrow offsets and need not start at 0.
type colData struct {
	i32  []int32
	i64  []int64
	f32  []float32
	offs []int32
}

// chunk is one decoded read of a row group, validated.
type chunk struct {
	plan  *filePlan
	rg    int
	first int64 // absolute file row of row 0
	rows  int
	cols  []colData
	rec   arrow.RecordBatch
}

func (c *chunk) release() {
	if c != nil && c.rec != nil {
		c.rec.Release()
		c.rec = nil
	}
}

// location of one problem inside a chunk, for errors.
type chunkLoc struct {
	c   *chunk
	col string
}

func (l chunkLoc) err(row int, format string, args ...any) *DataError {
	r := int64(-1)
	if row >= 0 {
		r = l.c.first + int64(row)
	}
	return dataErr(l.c.plan.path, l.col, l.c.rg, r, format, args...)
}

// buildColumn validates and converts column arr of chunk c according to sp.
// fill is the replacement value for sp.fill columns.
func buildColumn(c *chunk, sp *colSpec, arr arrow.Array, fill float32) (colData, error) {
	loc := chunkLoc{c: c, col: sp.name}
	var cd colData
	values := arr
	// rowOf maps an index into the value array to a row of the chunk, for
	// error messages.
	rowOf := func(i int) int { return i }
	if sp.list {
		var err error
		values, cd.offs, err = listParts(arr, loc)
		if err != nil {
			return cd, err
		}
		offs := cd.offs
		rowOf = func(i int) int {
			// last row whose start is <= i
			return sort.Search(len(offs)-1, func(r int) bool { return int(offs[r+1]) > i })
		}
	}
	nulls := values.NullN() > 0
	if nulls && !sp.fill {
		for i := 0; i < values.Len(); i++ {
			if values.IsNull(i) {
				what := "null value"
				if sp.list {
					what = "null element in a list"
				}
				if sp.target {
					return cd, loc.err(rowOf(i), "%s in a target (labels are never filled)", what)
				}
				return cd, loc.err(rowOf(i), "%s (nulls are only allowed in continuous features, replaced with --fill_nan VALUE on the command line, Options.FillNaN in the library)", what)
			}
		}
	}
	if sp.ids {
		if err := convertIDs(values, sp, &cd, loc, rowOf); err != nil {
			return cd, err
		}
		return cd, checkIDs(&cd, sp, loc, rowOf)
	}
	if err := convertFloats(values, &cd, loc, rowOf); err != nil {
		return cd, err
	}
	if nulls {
		for i := 0; i < values.Len(); i++ {
			if values.IsNull(i) {
				cd.f32[i] = fill
			}
		}
	}
	if err := checkFloats(cd.f32, sp, fill, loc, rowOf); err != nil {
		return cd, err
	}
	if sp.binary {
		return cd, checkBinary(cd.f32, loc, rowOf)
	}
	return cd, nil
}

// listParts returns the value array of a list column and its offsets (len
// rows+1, absolute indices into the value array).
func listParts(arr arrow.Array, loc chunkLoc) (arrow.Array, []int32, error) {
	n := arr.Len()
	off := arr.Data().Offset()
	var offs []int32
	var values arrow.Array
	switch a := arr.(type) {
	case *array.List:
		all := a.Offsets()
		if len(all) < off+n+1 {
			if n == 0 {
				return a.ListValues(), []int32{0}, nil
			}
			return nil, nil, loc.err(-1, "list offsets buffer too short")
		}
		offs = all[off : off+n+1 : off+n+1]
		values = a.ListValues()
	case *array.LargeList:
		all := a.Offsets()
		if len(all) < off+n+1 {
			if n == 0 {
				return a.ListValues(), []int32{0}, nil
			}
			return nil, nil, loc.err(-1, "list offsets buffer too short")
		}
		offs = make([]int32, n+1)
		for i, v := range all[off : off+n+1] {
			if v < 0 || v > math.MaxInt32 {
				return nil, nil, loc.err(i, "list offset %d does not fit int32", v)
			}
			offs[i] = int32(v)
		}
		values = a.ListValues()
	default:
		return nil, nil, loc.err(-1, "expected a list column, got %s", arr.DataType())
	}
	for i := 0; i < n; i++ {
		if offs[i+1] < offs[i] || offs[i] < 0 {
			return nil, nil, loc.err(i, "decreasing list offsets")
		}
	}
	if int(offs[n]) > values.Len() {
		return nil, nil, loc.err(n-1, "list offsets run past the %d values", values.Len())
	}
	if arr.NullN() > 0 {
		for i := 0; i < n; i++ {
			if arr.IsNull(i) {
				return nil, nil, loc.err(i, "null list (write an empty list instead)")
			}
		}
	}
	return values, offs, nil
}

// convertIDs sets cd.i32 or cd.i64 (as sp.out says) from an integer array:
// views for int32 -> I32 and int64 -> I64, a converted copy otherwise.
func convertIDs(values arrow.Array, sp *colSpec, cd *colData, loc chunkLoc, rowOf func(int) int) error {
	n := values.Len()
	if sp.out == outI64 {
		switch a := values.(type) {
		case *array.Int64:
			cd.i64 = a.Int64Values()
			return nil
		case *array.Uint64:
			out := make([]int64, n)
			for i, v := range a.Uint64Values() {
				if v > math.MaxInt64 {
					return loc.err(rowOf(i), "id %d does not fit int64", v)
				}
				out[i] = int64(v)
			}
			cd.i64 = out
			return nil
		}
		out := make([]int64, n)
		if err := intsTo(values, func(i int, v int64) { out[i] = v }); err != nil {
			return loc.err(-1, "%v", err)
		}
		cd.i64 = out
		return nil
	}
	if a, ok := values.(*array.Int32); ok {
		cd.i32 = a.Int32Values()
		return nil
	}
	out := make([]int32, n)
	if err := intsTo(values, func(i int, v int64) { out[i] = int32(v) }); err != nil {
		return loc.err(-1, "%v", err)
	}
	cd.i32 = out
	return nil
}

// intsTo calls set(i, v) for every value of a narrow integer array (one whose
// values always fit int32: int8/int16/uint8/uint16, or int32/uint32 for the
// int64 output).
func intsTo(values arrow.Array, set func(int, int64)) error {
	switch a := values.(type) {
	case *array.Int8:
		for i, v := range a.Int8Values() {
			set(i, int64(v))
		}
	case *array.Int16:
		for i, v := range a.Int16Values() {
			set(i, int64(v))
		}
	case *array.Int32:
		for i, v := range a.Int32Values() {
			set(i, int64(v))
		}
	case *array.Uint8:
		for i, v := range a.Uint8Values() {
			set(i, int64(v))
		}
	case *array.Uint16:
		for i, v := range a.Uint16Values() {
			set(i, int64(v))
		}
	case *array.Uint32:
		for i, v := range a.Uint32Values() {
			set(i, int64(v))
		}
	default:
		return fmt.Errorf("unsupported id type %s", values.DataType())
	}
	return nil
}

// checkIDs checks ids against [0, max] when the domain check is on.
func checkIDs(cd *colData, sp *colSpec, loc chunkLoc, rowOf func(int) int) error {
	if !sp.checkDomain {
		return nil
	}
	max := sp.max
	if max < 0 {
		max = math.MaxInt64
	}
	bad := -1
	var badV int64
	if cd.i32 != nil {
		// One branch-light pass: an unsigned compare catches negatives too.
		lim := uint64(max)
		for i, v := range cd.i32 {
			if uint64(int64(v)) > lim {
				bad, badV = i, int64(v)
				break
			}
		}
	} else {
		lim := uint64(max)
		for i, v := range cd.i64 {
			if uint64(v) > lim {
				bad, badV = i, v
				break
			}
		}
	}
	if bad < 0 {
		return nil
	}
	if badV < 0 {
		return loc.err(rowOf(bad), "negative id %d", badV)
	}
	return loc.err(rowOf(bad), "id %d above int_domain.max %d", badV, sp.max)
}

// convertFloats sets cd.f32: a view for float32 arrays, a converted copy for
// float64, integers and bools.
func convertFloats(values arrow.Array, cd *colData, loc chunkLoc, rowOf func(int) int) error {
	n := values.Len()
	if a, ok := values.(*array.Float32); ok {
		cd.f32 = a.Float32Values()
		return nil
	}
	out := make([]float32, n)
	switch a := values.(type) {
	case *array.Float64:
		for i, v := range a.Float64Values() {
			out[i] = float32(v)
		}
	case *array.Boolean:
		for i := 0; i < n; i++ {
			if a.Value(i) {
				out[i] = 1
			}
		}
	case *array.Int64:
		for i, v := range a.Int64Values() {
			out[i] = float32(v)
		}
	case *array.Uint64:
		for i, v := range a.Uint64Values() {
			out[i] = float32(v)
		}
	default:
		if err := intsTo(values, func(i int, v int64) { out[i] = float32(v) }); err != nil {
			return loc.err(-1, "%v", err)
		}
	}
	cd.f32 = out
	return nil
}

// checkFloats rejects NaN and ±Inf (including float64 values too large for
// float32), or replaces them by fill when sp.fill. Replacing writes into the
// record's own buffer, which this chunk owns exclusively.
func checkFloats(v []float32, sp *colSpec, fill float32, loc chunkLoc, rowOf func(int) int) error {
	const expMask = 0x7f800000
	for i, x := range v {
		if math.Float32bits(x)&expMask != expMask {
			continue
		}
		if sp.fill {
			v[i] = fill
			continue
		}
		if sp.target {
			return loc.err(rowOf(i), "%v in a target (labels are never filled)", x)
		}
		return loc.err(rowOf(i), "%v in a continuous feature (replace it with --fill_nan VALUE on the command line, Options.FillNaN in the library)", x)
	}
	return nil
}

// checkBinary rejects binary-target labels other than 0 and 1: the loss
// and the metrics of a binary task are only defined for them, and a label
// such as 2 or 0.5 (a count, a rating, a soft label) is a data error that
// would otherwise train silently.
func checkBinary(v []float32, loc chunkLoc, rowOf func(int) int) error {
	if allBinary(v) {
		return nil
	}
	for i, x := range v {
		if x != 0 && x != 1 {
			return loc.err(rowOf(i), "label %v in a binary target (binary labels must be 0 or 1)", x)
		}
	}
	return nil
}

// allBinary reports whether every value is 0, -0 or 1. It has no branch per
// value: labels are 0 or 1 at random, so a per-value test mispredicts often
// and cost more than decoding the column.
func allBinary(v []float32) bool {
	var bad uint32
	for _, x := range v {
		b := math.Float32bits(x)
		// b<<1 is 0 only for ±0, b^1.0 only for 1; the minimum is 0 when
		// either is.
		bad |= min(b<<1, b^math.Float32bits(1))
	}
	return bad == 0
}
