package dist

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
)

// runRanks runs f on every rank of a LocalGroup of n, each in its own
// goroutine, and returns each rank's error.
func runRanks(n int, f func(c Comm) error) []error {
	comms := LocalGroup(n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Go(func() { errs[r] = f(c) })
	}
	wg.Wait()
	return errs
}

func TestLocalGroupCollectives(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4, 7} {
		t.Run(fmt.Sprintf("ranks=%d", n), func(t *testing.T) {
			digests := make([]string, n)
			errs := runRanks(n, func(c Comm) error {
				d, err := checkCollectives(c)
				digests[c.Rank()] = d
				return err
			})
			for r, err := range errs {
				if err != nil {
					t.Errorf("rank %d: %v", r, err)
				}
			}
			for r := 1; r < n; r++ {
				if digests[r] != digests[0] {
					t.Errorf("rank %d's allreduced buffers differ from rank 0's", r)
				}
			}
		})
	}
}

// The reference order matters for the test data: summed in reverse rank
// order, some elements round differently, so the allreduce test would see
// an allreduce that adds in another order.
func TestAllreduceDataIsOrderSensitive(t *testing.T) {
	const n, size = 4099, 3
	want := seqSum(6, size, n)
	differ := 0
	for i := range n {
		s := value(6, size-1, i)
		for r := size - 2; r >= 0; r-- {
			s = float32(s + value(6, r, i))
		}
		if math.Float32bits(s) != math.Float32bits(want[i]) {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("no element's float32 sum depends on the order: the test data cannot tell orders apart")
	}
	t.Logf("%d of %d elements differ in reverse order", differ, n)
}

func TestLocal(t *testing.T) {
	c := Local()
	if c.Rank() != 0 || c.Size() != 1 {
		t.Fatalf("Local is rank %d of %d, want 0 of 1", c.Rank(), c.Size())
	}
	// One rank's sum is its buffer, bit for bit (a -0 stays -0, a NaN its
	// payload).
	nan := math.Float32frombits(0x7fc00123)
	buf := []float32{float32(math.Copysign(0, -1)), nan, 1.5, float32(math.Inf(-1))}
	want := append([]float32(nil), buf...)
	if err := c.AllreduceSum(buf); err != nil {
		t.Fatal(err)
	}
	if err := sameBits(buf, want); err != nil {
		t.Fatal(err)
	}
	recv := make([]int32, 2)
	if err := c.AllgathervInt32([]int32{4, 5}, recv, []int{2}); err != nil || recv[0] != 4 || recv[1] != 5 {
		t.Fatalf("AllgathervInt32: %v, %v", recv, err)
	}
	rows := make([]float32, 3)
	if err := c.AlltoallvFloat32([]float32{1, 2, 3}, []int{3}, rows, []int{3}); err != nil || rows[2] != 3 {
		t.Fatalf("AlltoallvFloat32: %v, %v", rows, err)
	}
	if err := c.Bcast([]byte{1}, 1); err == nil || !strings.Contains(err.Error(), "root 1") {
		t.Fatalf("Bcast from root 1 of 1: %v, want an error naming the root", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func() error{
		"Barrier":      c.Barrier,
		"AllreduceSum": func() error { return c.AllreduceSum(buf) },
		"Bcast":        func() error { return c.Bcast(nil, 0) },
		"Close":        c.Close,
	} {
		if err := f(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// Arguments that do not agree fail the collective with an error on every
// rank (none is left waiting), naming what is wrong.
func TestLocalGroupBadArguments(t *testing.T) {
	tests := []struct {
		name string
		f    func(c Comm) error
		want []string // one substring per rank's error
	}{
		{"counts per rank", func(c Comm) error {
			return c.AllgathervInt32([]int32{1}, make([]int32, 1), []int{1})
		}, []string{"1 counts for 2 ranks", "1 counts for 2 ranks"}},
		{"counts against recv", func(c Comm) error {
			return c.AllgathervInt32([]int32{1}, make([]int32, 3), []int{1, 1})
		}, []string{"add up to 2 elements but the buffer holds 3", "add up to 2"}},
		{"negative count", func(c Comm) error {
			return c.AllgathervFloat32(nil, nil, []int{-1, 1})
		}, []string{"count of rank 0 is -1", "count of rank 0 is -1"}},
		{"send against own count", func(c Comm) error {
			return c.AllgathervFloat32(make([]float32, 2), make([]float32, 2), []int{1, 1})
		}, []string{"sends 2 elements but counts[0] is 1", "sends 2 elements but counts[1] is 1"}},
		{"ranks disagree on counts", func(c Comm) error {
			counts := []int{1, 1 + c.Rank()}
			return c.AllgathervInt32(make([]int32, counts[c.Rank()]), make([]int32, 2+c.Rank()), counts)
		}, []string{"rank 1 sent 2 elements, counts[1] is 1 on rank 0", "succeeded"}},
		{"alltoallv counts disagree", func(c Comm) error {
			// Each sends 1 to each but rank 1 expects 2 from rank 0.
			recv := []int{1, 1}
			if c.Rank() == 1 {
				recv = []int{2, 1}
			}
			return c.AlltoallvInt32(make([]int32, 2), []int{1, 1}, make([]int32, sum(recv)), recv)
		}, []string{"succeeded", "rank 0 sends 1 elements to rank 1, which expects 2"}},
		{"Bcast root", func(c Comm) error {
			return c.Bcast(make([]byte, 1), 2)
		}, []string{"root 2 is not a rank of 2", "root 2"}},
		{"Bcast lengths", func(c Comm) error {
			return c.Bcast(make([]byte, 1+c.Rank()), 0)
		}, []string{"succeeded", "2 bytes on rank 1, 1 from root 0"}},
		{"different collectives", func(c Comm) error {
			if c.Rank() == 0 {
				return c.Barrier()
			}
			return c.Bcast(nil, 0)
		}, []string{"Barrier: rank 1 called Bcast", "Bcast: rank 0 called Barrier"}},
		{"GatherCounts negative", func(c Comm) error {
			_, err := GatherCounts(c, -1)
			return err
		}, []string{"count -1 is not in [0, 2^31-1]", "count -1"}},
		{"ExchangeCounts negative", func(c Comm) error {
			_, err := ExchangeCounts(c, []int{0, -2})
			return err
		}, []string{"count -2 for rank 1", "count -2 for rank 1"}},
		{"ExchangeCounts length", func(c Comm) error {
			_, err := ExchangeCounts(c, []int{1})
			if err != nil {
				// Stay in step with the other rank: nothing was sent.
				return err
			}
			return nil
		}, []string{"1 counts for 2 ranks", "1 counts for 2 ranks"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := runRanks(2, tt.f)
			for r, err := range errs {
				got := "succeeded"
				if err != nil {
					got = err.Error()
				}
				if !strings.Contains(got, tt.want[r]) {
					t.Errorf("rank %d: %s, want %q", r, got, tt.want[r])
				}
			}
		})
	}
}

func TestOpen(t *testing.T) {
	for _, kind := range []string{"", "none"} {
		c, err := Open(kind)
		if err != nil || c.Size() != 1 {
			t.Errorf("Open(%q): %v", kind, err)
		}
	}
	if _, err := Open("nccl"); err == nil || !strings.Contains(err.Error(), `"nccl"`) {
		t.Errorf("Open(nccl): %v, want an error naming it", err)
	}
}

// TestNodeRanks: LocalGroup's ranks share this process's machine, and a
// communicator that does not say is one rank alone on its machine.
func TestNodeRanks(t *testing.T) {
	for _, n := range []int{1, 3} {
		for r, c := range LocalGroup(n) {
			if rank, size := NodeRanks(c); rank != r || size != n {
				t.Errorf("LocalGroup(%d) rank %d: NodeRanks = %d of %d, want %d of %d", n, r, rank, size, r, n)
			}
		}
	}
	if rank, size := NodeRanks(silentComm{Local()}); rank != 0 || size != 1 {
		t.Errorf("a Comm without Node: NodeRanks = %d of %d, want 0 of 1", rank, size)
	}
}

// silentComm hides its Comm's Node method.
type silentComm struct{ Comm }
