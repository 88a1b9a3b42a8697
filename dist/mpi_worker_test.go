//go:build mpi

package dist

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
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
