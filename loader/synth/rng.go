package synth

import (
	"hash/fnv"
	"math"

	"github.com/mtlrank/mtlrank/internal/splitmix"
)

// Random numbers come from splitmix64 so that the row stream is defined by
// this package alone (not by a standard-library algorithm that may change)
// and any row can be generated from (seed, row index) without state.

// golden is splitmix64's increment.
const golden = splitmix.Gamma

// mix64 is the splitmix64 finalizer: a bijective 64-bit mixing function.
func mix64(z uint64) uint64 { return splitmix.Mix(z) }

// hashString maps a name to 64 well-mixed bits.
func hashString(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return mix64(h.Sum64())
}

// hashKey combines a parent key with a name.
func hashKey(parent uint64, name string) uint64 {
	return mix64(parent ^ hashString(name))
}

// rng is a splitmix64 stream.
type rng struct {
	s uint64
	// spare holds the second normal of a Box-Muller pair.
	spare    float64
	hasSpare bool
}

func newRNG(seed uint64) rng { return rng{s: mix64(seed)} }

func (r *rng) next() uint64 {
	r.s += golden
	return mix64(r.s)
}

// float64 returns a uniform number in (0, 1): never 0, so that it can be fed
// to a logarithm.
func (r *rng) float64() float64 {
	return (float64(r.next()>>11) + 0.5) / (1 << 53)
}

// intn returns a uniform integer in [0, n) for n <= 2^32 by multiply-shift,
// which is unbiased to within n/2^32.
func (r *rng) intn(n uint64) uint64 {
	return ((r.next() >> 32) * n) >> 32
}

// int63n returns a uniform integer in [0, n) for any positive n (rejection
// sampling for exactness at large n).
func (r *rng) int63n(n uint64) uint64 {
	if n <= 1<<32 {
		return r.intn(n)
	}
	limit := math.MaxUint64 - math.MaxUint64%n
	for {
		v := r.next()
		if v < limit {
			return v % n
		}
	}
}

// normal returns a standard normal number (Box-Muller, both values used).
func (r *rng) normal() float64 {
	if r.hasSpare {
		r.hasSpare = false
		return r.spare
	}
	u1, u2 := r.float64(), r.float64()
	rad := math.Sqrt(-2 * math.Log(u1))
	s, c := math.Sincos(2 * math.Pi * u2)
	r.spare, r.hasSpare = rad*s, true
	return rad * c
}

// uniformUnitVar fills dst with numbers uniform on [-sqrt(3), sqrt(3)] (mean 0,
// variance 1) derived from key, four 16-bit components per hash. This is how
// latent vectors and weight vectors are computed on the fly.
func uniformUnitVar(key uint64, dst []float64) {
	const scale = 2 * 1.7320508075688772 / 65536
	for i := 0; i < len(dst); i += 4 {
		h := mix64(key + uint64(i/4+1)*golden)
		for j := 0; j < 4 && i+j < len(dst); j++ {
			bits := (h >> (16 * j)) & 0xffff
			dst[i+j] = (float64(bits)+0.5)*scale - 1.7320508075688772
		}
	}
}

// gaussianVec fills dst with standard normal numbers derived from key.
func gaussianVec(key uint64, dst []float64) {
	r := newRNG(key)
	for i := range dst {
		dst[i] = r.normal()
	}
}
