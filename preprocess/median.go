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
//
// Columns with at most medianKeepMax non-null values (most datasets that
// fit on one machine's disk comfortably) keep their values during the fit
// pass and need no further pass.

// medianCollectMax bounds the values collected per middle rank
// (8 MiB of float64); a variable so tests can force the histogram levels.
var medianCollectMax int64 = 1 << 20

// medianKeepMax bounds the values kept per column during the fit pass
// (2 MiB of float64).
var medianKeepMax int64 = 1 << 18

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
	hist    []int64   // top-digit histogram of the fit pass
	kept    []float64 // every value, while n <= medianKeepMax
	over    bool      // more than medianKeepMax values: kept is dropped
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
	if !m.over {
		if m.n <= medianKeepMax {
			m.kept = append(m.kept, vals...)
		} else {
			m.over, m.kept = true, nil
		}
	}
}

// start locates both middle ranks in the top-digit histogram. It reports
// whether more passes are needed.
func (m *medianSel) start() bool {
	if m.n == 0 {
		return false
	}
	ranks := [2]int64{(m.n - 1) / 2, m.n / 2}
	if !m.over {
		lo := selectKth(m.kept, int(ranks[0]))
		hi := lo
		if ranks[1] != ranks[0] { // the next rank is the smallest value above
			hi = m.kept[ranks[1]]
			for _, v := range m.kept[ranks[1]:] {
				hi = math.Min(hi, v)
			}
		}
		m.targets[0] = selTarget{done: true, value: lo, same: -1}
		m.targets[1] = selTarget{done: true, value: hi, same: -1}
		m.kept, m.hist = nil, nil
		return false
	}
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

// selectKth reorders a so that a[k] holds the value of rank k, smaller or
// equal values before it and greater or equal ones after (quickselect with
// a median-of-three pivot; sorting when the partitions stay unbalanced).
func selectKth(a []float64, k int) float64 {
	lo, hi := 0, len(a)-1
	for budget := 2 * bitsLen(len(a)); hi > lo; budget-- {
		if budget == 0 {
			sort.Float64s(a[lo : hi+1])
			break
		}
		mid := lo + (hi-lo)/2
		// Order a[lo], a[mid], a[hi] and use the middle one as the pivot.
		if a[mid] < a[lo] {
			a[mid], a[lo] = a[lo], a[mid]
		}
		if a[hi] < a[lo] {
			a[hi], a[lo] = a[lo], a[hi]
		}
		if a[hi] < a[mid] {
			a[hi], a[mid] = a[mid], a[hi]
		}
		p := a[mid]
		i, j := lo, hi
		for i <= j {
			for a[i] < p {
				i++
			}
			for a[j] > p {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return a[k] // j < k < i: a[k] equals the pivot
		}
	}
	return a[k]
}

func bitsLen(n int) int {
	b := 1
	for n > 1 {
		n >>= 1
		b++
	}
	return b
}

func (m *medianSel) result() float64 {
	return (m.targets[0].value + m.targets[1].value) / 2
}

// fitMedians runs the refinement passes for the median-filled columns.
func fitMedians(spec *Spec, files []inputFile, conts []*contAcc, keep *splitter) error {
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
		need = keep.addColumns(need)
		pos := indexOf(need)
		var ks *splitter
		if keep != nil {
			// The copy shares keep's per-user counts and row filter;
			// passes run one at a time.
			k := *keep
			k.bind(pos)
			ks = &k
		}
		var mask []bool
		var vals []float64
		ks.beginPass()
		err := scan(spec, files, need, "median", func(c *chunk) error {
			var err error
			if mask, err = ks.trainMask(c, mask); err != nil {
				return err
			}
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
		if err == nil {
			err = ks.endPass()
		}
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
	return nil
}
