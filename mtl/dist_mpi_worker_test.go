//go:build mpi

package mtl

import (
	"crypto/sha256"
	"fmt"
	"os"
	"testing"

	"github.com/mtlrank/mtlrank/dist"
)

// TestMPITrainWorker is one rank of TestMPITrain's mpirun jobs: the
// exactness cases on MPI, with replicated tables and sharded by rows, and
// the partitioned evaluation.
func TestMPITrainWorker(t *testing.T) {
	if os.Getenv(mpiTrainWorkerEnv) == "" {
		t.Skip("one rank of TestMPITrain's mpirun jobs; runs under mpirun only")
	}
	c, err := dist.InitMPI()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, tc := range exactCases {
		d, err := tc.run(c)
		if err != nil {
			t.Fatalf("%v: %v", tc, err) // the other ranks fail or are ended by mpirun
		}
		fmt.Fprintln(h, d)
		// The same case with the tables sharded by rows.
		if d, err = tc.check(c, ShardRow); err != nil {
			t.Fatalf("%v, tables sharded by rows: %v", tc, err)
		}
		fmt.Fprintln(h, d)
	}
	// The partitioned evaluation (TestDistributedEvaluate's datasets, which
	// every rank writes for itself: the same files).
	var dirs []string
	for i, d := range evalDatasets {
		dirs = append(dirs, writeGradData(t, uint64(i+1), d.files))
	}
	for _, sharding := range []string{ShardReplicate, ShardRow} {
		d, err := evalCase(c, dirs, sharding)
		if err != nil {
			t.Fatalf("evaluation, %s: %v", sharding, err)
		}
		fmt.Fprintln(h, d)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s rank=%d size=%d digest=%x\n", mpiTrainWorkerMark, c.Rank(), c.Size(), h.Sum(nil))
}
