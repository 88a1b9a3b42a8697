package dist

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

// rg is shorthand for a part: pairs of (file, row group).
func rg(pairs ...int) []loader.RowGroupID {
	out := make([]loader.RowGroupID, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, loader.RowGroupID{File: pairs[i], RowGroup: pairs[i+1]})
	}
	return out
}

func TestNewPartition(t *testing.T) {
	uneven := [][]int64{{100, 10, 10}, {50}, {30, 30, 5}}
	tests := []struct {
		name  string
		rows  [][]int64
		size  int
		parts [][]loader.RowGroupID // worked out by hand from the rule
		sums  []int64
		steps [2]int // batch 32, without and with DropLast
	}{
		{"one rank is the whole dataset in order", uneven, 1,
			[][]loader.RowGroupID{rg(0, 0, 0, 1, 0, 2, 1, 0, 2, 0, 2, 1, 2, 2)}, []int64{235}, [2]int{8, 7}},
		// 100→0, 50→1, 30→1 (50<100), 30→1 (80<100), 10→0 (100<110),
		// 10→0 (110=110: the lower rank), 5→1 (110<120).
		{"two ranks, uneven row groups", uneven, 2,
			[][]loader.RowGroupID{rg(0, 0, 0, 1, 0, 2), rg(1, 0, 2, 0, 2, 1, 2, 2)}, []int64{120, 115}, [2]int{4, 3}},
		// 100→0, 50→1, 30→2, 30→2 (30<50), 10→1 (50<60), 10→1 (60=60:
		// lowest), 5→2.
		{"three ranks, uneven row groups", uneven, 3,
			[][]loader.RowGroupID{rg(0, 0), rg(0, 1, 0, 2, 1, 0), rg(2, 0, 2, 1, 2, 2)}, []int64{100, 70, 65}, [2]int{4, 3}},
		{"as many ranks as row groups", [][]int64{{3}, {5, 4}}, 3,
			[][]loader.RowGroupID{rg(1, 0), rg(1, 1), rg(0, 0)}, []int64{5, 4, 3}, [2]int{1, 0}},
		// Empty row groups go, last, to the rank with the fewest rows.
		{"empty row groups", [][]int64{{0, 5}, {0}, {7}}, 2,
			[][]loader.RowGroupID{rg(2, 0), rg(0, 0, 0, 1, 1, 0)}, []int64{7, 5}, [2]int{1, 0}},
		{"equal row groups", [][]int64{{64, 64, 64}, {64}}, 2,
			[][]loader.RowGroupID{rg(0, 0, 0, 2), rg(0, 1, 1, 0)}, []int64{128, 128}, [2]int{4, 4}},
		{"file without row groups", [][]int64{{}, {9, 9}}, 2,
			[][]loader.RowGroupID{rg(1, 0), rg(1, 1)}, []int64{9, 9}, [2]int{1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPartition(tt.rows, tt.size)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(p.Parts, tt.parts, slices.Equal) {
				t.Errorf("parts %v, want %v", p.Parts, tt.parts)
			}
			if !slices.Equal(p.Rows, tt.sums) {
				t.Errorf("rows %v, want %v", p.Rows, tt.sums)
			}
			for i, dropLast := range []bool{false, true} {
				steps, err := p.StepsPerEpoch(32, dropLast)
				if err != nil || steps != tt.steps[i] {
					t.Errorf("StepsPerEpoch(32, %v) = %d, %v; want %d", dropLast, steps, err, tt.steps[i])
				}
			}
		})
	}
}

func TestNewPartitionRefuses(t *testing.T) {
	tests := []struct {
		name string
		rows [][]int64
		size int
		want string
	}{
		{"more ranks than row groups", [][]int64{{10, 10}, {10}}, 4, "3 row groups with rows, fewer than the 4 ranks"},
		{"empty row groups do not count", [][]int64{{10, 0}, {0}}, 2, "1 row groups with rows, fewer than the 2 ranks"},
		{"no data", nil, 1, "0 row groups with rows"},
		{"no ranks", [][]int64{{1}}, 0, "among 0 ranks"},
		{"negative rows", [][]int64{{1}, {2, -3}}, 1, "row group 1 of file 1 has -3 rows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPartition(tt.rows, tt.size)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v, want an error with %q", err, tt.want)
			}
		})
	}
	p, _ := NewPartition([][]int64{{1}}, 1)
	if _, err := p.StepsPerEpoch(0, false); err == nil {
		t.Error("StepsPerEpoch(0): no error")
	}
}

