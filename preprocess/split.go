package preprocess

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"

	"github.com/mtlrank/mtlrank/internal/splitmix"
)

// Train/eval split. The rules are given in the package documentation; in
// short, with mix the splitmix64 finaliser, unit(h) = (h >> 11) / 2^53 and
// h(r) = mix(seed + (r+1)*golden) for data row r counted across the
// training inputs:
//
// random: row r goes to eval when unit(h(r)) < EvalPerc.
//
// random_by_user: a first pass counts the rows n of each user; the user
// sends e = #{k in 1..n : k/n <= EvalPerc} of them to eval (Merlin's
// cumulative per-user share). Which ones is decided by selection sampling
// (Knuth's Algorithm S) in input order: a row of a user with t earlier rows
// in this pass, s of them sent to eval, goes to eval when
// floor(h(r) * (n-t) / 2^64) < e-s. That picks a uniformly random e-subset
// of the user's rows, as Merlin's shuffle does, while keeping only four
// counters per user.
//
// by_user_holdout: every row of a user goes to eval when
// unit(mix(fnv1a64(user) ^ mix(seed))) < EvalPerc.
//
// temporal: row r goes to eval when its timestamp is >= the cut
// (Spec.SplitTemporalTimestamp), to train when it is earlier.
//
// user is the id's canonical string (a null id counts as the empty string).
//
// Rows removed by the row filters (filter.go) go to neither side; the
// random_by_user shares are taken of each user's remaining rows.

// mix64 is the splitmix64 finaliser: a bijective 64-bit hash.
func mix64(x uint64) uint64 { return splitmix.Mix(x) }

func unit(h uint64) float64 { return float64(h>>11) / (1 << 53) }

// rowHash is the seeded pseudo-random 64-bit value of data row r.
func rowHash(seed uint64, r int64) uint64 { return splitmix.At(seed, uint64(r)) }

// userEvalRows is the number of a user's n rows that random_by_user sends
// to eval: the k in 1..n with k/n <= perc, compared in float64 as Merlin's
// script compares its cumulative per-user share. Since k/n rounds
// monotonically in k, the k that qualify are exactly 1..e.
func userEvalRows(n int64, perc float64) int64 {
	e := int64(perc * float64(n))
	e = max(0, min(e, n))
	for e > 0 && float64(e)/float64(n) > perc {
		e--
	}
	for e < n && float64(e+1)/float64(n) <= perc {
		e++
	}
	return e
}

// userRows is one user's state for random_by_user.
type userRows struct {
	rows, eval int64 // counted in the first pass; eval = userEvalRows(rows)
	seen, sent int64 // rows met so far in the current pass, and those sent to eval
}

type splitter struct {
	strategy string
	perc     float64
	seed     uint64
	userName string
	userCol  int
	tsName   string
	tsCol    int
	cut      int64
	filter   *rowFilter // nil: no row is removed
	buf      []byte
	sideBuf  []uint8

	// random_by_user: the users of the counting pass, and where the
	// current pass stands. Decisions depend on the rows before, so every
	// pass must see all rows in order; next checks that.
	users map[string]int32 // canonical id -> index in counts
	per   []userRows
	total int64
	next  int64
}

// newSplitter returns the splitter of spec's split strategy and row
// filter, nil when there is neither.
func newSplitter(spec *Spec, filter *rowFilter) *splitter {
	if spec.SplitStrategy == SplitNone && filter == nil {
		return nil
	}
	return &splitter{strategy: spec.SplitStrategy, perc: spec.EvalPerc, seed: uint64(spec.Seed), userName: spec.UserID,
		tsName: spec.TimestampFeature, cut: spec.SplitTemporalTimestamp, filter: filter}
}

// splits reports whether s sends rows to an eval side (a splitter may only
// filter).
func (s *splitter) splits() bool { return s != nil && s.strategy != SplitNone }

// needsUser reports whether the split reads the user id column.
func (s *splitter) needsUser() bool {
	return s != nil && (s.strategy == SplitRandomByUser || s.strategy == SplitByUserHoldout)
}

