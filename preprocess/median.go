package preprocess

import (
	"fmt"
	"math"
	"sort"
)

// Exact median in bounded memory.
//
// Each float64 is mapped to a uint64 key whose unsigned order is the numeric
// order. The fit pass counts the top 16 bits of every key (a 65536-bucket
// histogram), which locates the bucket holding each middle rank. Each
// further pass over the column either collects the values of that bucket,
// when it holds at most medianCollectMax values, and selects exactly, or
// histograms the next 16 bits inside it. After at most three more passes the
// 64-bit key, hence the value, is known exactly. The median of an even count
// is the mean of the two middle values (pandas / cudf semantics).

// medianCollectMax bounds the values collected per middle rank
// (8 MiB of float64); a variable so tests can force the histogram levels.
var medianCollectMax int64 = 1 << 20

const medianDigitBits = 16

func sortKey(v float64) uint64 {
	b := math.Float64bits(v)
	if b>>63 == 1 {
		return ^b
	}
	return b | 1<<63
}

func fromSortKey(k uint64) float64 {
	if k>>63 == 1 {
		return math.Float64frombits(k &^ (1 << 63))
	}
	return math.Float64frombits(^k)
}

// medianSel finds the values of ranks (n-1)/2 and n/2 among all counted values.
type medianSel struct {
	n       int64
	hist    []int64 // top-digit histogram of the fit pass
	targets [2]selTarget
}

type selTarget struct {
	rank    int64  // rank among the values whose key starts with prefix
	prefix  uint64 // known high bits of the key
	bits    int    // number of known bits
	size    int64  // number of values with that prefix
	done    bool
	value   float64
	hist    []int64
	collect []float64
	same    int // index of an identical earlier target, or -1
}

func newMedianSel() *medianSel {
	return &medianSel{hist: make([]int64, 1<<medianDigitBits)}
}

// count is the fit-pass step: histogram the top digit.
func (m *medianSel) count(vals []float64) {
	for _, v := range vals {
		m.hist[sortKey(v)>>(64-medianDigitBits)]++
	}
	m.n += int64(len(vals))
}

// start locates both middle ranks in the top-digit histogram. It reports
// whether more passes are needed.
func (m *medianSel) start() bool {
	if m.n == 0 {
		return false
	}
	ranks := [2]int64{(m.n - 1) / 2, m.n / 2}
	for t := range m.targets {
		st := &m.targets[t]
		*st = selTarget{rank: ranks[t], same: -1}
		st.descend(m.hist)
	}
	m.hist = nil
	return m.pending()
}

// descend picks the digit holding the target rank from hist and moves one
// level down.
func (st *selTarget) descend(hist []int64) {
	r := st.rank
	for d, c := range hist {
		if r < c {
			st.prefix = st.prefix<<medianDigitBits | uint64(d)
			st.bits += medianDigitBits
			st.rank, st.size = r, c
			break
		}
		r -= c
	}
	if st.bits == 64 {
		st.done, st.value = true, fromSortKey(st.prefix)
	}
}

func (m *medianSel) pending() bool {
	for t := range m.targets {
		if !m.targets[t].done {
			return true
		}
	}
	return false
}

// beginPass prepares the per-target buffers of one refinement pass.
func (m *medianSel) beginPass() {
	for t := range m.targets {
		st := &m.targets[t]
		st.same = -1
		if st.done {
			continue
		}
		for u := 0; u < t; u++ {
			o := &m.targets[u]
			if !o.done && o.prefix == st.prefix && o.bits == st.bits {
				st.same = u
			}
		}
		if st.same >= 0 {
			continue
		}
		if st.size <= medianCollectMax {
			st.collect = make([]float64, 0, st.size)
			st.hist = nil
		} else {
			st.collect = nil
			st.hist = make([]int64, 1<<medianDigitBits)
		}
	}
}

// refine is one refinement pass step over a chunk's values.
func (m *medianSel) refine(vals []float64) {
	for t := range m.targets {
		st := &m.targets[t]
		if st.done || st.same >= 0 {
			continue
		}
		shift := uint(64 - st.bits)
		for _, v := range vals {
			k := sortKey(v)
			if k>>shift != st.prefix {
				continue
			}
			if st.hist == nil {
				st.collect = append(st.collect, v)
			} else {
				st.hist[(k>>(shift-medianDigitBits))&(1<<medianDigitBits-1)]++
			}
		}
	}
}

// endPass resolves what the pass determined.
func (m *medianSel) endPass() error {
	for t := range m.targets {
		st := &m.targets[t]
		if st.done {
			continue
		}
		src := st
		if st.same >= 0 {
			src = &m.targets[st.same]
		}
		if src.hist == nil {
			if int64(len(src.collect)) != st.size {
				return fmt.Errorf("median: the data changed between passes (%d values in a bucket, %d expected)", len(src.collect), st.size)
			}
			if st.same < 0 {
				sort.Float64s(st.collect)
			}
			st.done, st.value = true, src.collect[st.rank]
			continue
		}
		var total int64
		for _, c := range src.hist {
			total += c
		}
		if total != st.size {
			return fmt.Errorf("median: the data changed between passes (%d values in a bucket, %d expected)", total, st.size)
		}
		st.descend(src.hist)
	}
	for t := range m.targets {
		m.targets[t].hist, m.targets[t].collect = nil, nil
	}
	return nil
}

func (m *medianSel) result() float64 {
	return (m.targets[0].value + m.targets[1].value) / 2
}

// fitMedians runs the refinement passes for the median-filled columns.
func fitMedians(spec *Spec, files []inputFile, cols []string, conts []*contAcc, keep *splitter) error {
	var active []*contAcc
	for _, a := range conts {
		if a.median != nil && a.median.start() {
			active = append(active, a)
		}
	}
	for pass := 0; len(active) > 0; pass++ {
		if pass > 64/medianDigitBits {
			return fmt.Errorf("median: no convergence") // cannot happen: 64 bits are known after 3 passes
		}
		for _, a := range active {
			a.median.beginPass()
		}
		// Read only the columns this pass needs (and the user id for the split).
		var need []string
		for _, a := range active {
			need = append(need, a.op.Name)
		}
		if keep != nil && keep.strategy == SplitRandomByUser && !contains(need, spec.UserID) {
			need = append(need, spec.UserID)
		}
		pos := indexOf(need)
		var ks *splitter
		if keep != nil {
			k := *keep
			k.userCol = pos[spec.UserID]
			ks = &k
		}
		var mask []bool
		var vals []float64
		err := scan(spec, files, need, "median", func(c *chunk) error {
			mask = ks.trainMask(c, mask)
			for _, a := range active {
				col := &c.cols[pos[a.op.Name]]
				vals = vals[:0]
				for i := 0; i < c.n; i++ {
					if mask != nil && !mask[i] {
						continue
					}
					v, null, err := numberAt(c, col, i, a.op.Name)
					if err != nil {
						return err
					}
					if !null {
						vals = append(vals, v)
					}
				}
				a.median.refine(vals)
			}
			return nil
		})
		if err != nil {
			return err
		}
		next := active[:0]
		for _, a := range active {
			if err := a.median.endPass(); err != nil {
				return fmt.Errorf("column %q: %w", a.op.Name, err)
			}
			if a.median.pending() {
				next = append(next, a)
			}
		}
		active = next
	}
	_ = cols
	return nil
}
