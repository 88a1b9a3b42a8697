package mtl

import (
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// taskLoss holds what one task's loss needs per batch.
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
	task   Task
	lambda float32
	posW   float32
	y      *floatFeed
	wcol   *floatFeed
	space  *floatFeed
	yT     *kernels.Tensor // current batch views
	wcolT  *kernels.Tensor
	spaceT *kernels.Tensor
	w, tmp *kernels.Tensor // [maxRows, 1]
	wH     layers.Header
	tmpH   layers.Header
	scalar *kernels.Tensor // view of lossWS.scalars
}

// lossWS is the loss state of a training workspace.
type lossWS struct {
	tasks   []*taskLoss
	scalars *kernels.Tensor // [T+1]: per-task losses, then regularisation
	reg     *kernels.Tensor // view of scalars[T]
}

func newLossWS(m *Model, maxRows int) *lossWS {
	T := len(m.tasks)
	l := &lossWS{scalars: m.dev.Alloc(kernels.Float32, T+1)}
	l.reg = l.scalars.View(T, 1)
	for t, task := range m.tasks {
		tl := &taskLoss{
			task:   task,
			lambda: 1,
			posW:   1,
			y:      &floatFeed{name: task.Target},
			scalar: l.scalars.View(t, 1),
		}
		if v, ok := m.cfg.LossWeights[task.Target]; ok {
			tl.lambda = v
		}
		if v, ok := m.cfg.PosClassWeights[task.Target]; ok {
			tl.posW = v
		}
		if c, ok := m.cfg.WeightColumns[task.Target]; ok {
			tl.wcol = &floatFeed{name: c}
		}
		if c, ok := m.cfg.SampleSpace[task.Target]; ok {
			tl.space = &floatFeed{name: c}
		}
		if tl.posW != 1 || tl.wcol != nil || tl.space != nil {
			tl.w = m.dev.Alloc(kernels.Float32, maxRows, 1)
			if tl.space != nil && (tl.posW != 1 || tl.wcol != nil) {
				tl.tmp = m.dev.Alloc(kernels.Float32, maxRows, 1)
			}
		}
		l.tasks = append(l.tasks, tl)
	}
	return l
}

func (l *lossWS) release() {
	l.scalars.Release()
	for _, t := range l.tasks {
		releaseAll(t.w, t.tmp)
		for _, f := range []*floatFeed{t.y, t.wcol, t.space} {
			if f != nil {
				f.dev.Release()
			}
		}
	}
}

// feed reads the targets, weight and sample-space columns of b (before any
// compute, so that a bad column fails the step early).
func (l *lossWS) feed(fd *feeder, b *loader.Batch) error {
	if b == nil || b.Rows <= 0 {
		return batchErrEmpty()
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

// compute adds every task's loss and the regularisation terms into scalars
// and writes each task's output gradient into its tower's DY.
func (l *lossWS) compute(ws *workspace, rows int) {
	m := ws.m
	dev := m.dev
	dev.Zero(l.scalars)
	scale := 1 / float32(rows)
	for t, tl := range l.tasks {
		var w *kernels.Tensor
		if tl.w != nil {
			w = tl.wH.View(tl.w, 0, rows, 1)
			first := true
			if tl.posW != 1 {
				dev.Fill(w, 1)
				dev.Axpy(tl.posW-1, tl.yT, w)
				first = false
			}
			if tl.wcol != nil {
				if first {
					dev.Copy(w, tl.wcolT)
				} else {
					dev.Mul(w, w, tl.wcolT)
				}
				first = false
			}
			if tl.space != nil {
				if first {
					dev.EqualMask(w, tl.spaceT, 1)
				} else {
					tmp := tl.tmpH.View(tl.tmp, 0, rows, 1)
					dev.EqualMask(tmp, tl.spaceT, 1)
					dev.Mul(w, w, tmp)
				}
			}
		}
		z, dz := ws.towers[t].Y(), ws.towers[t].DY()
		if tl.task.Kind == Binary {
			dev.BCEWithLogits(tl.scalar, dz, z, tl.yT, w, scale)
		} else {
			dev.MSE(tl.scalar, dz, z, tl.yT, w, scale)
		}
		if tl.lambda != 1 {
			dev.Scale(dz, tl.lambda)
		}
	}
	if m.cfg.L2Reg > 0 {
		for _, p := range m.params {
			if p.L2 {
				dev.SumSquares(l.reg, p.Value, m.cfg.L2Reg)
			}
		}
	}
	m.input.AddRegLoss(ws.input, l.reg)
}
