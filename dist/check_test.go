package dist

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// This file holds the checks of every collective that the tests run on
// LocalGroup and, under mpirun, on MPI (mpi_worker_test.go). Each rank's
// input is a function of (rank, index) that every rank can compute, so each
// rank computes the expected result of every collective by itself, without
// the communicator.

// splitmix is a fixed hash (SplitMix64's finalizer): test data that every
// rank computes alike.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// value is rank r's element i of test buffer k: magnitudes from 1e-4 to
// 1e8 and both signs, so that float32 sums depend on their order.
func value(k, r, i int) float32 {
	h := splitmix(uint64(k)<<48 ^ uint64(r)<<32 ^ uint64(i))
	mant := float64(h>>11)/float64(1<<53)*2 - 1 // [-1, 1)
	exp := int(h%13) - 4
	return float32(mant * math.Pow(10, float64(exp)))
}

func ids(k, r, n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(splitmix(uint64(k)<<48^uint64(r)<<32^uint64(i)) % 1000003)
	}
	return out
}

func rowsOf(k, r, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = value(k, r, i)
	}
	return out
}

// seqSum is the reference of AllreduceSum: element i summed in float32 in
// rank order, written out here rather than taken from the package.
func seqSum(k, size, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		s := value(k, 0, i)
		for r := 1; r < size; r++ {
			s = float32(s + value(k, r, i))
		}
		out[i] = s
	}
	return out
}

// sameBits compares float32 slices bit for bit (NaN included, -0 apart
// from 0).
func sameBits(got, want []float32) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d elements, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			return fmt.Errorf("element %d is %g (%#08x), want %g (%#08x)", i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
	return nil
}

