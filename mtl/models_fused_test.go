package mtl

// The models' use of the optional device capabilities (kernels/capabilities.go),
// tested on the CPU through fusedCPU: a device that has every capability,
// each composed from the CPU's plain ops, so that a model on it must give
// the CPU model's results bit for bit while going through the fused entry
// points, the deferred id check, the per-pass Sync and the double-buffered
// stager.

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// fusedCPU is a one-thread CPU (not a Sharder: the model runs it unsharded,
// as it runs a GPU) with every optional capability.
type fusedCPU struct {
	kernels.Device // the CPU

	immediate               bool
	syncs, gates, losses    int
	embUpdates, stagerCount int
	syncErr                 error // returned (once) by the next Sync
	stager                  *fakeStager
}

var (
	_ kernels.FusedGater            = (*fusedCPU)(nil)
	_ kernels.MultiTaskLosser       = (*fusedCPU)(nil)
	_ kernels.FusedEmbeddingUpdater = (*fusedCPU)(nil)
	_ kernels.AsyncUploader         = (*fusedCPU)(nil)
	_ kernels.AsyncIDChecker        = (*fusedCPU)(nil)
	_ kernels.GemmSummer            = (*fusedCPU)(nil)
)

func newFusedCPU() *fusedCPU { return &fusedCPU{Device: kernels.NewCPU(1), immediate: true} }

func (d *fusedCPU) SetImmediateIDCheck(on bool) { d.immediate = on }

// GemmSum passes the CPU's K-segmented input gradients through: unlike the
// CPU's other fusions it does not give the bits of the composed ops (the
// chain of GEMMs), so the CPU model's bits need it.
func (d *fusedCPU) GemmSum(dys, ws []*kernels.Tensor, accumulate bool, dx *kernels.Tensor) {
	d.Device.(kernels.GemmSummer).GemmSum(dys, ws, accumulate, dx)
}

func (d *fusedCPU) Sync() error {
	d.syncs++
	err := d.syncErr
	d.syncErr = nil
	return err
}

func (d *fusedCPU) GateForward(out, w, logits *kernels.Tensor, experts []*kernels.Tensor, temperature float32) {
	d.gates++
	kernels.GateForward(d.Device, out, w, logits, experts, temperature)
}

func (d *fusedCPU) GateBackward(dlogits, dout, w *kernels.Tensor, experts, dexperts []*kernels.Tensor, temperature float32) {
	dw := d.Alloc(kernels.Float32, w.Shape...)
	defer dw.Release()
	kernels.GateBackward(d.Device, dlogits, dw, dout, w, experts, dexperts, temperature)
}

func (d *fusedCPU) MultiTaskLoss(taskLoss, total *kernels.Tensor, tasks []kernels.LossTask, scale float32) {
	d.losses++
	kernels.MultiTaskLoss(d.Device, taskLoss, total, tasks, scale, nil)
}

func (d *fusedCPU) grad(table *kernels.Tensor, srcs []kernels.EmbeddingSource) *kernels.SparseGrad {
	d.embUpdates++
	n := 0
	for _, s := range srcs {
		n += s.IDs.Len()
	}
	g := &kernels.SparseGrad{Rows: d.Alloc(kernels.Int32, max(n, 1)), Values: d.Alloc(kernels.Float32, max(n, 1), table.Cols())}
	if len(srcs) != 1 {
		panic("fusedCPU: the model passes one source per table")
	}
	s := srcs[0]
	d.EmbeddingBackward(g, s.Dout, s.Col, s.IDs, s.Offsets, s.Comb, table.Rows())
	return g
}

func (d *fusedCPU) EmbeddingUpdateAdam(table, m, v *kernels.Tensor, srcs []kernels.EmbeddingSource, p kernels.AdamParams) {
	d.SparseAdam(table, m, v, d.grad(table, srcs), p)
}

func (d *fusedCPU) EmbeddingUpdateAdagrad(table, acc *kernels.Tensor, srcs []kernels.EmbeddingSource, p kernels.AdagradParams) {
	d.SparseAdagrad(table, acc, d.grad(table, srcs), p)
}

