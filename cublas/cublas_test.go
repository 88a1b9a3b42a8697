//go:build cuda

package cublas

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Errors match their sentinel by code, also when wrapped, and print the
// Go-side operation with the library's message.
func TestErrorIs(t *testing.T) {
	cases := []struct {
		code     Code
		sentinel error
	}{
		{CodeNoDevice, ErrNoDevice},
		{CodeCapture, ErrCapture},
		{CodeNoMemory, ErrNoMemory},
		{CodeInvalid, ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.code.String(), func(t *testing.T) {
			err := fmt.Errorf("context: %w", &Error{Op: "Gemm", Code: c.code, Msg: "cublasSgemm: X"})
			assert.ErrorIs(t, err, c.sentinel)
			for _, other := range cases {
				if other.code != c.code {
					assert.NotErrorIs(t, err, other.sentinel)
				}
			}
		})
	}
	e := &Error{Op: "Malloc", Code: CodeNoMemory, Msg: "cudaMallocAsync: cudaErrorMemoryAllocation (out of memory)"}
	assert.Equal(t, "cuda: Malloc: cudaMallocAsync: cudaErrorMemoryAllocation (out of memory)", e.Error())
	assert.False(t, errors.Is(e, errors.New("other")))
}

// Without a GPU the context-free calls answer cleanly: no device is zero
// devices (or an error naming the CUDA call), and NewContext says why.
func TestNoDeviceAnswers(t *testing.T) {
	n, err := DeviceCount()
	if err != nil {
		assert.Contains(t, err.Error(), "cudaGetDeviceCount")
	}
	if n > 0 {
		t.Skipf("%d CUDA devices present", n)
	}
	x, err := NewContext(0)
	require.Error(t, err)
	assert.Nil(t, x)
	assert.ErrorIs(t, err, ErrNoDevice)
	rt, _, err := RuntimeVersion()
	require.NoError(t, err)
	assert.Greater(t, rt, 11000, "built against CUDA 11 or later")
}
