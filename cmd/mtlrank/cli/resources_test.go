package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/schema"
)

// fakeMemInfo points availableMemory at a file with the given content,
// and at no cgroup.
func fakeMemInfo(t *testing.T, content string) {
	p := filepath.Join(t.TempDir(), "meminfo")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	old, oldCG := memInfoPath, cgroupLimits
	memInfoPath, cgroupLimits = p, nil
	t.Cleanup(func() { memInfoPath, cgroupLimits = old, oldCG })
}

// fakeCgroup sets a v2-style cgroup limit and usage.
func fakeCgroup(t *testing.T, limit, usage string) {
	dir := t.TempDir()
	l, u := filepath.Join(dir, "memory.max"), filepath.Join(dir, "memory.current")
	require.NoError(t, os.WriteFile(l, []byte(limit+"\n"), 0o644))
	require.NoError(t, os.WriteFile(u, []byte(usage+"\n"), 0o644))
	cgroupLimits = [][2]string{{l, u}}
}

func TestAvailableMemory(t *testing.T) {
	dev := kernels.NewCPU(1)
	fakeMemInfo(t, "MemTotal:       24683656 kB\nMemFree:        21045412 kB\nMemAvailable:   2048 kB\n")
	n, what, ok := availableMemory(dev)
	require.True(t, ok)
	assert.Equal(t, int64(2048*1024), n)
	assert.Contains(t, what, "MemAvailable")

	// A cgroup limit below MemAvailable wins; "max" is no limit.
	fakeCgroup(t, "2621440", "1048576")
	n, what, ok = availableMemory(dev)
	require.True(t, ok)
	assert.Equal(t, int64(1536*1024), n)
	assert.Contains(t, what, "cgroup")
	fakeCgroup(t, "max", "1048576")
	n, _, ok = availableMemory(dev)
	require.True(t, ok)
	assert.Equal(t, int64(2048*1024), n)

	fakeMemInfo(t, "MemTotal: 100 kB\n")
	_, _, ok = availableMemory(dev)
	assert.False(t, ok, "no MemAvailable line: unknown")
	memInfoPath = filepath.Join(t.TempDir(), "absent")
	_, _, ok = availableMemory(dev)
	assert.False(t, ok)
}

func TestCheckMemory(t *testing.T) {
	dev := kernels.NewCPU(1)
	s := schema.TenrecWithRows(1000)
	cfg := mtl.DefaultConfig()
	est, err := mtl.EstimateMemory(s, cfg, dev, 512)
	require.NoError(t, err)

	// --max_memory below the estimate.
	err = checkMemory(s, cfg, dev, 512, est.Total-1, 0)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the model needs about "+mtl.FormatBytes(est.Total))
	assert.Contains(t, err.Error(), "of --max_memory")
	assert.Contains(t, err.Error(), "activations for batches of 512 rows")
	require.NoError(t, checkMemory(s, cfg, dev, 512, est.Total, 0))
	// Extra bytes count.
	require.Error(t, checkMemory(s, cfg, dev, 512, est.Total, 1))
	// A rank of a distributed job counts its step's exchange buffers: a
	// limit that one process fits in refuses a rank of 4.
	rank, err := mtl.EstimateRankMemory(s, cfg, dev, 512, 4, false)
	require.NoError(t, err)
	require.Greater(t, rank.Exchange, int64(0))
	err = checkRankMemory(s, cfg, dev, 512, est.Total, 0, 4, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the distributed step's exchange buffers "+mtl.FormatBytes(rank.Exchange))
	require.NoError(t, checkRankMemory(s, cfg, dev, 512, rank.Total, 0, 4, false))
	// With the tables sharded by rows a rank holds its share of them.
	row, err := mtl.EstimateRankMemory(s, cfg, dev, 512, 4, true)
	require.NoError(t, err)
	require.Less(t, row.Embeddings, rank.Embeddings)
	require.NoError(t, checkRankMemory(s, cfg, dev, 512, row.Total, 0, 4, true))
	require.Error(t, checkRankMemory(s, cfg, dev, 512, row.Total-1, 0, 4, true))

	// Without --max_memory: the machine's available memory.
	fakeMemInfo(t, "MemAvailable:   1024 kB\n")
	err = checkMemory(s, cfg, dev, 512, 0, 0)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "more than the 1.0 MiB of the memory available on this machine (MemAvailable")
	fakeMemInfo(t, "MemAvailable:   104857600 kB\n")
	require.NoError(t, checkMemory(s, cfg, dev, 512, 0, 0))

	// An invalid configuration is a usage error, as NewModel's are.
	cfg.Model = "xdeepfm"
	var ue *usageError
	require.ErrorAs(t, checkMemory(s, cfg, dev, 512, 0, 0), &ue)
}

