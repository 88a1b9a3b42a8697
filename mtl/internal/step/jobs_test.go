package step

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
)

// TestPlanJobs: one job per embedding table, largest first (ties in table
// order), then the dense parameters in order, cut into at most denseJobs
// groups of about equal size that cover each parameter once.
func TestPlanJobs(t *testing.T) {
	dev := kernels.NewCPU(1)
	tables := []*layers.EmbeddingTable{{Rows: 10, Dim: 8}, {Rows: 100, Dim: 8}, {Rows: 80, Dim: 10}, {Rows: 5, Dim: 16}}
	var ps []layers.Param
	for range tables {
		ps = append(ps, layers.Param{Sparse: true})
	}
	for _, n := range []int{100, 1, 100, 1, 100, 1, 100, 1} {
		v := dev.Alloc(kernels.Float32, n)
		t.Cleanup(v.Release)
		ps = append(ps, layers.Param{Value: v})
	}
	js := planJobs(nil, tables, ps)
	want := []updateJob{
		{table: 1}, {table: 2}, {table: 0}, {table: 3}, // 800, 800, 80, 80 values
		{table: -1, lo: 0, hi: 2}, {table: -1, lo: 2, hi: 4}, {table: -1, lo: 4, hi: 6}, {table: -1, lo: 6, hi: 8},
	}
	assert.Equal(t, want, js.jobs)

	// fewer dense parameters than groups: one job each; none: no dense job
	js = planJobs(nil, tables[:1], append(ps[:1:1], ps[4:6]...))
	assert.Equal(t, []updateJob{{table: 0}, {table: -1, lo: 0, hi: 1}, {table: -1, lo: 1, hi: 2}}, js.jobs)
	js = planJobs(nil, tables[:1], ps[:1])
	assert.Equal(t, []updateJob{{table: 0}}, js.jobs)

	var ran []int
	js.run(func(j int) { ran = append(ran, j) })
	assert.Equal(t, []int{0}, ran, "without a Sharder the jobs run in order")
}
