package kernels

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// The sparse optimizers request the rows they will update ahead with
// software prefetches. A compiler may drop those without a trace: GCC 12
// deleted every prefetch of mtlcpu_sparse_adam and mtlcpu_sparse_adagrad
// (__builtin_prefetch in a loop followed by a call), which then waited for
// each row's cache misses in turn. This test compiles cpu_kernels.c with
// the package's cgo flags and the C compiler cgo uses, and reads the
// machine code: each kernel must hold prefetch instructions (0F 18 /0-/3).
func TestSparseKernelsPrefetch(t *testing.T) {
	if runtime.GOARCH != "amd64" || runtime.GOOS != "linux" {
		t.Skip("reads x86-64 ELF machine code")
	}
	if testing.Short() {
		t.Skip("compiles cpu_kernels.c")
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler: %v", err)
	}
	obj := filepath.Join(t.TempDir(), "cpu_kernels.o")
	// the flags of cpu_cgo.go after cgo's default CGO_CFLAGS
	if out, err := exec.Command(cc, "-O2", "-g", "-O3", "-std=c11", "-c", "cpu_kernels.c", "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cc, err, out)
	}
	f, err := elf.Open(obj)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, kernel := range []string{"mtlcpu_sparse_adam", "mtlcpu_sparse_adagrad", "mtlcpu_sparse_sgd"} {
		t.Run(kernel, func(t *testing.T) {
			for _, s := range syms {
				if s.Name != kernel {
					continue
				}
				data, err := f.Sections[s.Section].Data()
				if err != nil {
					t.Fatal(err)
				}
				code := data[s.Value : s.Value+s.Size]
				n := 0
				for i := 0; i+2 < len(code); i++ {
					if code[i] == 0x0f && code[i+1] == 0x18 && (code[i+2]>>3)&7 <= 3 {
						n++
					}
				}
				if n < 3 {
					t.Errorf("%d prefetch instructions in %d bytes of machine code: the rows are not requested ahead", n, len(code))
				}
				return
			}
			t.Fatal("not in the object's symbol table")
		})
	}
}