func TestCapBatch(t *testing.T) {
	dir := t.TempDir()
	s := &schema.Schema{Features: []*schema.Feature{{Name: "x", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}}}}
	require.NoError(t, loader.WriteParquet(filepath.Join(dir, "a.parquet"), s, map[string]any{"x": make([]float32, 50)}, 0))
	for _, c := range []struct{ batch, want int }{{100000000, 50}, {50, 50}, {8, 8}} {
		got, err := capBatch(c.batch, dir)
		require.NoError(t, err)
		assert.Equal(t, c.want, got, c.batch)
	}
	_, err := capBatch(8, filepath.Join(dir, "missing"))
	require.Error(t, err)
}

func TestRankProcs(t *testing.T) {
	for _, tc := range []struct {
		name                              string
		env                               string
		cpus, current, nodeRanks, threads int
		want                              int
	}{
		{"2 unbound ranks on 2 cpus", "", 2, 2, 2, 0, 1},
		{"2 unbound ranks on 2 cpus, --threads 1", "", 2, 2, 2, 1, 1},
		{"--threads above the share keeps its workers", "", 2, 2, 2, 2, 0},
		{"3 ranks on 16 cpus", "", 16, 16, 3, 0, 5},
		{"3 ranks on 16 cpus, --threads 8", "", 16, 16, 3, 8, 8},
		{"more ranks than cpus", "", 2, 2, 3, 0, 1},
		{"GOMAXPROCS set by the user", "2", 2, 2, 2, 0, 0},
		{"bound to one core", "", 1, 1, 2, 0, 0},
		{"bound to 4 of 8 cores", "", 4, 4, 2, 0, 2},
		{"GOMAXPROCS already below the share", "", 8, 2, 2, 0, 0},
		{"alone on its machine", "", 8, 8, 1, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := rankProcs(tc.env, tc.cpus, tc.current, tc.nodeRanks, tc.threads)
			if got != tc.want {
				t.Errorf("rankProcs(%q, cpus %d, current %d, %d ranks, threads %d) = %d, want %d",
					tc.env, tc.cpus, tc.current, tc.nodeRanks, tc.threads, got, tc.want)
			}
		})
	}
}

func TestRankPrefetch(t *testing.T) {
	for _, tc := range []struct {
		name         string
		prefetch     int
		given        bool
		ranks, procs int
		want         int
	}{
		{"a rank with one P reads in the step", 2, false, 2, 1, 0},
		{"3 ranks, one P each", 2, false, 3, 1, 0},
		{"a rank with 2 Ps keeps the default", 2, false, 2, 2, 2},
		{"--prefetch given stays", 3, true, 2, 1, 3},
		{"--prefetch 0 given stays", 0, true, 2, 4, 0},
		{"one process keeps its prefetch", 2, false, 1, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rankPrefetch(tc.prefetch, tc.given, tc.ranks, tc.procs); got != tc.want {
				t.Errorf("rankPrefetch(%d, given %v, %d ranks, %d Ps) = %d, want %d", tc.prefetch, tc.given, tc.ranks, tc.procs, got, tc.want)
			}
		})
	}
}
