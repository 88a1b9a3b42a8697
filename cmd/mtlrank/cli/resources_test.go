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

// fakeMemInfo points availableMemory at a file with the given content.
func fakeMemInfo(t *testing.T, content string) {
	p := filepath.Join(t.TempDir(), "meminfo")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	old := memInfoPath
	memInfoPath = p
	t.Cleanup(func() { memInfoPath = old })
}

func TestAvailableMemory(t *testing.T) {
	dev := kernels.NewCPU(1)
	fakeMemInfo(t, "MemTotal:       24683656 kB\nMemFree:        21045412 kB\nMemAvailable:   2048 kB\n")
	n, what, ok := availableMemory(dev)
	require.True(t, ok)
	assert.Equal(t, int64(2048*1024), n)
	assert.Contains(t, what, "MemAvailable")

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

	// Without --max_memory: the machine's available memory.
	fakeMemInfo(t, "MemAvailable:   1024 kB\n")
	err = checkMemory(s, cfg, dev, 512, 0, 0)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "more than the 1.0 MiB of the memory available on this machine (MemAvailable")
	fakeMemInfo(t, "MemAvailable:   104857600 kB\n")
	require.NoError(t, checkMemory(s, cfg, dev, 512, 0, 0))

	// An invalid configuration is a usage error, as NewModel's are.
	cfg.Model = "dcn"
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
