package mtl

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/schema"
	"github.com/stretchr/testify/require"
)

// procStatusKB reads a "<key>: <n> kB" line of /proc/self/status.
func procStatusKB(t *testing.T, key string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("%s not in /proc/self/status", key)
	return 0
}

// TestTrainingMemoryBigTables trains on tenrec with 1e7-row user_id and
// item_id tables and checks that memory is the parameters plus the
// optimizer state plus O(batch): the Go heap does not grow over training
// steps (no per-step copies or scratch sized by the tables), and the peak
// RSS stays within the tensors the model owns plus a fixed allowance.
// Tables and Adam moments take about 10.6 GB, so the test runs only with
// MTLRANK_BIG_TEST=1 (rows via MTLRANK_BIG_ROWS, default 1e7).
func TestTrainingMemoryBigTables(t *testing.T) {
	if os.Getenv("MTLRANK_BIG_TEST") == "" {
		t.Skip("set MTLRANK_BIG_TEST=1 to allocate 1e7-row tables (about 10.6 GB)")
	}
	rows := int64(10_000_000)
	if v := os.Getenv("MTLRANK_BIG_ROWS"); v != "" {
		var err error
		rows, err = strconv.ParseInt(v, 10, 64)
		require.NoError(t, err)
	}
	const batch = 1024
	s := schema.TenrecWithRows(rows)
	cfg := DefaultConfig()
	cfg.Model = "mmoe"
	cfg.EmbeddingDims = map[string]int{"user_id": 40, "item_id": 48}
	m, err := NewModel(s, cfg, kernels.NewCPU(2), batch)
	require.NoError(t, err)
	defer m.Release()
	var owned int64
	for _, p := range m.Params() {
		owned += 4 * int64(p.Tensor.Len())
	}
	for _, p := range m.OptimizerState() {
		owned += 4 * int64(p.Tensor.Len())
	}
	batches := tenrecBatches(s, 16, batch)
	step := func(n int) {
		for i := range n {
			_, err := m.TrainStep(batches[i%len(batches)])
			require.NoError(t, err)
		}
	}
	step(3)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	step(40)
	runtime.ReadMemStats(&after)
	hwm := procStatusKB(t, "VmHWM") * 1024
	rss := procStatusKB(t, "VmRSS") * 1024
	const mb = 1 << 20
	t.Logf("table rows %d: parameters + optimizer state %d MB; Go heap %d MB; peak RSS %d MB; RSS %d MB; heap growth over 40 steps %d bytes",
		rows, owned/mb, after.HeapAlloc/mb, hwm/mb, rss/mb, int64(after.HeapAlloc)-int64(before.HeapAlloc))
	require.Zero(t, testing.AllocsPerRun(5, func() { step(1) }), "allocations per step")
	require.Less(t, int64(after.HeapAlloc)-int64(before.HeapAlloc), int64(mb), "heap growth over 40 steps")
	require.Less(t, int64(after.HeapAlloc), owned+256*mb, "Go heap: tensors the model owns + O(batch)")
	require.Less(t, hwm, owned+512*mb, "peak RSS: tensors the model owns + O(batch) + runtime")
}
