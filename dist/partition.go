package dist

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/mtlrank/mtlrank/loader"
)

// Partition is the split of a dataset's row groups among the ranks of a
// job: Parts[r] is what rank r reads (loader.Dataset.Select), in dataset
// order, and Rows[r] its number of rows. Every row group is in exactly one
// part.
type Partition struct {
	Parts [][]loader.RowGroupID
	Rows  []int64
}

// NewPartition splits row groups among size ranks. rows[f][g] is the number
// of rows of row group g of file f (loader.Dataset.RowGroupRows), the same
// on every rank, so that every rank computes the same partition without
// talking to the others (AgreeOnLayout checks that they see the same
// files).
//
// Whole row groups are assigned (a row group is the unit Parquet reads), in
// the greedy longest-first order: row groups by decreasing rows (ties in
// dataset order), each to the rank with the fewest rows so far (ties to the
// lowest rank). The largest part then exceeds the mean by at most the
// largest row group: a group goes to a rank whose rows are at most the mean. Empty row groups are assigned too, so that with one
// rank the part is the whole dataset and its epochs are exactly the
// undistributed ones.
//
// It refuses more ranks than row groups with rows: a rank with no data is a
// misconfiguration (write the data with smaller row groups, or start fewer
// ranks).
func NewPartition(rows [][]int64, size int) (Partition, error) {
	return partition(rows, size, false)
}

// NewEvalPartition is NewPartition for a pass that must read every row
// once however few the row groups (an evaluation): a rank may get no rows,
// and then joins the pass's steps with empty batches.
func NewEvalPartition(rows [][]int64, size int) (Partition, error) {
	return partition(rows, size, true)
}

func partition(rows [][]int64, size int, allowEmpty bool) (Partition, error) {
	if size < 1 {
		return Partition{}, fmt.Errorf("dist: partition among %d ranks", size)
	}
	type group struct {
		id   loader.RowGroupID
		rows int64
	}
	var groups []group
	nonEmpty := 0
	for f, rgs := range rows {
		for g, n := range rgs {
			if n < 0 {
				return Partition{}, fmt.Errorf("dist: partition: row group %d of file %d has %d rows", g, f, n)
			}
			if n > 0 {
				nonEmpty++
			}
			groups = append(groups, group{loader.RowGroupID{File: f, RowGroup: g}, n})
		}
	}
	if nonEmpty < size && !allowEmpty {
		return Partition{}, fmt.Errorf("dist: the dataset has %d row groups with rows, fewer than the %d ranks: every rank needs one (write the data with smaller row groups, or start fewer ranks)", nonEmpty, size)
	}
	// groups is in dataset order; the stable sort keeps it among equals.
	slices.SortStableFunc(groups, func(a, b group) int { return cmp.Compare(b.rows, a.rows) })
	p := Partition{Parts: make([][]loader.RowGroupID, size), Rows: make([]int64, size)}
	for _, g := range groups {
		r := 0
		for i := 1; i < size; i++ {
			if p.Rows[i] < p.Rows[r] {
				r = i
			}
		}
		p.Parts[r] = append(p.Parts[r], g.id)
		p.Rows[r] += g.rows
	}
	for _, part := range p.Parts {
		slices.SortFunc(part, func(a, b loader.RowGroupID) int {
			return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.RowGroup, b.RowGroup))
		})
	}
	return p, nil
}

// StepsPerEpoch is the number of steps every rank runs in an epoch with
// batches of batch rows per rank: the steps of the rank with the most rows,
// ceil(rows/batch), or floor(rows/batch) when the last short batch is
// dropped (loader.Options.DropLast).
//
// A rank whose part runs out first keeps stepping, with empty batches: it
// joins every collective with nothing of its own (a zero gradient, no
// touched rows), and losses are normalized by the rows of the step over all
// ranks, so that each step is the step one process takes on the union of the
// ranks' batches, and every row of the epoch is used once. Wrapping around
// instead would repeat rows, so that the epoch, and the model, would depend
// on the number of ranks.
func (p Partition) StepsPerEpoch(batch int, dropLast bool) (int, error) {
	if batch < 1 {
		return 0, fmt.Errorf("dist: StepsPerEpoch: batch size %d", batch)
	}
	steps := int64(0)
	for _, n := range p.Rows {
		s := n / int64(batch)
		if !dropLast && n%int64(batch) != 0 {
			s++
		}
		steps = max(steps, s)
	}
	return int(steps), nil
}

// BatchRows is the rows of rank's batch at step (0-based) of an epoch with
// batches of batch rows per rank: batch until the rank's part runs short,
// then the rest of it (none when dropLast), then 0. It is what a loader
// epoch over the part gives when every batch but the last is full, which
// loader.Iterator guarantees; so every rank knows every rank's rows of
// every step without asking them.
func (p Partition) BatchRows(rank, step, batch int, dropLast bool) int {
	left := p.Rows[rank] - int64(step)*int64(batch)
	switch {
	case left <= 0:
		return 0
	case left >= int64(batch):
		return batch
	case dropLast:
		return 0
	}
	return int(left)
}

// AgreeOnLayout checks that every rank sees the same dataset: the same file
// names (base names: mounts may differ between nodes) with the same row
// groups, by comparing each rank's digest with rank 0's. Ranks that read
// different listings would compute different partitions, which overlap or
// leave rows out, silently.
func AgreeOnLayout(c Comm, files []string, rows [][]int64) error {
	if len(files) != len(rows) {
		return fmt.Errorf("dist: AgreeOnLayout: %d files but row groups of %d", len(files), len(rows))
	}
	h := sha256.New()
	for i, f := range files {
		name := filepath.Base(f)
		binary.Write(h, binary.LittleEndian, int64(len(name)))
		h.Write([]byte(name))
		binary.Write(h, binary.LittleEndian, int64(len(rows[i])))
		binary.Write(h, binary.LittleEndian, rows[i])
	}
	mine := h.Sum(nil)
	root := slices.Clone(mine)
	if err := c.Bcast(root, 0); err != nil {
		return fmt.Errorf("dist: AgreeOnLayout: %w", err)
	}
	ok := []int32{0}
	if slices.Equal(mine, root) {
		ok[0] = 1
	}
	// Every rank learns which ranks differ, so that all fail together.
	all := make([]int32, c.Size())
	if err := c.AllgathervInt32(ok, all, ones(c.Size())); err != nil {
		return fmt.Errorf("dist: AgreeOnLayout: %w", err)
	}
	var differ []int
	for r, v := range all {
		if v == 0 {
			differ = append(differ, r)
		}
	}
	if len(differ) > 0 {
		return fmt.Errorf("dist: ranks %v see other files or row groups than rank 0 (%d files): every rank must read the same dataset", differ, len(files))
	}
	return nil
}
