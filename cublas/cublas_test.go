//go:build cuda

package cublas

import (
	"errors"
	"fmt"
	"strings"
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
	if emulatedDevice(t) {
		// The emulated device plays a machine without a GPU on request.
		t.Setenv("MTLCUDA_EMU_DEVICES", "0")
	}
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

// emulatedDevice reports whether the library is the emulated device of
// build/cuda-emu (make test-emulated-gpu).
func emulatedDevice(t *testing.T) bool {
	t.Helper()
	if n, err := DeviceCount(); err != nil || n == 0 {
		return false
	}
	x, err := NewContext(0)
	require.NoError(t, err)
	defer x.Close()
	info, err := x.Info()
	require.NoError(t, err)
	return strings.HasPrefix(info.Name, "mtlcuda emulated device")
}
