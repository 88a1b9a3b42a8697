package step

import (
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// taskLoss holds what one task's loss needs per batch: its settings and
// the batch's columns (full-batch views, read once per batch by lossFeed).
//
// The loss of task t is lambda_t * mean_i(w_ti * l_ti), the mean dividing
// by the batch size (Keras), with l = binary cross-entropy from the logit
// (binary) or squared error (regression) and
// w_ti = pos_i * weight_i * space_i:
//
//   - pos_i = 1 + (PosClassWeight - 1) * y_i: PosClassWeight for positive
//     labels, 1 for negatives (linear in between for soft labels);
//   - weight_i = the task's weight column;
//   - space_i = 1 where the task's sample-space column == 1, else 0.
type taskLoss struct {
	task   *Task
	lambda float32
	posW   float32
	y      *floatFeed
	wcol   *floatFeed
	space  *floatFeed
	yT     *kernels.Tensor // current batch views [rows, 1]
	wcolT  *kernels.Tensor
	spaceT *kernels.Tensor
}

// lossFeed reads the loss columns of a batch for a training workspace.
type lossFeed struct {
	tasks []*taskLoss
}

func newLossFeed(tasks []Task) *lossFeed {
	l := &lossFeed{}
	for i := range tasks {
		task := &tasks[i]
		tl := &taskLoss{task: task, lambda: task.Lambda, posW: task.PosWeight, y: &floatFeed{name: task.Target}}
		if task.WeightColumn != "" {
			tl.wcol = &floatFeed{name: task.WeightColumn}
		}
		if task.SpaceColumn != "" {
			tl.space = &floatFeed{name: task.SpaceColumn}
		}
		l.tasks = append(l.tasks, tl)
	}
	return l
}

func (l *lossFeed) release() {
	for _, t := range l.tasks {
		for _, f := range []*floatFeed{t.y, t.wcol, t.space} {
			if f != nil {
				releaseAll(f.dev[:]...)
			}
		}
	}
}

// feed reads the targets, weight and sample-space columns of b (before any
// compute, so that a bad column fails the step early).
func (l *lossFeed) feed(fd *feeder, b *loader.Batch) error {
	if b == nil || b.Rows <= 0 {
		return errEmptyBatch
	}
	var err error
	for _, t := range l.tasks {
		if t.yT, err = t.y.get(fd, b); err != nil {
			return err
		}
		if t.wcol != nil {
			if t.wcolT, err = t.wcol.get(fd, b); err != nil {
				return err
			}
		}
		if t.space != nil {
			if t.spaceT, err = t.space.get(fd, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// lossWS computes the task losses of one shard of a batch (rows [lo, hi)).
type lossWS struct {
	feed    *lossFeed
	tasks   []shardTaskLoss
	lt      []kernels.LossTask   // the call's tasks, rebuilt in place per batch
	scratch *kernels.LossScratch // scratch of the unfused loss
	scalars *kernels.Tensor      // [T]: the shard's share of each task loss
}

// shardTaskLoss is one task's per-shard views of the batch's columns.
type shardTaskLoss struct {
	yH, wcolH, spaceH layers.Header
}

func newLossWS(dev kernels.Device, feed *lossFeed, maxRows int) *lossWS {
	T := len(feed.tasks)
	l := &lossWS{feed: feed, scalars: dev.Alloc(kernels.Float32, T), tasks: make([]shardTaskLoss, T),
		lt: make([]kernels.LossTask, T), scratch: kernels.NewLossScratch(dev, maxRows)}
	for t, tl := range feed.tasks {
		l.lt[t] = kernels.LossTask{Kind: kernels.LossBCE, PosWeight: tl.posW, Lambda: tl.lambda}
		if !tl.task.Binary {
			l.lt[t].Kind = kernels.LossMSE
		}
	}
	return l
}

func (l *lossWS) release() {
	l.scalars.Release()
	l.scratch.Release()
}

// compute writes each task's loss over rows [lo, hi) of the batch, scaled by
// 1/total (the whole batch's size), into scalars and the output gradient of
// those rows into each output's gradient (Shard.OutputGrad): one
// kernels.MultiTaskLoss, fused on a kernels.MultiTaskLosser, else the
// per-task op sequence (sample weights, BCE or MSE, loss weight).
func (l *lossWS) compute(dev kernels.Device, net Shard, outs []*kernels.Tensor, lo, hi, total int) {
	dev.Zero(l.scalars)
	rows := hi - lo
	for t, tl := range l.feed.tasks {
		st, k := &l.tasks[t], &l.lt[t]
		k.Z, k.DZ = outs[t], net.OutputGrad(t)
		k.Y = st.yH.View(tl.yT, lo, rows, 1)
		if tl.wcol != nil {
			k.Weight = st.wcolH.View(tl.wcolT, lo, rows, 1)
		}
		if tl.space != nil {
			k.Space = st.spaceH.View(tl.spaceT, lo, rows, 1)
		}
	}
	l.scratch.MultiTaskLoss(dev, l.scalars, nil, l.lt, 1/float32(total))
}

// regLoss writes the regularisation terms of the model (L2 on the
// parameters marked L2) and of the last forward pass (L2 on the batch's
// embeddings) to ws.reg[0]. In a distributed training step of either
// sharding mode (lossRows set, by that step only) only the batch's term:
// the ranks' terms are summed, and the parameters' term, the same on every
// rank, is added once after the sum (Engine.addParamRegLoss). An
// evaluation's loss pass has both, as in one process.
func (ws *Workspace) regLoss() {
	e, reg := ws.e, ws.reg
	e.dev.Zero(reg)
	if ws.lossRows == 0 {
		e.addParamRegLoss(reg)
	}
	e.spec.Input.AddRegLoss(ws.input, reg)
}

// addParamRegLoss adds the L2 term of the parameters marked L2 to reg[0].
func (e *Engine) addParamRegLoss(reg *kernels.Tensor) {
	if e.spec.L2Reg > 0 {
		for _, p := range e.spec.Params {
			if p.L2 {
				e.dev.SumSquares(reg, p.Value, e.spec.L2Reg)
			}
		}
	}
}
