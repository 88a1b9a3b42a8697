package mtl

import (
	"fmt"
	"testing"
	"time"

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
