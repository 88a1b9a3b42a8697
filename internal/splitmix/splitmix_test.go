package splitmix

import "testing"

// The published outputs of SplitMix64 seeded with 0 (the reference C code
// of splitmix64.c, Vigna) and one of seed 1234567.
func TestKnownAnswers(t *testing.T) {
	cases := []struct {
		seed, i, want uint64
	}{
		{0, 0, 0xE220A8397B1DCDAF},
		{0, 1, 0x6E789E6AA1B965F4},
		{0, 2, 0x06C45D188009454F},
		{1234567, 0, 6457827717110365317},
	}
	for _, tc := range cases {
		if got := At(tc.seed, tc.i); got != tc.want {
			t.Errorf("At(%d, %d) = %#x, want %#x", tc.seed, tc.i, got, tc.want)
		}
	}
	s := NewStream(0)
	for i, want := range []uint64{0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F} {
		if got := s.Next(); got != want {
			t.Errorf("Next #%d = %#x, want %#x", i, got, want)
		}
	}
}
