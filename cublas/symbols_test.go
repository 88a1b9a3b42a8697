//go:build cuda

package cublas

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every C function package cublas calls resolves into libmtlcuda.so, not to
// a namesake elsewhere in the process (the CPU kernels of package kernels
// once defined 14 of the same names, and the executable's definitions won).
func TestCUDACallsReachLibmtlcuda(t *testing.T) {
	lib, err := LibraryPath()
	require.NoError(t, err)
	assert.Equal(t, "libmtlcuda.so", filepath.Base(lib))
	// The API's functions, from the header, and the ones this package calls.
	header, err := os.ReadFile("../csrc/mtlcuda.h")
	require.NoError(t, err)
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`MTL_API[^;]*?\b(mtl\w*)\(`).FindAllSubmatch(header, -1) {
		names[string(m[1])] = true
	}
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	called := 0
	wrapped := map[string]bool{}
	call := regexp.MustCompile(`C\.(mtl\w*)\(`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range call.FindAllSubmatch(src, -1) {
			if names[string(m[1])] {
				called++
				wrapped[string(m[1])] = true
			}
		}
	}
	require.Greater(t, called, 50, "calls of the C API found in package cublas")
	// The package wraps all of the library: every function of the header
	// is called from it.
	for n := range names {
		assert.True(t, wrapped[n], "%s (csrc/mtlcuda.h) has no wrapper in package cublas", n)
	}
	require.Greater(t, len(names), 50, "C calls found in package cublas")
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		assert.True(t, strings.HasPrefix(n, "mtlcuda_"), "%s: the C API's names start with mtlcuda_", n)
		obj, err := SymbolObject(n)
		if assert.NoError(t, err, n) {
			assert.Equal(t, lib, obj, "%s resolves outside libmtlcuda.so", n)
		}
	}
	// The calls as linked (not only as the dynamic linker would look the
	// names up) land in the library.
	for n, p := range linkedEntryPoints() {
		assert.Equal(t, lib, objectAt(p), "the call of %s is linked outside libmtlcuda.so", n)
	}
	// The former shared names are gone from the process.
	for _, old := range []string{"mtl_sigmoid", "mtl_adam", "mtl_axpy", "mtl_bias_act"} {
		_, err := SymbolObject(old)
		assert.Error(t, err, old)
	}
}
