package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/kernels/kerneltest"
)

// fzLossInputs uploads case c's data to dev and returns the tasks, the
// task-loss and total tensors (nil where the case has none) and every
// tensor it allocated.
func fzLossInputs(dev kernels.Device, c fzLossCase, ld fzLossData) (tasks []kernels.LossTask, tl, tot *kernels.Tensor, owned []*kernels.Tensor) {
	up := func(x []float32) *kernels.Tensor {
		if x == nil {
			return nil
		}
		t := kerneltest.Upload(dev, x, len(x), 1)
		owned = append(owned, t)
		return t
	}
	for i, s := range c.tasks {
		dz := dev.Alloc(kernels.Float32, c.rows, 1)
		owned = append(owned, dz)
		tasks = append(tasks, kernels.LossTask{Kind: s.kind, Z: up(ld.z[i]), DZ: dz, Y: up(ld.y[i]), Weight: up(ld.w[i]),
			Space: up(ld.space[i]), PosWeight: s.pos, Lambda: s.lambda})
	}
	if !c.noTaskLoss {
		init := make([]float32, len(c.tasks))
		for i := range init {
			init[i] = c.initTaskLoss
		}
		tl = up(init)
	}
	if !c.noTotal {
		tot = up([]float32{c.initTotalLoss})
	}
	return tasks, tl, tot, owned
}

// A LossScratch gives bit for bit the results of MultiTaskLoss with a
// scratch tensor (the same composed ops on the CPU), also when it was sized
// for more rows than the call has, and allocates nothing per call.
func TestLossScratchMatchesMultiTaskLoss(t *testing.T) {
	dev := kernels.NewCPU(1)
	for _, c := range fzLossCases {
		t.Run(c.name, func(t *testing.T) {
			ld := fzNewLossData(c, rand.New(rand.NewPCG(uint64(c.rows), 9)))
			tasksA, tlA, totA, ownA := fzLossInputs(dev, c, ld)
			tasksB, tlB, totB, ownB := fzLossInputs(dev, c, ld)
			sc := dev.Alloc(kernels.Float32, kernels.MultiTaskLossScratch(c.rows))
			ls := kernels.NewLossScratch(dev, c.rows+5)
			defer func() {
				for _, x := range append(append(ownA, ownB...), sc) {
					x.Release()
				}
				ls.Release()
			}()
			kernels.MultiTaskLoss(dev, tlA, totA, tasksA, c.scale, sc)
			ls.MultiTaskLoss(dev, tlB, totB, tasksB, c.scale)
			bits := func(x []float32) []uint32 {
				out := make([]uint32, len(x))
				for i, v := range x {
					out[i] = math.Float32bits(v)
				}
				return out
			}
			for i := range tasksA {
				require.Equal(t, bits(kerneltest.Download(dev, tasksA[i].DZ)), bits(kerneltest.Download(dev, tasksB[i].DZ)), "dz of task %d", i)
			}
			if tlA != nil {
				assert.Equal(t, bits(kerneltest.Download(dev, tlA)), bits(kerneltest.Download(dev, tlB)), "task losses")
			}
			if totA != nil {
				assert.Equal(t, bits(kerneltest.Download(dev, totA)), bits(kerneltest.Download(dev, totB)), "total")
			}
			if c.rows <= 1000 {
				assert.Zero(t, testing.AllocsPerRun(5, func() { ls.MultiTaskLoss(dev, tlB, totB, tasksB, c.scale) }),
					"allocations per call")
			}
		})
	}
}

// A LossScratch for fewer rows than the call is a panic naming the scratch.
func TestLossScratchTooSmall(t *testing.T) {
	dev := kernels.NewCPU(1)
	z, y, dz := dev.Alloc(kernels.Float32, 4), dev.Alloc(kernels.Float32, 4), dev.Alloc(kernels.Float32, 4)
	ls := kernels.NewLossScratch(dev, 3)
	defer ls.Release()
	defer func() {
		v := recover()
		require.NotNil(t, v)
		assert.Contains(t, v, "scratch")
	}()
	ls.MultiTaskLoss(dev, nil, dev.Alloc(kernels.Float32, 1),
		[]kernels.LossTask{{Kind: kernels.LossBCE, Z: z, DZ: dz, Y: y, PosWeight: 1, Lambda: 1}}, 1)
}