// addColumns appends the columns the split reads that cols lacks.
func (s *splitter) addColumns(cols []string) []string {
	if s.needsUser() && !contains(cols, s.userName) {
		cols = append(cols, s.userName)
	}
	if s != nil && s.strategy == SplitTemporal && !contains(cols, s.tsName) {
		cols = append(cols, s.tsName)
	}
	return cols
}

// bind sets the positions of the split's columns in the scanned columns.
func (s *splitter) bind(pos map[string]int) {
	if s != nil {
		s.userCol, s.tsCol = pos[s.userName], pos[s.tsName]
	}
}

// keyString returns row i's canonical user id as a new string.
func (s *splitter) keyString(col *column, i int) string {
	switch {
	case col.isNull(i):
		return ""
	case col.kind == kindString:
		return strings.Clone(col.str[i])
	}
	return string(col.appendKey(nil, i))
}

// lookup returns the index of row i's user in s.per.
func (s *splitter) lookup(col *column, i int) (int32, bool) {
	var j int32
	var ok bool
	switch {
	case col.isNull(i):
		j, ok = s.users[""]
	case col.kind == kindString:
		j, ok = s.users[col.str[i]]
	default:
		s.buf = col.appendKey(s.buf[:0], i)
		j, ok = s.users[string(s.buf)] // no allocation: the key is only looked up
	}
	return j, ok
}

// userHash is fnv1a64 of row i's canonical user id.
func (s *splitter) userHash(col *column, i int) uint64 {
	switch {
	case col.isNull(i):
		return fnv1aString("")
	case col.kind == kindString:
		return fnv1aString(col.str[i])
	}
	s.buf = col.appendKey(s.buf[:0], i)
	return fnv1aBytes(s.buf)
}

// countUsers runs the first pass of random_by_user over files, reading
// only the user id column; other strategies need no pass.
func (s *splitter) countUsers(spec *Spec, files []inputFile) error {
	if s == nil || s.strategy != SplitRandomByUser {
		return nil
	}
	s.startCount()
	err := scan(spec, files, []string{s.userName}, "split", func(c *chunk) error {
		return s.countChunk(c, 0)
	})
	if err != nil {
		return fmt.Errorf("split: %w", err)
	}
	s.finishCount()
	return nil
}

// startCount clears the per-user counts.
func (s *splitter) startCount() {
	s.users, s.per, s.total = map[string]int32{}, s.per[:0], 0
}

// countChunk adds the rows of c, whose user ids are in c.cols[col], to the
// per-user counts.
func (s *splitter) countChunk(c *chunk, col int) error {
	uc := &c.cols[col]
	for i := 0; i < c.n; i++ {
		if s.filter.dropped(c.globalRow + int64(i)) {
			continue
		}
		if j, ok := s.lookup(uc, i); ok {
			s.per[j].rows++
			continue
		}
		if len(s.per) == math.MaxInt32 {
			return c.errAt(s.userName, i, "more than %d distinct users", math.MaxInt32)
		}
		s.users[s.keyString(uc, i)] = int32(len(s.per))
		s.per = append(s.per, userRows{rows: 1})
	}
	s.total += int64(c.n)
	return nil
}

// finishCount sets each user's eval share once every row is counted.
func (s *splitter) finishCount() {
	for j := range s.per {
		s.per[j].eval = userEvalRows(s.per[j].rows, s.perc)
	}
}

// beginPass readies s for a pass over all the training rows, in order.
func (s *splitter) beginPass() {
	if s == nil {
		return
	}
	s.next = 0
	for j := range s.per {
		s.per[j].seen, s.per[j].sent = 0, 0
	}
}

// endPass checks that the pass met every row of the counting pass.
func (s *splitter) endPass() error {
	if s == nil || s.strategy != SplitRandomByUser || s.next == s.total {
		return nil
	}
	return fmt.Errorf("split: the training inputs have %d rows now but had %d in the first pass; did they change while being read?", s.next, s.total)
}

