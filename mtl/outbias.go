package mtl

import (
	"errors"
	"fmt"
	"math"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl/internal/step"
)

// InitOutputBias sets the bias of every task's output head so that the
// model's mean prediction on b equals the task's base rate in b: the
// fraction of positive labels (binary task) or the label mean (regression
// task), over the rows of the task's sample space when it has one. Biases
// are shifted from their current values: by the solution c of
// mean_i sigmoid(z_i + c) = rate (binary) or by mean_i (y_i - z_i)
// (regression), z being the current head outputs on b without dropout.
// A binary task without positives (or without negatives) in b takes the
// rate 0.5/n (or 1 - 0.5/n) for n rows; a task with no row in its sample
// space keeps its bias. Nothing else changes (no optimizer step).
//
// With Config.InitOutputBias the first TrainStep calls it on its batch.
func (m *Model) InitOutputBias(b *loader.Batch) error {
	_, err := m.initOutputBias(b)
	return err
}

// initOutputBias is InitOutputBias; it also returns the biases it replaced
// (for restoreOutputBias).
func (m *Model) initOutputBias(b *loader.Batch) ([]float32, error) {
	ws := m.exec.Train()
	rows := 0
	var err error
	if b != nil && b.Rows > 0 { // a rank of a distributed job may have none
		if err = ws.Forward(b, layers.Mode{}, true); err == nil {
			if err = m.dev.Sync(); err != nil {
				err = step.BatchWrap(b, err)
			}
		}
		rows = ws.Rows()
	} else {
		// The others' lookups need this rank's rows when the tables are
		// sharded by rows.
		err = m.exec.JoinLookup()
	}
	if err = agree(m.comm, err); err != nil {
		return nil, fmt.Errorf("mtl: InitOutputBias: %w", err)
	}
	z, y, space := make([]float32, rows), make([]float32, rows), make([]float32, rows)
	biases, old := make([]float32, len(m.tasks)), make([]float32, len(m.tasks))
	for t, task := range m.tasks {
		for s := 0; rows > 0 && s < ws.Shards(); s++ {
			lo, hi := ws.ShardRows(s)
			m.ldev.CopyToHostF32(z[lo:hi], ws.Output(s, t))
		}
		in := func(int) bool { return true }
		if rows > 0 {
			yT, spaceT := ws.Target(t)
			m.dev.CopyToHostF32(y, yT)
			if spaceT != nil {
				m.dev.CopyToHostF32(space, spaceT)
				in = func(i int) bool { return space[i] == 1 }
			}
		}
		head := m.towers[t].Head.B
		m.ldev.CopyToHostF32(biases[t:t+1], head)
		old[t] = biases[t]
		var zs32, ys32 []float32
		for i := range rows {
			if in(i) {
				zs32, ys32 = append(zs32, z[i]), append(ys32, y[i])
			}
		}
		// In a distributed job the rows of every rank's first batch, in
		// rank order: the rows of the global batch, in its order.
		zs32, ys32, err = gatherRows(m.comm, zs32, ys32)
		if err != nil {
			return nil, fmt.Errorf("mtl: InitOutputBias: %w", err)
		}
		zs := make([]float64, len(zs32))
		sumY := 0.0
		for i, v := range zs32 {
			zs[i] = float64(v)
			sumY += float64(ys32[i])
		}
		if len(zs) == 0 {
			continue
		}
		n := float64(len(zs))
		var shift float64
		if task.Kind == Binary {
			rate := min(max(sumY/n, 0.5/n), 1-0.5/n)
			shift = calibrateLogit(zs, rate)
		} else {
			sumZ := 0.0
			for _, v := range zs {
				sumZ += v
			}
			shift = (sumY - sumZ) / n
		}
		v := float64(biases[t]) + shift
		if math.IsNaN(v) || math.Abs(v) > math.MaxFloat32 {
			return nil, fmt.Errorf("mtl: InitOutputBias: %w", step.BatchErr(b, "task %s: the base rate gives the bias %v (non-finite outputs or labels?)", task.Name, v))
		}
		biases[t] = float32(v)
	}
	m.setBiases(biases)
	if err := m.dev.Sync(); err != nil {
		return nil, fmt.Errorf("mtl: InitOutputBias: %w", err)
	}
	m.biasSet = true
	return old, nil
}