// checkCollectives runs every collective on c with rank-dependent inputs
// and checks the results on this rank. It returns a digest of the
// allreduced buffers, which must be the same on every rank.
func checkCollectives(c Comm) (string, error) {
	rank, size := c.Rank(), c.Size()
	fail := func(what string, err error) (string, error) {
		return "", fmt.Errorf("rank %d of %d: %s: %w", rank, size, what, err)
	}
	if err := c.Barrier(); err != nil {
		return fail("Barrier", err)
	}

	// Bcast from every root.
	for root := range size {
		buf := make([]byte, 37)
		for i := range buf {
			buf[i] = byte(rank*31 + i)
		}
		if err := c.Bcast(buf, root); err != nil {
			return fail("Bcast", err)
		}
		for i := range buf {
			if buf[i] != byte(root*31+i) {
				return fail("Bcast", fmt.Errorf("root %d: byte %d is %d, want %d", root, i, buf[i], byte(root*31+i)))
			}
		}
	}

	// AllreduceSum over lengths that leave chunks uneven or empty.
	digest := sha256.New()
	for k, n := range []int{0, 1, size - 1, size, 3*size + 1, 1000, 4099} {
		if n < 0 {
			continue
		}
		buf := rowsOf(k, rank, n)
		if err := c.AllreduceSum(buf); err != nil {
			return fail(fmt.Sprintf("AllreduceSum of %d", n), err)
		}
		if err := sameBits(buf, seqSum(k, size, n)); err != nil {
			return fail(fmt.Sprintf("AllreduceSum of %d against the rank-order float32 sum", n), err)
		}
		for _, x := range buf {
			binary.Write(digest, binary.LittleEndian, math.Float32bits(x))
		}
		// The same bits on every rank: rank 0's result broadcast and
		// compared (Bcast only copies bytes).
		bits := make([]byte, 4*n)
		for i, x := range buf {
			binary.LittleEndian.PutUint32(bits[4*i:], math.Float32bits(x))
		}
		mine := slices.Clone(bits)
		if err := c.Bcast(bits, 0); err != nil {
			return fail("Bcast of the sum", err)
		}
		if !slices.Equal(bits, mine) {
			return fail(fmt.Sprintf("AllreduceSum of %d", n), errors.New("result differs from rank 0's"))
		}
	}

	// Counts that differ per rank, rank 0 sending none.
	count := func(r int) int { return (r * 7) % 11 }
	counts, err := GatherCounts(c, count(rank))
	if err != nil {
		return fail("GatherCounts", err)
	}
	total := 0
	for r := range size {
		if counts[r] != count(r) {
			return fail("GatherCounts", fmt.Errorf("rank %d's count is %d, want %d", r, counts[r], count(r)))
		}
		total += counts[r]
	}

	// AllgathervInt32 of ids, then AllgathervFloat32 of their rows (dim 3).
	const dim = 3
	gotIDs := make([]int32, total)
	if err := c.AllgathervInt32(ids(100, rank, count(rank)), gotIDs, counts); err != nil {
		return fail("AllgathervInt32", err)
	}
	gotRows := make([]float32, total*dim)
	rowCounts := make([]int, size)
	for r := range size {
		rowCounts[r] = counts[r] * dim
	}
	if err := c.AllgathervFloat32(rowsOf(101, rank, count(rank)*dim), gotRows, rowCounts); err != nil {
		return fail("AllgathervFloat32", err)
	}
	var wantIDs []int32
	var wantRows []float32
	for r := range size {
		wantIDs = append(wantIDs, ids(100, r, count(r))...)
		wantRows = append(wantRows, rowsOf(101, r, count(r)*dim)...)
	}
	if !slices.Equal(gotIDs, wantIDs) {
		return fail("AllgathervInt32", fmt.Errorf("got %v, want %v", gotIDs, wantIDs))
	}
	if err := sameBits(gotRows, wantRows); err != nil {
		return fail("AllgathervFloat32", err)
	}

	// Alltoallv as the row-sharded lookup does it: each rank asks the owner
	// of each id (id mod size) for its row: ids to the owners, then the
	// owners' rows back.
	want := ids(200, rank, 20+rank)
	send, sendCounts, perm, err := Route(want, size)
	if err != nil {
		return fail("Route", err)
	}
	recvCounts, err := ExchangeCounts(c, sendCounts)
	if err != nil {
		return fail("ExchangeCounts", err)
	}
	for j := range size {
		// Rank j asks this rank for its ids that this rank owns.
		n := 0
		for _, id := range ids(200, j, 20+j) {
			if int(id)%size == rank {
				n++
			}
		}
		if recvCounts[j] != n {
			return fail("ExchangeCounts", fmt.Errorf("rank %d sends %d, want %d", j, recvCounts[j], n))
		}
	}
	asked := make([]int32, sum(recvCounts))
	if err := c.AlltoallvInt32(send, sendCounts, asked, recvCounts); err != nil {
		return fail("AlltoallvInt32", err)
	}
	var wantAsked []int32
	for j := range size {
		for _, id := range ids(200, j, 20+j) {
			if int(id)%size == rank {
				wantAsked = append(wantAsked, id)
			}
		}
	}
	if !slices.Equal(asked, wantAsked) {
		return fail("AlltoallvInt32", fmt.Errorf("got %v, want %v", asked, wantAsked))
	}
	// The owner's row of id is tableRow(id): the answer, rank by rank.
	answer := make([]float32, 0, len(asked)*dim)
	for _, id := range asked {
		answer = append(answer, tableRow(id, dim)...)
	}
	got := make([]float32, len(send)*dim)
	if err := c.AlltoallvFloat32(answer, scale(recvCounts, dim), got, scale(sendCounts, dim)); err != nil {
		return fail("AlltoallvFloat32", err)
	}
	// Scattered back to the places of the ids asked for, each row is its
	// id's row.
	rows := make([]float32, len(want)*dim)
	for k, i := range perm {
		copy(rows[i*dim:(i+1)*dim], got[k*dim:(k+1)*dim])
	}
	var wantBack []float32
	for _, id := range want {
		wantBack = append(wantBack, tableRow(id, dim)...)
	}
	if err := sameBits(rows, wantBack); err != nil {
		return fail("AlltoallvFloat32", err)
	}
	return fmt.Sprintf("%x", digest.Sum(nil)), nil
}

func tableRow(id int32, dim int) []float32 {
	row := make([]float32, dim)
	for j := range row {
		row[j] = value(300, int(id), j)
	}
	return row
}

func scale(counts []int, k int) []int {
	out := make([]int, len(counts))
	for i, c := range counts {
		out[i] = c * k
	}
	return out
}

func sum(counts []int) int {
	t := 0
	for _, c := range counts {
		t += c
	}
	return t
}
