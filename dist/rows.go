package dist

import "fmt"

// Route groups ids by their owner under row sharding, owner = id mod size:
// send holds the ids in owner order (each owner's in their order in ids),
// counts[o] the number for owner o (the sendCounts of AlltoallvInt32), and
// perm the place of each in ids: send[k] == ids[perm[k]], so that the rows
// that come back in send's order are scattered to their ids' places. On its
// owner, id is at local row id / size.
func Route(ids []int32, size int) (send []int32, counts []int, perm []int, err error) {
	if size < 1 {
		return nil, nil, nil, fmt.Errorf("dist: Route among %d ranks", size)
	}
	counts = make([]int, size)
	for i, id := range ids {
		if id < 0 {
			return nil, nil, nil, fmt.Errorf("dist: Route: id %d at %d is negative", id, i)
		}
		counts[int(id)%size]++
	}
	at := displs(counts)
	send, perm = make([]int32, len(ids)), make([]int, len(ids))
	for i, id := range ids {
		o := int(id) % size
		send[at[o]], perm[at[o]] = id, i
		at[o]++
	}
	return send, counts, perm, nil
}

// SumRowsByID merges rows of equal ids: row i (rows[i*dim : (i+1)*dim]) is
// id ids[i]. It returns the distinct ids in the order of their first
// appearance and, for each, the float32 sum of its rows in the order they
// appear, each addition rounded. After an allgatherv (replicate) or an
// alltoallv (the owners under row sharding) the rows are in rank order, so
// the sums are the same bits on every rank whatever the number of ranks
// that touched an id.
func SumRowsByID(ids []int32, rows []float32, dim int) ([]int32, []float32, error) {
	if dim < 1 || len(rows) != len(ids)*dim {
		return nil, nil, fmt.Errorf("dist: SumRowsByID: %d rows of dim %d for %d ids", len(rows), dim, len(ids))
	}
	index := make(map[int32]int, len(ids))
	// room for every id distinct: growing by appends costs more than the
	// sums themselves
	out := make([]int32, 0, len(ids))
	sums := make([]float32, 0, len(rows))
	for i, id := range ids {
		row := rows[i*dim : (i+1)*dim]
		j, seen := index[id]
		if !seen {
			index[id] = len(out)
			out = append(out, id)
			sums = append(sums, row...)
			continue
		}
		dst := sums[j*dim : (j+1)*dim]
		for k, x := range row {
			dst[k] = float32(dst[k] + x)
		}
	}
	return out, sums, nil
}

// RowMerger is SumRowsByID for ids in [0, n) with its index kept between
// calls: a slot per id instead of a hash map, reset after each merge by
// visiting only the ids it saw, so that a training step's merge costs a
// few passes over its rows. A merge may come in parts (Add, then Take):
// the rows of an allgather, rank after rank, need not be copied into one
// slice first. The zero value is ready; it is not safe for concurrent use.
type RowMerger struct {
	slot []int32 // slot[id] is 1 + the id's place in the result; 0: not seen
	ids  []int32
	sums []float32
	dim  int // of the merge in progress; 0 between merges
}

// Sum is SumRowsByID(ids, rows, dim) for ids in [0, n), the same results
// bit for bit, as a merge of its own (one in progress is dropped). The
// slices it returns are reused by the next call.
func (m *RowMerger) Sum(ids []int32, rows []float32, dim, n int) ([]int32, []float32, error) {
	m.reset()
	if err := m.Add(ids, rows, dim, n); err != nil {
		return nil, nil, err
	}
	out, sums := m.Take()
	return out, sums, nil
}

// Add merges the rows of ids (rows[i*dim : (i+1)*dim] is ids[i]'s), ids in
// [0, n), into the merge in progress: Adds of consecutive parts of ids and
// rows, then Take, give Sum's results on the whole. Every Add of one merge
// has the same dim. After an error the merge is dropped (the next Add
// starts a new one).
func (m *RowMerger) Add(ids []int32, rows []float32, dim, n int) error {
	switch {
	case dim < 1 || len(rows) != len(ids)*dim:
		m.reset()
		return fmt.Errorf("dist: RowMerger: %d rows of dim %d for %d ids", len(rows), dim, len(ids))
	case m.dim != 0 && dim != m.dim:
		err := fmt.Errorf("dist: RowMerger: rows of dim %d added to a merge of dim %d", dim, m.dim)
		m.reset()
		return err
	}
	if m.dim == 0 {
		m.ids, m.sums, m.dim = m.ids[:0], m.sums[:0], dim
	}
	if len(m.slot) < n {
		slot := make([]int32, n)
		copy(slot, m.slot) // the merge in progress's slots
		m.slot = slot
	}
	for i, id := range ids {
		if id < 0 || int(id) >= n {
			m.reset()
			return fmt.Errorf("dist: RowMerger: id %d at %d is outside [0, %d)", id, i, n)
		}
		row := rows[i*dim : (i+1)*dim]
		j := m.slot[id]
		if j == 0 {
			m.ids = append(m.ids, id)
			m.slot[id] = int32(len(m.ids))
			m.sums = append(m.sums, row...)
			continue
		}
		dst := m.sums[int(j-1)*dim : int(j)*dim]
		for k, x := range row {
			dst[k] = float32(dst[k] + x)
		}
	}
	return nil
}

// Take ends the merge in progress and returns its distinct ids, in the
// order of their first appearance, and their sums. The slices are reused
// by the next merge.
func (m *RowMerger) Take() ([]int32, []float32) {
	ids, sums := m.ids, m.sums
	m.reset()
	return ids, sums
}

// reset clears the slots of the merge in progress.
func (m *RowMerger) reset() {
	for _, id := range m.ids {
		m.slot[id] = 0
	}
	m.dim = 0
}
