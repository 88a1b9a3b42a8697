package dist

import (
	"fmt"
	"sync"
)

// Local returns the communicator of one process (Size 1), used when training
// is not distributed: AllreduceSum leaves buf as is and the data methods
// copy send to recv.
func Local() Comm { return LocalGroup(1)[0] }

// LocalGroup returns n communicators that talk to each other in memory, one
// per rank, each to be used from its own goroutine: a job of n ranks within
// one process, for tests of distributed code without mpirun. Their
// collectives move data exactly as MPI's do, and AllreduceSum is the same
// code as for MPI, so results are bit-identical to an n-rank MPI job's.
func LocalGroup(n int) []Comm {
	if n < 1 {
		panic(fmt.Sprintf("dist: LocalGroup(%d): need at least one rank", n))
	}
	g := &group{n: n, slots: make([]post, n)}
	g.cond = sync.NewCond(&g.mu)
	out := make([]Comm, n)
	for r := range out {
		out[r] = &member{g: g, rank: r}
	}
	return out
}

// group is the state the ranks of a LocalGroup share: a cyclic barrier and
// one slot per rank where each posts its part of the current collective.
type group struct {
	n     int
	mu    sync.Mutex
	cond  *sync.Cond
	count int    // ranks arrived at the current barrier
	gen   uint64 // barriers completed
	slots []post
}

// post is what a rank contributes to a collective: its name (to catch ranks
// that call different collectives), its data, and its argument error, so
// that a rank with bad arguments fails the collective on every rank instead
// of leaving the others waiting.
type post struct {
	op     string
	data   any
	counts []int
	err    error
}

func (g *group) barrier() {
	g.mu.Lock()
	defer g.mu.Unlock()
	gen := g.gen
	g.count++
	if g.count == g.n {
		g.count = 0
		g.gen++
		g.cond.Broadcast()
		return
	}
	for gen == g.gen {
		g.cond.Wait()
	}
}

// member is one rank of a LocalGroup.
type member struct {
	g       *group
	rank    int
	closed  bool
	scratch []float32
}

func (m *member) Rank() int { return m.rank }
func (m *member) Size() int { return m.g.n }

// NodeRanks: the ranks of a LocalGroup all run in this process.
func (m *member) NodeRanks() (rank, size int) { return m.rank, m.g.n }

// collective posts p, waits for every rank's post, runs read on them (unless
// some rank failed or called another collective), and waits again so that
// no rank overwrites its slot while another still reads it.
func (m *member) collective(p post, read func(all []post) error) error {
	if m.closed {
		return ErrClosed
	}
	g := m.g
	g.slots[m.rank] = p
	g.barrier()
	err := p.err
	if err == nil {
		for r, q := range g.slots {
			switch {
			case q.op != p.op:
				err = fmt.Errorf("dist: %s: rank %d called %s", p.op, r, q.op)
			case q.err != nil:
				err = fmt.Errorf("dist: %s: rank %d failed: %w", p.op, r, q.err)
			default:
				continue
			}
			break
		}
	}
	if err == nil {
		err = read(g.slots)
	}
	g.barrier()
	return err
}

func (m *member) Barrier() error {
	return m.collective(post{op: "Barrier"}, func([]post) error { return nil })
}

func (m *member) Bcast(buf []byte, root int) error {
	p := post{op: "Bcast", data: buf, err: checkRoot(root, m.g.n)}
	return m.collective(p, func(all []post) error {
		if m.rank == root {
			return nil // others read buf now
		}
		src := all[root].data.([]byte)
		if len(src) != len(buf) {
			return fmt.Errorf("dist: Bcast: %d bytes on rank %d, %d from root %d", len(buf), m.rank, len(src), root)
		}
		copy(buf, src)
		return nil
	})
}

func (m *member) AllreduceSum(buf []float32) error {
	if m.closed {
		return ErrClosed
	}
	var err error
	m.scratch, err = allreduceSum(m, buf, m.scratch)
	return err
}

func (m *member) AllgathervInt32(send, recv []int32, counts []int) error {
	return allgatherv(m, "AllgathervInt32", send, recv, counts)
}

func (m *member) AllgathervFloat32(send, recv []float32, counts []int) error {
	return allgatherv(m, "AllgathervFloat32", send, recv, counts)
}

func (m *member) AlltoallvInt32(send []int32, sendCounts []int, recv []int32, recvCounts []int) error {
	return alltoallv(m, "AlltoallvInt32", send, sendCounts, recv, recvCounts)
}

func (m *member) AlltoallvFloat32(send []float32, sendCounts []int, recv []float32, recvCounts []int) error {
	return alltoallv(m, "AlltoallvFloat32", send, sendCounts, recv, recvCounts)
}

func (m *member) Close() error {
	if m.closed {
		return ErrClosed
	}
	m.closed = true
	return nil
}

func allgatherv[T int32 | float32](m *member, op string, send, recv []T, counts []int) error {
	err := checkCounts(m.g.n, counts, len(recv), op+" recv")
	if err == nil && counts[m.rank] != len(send) {
		err = fmt.Errorf("dist: %s: sends %d elements but counts[%d] is %d", op, len(send), m.rank, counts[m.rank])
	}
	return m.collective(post{op: op, data: send, err: err}, func(all []post) error {
		for r, off := range displs(counts) {
			src := all[r].data.([]T)
			if len(src) != counts[r] {
				return fmt.Errorf("dist: %s: rank %d sent %d elements, counts[%d] is %d on rank %d", op, r, len(src), r, counts[r], m.rank)
			}
			copy(recv[off:off+counts[r]], src)
		}
		return nil
	})
}

func alltoallv[T int32 | float32](m *member, op string, send []T, sendCounts []int, recv []T, recvCounts []int) error {
	err := checkCounts(m.g.n, sendCounts, len(send), op+" send")
	if err == nil {
		err = checkCounts(m.g.n, recvCounts, len(recv), op+" recv")
	}
	return m.collective(post{op: op, data: send, counts: sendCounts, err: err}, func(all []post) error {
		for j, off := range displs(recvCounts) {
			src, sc := all[j].data.([]T), all[j].counts
			at := displs(sc)[m.rank]
			if sc[m.rank] != recvCounts[j] {
				return fmt.Errorf("dist: %s: rank %d sends %d elements to rank %d, which expects %d", op, j, sc[m.rank], m.rank, recvCounts[j])
			}
			copy(recv[off:off+recvCounts[j]], src[at:at+sc[m.rank]])
		}
		return nil
	})
}
