//go:build !mpi

package cli

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestDistributedWithoutMPI: in a build without the mpi tag, --distributed
// mpi fails before any work with a message naming the tag.
func TestDistributedWithoutMPI(t *testing.T) {
	data, outDir := t.TempDir(), filepath.Join(t.TempDir(), "out")
	var out, errOut bytes.Buffer
	code := Run([]string{"train", "--train_data_path", data, "--output_path", outDir, "--distributed", "mpi"}, &out, &errOut)
	assert.NotEqual(t, 0, code)
	assert.Contains(t, errOut.String(), "--distributed mpi: dist: MPI support is not compiled in: build with -tags mpi")
	assert.NoDirExists(t, outDir)
}
