// Package rankkey packs (score, label) pairs into uint64 keys that sort by
// score, sorts them in linear time and computes the exact ROC-AUC over
// them. The evaluation metrics (mtl/metrics) and the synthetic data's
// oracle (loader/synth) share it, so that an oracle AUC and a model's AUC
// are the same computation.
package rankkey

import (
	"math"
	"slices"
)

// Pack returns the key of a scored label: an order-preserving image of the
// score in the high 32 bits (-0 and +0 map to the same value), the label in
// bit 0. A NaN score gets a key above +Inf; callers that must reject NaN
// check for it first.
func Pack(score float32, positive bool) uint64 {
	k := uint64(orderedBits(score)) << 32
	if positive {
		k |= 1
	}
	return k
}

// orderedBits maps a float32 to a uint32 whose unsigned order is the order
// of the floats.
func orderedBits(f float32) uint32 {
	if f == 0 {
		return 0x80000000
	}
	b := math.Float32bits(f)
	if b&0x80000000 != 0 {
		return ^b
	}
	return b | 0x80000000
}

// Sort sorts keys ascending by their high 32 bits (the score); the order
// among equal scores is unspecified, which no rank statistic depends on.
// tmp is scratch of at least len(keys); the sorted keys are in either
// slice, which Sort returns.
func Sort(keys, tmp []uint64) []uint64 {
	if len(keys) < 512 {
		slices.Sort(keys)
		return keys
	}
	// LSD radix sort of the high half, 8 bits per pass: O(n), much faster
	// than a comparison sort for millions of rows.
	src, dst := keys, tmp[:len(keys)]
	var count [256]int
	for shift := uint(32); shift < 64; shift += 8 {
		clear(count[:])
		for _, k := range src {
			count[(k>>shift)&0xff]++
		}
		if count[(src[0]>>shift)&0xff] == len(src) {
			continue // every key has the same digit: the pass would be a copy
		}
		pos := 0
		for i, c := range count {
			count[i] = pos
			pos += c
		}
		for _, k := range src {
			d := (k >> shift) & 0xff
			dst[count[d]] = k
			count[d]++
		}
		src, dst = dst, src
	}
	return src
}

// AUC returns the ROC-AUC of keys sorted by Sort — the probability that a
// random positive scores above a random negative, ties counting one half —
// and the class counts. The AUC is NaN when a class is absent.
func AUC(sorted []uint64) (auc float64, pos, neg int64) {
	// Ascending pass: every positive in a group of tied scores is ranked
	// above all negatives of lower score and half of the tied negatives.
	var pairs float64 // 2 * correctly ordered (positive, negative) pairs
	for i := 0; i < len(sorted); {
		s := sorted[i] >> 32
		var p, n int64
		j := i
		for ; j < len(sorted) && sorted[j]>>32 == s; j++ {
			if sorted[j]&1 == 1 {
				p++
			} else {
				n++
			}
		}
		pairs += float64(p) * float64(2*neg+n)
		pos += p
		neg += n
		i = j
	}
	if pos == 0 || neg == 0 {
		return math.NaN(), pos, neg
	}
	return pairs / (2 * float64(pos) * float64(neg)), pos, neg
}
