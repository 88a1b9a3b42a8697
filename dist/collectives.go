package dist

import (
	"fmt"
	"math"
)

// chunks returns how allreduceSum splits n elements among size ranks: rank
// r reduces the counts[r] elements at displs(counts)[r]; the first n%size
// chunks are one element longer.
func chunks(n, size int) []int {
	c := make([]int, size)
	for r := range c {
		c[r] = n / size
		if r < n%size {
			c[r]++
		}
	}
	return c
}

// allreduceSum is the deterministic sum-allreduce of buf over c, built on
// c's two data movements so that MPI never adds anything itself (MPI_Allreduce
// may add in any order and tree shape, which changes the float32 bits with
// the algorithm it picks, the number of ranks per node, or the message size):
//
//  1. reduce-scatter as an alltoallv: rank r receives chunk r of every
//     rank's buf, in rank order, into scratch;
//  2. rank r adds them in rank order, ((x_0 + x_1) + x_2) + ..., each sum
//     rounded to float32;
//  3. allgatherv of the summed chunks into buf on every rank.
//
// Every element is therefore added by one rank in the one order, and the
// result copied bit for bit to the others. Each rank sends and receives
// 2·(size-1)/size·len(buf) floats, what a ring allreduce moves.
// scratch is grown as needed and returned for reuse.
func allreduceSum(c Comm, buf, scratch []float32) ([]float32, error) {
	size, rank := c.Size(), c.Rank()
	if size == 1 {
		return scratch, nil
	}
	n := len(buf)
	if n > math.MaxInt32 {
		return scratch, fmt.Errorf("dist: AllreduceSum of %d floats: more than 2^31-1", n)
	}
	counts := chunks(n, size)
	mine := counts[rank]
	if cap(scratch) < mine*size {
		scratch = make([]float32, mine*size)
	}
	scratch = scratch[:mine*size]
	recvCounts := make([]int, size)
	for r := range recvCounts {
		recvCounts[r] = mine
	}
	if err := c.AlltoallvFloat32(buf, counts, scratch, recvCounts); err != nil {
		return scratch, fmt.Errorf("dist: AllreduceSum: reduce-scatter: %w", err)
	}
	// The sum of element i of the chunk lands in scratch[i] (rank 0's
	// part), which is read before it is written.
	for i := 0; i < mine; i++ {
		s := scratch[i]
		for r := 1; r < size; r++ {
			// The conversion rounds each sum to float32 (the Go spec
			// lets an implementation fuse unconverted operations).
			s = float32(s + scratch[r*mine+i])
		}
		scratch[i] = s
	}
	if err := c.AllgathervFloat32(scratch[:mine], buf, counts); err != nil {
		return scratch, fmt.Errorf("dist: AllreduceSum: allgather: %w", err)
	}
	return scratch, nil
}

// GatherCounts returns every rank's n, in rank order (an allgather of one
// count): what a rank needs before AllgathervInt32 of ids whose number
// differs between ranks.
func GatherCounts(c Comm, n int) ([]int, error) {
	if n < 0 || n > math.MaxInt32 {
		return nil, fmt.Errorf("dist: GatherCounts: count %d is not in [0, 2^31-1]", n)
	}
	recv := make([]int32, c.Size())
	if err := c.AllgathervInt32([]int32{int32(n)}, recv, ones(c.Size())); err != nil {
		return nil, fmt.Errorf("dist: GatherCounts: %w", err)
	}
	return toInts(recv), nil
}

// ExchangeCounts returns, for each rank j, the count rank j sends to this
// rank, given sendCounts, the counts this rank sends to each rank (an
// alltoall of one count): the recvCounts of an AlltoallvInt32 that follows.
func ExchangeCounts(c Comm, sendCounts []int) ([]int, error) {
	size := c.Size()
	if len(sendCounts) != size {
		return nil, fmt.Errorf("dist: ExchangeCounts: %d counts for %d ranks", len(sendCounts), size)
	}
	send := make([]int32, size)
	for r, n := range sendCounts {
		if n < 0 || n > math.MaxInt32 {
			return nil, fmt.Errorf("dist: ExchangeCounts: count %d for rank %d is not in [0, 2^31-1]", n, r)
		}
		send[r] = int32(n)
	}
	recv := make([]int32, size)
	if err := c.AlltoallvInt32(send, ones(size), recv, ones(size)); err != nil {
		return nil, fmt.Errorf("dist: ExchangeCounts: %w", err)
	}
	return toInts(recv), nil
}

func ones(n int) []int {
	o := make([]int, n)
	for i := range o {
		o[i] = 1
	}
	return o
}

func toInts(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}