func (d *fusedCPU) EmbeddingUpdateSGD(table *kernels.Tensor, srcs []kernels.EmbeddingSource, p kernels.SGDParams) {
	d.SparseSGD(table, d.grad(table, srcs), p)
}

func (d *fusedCPU) NewBatchStager(slotBytes int) (kernels.BatchStager, error) {
	d.stagerCount++
	d.stager = &fakeStager{d: d, size: slotBytes, written: [2]map[any]bool{{}, {}}}
	return d.stager, nil
}

// fakeStager copies at once. It checks the contract the model relies on:
// uploads fit the slot, and the tensors of one slot are never written by
// the uploads of the other (double buffering: the batch in flight is not
// overwritten by the next one).
type fakeStager struct {
	d            *fusedCPU
	size, used   int
	slot         int
	commits      int
	uploads      int
	written      [2]map[any]bool // first element of every tensor written per slot
	released     bool
	contractErrs []string
}

func (s *fakeStager) Slot() int { return s.slot }

func (s *fakeStager) note(dst *kernels.Tensor, n int) error {
	if s.released {
		return errors.New("fakeStager: released")
	}
	s.used += (4*n + 255) &^ 255
	if s.used > s.size {
		return fmt.Errorf("fakeStager: %d bytes used of %d", s.used, s.size)
	}
	s.uploads++
	var key any // the address of the tensor's first element
	if dst.F32 != nil {
		key = &dst.F32[0]
	} else {
		key = &dst.I32[0]
	}
	if s.written[1-s.slot][key] && len(s.contractErrs) < 3 {
		s.contractErrs = append(s.contractErrs, fmt.Sprintf("slot %d writes a tensor of slot %d", s.slot, 1-s.slot))
	}
	s.written[s.slot][key] = true
	return nil
}

func (s *fakeStager) UploadF32Async(dst *kernels.Tensor, src []float32) error {
	if err := s.note(dst, len(src)); err != nil {
		return err
	}
	s.d.CopyFromHostF32(dst, src)
	return nil
}

func (s *fakeStager) UploadI32Async(dst *kernels.Tensor, src []int32) error {
	if err := s.note(dst, len(src)); err != nil {
		return err
	}
	s.d.CopyFromHostI32(dst, src)
	return nil
}

func (s *fakeStager) Commit() error {
	s.commits++
	s.used = 0
	s.slot = 1 - s.slot
	return nil
}

func (s *fakeStager) Release() { s.released = true }

// A model on fusedCPU goes through every capability and gives the CPU
// model's losses, outputs and parameters bit for bit (batches of at most
// 256 rows: one shard on the CPU too).
func TestModelUsesFusedCapabilities(t *testing.T) {
	for _, model := range []string{"mlp", "mmoe", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep"} {
		for _, opt := range []string{"adam", "adagrad", "sgd"} {
			t.Run(model+"/"+opt, func(t *testing.T) {
				cfg := gradConfig(model)
				cfg.Optimizer = opt
				dev := newFusedCPU()
				mf, err := NewModel(gradSchema(), cfg, dev, 256)
				require.NoError(t, err)
				defer mf.Release()
				mc, err := NewModel(gradSchema(), cfg, kernels.NewCPU(1), 256)
				require.NoError(t, err)
				defer mc.Release()
				assert.False(t, dev.immediate, "NewModel defers the device's id checks")

				rng := layers.NewRNG(12)
				for step, rows := range []int{256, 31, 200, 256, 7} {
					b := gradBatch(rng, rows)
					syncs := dev.syncs
					sf, err := mf.TrainStep(b)
					require.NoError(t, err)
					assert.Greater(t, dev.syncs, syncs, "TrainStep reports device errors through Sync")
					sc, err := mc.TrainStep(b)
					require.NoError(t, err)
					require.Equal(t, sc.Loss, sf.Loss, "loss of step %d", step)
					require.Equal(t, sc.TaskLoss, sf.TaskLoss, "task losses of step %d", step)
				}
				require.Equal(t, modelState(mc), modelState(mf))

				b := gradBatch(rng, 100)
				outF := [][]float32{make([]float32, 100), make([]float32, 100), make([]float32, 100)}
				outC := [][]float32{make([]float32, 100), make([]float32, 100), make([]float32, 100)}
				syncs := dev.syncs
				require.NoError(t, mf.Predict(b, outF))
				assert.Greater(t, dev.syncs, syncs, "Predict reports device errors through Sync")
				require.NoError(t, mc.Predict(b, outC))
				assert.Equal(t, outC, outF)
				lf, err := mf.Loss(b)
				require.NoError(t, err)
				lc, err := mc.Loss(b)
				require.NoError(t, err)
				assert.Equal(t, lc.Loss, lf.Loss)

				assert.Positive(t, dev.losses, "fused multi-task loss")
				assert.Equal(t, 5*len(mf.input.Tables), dev.embUpdates, "one fused embedding update per table and step")
				for ti := range mf.input.Tables {
					assert.Nil(t, mf.exec.Train().Input().SparseGrad(ti), "no sparse gradient is materialised")
				}
				if model == "mmoe" || model == "ple" {
					assert.Positive(t, dev.gates, "fused gate")
				}
				st := dev.stager
				require.NotNil(t, st)
				assert.Equal(t, 1, dev.stagerCount, "one stager, sized for the model's batches")
				// 5 steps, the output-bias calibration before the first
				// (Config.InitOutputBias), Predict and Loss
				assert.Equal(t, 5+1+2, st.commits, "one commit per pass")
				assert.Positive(t, st.uploads)
				assert.Empty(t, st.contractErrs)
			})
		}
	}
}

