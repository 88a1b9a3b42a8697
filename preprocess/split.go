package preprocess

// Train/eval split.
//
// random: data row r (0-based, counted across the training inputs in order)
// goes to eval when unit(mix(seed + (r+1)*golden)) < EvalPerc.
// random_by_user: every row of a user goes to eval when
// unit(mix(fnv1a64(user) ^ mix(seed))) < EvalPerc, user being the id's
// canonical string (a null id counts as the empty string).
// mix is the splitmix64 finaliser and unit(h) = (h >> 11) / 2^53.

const golden64 = 0x9E3779B97F4A7C15

// mix64 is the splitmix64 finaliser: a bijective 64-bit hash.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	x ^= x >> 31
	return x
}

func unit(h uint64) float64 { return float64(h>>11) / (1 << 53) }

type splitter struct {
	strategy string
	perc     float64
	seed     uint64
	userCol  int
	buf      []byte
}

func newSplitter(spec *Spec) *splitter {
	if spec.SplitStrategy == SplitNone {
		return nil
	}
	return &splitter{strategy: spec.SplitStrategy, perc: spec.EvalPerc, seed: uint64(spec.Seed)}
}

// isEval reports whether row i of c goes to the eval side.
func (s *splitter) isEval(c *chunk, i int) bool {
	if s.strategy == SplitRandomByUser {
		col := &c.cols[s.userCol]
		var h uint64
		switch {
		case col.isNull(i):
			h = fnv1aString("")
		case col.kind == kindString:
			h = fnv1aString(col.str[i])
		default:
			s.buf = col.appendKey(s.buf[:0], i)
			h = fnv1aBytes(s.buf)
		}
		return unit(mix64(h^mix64(s.seed))) < s.perc
	}
	r := uint64(c.globalRow + int64(i))
	return unit(mix64(s.seed+(r+1)*golden64)) < s.perc
}

// trainMask returns, in buf, which rows of c are on the train side; nil
// (all rows) when s is nil.
func (s *splitter) trainMask(c *chunk, buf []bool) []bool {
	if s == nil {
		return nil
	}
	buf = resize(buf, c.n)
	for i := range buf {
		buf[i] = !s.isEval(c, i)
	}
	return buf
}