// On random layouts: every row group in exactly one part, parts in dataset
// order, each rank's rows as reported, the largest part within one row group
// of the mean, and the same partition when computed again.
func TestNewPartitionProperties(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		var rows [][]int64
		total, groups, nonEmpty, largest := int64(0), 0, 0, int64(0)
		for range 1 + rnd.IntN(6) {
			var f []int64
			for range rnd.IntN(8) {
				n := rnd.Int64N(1000)
				if rnd.IntN(5) == 0 {
					n = 0
				}
				f = append(f, n)
				total += n
				groups++
				largest = max(largest, n)
				if n > 0 {
					nonEmpty++
				}
			}
			rows = append(rows, f)
		}
		size := 1 + rnd.IntN(5)
		p, err := NewPartition(rows, size)
		if nonEmpty < size {
			if err == nil {
				t.Fatalf("trial %d: %d ranks, %d row groups with rows: no error", trial, size, nonEmpty)
			}
			continue
		}
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		seen := map[loader.RowGroupID]int{}
		for r, part := range p.Parts {
			var sum int64
			for i, id := range part {
				seen[id]++
				sum += rows[id.File][id.RowGroup]
				if i > 0 && (part[i-1].File > id.File || part[i-1].File == id.File && part[i-1].RowGroup >= id.RowGroup) {
					t.Fatalf("trial %d: part %d not in dataset order: %v", trial, r, part)
				}
			}
			if sum != p.Rows[r] {
				t.Fatalf("trial %d: part %d holds %d rows, Rows says %d", trial, r, sum, p.Rows[r])
			}
			if sum == 0 {
				t.Fatalf("trial %d: rank %d has no rows", trial, r)
			}
			if float64(sum) > float64(total)/float64(size)+float64(largest) {
				t.Fatalf("trial %d: part %d has %d rows, more than the mean %d/%d plus the largest row group %d", trial, r, sum, total, size, largest)
			}
		}
		if len(seen) != groups {
			t.Fatalf("trial %d: %d of %d row groups assigned", trial, len(seen), groups)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("trial %d: %v assigned %d times", trial, id, n)
			}
		}
		again, _ := NewPartition(rows, size)
		if !slices.EqualFunc(p.Parts, again.Parts, slices.Equal) {
			t.Fatalf("trial %d: not deterministic", trial)
		}
	}
}

func TestAgreeOnLayout(t *testing.T) {
	files := []string{"/data/a/part_0.parquet", "/data/a/part_1.parquet"}
	rows := [][]int64{{10, 5}, {7}}
	tests := []struct {
		name   string
		files  func(r int) []string
		rows   func(r int) [][]int64
		differ string
	}{
		{"same", func(int) []string { return files }, func(int) [][]int64 { return rows }, ""},
		{"mounted elsewhere", func(r int) []string {
			return []string{fmt.Sprintf("/mnt%d/part_0.parquet", r), fmt.Sprintf("/mnt%d/part_1.parquet", r)}
		}, func(int) [][]int64 { return rows }, ""},
		{"a row group differs", func(int) []string { return files }, func(r int) [][]int64 {
			if r == 2 {
				return [][]int64{{10, 5}, {8}}
			}
			return rows
		}, "ranks [2]"},
		{"a file is missing", func(r int) []string {
			if r == 0 {
				return files[:1]
			}
			return files
		}, func(r int) [][]int64 {
			if r == 0 {
				return rows[:1]
			}
			return rows
		}, "ranks [1 2]"},
		{"row groups move between files", func(int) []string { return files }, func(r int) [][]int64 {
			if r == 1 {
				return [][]int64{{10}, {5, 7}}
			}
			return rows
		}, "ranks [1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := runRanks(3, func(c Comm) error {
				return AgreeOnLayout(c, tt.files(c.Rank()), tt.rows(c.Rank()))
			})
			for r, err := range errs {
				switch {
				case tt.differ == "" && err != nil:
					t.Errorf("rank %d: %v", r, err)
				case tt.differ != "" && (err == nil || !strings.Contains(err.Error(), tt.differ)):
					t.Errorf("rank %d: %v, want an error naming %s", r, err, tt.differ)
				}
			}
		})
	}
}

