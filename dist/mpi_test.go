package dist

import (
	"fmt"
	"testing"
	"time"

	"github.com/mtlrank/mtlrank/internal/mpitest"
)

const (
	mpiWorkerEnv  = "MTLRANK_DIST_MPI_WORKER"
	mpiWorkerMark = "dist-mpi-worker-ok"
)

// TestMPI builds this package's tests with -tags mpi and runs
// TestMPIWorker under mpirun with 1, 2 and 3 ranks (and 3 over TCP alone),
// checking that every rank passed and that every rank's allreduced buffers
// have the same digest. It skips when mpirun or Open MPI's development files
// are missing (make setup installs them).
func TestMPI(t *testing.T) {
	mpirun, bin := mpitest.Build(t, "dist-mpi.test")
	for _, tc := range []struct {
		np  int
		btl string
	}{{1, "self,vader,tcp"}, {2, "self,vader,tcp"}, {3, "self,vader,tcp"}, {3, "self,tcp"}} {
		t.Run(fmt.Sprintf("np=%d,btl=%s", tc.np, tc.btl), func(t *testing.T) {
			out := mpitest.Run(t, mpirun, bin, tc.np, tc.btl, "TestMPIWorker", 2*time.Minute, mpiWorkerEnv+"=1")
			mpitest.CheckRanks(t, out, mpiWorkerMark, tc.np)
		})
	}
}
