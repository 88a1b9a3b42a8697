package step

import (
	"fmt"

	"github.com/mtlrank/mtlrank/loader"
)

// The parts of a distributed training step that both sharding modes share
// (distStep with replicated tables, rowStep with tables sharded by rows):
// the step's rows from the partition, the fused allreduce of the dense
// gradients, task losses, regularisation term and failure flag (laid out
// flat[:nd] the dense gradients in Spec.Params order, flat[nd+t] task t's
// loss share, flat[nd+tasks] the batch's regularisation term,
// flat[nd+tasks+1] the failure flag; a mode's own slots after those), and
// the step's losses from the sums. Both modes thus add the same floats in
// the same order, which keeps their steps the same bits.

// takePlan returns the next step's rows over all ranks that PlanRows gave
// (0: no plan) and clears the plan; the error, when this rank's batch does
// not have the rows the plan gives it, is to fail the step on every rank
// (the losses would be divided by a wrong count).
func (e *Engine) takePlan(rows int) (int, error) {
	d := e.dist
	global, own := d.plan.global, d.plan.own
	d.plan.global, d.plan.own = 0, 0
	if global > 0 && rows != own {
		return global, fmt.Errorf("mtl: step %d: rank %d's batch has %d rows where the data's partition says %d", e.step, d.comm.Rank(), rows, own)
	}
	return global, nil
}

// packStep writes this rank's dense gradients, task losses and
// regularisation term of the training workspace's last pass into flat.
func (e *Engine) packStep(flat []float32, nd int) {
	ws := e.train
	off := 0
	for i, p := range e.spec.Params {
		if !p.Sparse {
			k := p.Value.Len()
			e.dev.CopyToHostF32(flat[off:off+k], ws.grads[i])
			off += k
		}
	}
	for t, l := range ws.stats.TaskLoss {
		flat[nd+t] = float32(l)
	}
	flat[nd+len(e.spec.Tasks)] = float32(ws.regValue)
}

// reduceStep sums flat over the ranks, this rank's failure flag set when
// passErr (its pass failed), and returns the error every rank returns
// then (the failed rank its own); otherwise it puts the summed dense
// gradients back, with their L2 terms, for the update.
func (e *Engine) reduceStep(flat []float32, nd int, passErr error) error {
	d, ws := e.dist, e.train
	n := d.comm.Size()
	fail := nd + len(e.spec.Tasks) + 1
	if passErr != nil {
		flat[fail] = 1
	}
	if err := d.comm.AllreduceSum(flat); err != nil {
		return fmt.Errorf("mtl: step %d: gradients: %w", e.step, err)
	}
	d.bytes += allreduceBytes(len(flat), n)
	if passErr != nil {
		return passErr
	}
	if flat[fail] != 0 {
		return fmt.Errorf("mtl: step %d: %v of the %d ranks failed (their output says why)", e.step, flat[fail], n)
	}
	off := 0
	for i, p := range e.spec.Params {
		if !p.Sparse {
			k := p.Value.Len()
			e.dev.CopyFromHostF32(ws.grads[i], flat[off:off+k])
			off += k
			e.addL2Grad(i)
		}
	}
	return nil
}

// finishDistStep sets the step's losses from the summed task losses and
// regularisation term of flat, the parameters' L2 term (the same on every
// rank) added once after the sum, and finishes the step (b may be nil).
func (e *Engine) finishDistStep(b *loader.Batch, flat []float32, nd int) (Stats, error) {
	d, ws := e.dist, e.train
	st := &ws.stats
	e.dev.Zero(d.regT)
	e.addParamRegLoss(d.regT)
	e.dev.CopyToHostF32(d.regHost, d.regT)
	st.Loss = float64(flat[nd+len(e.spec.Tasks)]) + float64(d.regHost[0])
	for t := range st.TaskLoss {
		st.TaskLoss[t] = float64(flat[nd+t])
		st.Loss += float64(ws.lossFeed.tasks[t].lambda) * st.TaskLoss[t]
	}
	if b == nil {
		b = &loader.Batch{}
	}
	return e.finishStep(b)
}