// The partition on a real dataset, read through loader.Dataset.Select with
// shuffling: the ranks' epochs are disjoint and together every row once,
// each rank's epoch is a function of (seed, epoch), and one rank reads
// exactly what the undistributed dataset reads.
func TestPartitionReadsEveryRowOnce(t *testing.T) {
	s := &schema.Schema{Features: []*schema.Feature{
		{Name: "rid", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Max: 1 << 40}},
		{Name: "click", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification}},
	}}
	dir := t.TempDir()
	var from int64
	// Files of uneven sizes and row-group sizes.
	for i, f := range []struct{ rows, rg int }{{300, 64}, {130, 100}, {45, 45}, {500, 128}} {
		rid, click := make([]int64, f.rows), make([]float32, f.rows)
		for j := range rid {
			rid[j] = from + int64(j)
			click[j] = float32(j % 2)
		}
		from += int64(f.rows)
		path := filepath.Join(dir, fmt.Sprintf("part_%d.parquet", i))
		if err := loader.WriteParquet(path, s, map[string]any{"rid": rid, "click": click}, f.rg); err != nil {
			t.Fatal(err)
		}
	}
	opt := loader.DefaultOptions()
	opt.BatchSize, opt.Shuffle, opt.Seed, opt.ShuffleBuffer = 50, true, 11, 200
	ds, err := loader.Open(dir, s, opt)
	if err != nil {
		t.Fatal(err)
	}
	read := func(d *loader.Dataset, epoch int) (rids []int64, batches int) {
		it := d.Epoch(context.Background(), epoch)
		defer it.Close()
		for {
			b, err := it.Next()
			if errors.Is(err, io.EOF) {
				return rids, batches
			}
			if err != nil {
				t.Fatal(err)
			}
			rids = append(rids, b.Column("rid").I64...)
			batches++
			b.Release()
		}
	}
	whole, _ := read(ds, 1)
	for _, size := range []int{1, 2, 3, 5} {
		p, err := NewPartition(ds.RowGroupRows(), size)
		if err != nil {
			t.Fatal(err)
		}
		steps, _ := p.StepsPerEpoch(opt.BatchSize, false)
		var union []int64
		maxBatches := 0
		for r := range size {
			part, err := ds.Select(p.Parts[r])
			if err != nil {
				t.Fatal(err)
			}
			rids, batches := read(part, 1)
			if int64(len(rids)) != p.Rows[r] {
				t.Fatalf("%d ranks: rank %d read %d rows, its part has %d", size, r, len(rids), p.Rows[r])
			}
			if again, _ := read(part, 1); !slices.Equal(rids, again) {
				t.Fatalf("%d ranks: rank %d's epoch is not deterministic", size, r)
			}
			if size == 1 && !slices.Equal(rids, whole) {
				t.Fatalf("one rank does not read the undistributed epoch")
			}
			maxBatches = max(maxBatches, batches)
			union = append(union, rids...)
		}
		if maxBatches != steps {
			t.Errorf("%d ranks: the longest rank has %d batches, StepsPerEpoch says %d", size, maxBatches, steps)
		}
		slices.Sort(union)
		for i, rid := range union {
			if rid != int64(i) {
				t.Fatalf("%d ranks: the union of the parts is not every row once (at %d: rid %d)", size, i, rid)
			}
		}
		if len(union) != int(from) {
			t.Fatalf("%d ranks: %d rows read, want %d", size, len(union), from)
		}
	}
}

// TestNewEvalPartition: an evaluation's partition gives ranks beyond the
// row groups an empty part instead of refusing, and is NewPartition's
// otherwise.
func TestNewEvalPartition(t *testing.T) {
	p, err := NewEvalPartition([][]int64{{100, 10}, {0}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]loader.RowGroupID{rg(0, 0), rg(0, 1), rg(1, 0), nil}; !reflect.DeepEqual(p.Parts, want) {
		t.Errorf("parts %v, want %v", p.Parts, want)
	}
	if want := []int64{100, 10, 0, 0}; !slices.Equal(p.Rows, want) {
		t.Errorf("rows %v, want %v", p.Rows, want)
	}
	rows := [][]int64{{100, 10, 10}, {50}, {30, 30, 5}}
	for size := 1; size <= 3; size++ {
		want, err := NewPartition(rows, size)
		if err != nil {
			t.Fatal(err)
		}
		got, err := NewEvalPartition(rows, size)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%d ranks: %v, %v; NewPartition %v", size, got, err, want)
		}
	}
	if _, err := NewEvalPartition(rows, 0); err == nil {
		t.Error("0 ranks: no error")
	}
}

// TestBatchRows: each rank's rows of each step with full batches but the
// last, worked out by hand for parts of 100, 64 and 0 rows, batch 32.
func TestBatchRows(t *testing.T) {
	p := Partition{Rows: []int64{100, 64, 0}}
	for _, tt := range []struct {
		dropLast bool
		want     [][]int // [step][rank]
	}{
		{false, [][]int{{32, 32, 0}, {32, 32, 0}, {32, 0, 0}, {4, 0, 0}, {0, 0, 0}}},
		{true, [][]int{{32, 32, 0}, {32, 32, 0}, {32, 0, 0}, {0, 0, 0}, {0, 0, 0}}},
	} {
		for s, ranks := range tt.want {
			for r, want := range ranks {
				if got := p.BatchRows(r, s, 32, tt.dropLast); got != want {
					t.Errorf("step %d, rank %d, dropLast %v: %d rows, want %d", s, r, tt.dropLast, got, want)
				}
			}
		}
	}
}
