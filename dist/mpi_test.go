package dist

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

const (
	mpiWorkerEnv  = "MTLRANK_DIST_MPI_WORKER"
	mpiWorkerMark = "dist-mpi-worker-ok"
)

// mpirunArgs are mpirun's options for a job of np ranks on this machine
// alone, over loopback (Open MPI 4.1): as many ranks as asked whatever the
// cores (--oversubscribe, no binding), the shared-memory and TCP transports
// on lo only (no InfiniBand or UCX probing), and no single-copy shared
// memory, which containers without ptrace rights refuse.
func mpirunArgs(np int, btl string) []string {
	args := []string{"-np", fmt.Sprint(np), "--oversubscribe", "--bind-to", "none",
		"--mca", "btl", btl, "--mca", "pml", "ob1",
		"--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
		"--mca", "btl_vader_single_copy_mechanism", "none"}
	if os.Geteuid() == 0 {
		args = append(args, "--allow-run-as-root") // CI runs as root
	}
	return args
}

// TestMPI builds this package's tests with -tags mpi and runs
// TestMPIWorker under mpirun with 1, 2 and 3 ranks (and 3 over TCP alone),
// checking that every rank passed and that every rank's allreduced buffers
// have the same digest. It skips when mpirun or Open MPI's development files
// are missing (make setup installs them).
func TestMPI(t *testing.T) {
	mpirun, err := exec.LookPath("mpirun")
	if err != nil {
		t.Skip("mpirun is not installed (Debian: openmpi-bin, installed by make setup): skipping the MPI tests")
	}
	if err := exec.Command("pkg-config", "--exists", "ompi-c").Run(); err != nil {
		t.Skip("pkg-config finds no ompi-c (Debian: libopenmpi-dev, installed by make setup): skipping the MPI tests")
	}
	if os.Getenv("CGO_ENABLED") == "0" {
		t.Skip("CGO_ENABLED=0: the MPI communicator needs cgo; skipping the MPI tests")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			t.Skip("the go command is neither on PATH nor in $GOROOT/bin: cannot build the -tags mpi test binary")
		}
	}
	bin := filepath.Join(t.TempDir(), "dist-mpi.test")
	build := exec.Command(gobin, "test", "-c", "-tags", "mpi", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c -tags mpi: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		np  int
		btl string
	}{{1, "self,vader,tcp"}, {2, "self,vader,tcp"}, {3, "self,vader,tcp"}, {3, "self,tcp"}} {
		t.Run(fmt.Sprintf("np=%d,btl=%s", tc.np, tc.btl), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			args := append(mpirunArgs(tc.np, tc.btl), bin, "-test.run", "^TestMPIWorker$", "-test.count", "1", "-test.v")
			cmd := exec.CommandContext(ctx, mpirun, args...)
			cmd.Env = append(os.Environ(), mpiWorkerEnv+"=1")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			t.Logf("mpirun -np %d: %v", tc.np, time.Since(start).Round(time.Millisecond))
			if err != nil {
				t.Fatalf("mpirun -np %d: %v\n%s", tc.np, err, out.Bytes())
			}
			re := regexp.MustCompile(mpiWorkerMark + ` rank=(\d+) size=(\d+) digest=([0-9a-f]+)`)
			digests := map[string]string{}
			for _, m := range re.FindAllStringSubmatch(out.String(), -1) {
				if m[2] != fmt.Sprint(tc.np) {
					t.Errorf("rank %s reports %s ranks, want %d", m[1], m[2], tc.np)
				}
				digests[m[1]] = m[3]
			}
			if len(digests) != tc.np {
				t.Fatalf("%d of %d ranks passed:\n%s", len(digests), tc.np, out.Bytes())
			}
			for r, d := range digests {
				if d != digests["0"] {
					t.Errorf("rank %s's allreduced buffers differ from rank 0's", r)
				}
			}
			if testing.Verbose() {
				t.Logf("%s", out.Bytes())
			}
		})
	}
}
