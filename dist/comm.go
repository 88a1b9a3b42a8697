// Package dist is the communication layer of distributed (data-parallel)
// training: a communicator over the ranks of a job, the deterministic
// collectives training needs, and the partition of a dataset's row groups
// among the ranks. docs/DISTRIBUTED.md gives the design and the bytes each
// step moves.
//
// The MPI communicator (OpenMPI) is built only with the build tag `mpi`
// (cgo over libopenmpi-dev), so that the default build needs nothing new;
// Local is the communicator of one process, used when training is not
// distributed.
package dist

import (
	"errors"
	"fmt"
	"math"
)

// Comm is a communicator: the ranks 0..Size()-1 of one job. Every method is
// collective: every rank calls it, in the same order, with arguments that
// agree (the same root, the same counts), as with MPI. A Comm is used by one
// goroutine at a time.
//
// Counts are in elements. The data methods only move data (MPI never
// reduces them), so their results do not depend on how the library orders
// its messages; sums are done by this package (AllreduceSum) in a fixed
// order.
type Comm interface {
	// Rank is this process's rank in [0, Size()).
	Rank() int
	// Size is the number of ranks.
	Size() int
	// Barrier returns once every rank has called it.
	Barrier() error
	// Bcast copies root's buf into buf on every other rank; every rank
	// passes a buf of the same length.
	Bcast(buf []byte, root int) error
	// AllreduceSum replaces buf on every rank by the element-wise sum over
	// the ranks of their bufs (of the same length on every rank). The sum
	// is deterministic: the same bits on every rank, and equal to the
	// float32 sum taken in rank order, ((x_0 + x_1) + x_2) + ..., whatever
	// the network or the MPI library's algorithms (see reduceScatter).
	AllreduceSum(buf []float32) error
	// AllgathervInt32 gathers every rank's send into recv, in rank order:
	// counts[r] is rank r's len(send), the same counts on every rank, and
	// len(recv) is their sum.
	AllgathervInt32(send, recv []int32, counts []int) error
	// AllgathervFloat32 is AllgathervInt32 for float32 (embedding rows).
	AllgathervFloat32(send, recv []float32, counts []int) error
	// AlltoallvInt32 sends send[sdispl_j : sdispl_j+sendCounts[j]] to rank
	// j, the parts laid out in rank order, and receives rank j's part for
	// this rank into recv at the offset of j in recvCounts (recvCounts[j]
	// must equal rank j's sendCounts[Rank()]; ExchangeCounts gives it).
	AlltoallvInt32(send []int32, sendCounts []int, recv []int32, recvCounts []int) error
	// AlltoallvFloat32 is AlltoallvInt32 for float32.
	AlltoallvFloat32(send []float32, sendCounts []int, recv []float32, recvCounts []int) error
	// Close releases the communicator (MPI_Finalize for MPI). Every rank
	// calls it once, after its last collective.
	Close() error
}

// Node is implemented by communicators that know which of their ranks share
// this process's machine: MPI's, from MPI_Comm_split_type with
// MPI_COMM_TYPE_SHARED, and LocalGroup's, whose ranks share one process.
type Node interface {
	// NodeRanks is this rank's index among the ranks on its machine, and
	// how many ranks the machine runs.
	NodeRanks() (rank, size int)
}

// NodeRanks is c's rank and the number of ranks on this process's machine:
// c's own answer when it implements Node, else (0, 1).
func NodeRanks(c Comm) (rank, size int) {
	if n, ok := c.(Node); ok {
		return n.NodeRanks()
	}
	return 0, 1
}

// ErrNoMPI is wrapped by the error of OpenMPI in a build without the mpi
// build tag.
var ErrNoMPI = errors.New("dist: MPI support is not compiled in: build with -tags mpi (needs libopenmpi-dev; make setup installs it)")

// ErrClosed is returned by the methods of a Comm after Close.
var ErrClosed = errors.New("dist: communicator is closed")

// checkCounts checks counts (one per rank, >= 0) against the length of buf
// and returns their sum; what names the argument in errors.
func checkCounts(size int, counts []int, n int, what string) error {
	if len(counts) != size {
		return fmt.Errorf("dist: %s: %d counts for %d ranks", what, len(counts), size)
	}
	total := 0
	for r, c := range counts {
		if c < 0 {
			return fmt.Errorf("dist: %s: count of rank %d is %d", what, r, c)
		}
		// MPI counts and displacements are C ints.
		if c > math.MaxInt32 || total > math.MaxInt32-c {
			return fmt.Errorf("dist: %s: counts add up past 2^31-1 elements (rank %d)", what, r)
		}
		total += c
	}
	if total != n {
		return fmt.Errorf("dist: %s: counts add up to %d elements but the buffer holds %d", what, total, n)
	}
	return nil
}

// displs returns the offsets of the parts of counts laid out in order.
func displs(counts []int) []int {
	d := make([]int, len(counts))
	off := 0
	for i, c := range counts {
		d[i] = off
		off += c
	}
	return d
}

// checkRoot checks a Bcast root.
func checkRoot(root, size int) error {
	if root < 0 || root >= size {
		return fmt.Errorf("dist: Bcast root %d is not a rank of %d", root, size)
	}
	return nil
}
