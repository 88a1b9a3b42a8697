package preprocess

import (
	"fmt"
	"math"
)

// Row filters of the training inputs, as Merlin's quick-start script runs
// them before its split: the filter query first, then user and item
// frequency filtering in rounds. One pass reads the columns they need; the
// outcome is a bitmap of removed rows (one bit per input row) that the
// split, the fit and the transform consult. Frequency filtering keeps a
// user index and an item index per row in memory (8 bytes a row) while the
// rounds run.

// FilterReport says what the row filters removed from the training rows.
type FilterReport struct {
	Rows         int64 `json:"rows"`
	RemovedQuery int64 `json:"removed_by_query"`
	RemovedFreq  int64 `json:"removed_by_frequency"`
	// Rounds of frequency filtering run; Stable says the last one removed
	// nothing (otherwise the round limit stopped them, and some users or
	// items may be outside the bounds).
	Rounds        int   `json:"frequency_rounds,omitempty"`
	Stable        bool  `json:"frequency_stable,omitempty"`
	RemainingRows int64 `json:"remaining_rows"`
}

// rowFilter records which training rows the filters removed.
type rowFilter struct {
	drop []uint64 // bit r: global row r is removed
	FilterReport
}

func (f *rowFilter) dropped(r int64) bool {
	return f != nil && f.drop[r>>6]&(1<<(r&63)) != 0
}

func (f *rowFilter) remove(r int64) { f.drop[r>>6] |= 1 << (r & 63) }

func (s *Spec) filtersUsers() bool { return s.MinUserFreq > 0 || s.MaxUserFreq > 0 }
func (s *Spec) filtersItems() bool { return s.MinItemFreq > 0 || s.MaxItemFreq > 0 }

// queryFilter returns a splitter that only applies spec's filter query
// to inputs (nil without a query): Merlin's script applies the query to
// every input it reads (the eval and test data too), the frequency filters
// to the training data only.
func queryFilter(spec *Spec, inputs []string) (*splitter, error) {
	if spec.FilterQuery == "" {
		return nil, nil
	}
	files, err := expandInputs(inputs, spec.InputFormat)
	if err != nil {
		return nil, fmt.Errorf("preprocess: %w", err)
	}
	q := Spec{FilterQuery: spec.FilterQuery, InputFormat: spec.InputFormat, CSVSep: spec.CSVSep, CSVNAValues: spec.CSVNAValues,
		CSVHeader: spec.CSVHeader, CSVColumnNames: spec.CSVColumnNames, ChunkRows: spec.ChunkRows, Allocator: spec.Allocator}
	f, err := buildFilter(&q, files)
	if err != nil {
		return nil, err
	}
	return newSplitter(&q, f), nil
}

// buildFilter runs spec's row filters over the training files; nil when
// spec has none.
func buildFilter(spec *Spec, files []inputFile) (*rowFilter, error) {
	users, items := spec.filtersUsers(), spec.filtersItems()
	if spec.FilterQuery == "" && !users && !items {
		return nil, nil
	}
	var q *queryEval
	var cols []string
	if spec.FilterQuery != "" {
		root, err := parseQuery(spec.FilterQuery)
		if err != nil {
			return nil, err
		}
		q = &queryEval{root: root}
		cols = root.columns(cols)
	}
	if users && !contains(cols, spec.UserID) {
		cols = append(cols, spec.UserID)
	}
	if items && !contains(cols, spec.ItemID) {
		cols = append(cols, spec.ItemID)
	}
	pos := indexOf(cols)
	if q != nil {
		q.root.bind(pos)
	}
	f := &rowFilter{}
	// Per row: the user and item index (-1: removed by the query; nullKey).
	var userIdx, itemIdx []int32
	userKeys, itemKeys := newKeyIndex(spec.UserID), newKeyIndex(spec.ItemID)
	err := scan(spec, files, cols, "filter", func(c *chunk) error {
		for i := 0; i < c.n; i++ {
			r := c.globalRow + int64(i)
			for int64(len(f.drop))*64 <= r {
				f.drop = append(f.drop, 0)
			}
			keep := true
			if q != nil {
				var err error
				if keep, err = q.eval(q.root, c, i); err != nil {
					return err
				}
			}
			if !keep {
				f.remove(r)
				f.RemovedQuery++
			}
			for _, k := range []struct {
				on  bool
				idx *[]int32
				ix  *keyIndex
			}{{users, &userIdx, userKeys}, {items, &itemIdx, itemKeys}} {
				if !k.on {
					continue
				}
				v := int32(-1)
				if keep {
					var err error
					if v, err = k.ix.index(c, pos[k.ix.name], i); err != nil {
						return err
					}
				}
				*k.idx = append(*k.idx, v)
			}
		}
		f.Rows += int64(c.n)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	if users || items {
		rounds := max(spec.FilterRounds, 1)
		for f.Rounds < rounds {
			f.Rounds++
			removed := int64(0)
			if users {
				removed += f.byFrequency(userIdx, len(userKeys.ids), spec.MinUserFreq, spec.MaxUserFreq)
			}
			if items {
				removed += f.byFrequency(itemIdx, len(itemKeys.ids), spec.MinItemFreq, spec.MaxItemFreq)
			}
			f.RemovedFreq += removed
			if removed == 0 {
				f.Stable = true
				break
			}
		}
	}
	f.RemainingRows = f.Rows - f.RemovedQuery - f.RemovedFreq
	return f, nil
}

// byFrequency counts the remaining rows of each key (idx[r] is row r's
// key) and removes the rows of the keys with fewer than lo or (when hi > 0)
// more than hi rows. It returns the number of rows removed.
func (f *rowFilter) byFrequency(idx []int32, keys int, lo, hi int64) int64 {
	counts := make([]int64, keys)
	for r, k := range idx {
		if k >= 0 && !f.dropped(int64(r)) {
			counts[k]++
		}
	}
	var removed int64
	for r, k := range idx {
		if k == -1 || f.dropped(int64(r)) {
			continue
		}
		if k == nullKey {
			f.remove(int64(r))
			removed++
			continue
		}
		if n := counts[k]; n < lo || hi > 0 && n > hi {
			f.remove(int64(r))
			removed++
		}
	}
	return removed
}

// nullKey is the index of a null id: Merlin's value counts leave nulls
// out and its inner merge then drops their rows, so a frequency filter
// removes every row with a null id.
const nullKey = -2

// keyIndex numbers the distinct values (canonical strings) of one column.
type keyIndex struct {
	name string
	ids  map[string]int32
	buf  []byte
}

func newKeyIndex(name string) *keyIndex { return &keyIndex{name: name, ids: map[string]int32{}} }

func (k *keyIndex) index(c *chunk, col, i int) (int32, error) {
	cl := &c.cols[col]
	if cl.isNull(i) {
		return nullKey, nil
	}
	k.buf = cl.appendKey(k.buf[:0], i)
	if id, ok := k.ids[string(k.buf)]; ok {
		return id, nil
	}
	if len(k.ids) == math.MaxInt32 {
		return 0, c.errAt(k.name, i, "more than %d distinct values", math.MaxInt32)
	}
	id := int32(len(k.ids))
	k.ids[string(k.buf)] = id
	return id, nil
}
