//go:build mpi

package dist

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMPIWorker is one rank of the jobs TestMPI starts with mpirun: it runs
// every collective on MPI, checks the results against values it computes
// itself, and prints the digest of its allreduced buffers, which TestMPI
// compares across the ranks.
func TestMPIWorker(t *testing.T) {
	if os.Getenv(mpiWorkerEnv) == "" {
		t.Skip("one rank of TestMPI's mpirun jobs; runs under mpirun only")
	}
	c, err := InitMPI()
	if err != nil {
		t.Fatal(err)
	}
	if want := os.Getenv("OMPI_COMM_WORLD_SIZE"); want != "" && fmt.Sprint(c.Size()) != want {
		t.Errorf("Size is %d, mpirun started %s ranks", c.Size(), want)
	}
	// The shared-memory split agrees with what mpirun told the process
	// (every rank of these jobs runs on this machine).
	nodeRank, nodeSize := NodeRanks(c)
	if want := os.Getenv("OMPI_COMM_WORLD_LOCAL_RANK"); want != "" && fmt.Sprint(nodeRank) != want {
		t.Errorf("NodeRanks rank is %d, mpirun's local rank is %s", nodeRank, want)
	}
	if want := os.Getenv("OMPI_COMM_WORLD_LOCAL_SIZE"); want != "" && fmt.Sprint(nodeSize) != want {
		t.Errorf("NodeRanks size is %d, mpirun's local size is %s", nodeSize, want)
	}
	if nodeSize != c.Size() {
		t.Errorf("NodeRanks size is %d, want all %d ranks on this machine", nodeSize, c.Size())
	}
	// Go turns a nil dereference (SIGSEGV) into a panic that the loader
	// recovers from on corrupt files; Open MPI's own signal handlers must
	// not have taken SIGSEGV from the Go runtime.
	if got := recoverNilDeref(); !strings.Contains(got, "nil pointer dereference") {
		t.Errorf("a nil dereference after InitMPI: %q, want a recovered Go panic", got)
	}
	digest, err := checkCollectives(c)
	if err != nil {
		t.Fatal(err) // the other ranks fail or are ended by mpirun
	}

	// MPI's own errors come back as Go errors (MPI_ERRORS_RETURN): a
	// broadcast from a root that is not a rank, which Bcast refuses before
	// MPI sees it, handed to MPI directly.
	err = c.(*mpiComm).bcast(make([]byte, 1), c.Size()+3)
	if err == nil || !strings.Contains(err.Error(), "MPI error") {
		t.Errorf("MPI_Bcast from root %d: %v, want an MPI error", c.Size()+3, err)
	} else {
		t.Logf("MPI_Bcast from a bad root: %v", err)
	}
	if err := c.Barrier(); err != nil {
		t.Fatalf("Barrier after an MPI error: %v", err)
	}

	if _, err := InitMPI(); err == nil || !strings.Contains(err.Error(), "initialized already") {
		t.Errorf("second InitMPI: %v, want an error", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Barrier(); !errors.Is(err, ErrClosed) {
		t.Errorf("Barrier after Close: %v, want ErrClosed", err)
	}
	if _, err := InitMPI(); err == nil || !strings.Contains(err.Error(), "finalized") {
		t.Errorf("InitMPI after Close: %v, want an error", err)
	}
	if !t.Failed() {
		fmt.Printf("%s rank=%d size=%d digest=%s\n", mpiWorkerMark, c.Rank(), c.Size(), digest)
	}
}

// TestMPITiming times the collectives of a training step on MPI, for
// docs/DISTRIBUTED.md; it runs only when asked (MTLRANK_DIST_MPI_TIMING=1)
// under mpirun, e.g.
//
//	go test -c -tags mpi -o /tmp/dist.test ./dist &&
//	MTLRANK_DIST_MPI_TIMING=1 mpirun -np 2 --oversubscribe /tmp/dist.test -test.run '^TestMPITiming$' -test.v
func TestMPITiming(t *testing.T) {
	if os.Getenv("MTLRANK_DIST_MPI_TIMING") == "" {
		t.Skip("timings for docs/DISTRIBUTED.md; set MTLRANK_DIST_MPI_TIMING=1 and run under mpirun")
	}
	c, err := InitMPI()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	size, rank := c.Size(), c.Rank()
	// time runs f reps times (after one warm-up) between barriers and
	// reports rank 0's mean.
	time1 := func(name string, bytes int, reps int, f func() error) {
		if err := f(); err != nil {
			t.Fatal(err)
		}
		if err := c.Barrier(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for range reps {
			if err := f(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Barrier(); err != nil {
			t.Fatal(err)
		}
		per := time.Since(start) / time.Duration(reps)
		if rank == 0 {
			t.Logf("ranks=%d %-40s %8.1f us  %7.2f MB sent per rank  %6.2f GB/s", size, name, float64(per.Nanoseconds())/1e3,
				float64(bytes)/1e6, float64(bytes)/per.Seconds()/1e9)
		}
	}
	// The dense gradients of the default tenrec models (mlp, ple) and of a
	// larger model.
	for _, n := range []int{35685, 167429, 4 << 20} {
		buf := rowsOf(1, rank, n)
		sent := 2 * (size - 1) * (n / size) * 4
		time1(fmt.Sprintf("AllreduceSum %d floats", n), sent, max(10, 20000000/max(n, 1)), func() error { return c.AllreduceSum(buf) })
	}
	// The sparse exchange of one table per step: 1024 ids per rank and
	// their rows of 48 floats.
	const ids, dim = 1024, 48
	counts := make([]int, size)
	for r := range counts {
		counts[r] = ids
	}
	idBuf, rowBuf := make([]int32, ids*size), make([]float32, ids*dim*size)
	mineIDs, mineRows := make([]int32, ids), rowsOf(2, rank, ids*dim)
	time1("Allgatherv 1024 ids + 1024x48 rows", (size-1)*ids*(dim+1)*4, 2000, func() error {
		if err := c.AllgathervInt32(mineIDs, idBuf, counts); err != nil {
			return err
		}
		return c.AllgathervFloat32(mineRows, rowBuf, scale(counts, dim))
	})
	part := chunks(ids, size)
	time1("Alltoallv 1024 ids + 1024x48 rows", (ids-part[rank])*(dim+1)*4, 2000, func() error {
		recv := chunks(ids, size)
		for j := range recv {
			recv[j] = part[rank]
		}
		if err := c.AlltoallvInt32(mineIDs, part, idBuf[:sum(recv)], recv); err != nil {
			return err
		}
		return c.AlltoallvFloat32(mineRows, scale(part, dim), rowBuf[:sum(recv)*dim], scale(recv, dim))
	})
}

type node struct{ next *node }

// nilNode is a variable, so that the compiler emits a load that faults.
var nilNode *node

// recoverNilDeref dereferences a nil pointer and returns the recovered
// panic's text.
func recoverNilDeref() (msg string) {
	defer func() { msg = fmt.Sprint(recover()) }()
	_ = nilNode.next
	return "no panic"
}