// A device error found by Sync fails the pass with the batch named.
func TestModelReportsDeviceErrors(t *testing.T) {
	dev := newFusedCPU()
	m, err := NewModel(gradSchema(), gradConfig("mmoe"), dev, 64)
	require.NoError(t, err)
	defer m.Release()
	rng := layers.NewRNG(2)
	fault := errors.New("illegal memory access")
	for name, pass := range map[string]func(b *loader.Batch) error{
		"TrainStep": func(b *loader.Batch) error { _, err := m.TrainStep(b); return err },
		"Loss":      func(b *loader.Batch) error { _, err := m.Loss(b); return err },
		"Predict": func(b *loader.Batch) error {
			return m.Predict(b, [][]float32{make([]float32, 64), make([]float32, 64), make([]float32, 64)})
		},
	} {
		b := gradBatch(rng, 64)
		dev.syncErr = fault
		err := pass(b)
		require.Error(t, err, name)
		assert.ErrorIs(t, err, fault, name)
		assert.Contains(t, err.Error(), "batch test", name)
		require.NoError(t, pass(b), "%s: the error was reported once", name)
	}
}

// A batch with longer lists than the stager's slots were sized for grows
// them (a new stager, after the device finished the queued work).
func TestFeederGrowsStagerSlots(t *testing.T) {
	dev := newFusedCPU()
	m, err := NewModel(gradSchema(), gradConfig("mlp"), dev, 64)
	require.NoError(t, err)
	defer m.Release()
	rng := layers.NewRNG(6)
	short := gradBatch(rng, 64)
	_, err = m.TrainStep(short)
	require.NoError(t, err)
	size := dev.stager.size
	long := gradBatch(rng, 64)
	// tags has no value count: make its lists much longer than before
	var vals, offs []int32
	offs = append(offs, 0)
	for r := 0; r < 64; r++ {
		for range 40 {
			vals = append(vals, int32(rng.IntN(13)))
		}
		offs = append(offs, int32(len(vals)))
	}
	long.Column("tags").I32, long.Column("tags").Offsets = vals, offs
	syncs := dev.syncs
	sl, err := m.TrainStep(long)
	require.NoError(t, err)
	assert.Equal(t, 2, dev.stagerCount)
	assert.Greater(t, dev.stager.size, size)
	assert.GreaterOrEqual(t, dev.syncs-syncs, 2, "the device is drained before the slots change")

	ref, err := NewModel(gradSchema(), gradConfig("mlp"), kernels.NewCPU(1), 64)
	require.NoError(t, err)
	defer ref.Release()
	_, err = ref.TrainStep(short)
	require.NoError(t, err)
	sr, err := ref.TrainStep(long)
	require.NoError(t, err)
	assert.Equal(t, sr.Loss, sl.Loss)
}
