// Package splitmix is the one SplitMix64 (Steele, Lea and Flood, "Fast
// splittable pseudorandom number generators", 2014) of the Go code: the
// dropout hash of every device, the reference device, the per-step seed
// mixing of the layers, preprocess's row splits and the synthetic data's
// random streams all use it, so that they cannot drift apart. The C and
// CUDA kernels (kernels/cpu_kernels.c, csrc/elementwise.cu) carry their own
// copies, held bit-identical to this one by the device comparison tests.
package splitmix

// Gamma is SplitMix64's increment, the odd integer nearest 2^64/phi.
const Gamma = 0x9E3779B97F4A7C15

// Mix is SplitMix64's finaliser (Stafford's Mix13 variant): a bijective
// 64-bit hash.
func Mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// At is output i (from 0) of the SplitMix64 stream seeded with seed:
// Mix(seed + (i+1)*Gamma). It needs no state, so any split of the work
// reproduces the same values from (seed, i).
func At(seed, i uint64) uint64 { return Mix(seed + (i+1)*Gamma) }

// Stream is a SplitMix64 generator; its zero value is the stream seeded
// with 0.
type Stream struct{ state uint64 }

// NewStream returns the stream seeded with seed.
func NewStream(seed uint64) Stream { return Stream{state: seed} }

// Next returns the stream's next output.
func (s *Stream) Next() uint64 {
	s.state += Gamma
	return Mix(s.state)
}
