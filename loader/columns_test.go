package loader

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAllBinary checks the branch-free label scan against the per-value rule
// it replaces, on the values where bit tricks go wrong: signed zeros, NaN,
// subnormals and the neighbours of 1.
func TestAllBinary(t *testing.T) {
	one := math.Float32bits(1)
	cases := []struct {
		name string
		v    []float32
		want bool
	}{
		{"empty", nil, true},
		{"zeros and ones", []float32{0, 1, 1, 0, 0}, true},
		{"negative zero", []float32{1, float32(math.Copysign(0, -1))}, true},
		{"two", []float32{0, 2}, false},
		{"minus one", []float32{-1, 1}, false},
		{"nan", []float32{float32(math.NaN()), 0}, false},
		{"inf", []float32{float32(math.Inf(1))}, false},
		{"smallest subnormal", []float32{math.Float32frombits(1)}, false},
		{"next after one", []float32{math.Nextafter32(1, 2)}, false},
		{"previous before one", []float32{math.Nextafter32(1, 0)}, false},
		{"one with sign", []float32{-1}, false},
		{"high bit pattern", []float32{math.Float32frombits(one ^ 1<<16)}, false},
		{"half", []float32{0.5}, false},
		{"bad value last of many", append(make([]float32, 1000), 3), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Expected by the plain per-value rule the fast scan replaces.
			want := true
			for _, x := range tc.v {
				if x != 0 && x != 1 {
					want = false
				}
			}
			require.Equal(t, tc.want, want, "table entry")
			assert.Equal(t, tc.want, allBinary(tc.v))
		})
	}
}
