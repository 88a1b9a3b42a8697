package synth

import (
	"math"
)

// zipfTable samples ranks 0..K-1 with P(rank k) proportional to (k+1)^-s in
// O(1) with Walker's alias method. Probabilities are kept as 32-bit
// thresholds so that one 64-bit random number gives both the column (high
// bits) and the coin (low bits).
type zipfTable struct {
	k      int
	thresh []uint32 // accept column i when the coin < thresh[i]
	alias  []int32
	// share of the most popular rank, 1/H(K, s), kept for tests and docs.
	top float64
}

func newZipfTable(k int, s float64) *zipfTable {
	w := make([]float64, k)
	var sum float64
	// Sum from the smallest weight up to keep rounding low.
	for i := k - 1; i >= 0; i-- {
		w[i] = math.Pow(float64(i+1), -s)
		sum += w[i]
	}
	t := &zipfTable{k: k, thresh: make([]uint32, k), alias: make([]int32, k), top: w[0] / sum}
	// Vose's stable variant of the alias method.
	scaled := make([]float64, k)
	small := make([]int32, 0, k)
	large := make([]int32, 0, k)
	for i := range w {
		scaled[i] = w[i] / sum * float64(k)
		if scaled[i] < 1 {
			small = append(small, int32(i))
		} else {
			large = append(large, int32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		l := small[len(small)-1]
		small = small[:len(small)-1]
		g := large[len(large)-1]
		t.thresh[l] = probToThresh(scaled[l])
		t.alias[l] = g
		scaled[g] -= 1 - scaled[l]
		if scaled[g] < 1 {
			large = large[:len(large)-1]
			small = append(small, g)
		}
	}
	// Leftovers are 1 up to rounding: always accept.
	for _, i := range large {
		t.thresh[i], t.alias[i] = math.MaxUint32, i
	}
	for _, i := range small {
		t.thresh[i], t.alias[i] = math.MaxUint32, i
	}
	return t
}

func probToThresh(p float64) uint32 {
	if p >= 1 {
		return math.MaxUint32
	}
	if p <= 0 {
		return 0
	}
	return uint32(p * (1 << 32))
}

// sample returns a rank in [0, K).
func (t *zipfTable) sample(u uint64) int {
	col := int(((u >> 32) * uint64(t.k)) >> 32)
	if uint32(u) < t.thresh[col] {
		return col
	}
	return int(t.alias[col])
}

// permutation maps a popularity rank to an id offset in [0, n) with the
// bijection r -> (a*r + b) mod n, gcd(a, n) = 1, so that popular ids are
// spread over the whole domain instead of sitting at its start.
type permutation struct {
	n, a, b uint64
}

func newPermutation(n uint64, key uint64) permutation {
	if n <= 1 {
		return permutation{n: 1, a: 1}
	}
	a := 1 + mix64(key)%(n-1)
	for gcd(a, n) != 1 {
		a++
		if a >= n {
			a = 1
		}
	}
	return permutation{n: n, a: a, b: mix64(key+golden) % n}
}

// apply maps r in [0, n) to [0, n). n <= 2^31 keeps a*r below 2^62.
func (p permutation) apply(r uint64) uint64 { return (p.a*r + p.b) % p.n }

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
