package mtl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl/metrics"
)

// distributed reports whether the Trainer is one rank of a job of several.
func (t *Trainer) distributed() bool {
	return t.opts.Comm != nil && t.opts.Comm.Size() > 1
}

// scored is what one rank scored of a pass (a distributed evaluation, or a
// training step's metrics), to be gathered: per task the rank's rows'
// predictions and labels in the order of its batches, a label NaN outside
// the task's sample space (the loader refuses NaN labels, so NaN is free
// to mean "not scored"); the row-weighted loss sums; the gates' weights
// summed over the rows.
type scored struct {
	preds, labels [][]float32
	rows          int
	lossSum       float64
	taskSum       []float64
	gates         map[string][]float64
}

func newScored(tasks int) *scored {
	return &scored{preds: make([][]float32, tasks), labels: make([][]float32, tasks),
		taskSum: make([]float64, tasks), gates: map[string][]float64{}}
}

// reset empties s, keeping its memory.
func (s *scored) reset() {
	for i := range s.preds {
		s.preds[i], s.labels[i] = s.preds[i][:0], s.labels[i][:0]
	}
	s.rows, s.lossSum = 0, 0
	clear(s.taskSum)
	clear(s.gates)
}

// collect scores b into s (with its loss when withLoss). An empty batch
// adds nothing. A collective per batch (a row-sharded lookup) belongs
// here, before the rows check: every rank calls collect at every step of a
// pass, with an empty batch where its part has run out.
func (t *Trainer) collect(b *loader.Batch, s *scored, withLoss bool) error {
	if b.Rows == 0 {
		return t.joinCollect(withLoss)
	}
	if withLoss {
		st, err := t.m.Loss(b)
		if err != nil {
			return err
		}
		n := float64(b.Rows)
		s.lossSum += st.Loss * n
		for i, l := range st.TaskLoss {
			s.taskSum[i] += l * n
		}
	}
	err := t.predictLabeled(b, func(i int, preds, labels, mask []float32) error {
		s.preds[i] = append(s.preds[i], preds...)
		at := len(s.labels[i])
		s.labels[i] = append(s.labels[i], labels...)
		for j, m := range mask {
			if m == 0 {
				s.labels[i][at+j] = float32(math.NaN())
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for name, w := range t.m.GateWeights() {
		sum := s.gates[name]
		if sum == nil {
			sum = make([]float64, len(w))
			s.gates[name] = sum
		}
		for j, x := range w {
			sum[j] += x * float64(b.Rows)
		}
	}
	s.rows += b.Rows
	return nil
}

// joinCollect is collect's part in the other ranks' collectives without a
// batch: in a job whose tables are sharded by rows, the lookups of their
// Loss (when withLoss) and Predict, which this rank's rows are served in
// (Model.JoinLookup; nothing to do with replicated tables).
func (t *Trainer) joinCollect(withLoss bool) error {
	if withLoss {
		if err := t.m.JoinLookup(); err != nil {
			return err
		}
	}
	return t.m.JoinLookup()
}

// gathered is every rank's scored rows and sums, the same on every rank.
type gathered struct {
	rows    []int // per rank
	preds   [][][]float32
	labels  [][][]float32
	lossSum float64 // summed in rank order
	taskSum []float64
	gates   map[string][]float64
	total   int
}

// gatherScored hands every rank every rank's scored rows (in rank order)
// and the sums of their losses and gates (added in rank order, so the same
// bits on every rank), in two collectives: the parts' lengths, then the
// parts. failed is this rank's error of the pass, if any: the rank then
// sends a failure mark instead of its rows, and every rank returns an
// error (the failed rank its own), so that no rank waits for another.
func (t *Trainer) gatherScored(s *scored, failed error) (*gathered, error) {
	c := t.opts.Comm
	n, nt := c.Size(), len(t.m.tasks)
	gateNames := t.m.gateNames()
	// A part: a header of float64s carried as pairs of float32 slots
	// (copies move bits; no arithmetic touches them), then per task the
	// predictions and the labels.
	var head []float64
	if failed != nil {
		head = []float64{1, 0}
	} else {
		head = append(head, 0, float64(s.rows), s.lossSum)
		head = append(head, s.taskSum...)
		for _, g := range gateNames {
			sum := s.gates[g]
			head = append(head, float64(len(sum)))
			head = append(head, sum...)
		}
	}
	send := make([]float32, 0, 2*len(head)+2*nt*s.rows)
	for _, x := range head {
		u := math.Float64bits(x)
		send = append(send, math.Float32frombits(uint32(u)), math.Float32frombits(uint32(u>>32)))
	}
	if failed == nil {
		for i := range nt {
			send = append(send, s.preds[i]...)
			send = append(send, s.labels[i]...)
		}
	}
	counts, err := dist.GatherCounts(c, len(send))
	if err != nil {
		return nil, err
	}
	recv := make([]float32, sum(counts))
	if err := c.AllgathervFloat32(send, recv, counts); err != nil {
		return nil, err
	}
	g := &gathered{rows: make([]int, n), preds: make([][][]float32, n), labels: make([][][]float32, n),
		taskSum: make([]float64, nt), gates: map[string][]float64{}}
	failures := 0
	at := 0
	for r := range n {
		part := recv[at : at+counts[r]]
		at += counts[r]
		f64 := func(k int) float64 {
			return math.Float64frombits(uint64(math.Float32bits(part[2*k])) | uint64(math.Float32bits(part[2*k+1]))<<32)
		}
		if f64(0) != 0 {
			failures++
			continue
		}
		rows := int(f64(1))
		g.rows[r] = rows
		g.total += rows
		g.lossSum += f64(2)
		k := 3
		for i := range nt {
			g.taskSum[i] += f64(k)
			k++
		}
		for _, name := range gateNames {
			e := int(f64(k))
			k++
			if e == 0 {
				continue
			}
			sums := g.gates[name]
			if sums == nil {
				sums = make([]float64, e)
				g.gates[name] = sums
			}
			for j := range e {
				sums[j] += f64(k + j)
			}
			k += e
		}
		data := part[2*k:]
		g.preds[r], g.labels[r] = make([][]float32, nt), make([][]float32, nt)
		for i := range nt {
			g.preds[r][i] = data[2*i*rows : (2*i+1)*rows]
			g.labels[r][i] = data[(2*i+1)*rows : (2*i+2)*rows]
		}
	}
	switch {
	case failed != nil:
		return nil, failed
	case failures > 0:
		return nil, fmt.Errorf("%d of the %d ranks failed (their output says why)", failures, n)
	}
	return g, nil
}

// addTo adds the gathered rows to e, rank after rank; order, when not nil,
// lists (rank, first row, rows) runs that give the rows in another order
// (the dataset's), which the sums of logloss, RMSE and MAE follow.
func (g *gathered) addTo(t *Trainer, e *metrics.Evaluator, order []rowRun) error {
	if order == nil {
		for r, rows := range g.rows {
			order = append(order, rowRun{rank: r, from: 0, rows: rows})
		}
	}
	var labels, mask []float32
	for i, task := range t.m.tasks {
		masked := t.m.cfg.SampleSpace[task.Target] != ""
		for _, run := range order {
			if run.rows == 0 {
				continue
			}
			p := g.preds[run.rank][i][run.from : run.from+run.rows]
			l := g.labels[run.rank][i][run.from : run.from+run.rows]
			var m []float32
			if masked {
				// NaN marks a row outside the sample space.
				labels, mask = slices.Grow(labels[:0], run.rows)[:run.rows], slices.Grow(mask[:0], run.rows)[:run.rows]
				for j, y := range l {
					labels[j], mask[j] = y, 1
					if y != y {
						labels[j], mask[j] = 0, 0
					}
				}
				l, m = labels, mask
			}
			if err := e.Add(i, p, l, m); err != nil {
				return err
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(g.gates)) {
		e.AddGateSums(name, g.gates[name], float64(g.total))
	}
	return nil
}

// rowRun is rows [from, from+rows) of rank's gathered rows.
type rowRun struct{ rank, from, rows int }

// datasetOrder lists the runs that put the ranks' rows of an unshuffled
// pass over all of p's row groups back in the dataset's order: each
// rank read its row groups in dataset order, one after the other.
func datasetOrder(p dist.Partition, layout [][]int64) []rowRun {
	type where struct{ rank, from int }
	at := map[loader.RowGroupID]where{}
	for r, part := range p.Parts {
		from := 0
		for _, id := range part {
			at[id] = where{r, from}
			from += int(layout[id.File][id.RowGroup])
		}
	}
	var out []rowRun
	for f, rgs := range layout {
		for rg, rows := range rgs {
			w := at[loader.RowGroupID{File: f, RowGroup: rg}]
			out = append(out, rowRun{rank: w.rank, from: w.from, rows: int(rows)})
		}
	}
	return out
}

// evaluateDist is evaluate on a rank of a distributed job: each rank
// scores its part of ds (dist.NewEvalPartition, the row groups split as
// for training), every rank takes the same steps (an empty batch where its
// part has run out), and the scores and labels are gathered, so that every
// rank computes the metrics of the whole set. Unshuffled and without a
// step limit, the rows are added in the dataset's order: every metric but
// the losses and gate means is then the bits one process computes on ds
// (the losses and gate means are sums of per-batch means, which depend on
// where batches are cut, in one process too). With maxSteps each rank
// scores at most maxSteps batches of its part.
func (t *Trainer) evaluateDist(ctx context.Context, ds *loader.Dataset, maxSteps int, desc string) (metrics.Results, error) {
	c := t.opts.Comm
	layout := ds.RowGroupRows()
	if err := dist.AgreeOnLayout(c, ds.Files(), layout); err != nil {
		return nil, fmt.Errorf("mtl: evaluate %s: %w", ds.Path(), err)
	}
	p, err := dist.NewEvalPartition(layout, c.Size())
	if err != nil {
		return nil, fmt.Errorf("mtl: evaluate %s: %w", ds.Path(), err)
	}
	bs, dropLast := ds.BatchSize(), ds.DropLast()
	steps, err := p.StepsPerEpoch(bs, dropLast)
	if err != nil {
		return nil, fmt.Errorf("mtl: evaluate: %w", err)
	}
	limited := maxSteps > 0 && maxSteps < steps
	if limited {
		steps = maxSteps
	}
	var total int64
	for s := range steps {
		total += int64(globalRows(p, s, bs, dropLast))
	}
	bar := t.startProgress(desc, false, total)
	s := newScored(len(t.m.tasks))
	// A rank's failure is kept until the gather, so that every rank takes
	// every step and learns of it there.
	part, failed := ds.Select(p.Parts[c.Rank()])
	var it *loader.Iterator
	if failed == nil {
		it = part.Epoch(ctx, 0)
		defer it.Close()
	}
	for step := range steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b := &loader.Batch{}
		if failed == nil {
			nb, err := it.Next()
			switch {
			case err == nil:
				b = nb
			case !errors.Is(err, io.EOF):
				failed = fmt.Errorf("reading evaluation data: %w", err)
			}
		}
		if failed == nil {
			failed = t.collect(b, s, true)
		} else if err := t.joinCollect(true); err != nil {
			// a rank that failed still serves the others' lookups
			// until the gather tells every rank
			failed = errors.Join(failed, err)
		}
		b.Release()
		bar.add(int64(globalRows(p, step, bs, dropLast)), 0)
	}
	g, err := t.gatherScored(s, failed)
	if err != nil {
		return nil, fmt.Errorf("mtl: evaluate: %w", err)
	}
	bar.finish()
	if g.total == 0 {
		return nil, errors.New("mtl: evaluate: the dataset has no rows")
	}
	var order []rowRun
	if !limited && !ds.Shuffles() && !dropLast {
		order = datasetOrder(p, layout)
	}
	e := metrics.NewEvaluator(t.taskSpecs())
	if err := g.addTo(t, e, order); err != nil {
		return nil, fmt.Errorf("mtl: evaluate: %w", err)
	}
	out := e.Results()
	rows := float64(g.total)
	out[LossKey] = g.lossSum / rows
	for i, task := range t.m.tasks {
		out[metrics.Key(task.Name, LossKey)] = g.taskSum[i] / rows
	}
	return out, nil
}

// globalRows is the rows of step over all ranks of p.
func globalRows(p dist.Partition, step, batch int, dropLast bool) int {
	n := 0
	for r := range p.Rows {
		n += p.BatchRows(r, step, batch, dropLast)
	}
	return n
}

// scoreDist adds a training step's batches of all ranks to e (training
// metrics): every rank scores its batch b (maybe empty) and the rows are
// gathered in rank order, the order of the step's global batch.
func (t *Trainer) scoreDist(b *loader.Batch, e *metrics.Evaluator, s *scored) error {
	s.reset()
	g, err := t.gatherScored(s, t.collect(b, s, false))
	if err != nil {
		return err
	}
	return g.addTo(t, e, nil)
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}
