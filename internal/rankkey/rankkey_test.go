package rankkey

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pairAUC counts (positive, negative) pairs directly: O(n^2), independent
// of the keys and the sort.
func pairAUC(scores []float32, labels []bool) float64 {
	var wins float64
	var pairs int
	for i, si := range scores {
		if !labels[i] {
			continue
		}
		for j, sj := range scores {
			if labels[j] {
				continue
			}
			pairs++
			switch {
			case si > sj:
				wins++
			case si == sj:
				wins += 0.5
			}
		}
	}
	if pairs == 0 {
		return math.NaN()
	}
	return wins / float64(pairs)
}

func auc(scores []float32, labels []bool) float64 {
	keys := make([]uint64, len(scores))
	for i, s := range scores {
		keys[i] = Pack(s, labels[i])
	}
	a, _, _ := AUC(Sort(keys, make([]uint64, len(keys))))
	return a
}

func TestAUCMatchesPairCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	// sizes on both sides of the comparison-sort cutoff; few levels force ties
	for _, tc := range []struct{ n, levels int }{{2, 0}, {10, 3}, {511, 0}, {512, 4}, {3000, 0}, {3000, 7}} {
		scores := make([]float32, tc.n)
		labels := make([]bool, tc.n)
		for i := range scores {
			if tc.levels > 0 {
				scores[i] = float32(rng.IntN(tc.levels)) - 2
			} else {
				// both signs, exponents from 1e-3 to 1e3
				scores[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(7)-3)))
			}
			labels[i] = rng.Float64() < 0.3+0.1*float64(scores[i])
		}
		labels[0], labels[1] = true, false
		assert.InDelta(t, pairAUC(scores, labels), auc(scores, labels), 1e-12, "n %d levels %d", tc.n, tc.levels)
	}
}

func TestAUCHandComputed(t *testing.T) {
	// scores 1,2,3,4 labelled -,+,-,+: (2>1), (4>1), (4>3) win, (2<3) loses
	assert.InDelta(t, 0.75, auc([]float32{1, 2, 3, 4}, []bool{false, true, false, true}), 1e-15)
	assert.InDelta(t, 0.5, auc([]float32{1, 1}, []bool{false, true}), 1e-15)
	negZero := float32(math.Copysign(0, -1))
	assert.InDelta(t, 0.5, auc([]float32{negZero, 0}, []bool{false, true}), 1e-15, "-0 and +0 tie")
	assert.InDelta(t, 1, auc([]float32{-3, -1, 0.5, 2}, []bool{false, false, true, true}), 1e-15)
	inf := float32(math.Inf(1))
	assert.InDelta(t, 1, auc([]float32{-inf, inf}, []bool{false, true}), 1e-15)
	assert.True(t, math.IsNaN(auc([]float32{1, 2}, []bool{true, true})))
	assert.True(t, math.IsNaN(auc(nil, nil)))
}

func TestSortOrdersByScore(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	scores := make([]float32, 5000)
	keys := make([]uint64, len(scores))
	for i := range scores {
		scores[i] = float32(rng.NormFloat64() * 100)
		keys[i] = Pack(scores[i], i%3 == 0)
	}
	sorted := Sort(keys, make([]uint64, len(keys)))
	require.Len(t, sorted, len(scores))
	prev := float32(math.Inf(-1))
	for _, k := range sorted {
		b := uint32(k >> 32)
		// invert orderedBits
		if b&0x80000000 != 0 {
			b &^= 0x80000000
		} else {
			b = ^b
		}
		s := math.Float32frombits(b)
		require.GreaterOrEqual(t, s, prev)
		prev = s
	}
}