// setBiases writes the output biases.
// agree returns, in a distributed job, err on a rank that had one and an
// error on every other rank when any rank had one, so that all ranks stop
// at the same point rather than some waiting in the next collective; err
// in one process.
func agree(c dist.Comm, err error) error {
	if c == nil || c.Size() == 1 {
		return err
	}
	failed := []float32{0}
	if err != nil {
		failed[0] = 1
	}
	if cerr := c.AllreduceSum(failed); cerr != nil {
		return errors.Join(err, cerr)
	}
	if err == nil && failed[0] > 0 {
		err = fmt.Errorf("%v of the %d ranks failed (their output says why)", failed[0], c.Size())
	}
	return err
}

// gatherRows returns every rank's a and b (of equal lengths on a rank), in
// rank order; a and b themselves in one process.
func gatherRows(c dist.Comm, a, b []float32) ([]float32, []float32, error) {
	if c == nil || c.Size() == 1 {
		return a, b, nil
	}
	counts, err := dist.GatherCounts(c, len(a))
	if err != nil {
		return nil, nil, err
	}
	n := 0
	for _, k := range counts {
		n += k
	}
	ga, gb := make([]float32, n), make([]float32, n)
	if err := c.AllgathervFloat32(a, ga, counts); err != nil {
		return nil, nil, err
	}
	if err := c.AllgathervFloat32(b, gb, counts); err != nil {
		return nil, nil, err
	}
	return ga, gb, nil
}

func (m *Model) setBiases(biases []float32) {
	for t := range m.tasks {
		m.ldev.CopyFromHostF32(m.towers[t].Head.B, biases[t:t+1])
	}
}

// restoreOutputBias undoes initOutputBias when the step it was for was not
// taken.
func (m *Model) restoreOutputBias(old []float32) {
	m.setBiases(old)
	m.biasSet = false
}

// calibrateLogit returns c with mean_i sigmoid(z_i + c) = rate, rate in
// (0, 1), by bisection (the mean is increasing in c) in float64.
func calibrateLogit(z []float64, rate float64) float64 {
	zMax := 0.0
	for _, v := range z {
		zMax = max(zMax, math.Abs(v))
	}
	// At logit(rate) -/+ zMax every term is below/above rate.
	l := math.Log(rate / (1 - rate))
	lo, hi := l-zMax-1, l+zMax+1
	mean := func(c float64) float64 {
		s := 0.0
		for _, v := range z {
			s += 1 / (1 + math.Exp(-(v + c)))
		}
		return s / float64(len(z))
	}
	for range 100 {
		mid := (lo + hi) / 2
		if mean(mid) < rate {
			lo = mid
		} else {
			hi = mid
		}
		if hi-lo < 1e-12 {
			break
		}
	}
	return (lo + hi) / 2
}

// SetOutputBias sets the output biases of the tasks named in values (by
// target or task name) from known rates: a binary task's bias becomes the
// log-odds log(r/(1-r)) of its positive rate r (0 < r < 1), a regression
// task's the given label mean. Tasks not named keep their biases. After
// it, Config.InitOutputBias no longer measures the first batch.
func (m *Model) SetOutputBias(values map[string]float64) error {
	biases := make([]float32, len(m.tasks))
	set := make([]bool, len(m.tasks))
	for name, v := range values {
		t := -1
		for i, task := range m.tasks {
			if task.Target == name || task.Name == name {
				t = i
			}
		}
		switch {
		case t < 0:
			return fmt.Errorf("mtl: SetOutputBias: %q is not a task of the model", name)
		case math.IsNaN(v) || math.IsInf(v, 0):
			return fmt.Errorf("mtl: SetOutputBias: %q: %v is not finite", name, v)
		case m.tasks[t].Kind == Binary && !(v > 0 && v < 1):
			return fmt.Errorf("mtl: SetOutputBias: %q is binary: its rate %v must lie strictly between 0 and 1", name, v)
		case m.tasks[t].Kind == Binary:
			biases[t] = float32(math.Log(v / (1 - v)))
		default:
			biases[t] = float32(v)
		}
		set[t] = true
	}
	for t := range m.tasks {
		if set[t] {
			m.ldev.CopyFromHostF32(m.towers[t].Head.B, biases[t:t+1])
		}
	}
	if err := m.dev.Sync(); err != nil {
		return fmt.Errorf("mtl: SetOutputBias: %w", err)
	}
	m.biasSet = true
	return nil
}