// Sides of a row.
const (
	sideTrain   = 0
	sideEval    = 1
	sideDropped = 2 // removed by the row filters
)

// sides sets side[i] for each row of c. Chunks must come in input order,
// each once per pass (see beginPass).
func (s *splitter) sides(c *chunk, side []uint8) ([]uint8, error) {
	side = resize(side, c.n)
	clear(side)
	if s.filter != nil {
		for i := range side {
			if s.filter.dropped(c.globalRow + int64(i)) {
				side[i] = sideDropped
			}
		}
	}
	// set marks row i as eval (or train) unless it was filtered out.
	set := func(i int, eval bool) {
		if eval && side[i] != sideDropped {
			side[i] = sideEval
		}
	}
	switch s.strategy {
	case SplitRandom:
		for i := range side {
			set(i, unit(rowHash(s.seed, c.globalRow+int64(i))) < s.perc)
		}
	case SplitByUserHoldout:
		col := &c.cols[s.userCol]
		salt := mix64(s.seed)
		for i := range side {
			set(i, unit(mix64(s.userHash(col, i)^salt)) < s.perc)
		}
	case SplitTemporal:
		col := &c.cols[s.tsCol]
		for i := range side {
			if side[i] == sideDropped {
				continue
			}
			ts, err := timestampAt(col, c, s.tsName, i)
			if err != nil {
				return nil, err
			}
			set(i, ts >= s.cut)
		}
	case SplitRandomByUser:
		if c.globalRow != s.next {
			// A bug, not bad data: decisions depend on every earlier row.
			return nil, fmt.Errorf("split: chunk starting at row %d read out of order (expected row %d)", c.globalRow, s.next)
		}
		col := &c.cols[s.userCol]
		for i := range side {
			if side[i] == sideDropped {
				continue
			}
			j, ok := s.lookup(col, i)
			if !ok || s.per[j].seen == s.per[j].rows {
				return nil, c.errAt(s.userName, i, "user %q has more rows than in the first pass; did the input change while being read?", s.keyString(col, i))
			}
			u := &s.per[j]
			pick, _ := bits.Mul64(rowHash(s.seed, c.globalRow+int64(i)), uint64(u.rows-u.seen))
			eval := int64(pick) < u.eval-u.sent
			set(i, eval)
			u.seen++
			if eval {
				u.sent++
			}
		}
		s.next += int64(c.n)
	}
	return side, nil
}

// trainMask returns, in buf, which rows of c are on the train side; nil
// (all rows) when s is nil.
func (s *splitter) trainMask(c *chunk, buf []bool) ([]bool, error) {
	if s == nil {
		return nil, nil
	}
	side, err := s.sides(c, s.sideBuf)
	if err != nil {
		return nil, err
	}
	s.sideBuf = side
	buf = resize(buf, c.n)
	for i := range buf {
		buf[i] = side[i] == sideTrain
	}
	return buf, nil
}

// timestampAt returns row i's timestamp: an integer, or a number (CSV
// text) with no fractional part.
func timestampAt(col *column, c *chunk, name string, i int) (int64, error) {
	if col.isNull(i) {
		return 0, c.errAt(name, i, "the timestamp is null")
	}
	var f float64
	switch col.kind {
	case kindInt:
		return col.i64[i], nil
	case kindFloat:
		f = col.f64[i]
	default:
		t := strings.TrimSpace(col.str[i])
		if v, err := strconv.ParseInt(t, 10, 64); err == nil {
			return v, nil
		}
		v, err := strconv.ParseFloat(t, 64)
		if err != nil {
			return 0, c.errAt(name, i, "timestamp %q is not a number", col.str[i])
		}
		f = v
	}
	if f != math.Trunc(f) || math.IsNaN(f) || math.Abs(f) >= 1<<63 {
		return 0, c.errAt(name, i, "timestamp %v is not an integer", f)
	}
	return int64(f), nil
}
