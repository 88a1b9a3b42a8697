package mtl

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/internal/mpitest"
)

const (
	mpiTrainWorkerEnv  = "MTLRANK_MTL_MPI_WORKER"
	mpiTrainWorkerMark = "mtl-mpi-train-ok"
)

// TestMPITrain runs the exactness cases of
// TestDistributedStepMatchesOneProcess and
// TestRowShardedStepMatchesOneProcess and the partitioned evaluation of
// TestDistributedEvaluate under mpirun with 1, 2 and 3 ranks on loopback
// (TestMPITrainWorker, built with -tags mpi): every rank checks its
// parameters, losses and evaluation metrics against the one-process run it
// computes itself, and all ranks' digests agree. It skips without mpirun or
// Open MPI's development files (make setup installs them).
func TestMPITrain(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building the -tags mpi test binary takes a while")
	}
	mpirun, bin := mpitest.Build(t, "mtl-mpi.test")
	for _, np := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("np=%d", np), func(t *testing.T) {
			out := mpitest.Run(t, mpirun, bin, np, "self,vader,tcp", "TestMPITrainWorker", 3*time.Minute, mpiTrainWorkerEnv+"=1")
			mpitest.CheckRanks(t, out, mpiTrainWorkerMark, np)
		})
	}
}

const (
	mpiCkptStageEnv = "MTLRANK_MTL_MPI_CKPT_STAGE"
	mpiCkptDirEnv   = "MTLRANK_MTL_MPI_CKPT_DIR"
	mpiCkptMark     = "mtl-mpi-ckpt-ok"
)

// mpiCkptStages are TestMPICheckpoint's jobs, in order: the stage, its
// ranks, and the checkpoints it writes that must hold the same tensors,
// bit for bit (the first per shard, the second gathered or replicated;
// see TestMPICheckpointWorker).
var mpiCkptStages = []struct {
	stage string
	np    int
	same  [][2]string
}{
	{"save", 2, [][2]string{{"s2", "g2"}}},
	{"resume", 3, [][2]string{{"s2-s3", "g2-g3"}, {"s2-s3", "s2-rep3"}}},
	{"back", 2, [][2]string{{"s2-s3-s2", "g2-g3-g2"}}},
}

// TestMPICheckpoint: under mpirun, a row-sharded job of 2 ranks saves per
// shard and gathered; 3 ranks resume from each (and from the per-shard
// one with replicated tables) and save again; 2 ranks resume from those.
// After each job the per-shard checkpoints, loaded in one process, hold
// the bits of the gathered (and replicated) ones. It skips without mpirun
// or Open MPI's development files.
func TestMPICheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building the -tags mpi test binary takes a while")
	}
	mpirun, bin := mpitest.Build(t, "mtl-mpi-ckpt.test")
	dir := t.TempDir()
	for _, st := range mpiCkptStages {
		out := mpitest.Run(t, mpirun, bin, st.np, "self,vader,tcp", "TestMPICheckpointWorker", 3*time.Minute,
			mpiCkptStageEnv+"="+st.stage, mpiCkptDirEnv+"="+dir)
		mpitest.CheckRanks(t, out, mpiCkptMark, st.np)
		for _, pair := range st.same {
			a, b := filepath.Join(dir, pair[0]), filepath.Join(dir, pair[1])
			require.FileExists(t, filepath.Join(a, manifestFile))
			require.Equal(t, oneProcessTensors(t, a), oneProcessTensors(t, b), "%s against %s", pair[0], pair[1])
		}
	}
}

// oneProcessTensors loads the checkpoint in dir in one process and returns
// the bytes of the safetensors files its one-process save writes.
func oneProcessTensors(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m, st, err := LoadCheckpoint(dir, testDev(), 0)
	require.NoError(t, err)
	defer m.Release()
	out := filepath.Join(t.TempDir(), "one")
	require.NoError(t, SaveCheckpoint(out, m, st))
	files := map[string][]byte{}
	for _, f := range []string{modelFile, optimizerFile} {
		files[f], err = os.ReadFile(filepath.Join(out, f))
		require.NoError(t, err)
	}
	return files
}
