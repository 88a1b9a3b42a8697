// Package mpitest runs a package's tests as the ranks of Open MPI jobs on
// this machine, over loopback: the parent test builds the package's tests
// with the build tag mpi (Build) and starts a worker test of that binary
// under mpirun (Run), which prints one line per rank that passed.
package mpitest

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

// Args are mpirun's options for a job of np ranks on this machine alone,
// over loopback (Open MPI 4.1): as many ranks as asked whatever the cores
// (--oversubscribe, no binding), the shared-memory and TCP transports on lo
// only (no InfiniBand or UCX probing), and no single-copy shared memory,
// which containers without ptrace rights refuse. btl is "self,vader,tcp"
// or "self,tcp".
func Args(np int, btl string) []string {
	args := []string{"-np", fmt.Sprint(np), "--oversubscribe", "--bind-to", "none",
		"--mca", "btl", btl, "--mca", "pml", "ob1",
		"--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
		"--mca", "btl_vader_single_copy_mechanism", "none"}
	if os.Geteuid() == 0 {
		args = append(args, "--allow-run-as-root") // CI runs as root
	}
	return args
}

// Build compiles the tests of the package in the current directory with
// -tags mpi and returns mpirun's path and the binary's. It skips t, saying
// why, when mpirun, Open MPI's development files, cgo or the go command
// are missing (make setup installs Open MPI).
func Build(t testing.TB, name string) (mpirun, bin string) {
	t.Helper()
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
	bin = filepath.Join(t.TempDir(), name)
	build := exec.Command(gobin, "test", "-c", "-tags", "mpi", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c -tags mpi: %v\n%s", err, out)
	}
	return mpirun, bin
}

// Run runs the test named test of bin under mpirun with np ranks over btl,
// with env added to the environment, and returns its output; a job that
// fails or runs past timeout fails t.
func Run(t testing.TB, mpirun, bin string, np int, btl, test string, timeout time.Duration, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append(Args(np, btl), bin, "-test.run", "^"+test+"$", "-test.count", "1", "-test.v")
	cmd := exec.CommandContext(ctx, mpirun, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("mpirun -np %d %s: %v", np, test, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("mpirun -np %d: %v\n%s", np, err, out.Bytes())
	}
	return out.String()
}

// CheckRanks checks the output of a job of np ranks whose workers print
// "<mark> rank=R size=N digest=HEX" when they pass: every rank passed,
// reports np ranks, and has rank 0's digest (the ranks computed the same
// bits).
func CheckRanks(t testing.TB, out, mark string, np int) {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(mark) + ` rank=(\d+) size=(\d+) digest=([0-9a-f]+)`)
	digests := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if m[2] != fmt.Sprint(np) {
			t.Errorf("rank %s reports %s ranks, want %d", m[1], m[2], np)
		}
		digests[m[1]] = m[3]
	}
	if len(digests) != np {
		t.Fatalf("%d of %d ranks passed:\n%s", len(digests), np, out)
	}
	for r, d := range digests {
		if d != digests["0"] {
			t.Errorf("rank %s's digest differs from rank 0's: they computed other bits", r)
		}
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}
