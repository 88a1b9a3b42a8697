//go:build mpi

package dist

/*
#cgo pkg-config: ompi-c
#include <mpi.h>

// Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, ...) are macros over the
// addresses of its globals, which cgo cannot name: these return them.
static MPI_Comm mtl_world(void) { return MPI_COMM_WORLD; }
static MPI_Datatype mtl_byte(void) { return MPI_BYTE; }
static MPI_Datatype mtl_float(void) { return MPI_FLOAT; }
static MPI_Datatype mtl_int32(void) { return MPI_INT32_T; }

// mtl_node gives this rank's index among the ranks of comm that share its
// machine (MPI-3's shared-memory split), and their number.
static int mtl_node(MPI_Comm comm, int rank, int *node_rank, int *node_size) {
	MPI_Comm node;
	int rc = MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
	if (rc != MPI_SUCCESS) return rc;
	rc = MPI_Comm_rank(node, node_rank);
	if (rc == MPI_SUCCESS) rc = MPI_Comm_size(node, node_size);
	int rc2 = MPI_Comm_free(&node);
	return rc != MPI_SUCCESS ? rc : rc2;
}

// mtl_init initializes MPI for calls from one thread (the one that calls
// it) and returns a duplicate of MPI_COMM_WORLD whose errors are returned,
// not fatal. state: 1 when MPI was initialized already, 2 when finalized,
// 3 when the library does not give MPI_THREAD_FUNNELED.
static int mtl_init(MPI_Comm *comm, int *state) {
	int flag = 0;
	MPI_Finalized(&flag);
	if (flag) { *state = 2; return MPI_SUCCESS; }
	MPI_Initialized(&flag);
	if (flag) { *state = 1; return MPI_SUCCESS; }
	*state = 0;
	int provided = 0;
	int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
	if (rc != MPI_SUCCESS) return rc;
	if (provided < MPI_THREAD_FUNNELED) {
		// A Go process always has several threads; MPI must at least
		// allow them while one makes the MPI calls.
		*state = 3;
		return MPI_Finalize();
	}
	rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	if (rc != MPI_SUCCESS) return rc;
	// The duplicate inherits the error handler and keeps this package's
	// messages apart from any other MPI user's in the process.
	return MPI_Comm_dup(MPI_COMM_WORLD, comm);
}

static int mtl_finalize(MPI_Comm *comm) {
	int rc = MPI_Comm_free(comm);
	int rc2 = MPI_Finalize();
	return rc != MPI_SUCCESS ? rc : rc2;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"
)

// mpiComm is the MPI communicator. Every MPI call runs on one OS thread, the
// one that initialized MPI (a goroutine locked to it), so that the job needs
// no more than MPI_THREAD_FUNNELED whatever goroutine calls the methods.
type mpiComm struct {
	calls      chan func()
	comm       C.MPI_Comm
	rank, size int
	// nodeRank and nodeSize place the rank among those on its machine.
	nodeRank, nodeSize int
	closed             bool
	scratch            []float32
}

// InitMPI initializes MPI (MPI_Init_thread) and returns the communicator
// of every rank of the job (a duplicate of MPI_COMM_WORLD) with MPI's errors
// returned as Go errors (MPI_ERRORS_RETURN) rather than aborting the job.
// A process initializes MPI once: InitMPI fails when MPI was initialized or
// finalized before. Run under mpirun (or srun, or the MPI Operator); started
// alone, the process is a job of one rank.
func InitMPI() (Comm, error) {
	m := &mpiComm{calls: make(chan func())}
	ready := make(chan error)
	go m.serve(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return m, nil
}

// serve initializes MPI on a locked OS thread and then runs m's calls on
// it until Close.
func (m *mpiComm) serve(ready chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	var state C.int
	rc := C.mtl_init(&m.comm, &state)
	switch {
	case state == 1:
		ready <- errors.New("dist: InitMPI: MPI is initialized already in this process (call InitMPI once)")
		return
	case state == 2:
		ready <- errors.New("dist: InitMPI: MPI was finalized in this process and cannot start again")
		return
	case state == 3:
		ready <- errors.New("dist: InitMPI: the MPI library does not provide MPI_THREAD_FUNNELED, which a Go process needs (it has several threads)")
		return
	case rc != C.MPI_SUCCESS:
		ready <- fmt.Errorf("dist: InitMPI: %w", mpiError(rc))
		return
	}
	var rank, size C.int
	if rc := C.MPI_Comm_rank(m.comm, &rank); rc != C.MPI_SUCCESS {
		ready <- fmt.Errorf("dist: InitMPI: MPI_Comm_rank: %w", mpiError(rc))
		return
	}
	if rc := C.MPI_Comm_size(m.comm, &size); rc != C.MPI_SUCCESS {
		ready <- fmt.Errorf("dist: InitMPI: MPI_Comm_size: %w", mpiError(rc))
		return
	}
	m.rank, m.size = int(rank), int(size)
	var nodeRank, nodeSize C.int
	if rc := C.mtl_node(m.comm, rank, &nodeRank, &nodeSize); rc != C.MPI_SUCCESS {
		ready <- fmt.Errorf("dist: InitMPI: MPI_Comm_split_type: %w", mpiError(rc))
		return
	}
	m.nodeRank, m.nodeSize = int(nodeRank), int(nodeSize)
	ready <- nil
	for f := range m.calls {
		f()
	}
}

// do runs f on the MPI thread and returns its MPI error, if any.
func (m *mpiComm) do(name string, f func() C.int) error {
	if m.closed {
		return ErrClosed
	}
	done := make(chan C.int)
	m.calls <- func() { done <- f() }
	if rc := <-done; rc != C.MPI_SUCCESS {
		return fmt.Errorf("dist: %s (rank %d of %d): %w", name, m.rank, m.size, mpiError(rc))
	}
	return nil
}

// mpiError is the text of an MPI error code.
func mpiError(rc C.int) error {
	var buf [C.MPI_MAX_ERROR_STRING]C.char
	var n C.int
	if C.MPI_Error_string(rc, &buf[0], &n) != C.MPI_SUCCESS || n <= 0 {
		return fmt.Errorf("MPI error %d", int(rc))
	}
	return fmt.Errorf("MPI error %d: %s", int(rc), C.GoStringN(&buf[0], n))
}

func (m *mpiComm) Rank() int { return m.rank }
func (m *mpiComm) Size() int { return m.size }

func (m *mpiComm) NodeRanks() (rank, size int) { return m.nodeRank, m.nodeSize }

func (m *mpiComm) Barrier() error {
	return m.do("Barrier", func() C.int { return C.MPI_Barrier(m.comm) })
}

func (m *mpiComm) Bcast(buf []byte, root int) error {
	if err := checkRoot(root, m.size); err != nil {
		return err
	}
	if len(buf) > math.MaxInt32 {
		return fmt.Errorf("dist: Bcast of %d bytes: more than 2^31-1", len(buf))
	}
	return m.bcast(buf, root)
}

// bcast is MPI_Bcast without Bcast's checks (the tests hand MPI a bad root
// to see its error come back).
func (m *mpiComm) bcast(buf []byte, root int) error {
	p := unsafe.Pointer(unsafe.SliceData(buf))
	return m.do("Bcast", func() C.int {
		return C.MPI_Bcast(p, C.int(len(buf)), C.mtl_byte(), C.int(root), m.comm)
	})
}

func (m *mpiComm) AllreduceSum(buf []float32) error {
	if m.closed {
		return ErrClosed
	}
	var err error
	m.scratch, err = allreduceSum(m, buf, m.scratch)
	return err
}

func (m *mpiComm) AllgathervInt32(send, recv []int32, counts []int) error {
	return mpiAllgatherv(m, "AllgathervInt32", C.mtl_int32(), send, recv, counts)
}

func (m *mpiComm) AllgathervFloat32(send, recv []float32, counts []int) error {
	return mpiAllgatherv(m, "AllgathervFloat32", C.mtl_float(), send, recv, counts)
}

func (m *mpiComm) AlltoallvInt32(send []int32, sendCounts []int, recv []int32, recvCounts []int) error {
	return mpiAlltoallv(m, "AlltoallvInt32", C.mtl_int32(), send, sendCounts, recv, recvCounts)
}

func (m *mpiComm) AlltoallvFloat32(send []float32, sendCounts []int, recv []float32, recvCounts []int) error {
	return mpiAlltoallv(m, "AlltoallvFloat32", C.mtl_float(), send, sendCounts, recv, recvCounts)
}

func (m *mpiComm) Close() error {
	if m.closed {
		return ErrClosed
	}
	err := m.do("MPI_Finalize", func() C.int { return C.mtl_finalize(&m.comm) })
	m.closed = true
	close(m.calls)
	return err
}

// cInts converts checked counts (each and their sum <= 2^31-1) to C ints
// with their displacements.
func cInts(counts []int) (cs, ds []C.int) {
	cs, ds = make([]C.int, len(counts)), make([]C.int, len(counts))
	for i, d := range displs(counts) {
		cs[i], ds[i] = C.int(counts[i]), C.int(d)
	}
	return cs, ds
}

func mpiAllgatherv[T int32 | float32](m *mpiComm, op string, dt C.MPI_Datatype, send, recv []T, counts []int) error {
	if err := checkCounts(m.size, counts, len(recv), op+" recv"); err != nil {
		return err
	}
	if counts[m.rank] != len(send) {
		return fmt.Errorf("dist: %s: sends %d elements but counts[%d] is %d", op, len(send), m.rank, counts[m.rank])
	}
	cs, ds := cInts(counts)
	sp, rp := unsafe.Pointer(unsafe.SliceData(send)), unsafe.Pointer(unsafe.SliceData(recv))
	return m.do(op, func() C.int {
		return C.MPI_Allgatherv(sp, C.int(len(send)), dt, rp, &cs[0], &ds[0], dt, m.comm)
	})
}

func mpiAlltoallv[T int32 | float32](m *mpiComm, op string, dt C.MPI_Datatype, send []T, sendCounts []int, recv []T, recvCounts []int) error {
	if err := checkCounts(m.size, sendCounts, len(send), op+" send"); err != nil {
		return err
	}
	if err := checkCounts(m.size, recvCounts, len(recv), op+" recv"); err != nil {
		return err
	}
	scs, sds := cInts(sendCounts)
	rcs, rds := cInts(recvCounts)
	sp, rp := unsafe.Pointer(unsafe.SliceData(send)), unsafe.Pointer(unsafe.SliceData(recv))
	return m.do(op, func() C.int {
		return C.MPI_Alltoallv(sp, &scs[0], &sds[0], dt, rp, &rcs[0], &rds[0], dt, m.comm)
	})
}
