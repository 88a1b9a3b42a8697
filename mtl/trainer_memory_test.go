package mtl_test

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/schema"
)

// measureNewModel returns the bytes NewModel allocates (everything it
// allocates, transient buffers included: the peak it can reach) and the
// bytes still live once it returns. The CPU device allocates tensors on the
// Go heap, so the runtime's counters see them.
func measureNewModel(t *testing.T, s *schema.Schema, cfg mtl.Config, dev kernels.Device, batch int) (total, live uint64) {
	t.Helper()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m, err := mtl.NewModel(s, cfg, dev, batch)
	require.NoError(t, err)
	runtime.ReadMemStats(&after)
	total = after.TotalAlloc - before.TotalAlloc
	runtime.GC()
	runtime.ReadMemStats(&after)
	live = after.HeapAlloc - before.HeapAlloc
	runtime.KeepAlive(m)
	m.Release()
	return total, live
}

// TestEstimateMemoryMatchesAllocation: the estimate, computed without
// allocating, is close to what NewModel really allocates, for every
// architecture, with parameter-dominated and activation-dominated shapes.
func TestEstimateMemoryMatchesAllocation(t *testing.T) {
	big := func(model string) mtl.Config {
		c := mtl.DefaultConfig()
		c.Model = model
		c.Dropout = 0.1
		return c
	}
	cases := []struct {
		name  string
		s     *schema.Schema
		cfg   mtl.Config
		batch int
	}{
		{"mlp, tables dominate", schema.TenrecWithRows(20000), big("mlp"), 256},
		{"mlp, batch dominates", schema.TenrecWithRows(300), big("mlp"), 8192},
		{"mmoe", schema.TenrecWithRows(300), big("mmoe"), 4096},
		{"cgc adagrad", schema.TenrecWithRows(2000), func() mtl.Config { c := big("cgc"); c.Optimizer = "adagrad"; return c }(), 2048},
		{"ple sgd", schema.TenrecWithRows(300), func() mtl.Config { c := big("ple"); c.Optimizer = "sgd"; c.PLELayers = 3; return c }(), 4096},
		{"wide mlp", schema.TenrecWithRows(300), func() mtl.Config { c := big("mlp"); c.MLPLayers = []int{1024, 512}; return c }(), 512},
		{"deepfm", schema.TenrecWithRows(2000), func() mtl.Config { c := big("deepfm"); c.EmbeddingsDim = 32; return c }(), 2048},
		{"wide_n_deep", schema.TenrecWithRows(2000), big("wide_n_deep"), 2048},
		{"dcn", schema.TenrecWithRows(300), func() mtl.Config { c := big("dcn"); c.DCNInteractedLayerNum = 3; return c }(), 4096},
		{"dlrm", schema.TenrecWithRows(2000), big("dlrm"), 4096},
		{"dlrm with continuous features", withContinuous(schema.TenrecWithRows(300)), func() mtl.Config {
			c := big("dlrm")
			c.EmbeddingsDim = 32
			return c
		}(), 4096},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dev := kernels.NewCPU(1)
			est, err := mtl.EstimateMemory(c.s, c.cfg, dev, c.batch)
			require.NoError(t, err)
			total, live := measureNewModel(t, c.s, c.cfg, dev, c.batch)
			t.Logf("estimate %d (%s); allocated %d, live %d", est.Total, est, total, live)
			assert.InEpsilon(t, float64(total), float64(est.Total), 0.25, "estimate vs allocated")
			assert.GreaterOrEqual(t, float64(est.Total), 0.9*float64(live), "the estimate covers what stays allocated")
			// The parameter count is exact.
			m, err := mtl.NewModel(c.s, c.cfg, dev, 1)
			require.NoError(t, err)
			var params int64
			for _, p := range m.Params() {
				params += int64(p.Tensor.Len())
			}
			m.Release()
			assert.Equal(t, params, est.Params)
		})
	}
}

// TestEstimateMemoryHugeSizes: sizes whose allocation would kill the
// process are estimated without overflow.
func TestEstimateMemoryHugeSizes(t *testing.T) {
	cfg := mtl.DefaultConfig()
	cfg.Model = "mlp"
	cfg.MLPLayers = []int{200000, 200000}
	est, err := mtl.EstimateMemory(schema.Tenrec(), cfg, kernels.NewCPU(1), 1024)
	require.NoError(t, err)
	// 200000*200000 float32 weights alone: 160 GB, times 4 with Adam's
	// moments and the gradient.
	assert.Greater(t, est.Dense, int64(160e9))
	assert.Greater(t, est.Total, int64(640e9))
	assert.Contains(t, est.String(), "dense parameters 149.")

	cfg = mtl.DefaultConfig()
	cfg.MLPLayers = []int{1 << 40, 1 << 40}
	cfg.Model = "mlp"
	est, err = mtl.EstimateMemory(schema.Tenrec(), cfg, nil, 1<<40)
	require.NoError(t, err)
	assert.Equal(t, int64(1<<63-1), est.Total, "saturates instead of wrapping around")

	_, err = mtl.EstimateMemory(schema.Tenrec(), cfg, nil, 0)
	require.Error(t, err)
	cfg.Model = "xdeepfm"
	_, err = mtl.EstimateMemory(schema.Tenrec(), cfg, nil, 8)
	require.Error(t, err, "the configuration is validated like NewModel's")
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		5 << 30: "5.0 GiB", 3 << 40: "3.0 TiB"} {
		assert.Equal(t, want, mtl.FormatBytes(n), n)
	}
}

// withContinuous adds two continuous inputs to s.
func withContinuous(s *schema.Schema) *schema.Schema {
	for _, n := range []string{"dwell", "price"} {
		s.Features = append(s.Features, &schema.Feature{Name: n, DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}})
	}
	return s
}
