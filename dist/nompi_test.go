//go:build !mpi

package dist

import (
	"errors"
	"strings"
	"testing"
)

// Without the mpi tag, asking for MPI fails with a message naming the tag.
func TestOpenMPIWithoutTag(t *testing.T) {
	c, err := Open("mpi")
	if !errors.Is(err, ErrNoMPI) || c != nil {
		t.Fatalf("Open(mpi): %v, %v; want ErrNoMPI", c, err)
	}
	if !strings.Contains(err.Error(), "-tags mpi") {
		t.Fatalf("error %q does not name the build tag", err)
	}
}
