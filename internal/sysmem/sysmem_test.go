package sysmem

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCeiling(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	defer func(m string, c []string) { memInfoPath, cgroupMax = m, c }(memInfoPath, cgroupMax)
	memInfoPath = write("meminfo", "MemTotal:       1000 kB\nMemFree:  10 kB\nSwapTotal:      24 kB\n")
	cases := []struct {
		name, cgroup string
		want         int64
	}{
		{"no cgroup limit", "max\n", 1024 << 10},
		{"lower cgroup limit", "524288\n", 524288},
		{"higher cgroup limit", "1073741824\n", 1024 << 10},
		{"v1 unlimited", "9223372036854771712\n", 1024 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cgroupMax = []string{write("memory.max", tc.cgroup)}
			got, ok := Ceiling()
			require.True(t, ok)
			require.Equal(t, tc.want, got)
		})
	}
	memInfoPath, cgroupMax = filepath.Join(dir, "missing"), nil
	_, ok := Ceiling()
	require.False(t, ok)
	// The real machine has some.
	memInfoPath = "/proc/meminfo"
	if _, err := os.Stat(memInfoPath); err == nil {
		n, ok := Ceiling()
		require.True(t, ok)
		require.Greater(t, n, int64(1<<20))
	}
}
