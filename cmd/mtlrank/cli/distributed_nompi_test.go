//go:build !mpi

package cli

import "testing"

// TestDistributedWithoutMPI: in a build without the mpi tag, --distributed
// mpi fails before any work with a message naming the tag.
func TestDistributedWithoutMPI(t *testing.T) {
	trainRefused(t, "--distributed mpi: dist: MPI support is not compiled in: build with -tags mpi", "--distributed", "mpi")
}
