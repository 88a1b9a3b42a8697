package step

import (
	"slices"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
)

// jobs split the work after a batch's shards (finishing the gradients,
// then the optimizer update) into independent pieces: one per embedding
// table, largest first, then groups of dense parameters. They run
// concurrently on a kernels.Sharder.
type jobs struct {
	sharder kernels.Sharder // nil: one after the other
	jobs    []updateJob
}

// updateJob is one embedding table (table >= 0) or the dense parameters
// [lo, hi) in dense order (the order of Spec.Params without the tables).
type updateJob struct {
	table  int
	lo, hi int
}

// denseJobs is the number of groups the dense parameters are split into.
const denseJobs = 4

// planJobs plans the jobs of the parameters ps, whose first len(tables)
// entries are the embedding tables.
func planJobs(sharder kernels.Sharder, tables []*layers.EmbeddingTable, ps []layers.Param) *jobs {
	js := &jobs{sharder: sharder}
	nt := len(tables)
	order := make([]int, nt)
	for i := range order {
		order[i] = i
	}
	size := func(t int) int { return tables[t].Rows * tables[t].Dim }
	slices.SortStableFunc(order, func(a, b int) int { return size(b) - size(a) })
	for _, t := range order {
		js.jobs = append(js.jobs, updateJob{table: t})
	}
	dense := ps[nt:]
	total := 0
	for _, p := range dense {
		total += p.Value.Len()
	}
	lo, acc := 0, 0
	for i, p := range dense {
		acc += p.Value.Len()
		if g := len(js.jobs) - nt; acc*denseJobs >= (g+1)*total || i == len(dense)-1 {
			js.jobs = append(js.jobs, updateJob{table: -1, lo: lo, hi: i + 1})
			lo = i + 1
		}
	}
	return js
}

// run calls f for every job, concurrently on a Sharder.
func (js *jobs) run(f func(int)) {
	if js.sharder != nil {
		js.sharder.RunShards(len(js.jobs), f)
		return
	}
	for j := range js.jobs {
		f(j)
	}
}
