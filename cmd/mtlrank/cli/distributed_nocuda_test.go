//go:build !cuda

package cli

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestDistributedCUDAWithoutCUDA: in a build without the cuda tag,
// --distributed mpi --device cuda fails before MPI starts and before any
// output, with the message naming the tag.
func TestDistributedCUDAWithoutCUDA(t *testing.T) {
	stderr := trainRefused(t, "--device cuda: mtlrank was built without CUDA support; rebuild with -tags cuda",
		"--distributed", "mpi", "--device", "cuda")
	assert.NotContains(t, stderr, "MPI")
}
