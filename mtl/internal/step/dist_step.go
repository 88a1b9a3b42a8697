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

// packStep stages this rank's part of the fused allreduce in d.flat (the
// staging's pinned buffer): with grads (a rank whose pass succeeded) the
// dense gradients of the training workspace's last pass, its task losses
// and regularisation term; without, zeros. It returns what stageOut does:
// the rows' send buffer of replicated tables and the parameters' L2 term.
func (e *Engine) packStep(grads bool) (send []float32, regParams float64, err error) {
	d, ws := e.dist, e.train
	flat, nd := d.flat, d.nd
	send, regParams, err = e.stageOut(grads)
	if !grads || err != nil {
		clear(flat)
		return send, regParams, err
	}
	clear(flat[nd:])
	for t, l := range ws.stats.TaskLoss {
		flat[nd+t] = float32(l)
	}
	flat[nd+len(e.spec.Tasks)] = float32(ws.regValue)
	return send, regParams, nil
}

// reduceStep sums flat over the ranks, this rank's failure flag set when
// passErr (its pass failed), and returns the error every rank returns
// then (the failed rank its own); otherwise it queues the upload of the
// summed dense gradients, with their L2 terms, for the update. flat is
// d.flat, in the staging's buffer.
func (e *Engine) reduceStep(flat []float32, nd int, passErr error) error {
	d := e.dist
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
	e.uploadDense()
	return nil
}

// finishDistStep sets the step's losses from the summed task losses and
// regularisation term of flat, the parameters' L2 term regParams (the
// same on every rank: packStep's) added once after the sum, and finishes
// the step (b may be nil).
func (e *Engine) finishDistStep(b *loader.Batch, flat []float32, nd int, regParams float64) (Stats, error) {
	ws := e.train
	st := &ws.stats
	st.Loss = float64(flat[nd+len(e.spec.Tasks)]) + regParams
	for t := range st.TaskLoss {
		st.TaskLoss[t] = float64(flat[nd+t])
		st.Loss += float64(ws.lossFeed.tasks[t].lambda) * st.TaskLoss[t]
	}
	if b == nil {
		b = &loader.Batch{}
	}
	return e.finishStep(b)
}
