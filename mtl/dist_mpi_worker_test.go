//go:build mpi

package mtl

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/loader"
)

// TestMPITrainWorker is one rank of TestMPITrain's mpirun jobs: the
// exactness cases on MPI, with replicated tables and sharded by rows, and
// the partitioned evaluation.
func TestMPITrainWorker(t *testing.T) {
	if os.Getenv(mpiTrainWorkerEnv) == "" {
		t.Skip("one rank of TestMPITrain's mpirun jobs; runs under mpirun only")
	}
	c, err := dist.InitMPI()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, tc := range exactCases {
		d, err := tc.run(c)
		if err != nil {
			t.Fatalf("%v: %v", tc, err) // the other ranks fail or are ended by mpirun
		}
		fmt.Fprintln(h, d)
		// The same case with the tables sharded by rows.
		if d, err = tc.check(c, ShardRow); err != nil {
			t.Fatalf("%v, tables sharded by rows: %v", tc, err)
		}
		fmt.Fprintln(h, d)
	}
	// The partitioned evaluation (TestDistributedEvaluate's datasets, which
	// every rank writes for itself: the same files).
	var dirs []string
	for i, d := range evalDatasets {
		dirs = append(dirs, writeGradData(t, uint64(i+1), d.files))
	}
	for _, sharding := range []string{ShardReplicate, ShardRow} {
		d, err := evalCase(c, dirs, sharding)
		if err != nil {
			t.Fatalf("evaluation, %s: %v", sharding, err)
		}
		fmt.Fprintln(h, d)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s rank=%d size=%d digest=%x\n", mpiTrainWorkerMark, c.Rank(), c.Size(), h.Sum(nil))
}

// TestMPICheckpointWorker is one rank of TestMPICheckpoint's jobs; the
// stage says which (mpiCkptStages). Every model is mlp/Adagrad of the
// exactness cases, trained 6 steps on the rank's parts of the case's
// batches, then saved: per shard ("s..."), gathered ("g...") or, rank 0
// of a job with replicated tables, the one-process checkpoint ("...rep").
func TestMPICheckpointWorker(t *testing.T) {
	stage, dir := os.Getenv(mpiCkptStageEnv), os.Getenv(mpiCkptDirEnv)
	if stage == "" {
		t.Skip("one rank of TestMPICheckpoint's mpirun jobs; runs under mpirun only")
	}
	c, err := dist.InitMPI()
	if err != nil {
		t.Fatal(err)
	}
	var jobs []ckptJob
	switch stage {
	case "save":
		jobs = []ckptJob{{"", "s2", ShardRow, false}, {"", "g2", ShardRow, true}}
	case "resume":
		jobs = []ckptJob{{"s2", "s2-s3", ShardRow, false}, {"g2", "g2-g3", ShardRow, true}, {"s2", "s2-rep3", ShardReplicate, false}}
	case "back":
		jobs = []ckptJob{{"s2-s3", "s2-s3-s2", ShardRow, false}, {"g2-g3", "g2-g3-g2", ShardRow, true}}
	default:
		t.Fatalf("unknown stage %q", stage)
	}
	h := sha256.New()
	parts := exactCase{model: "mlp", opt: "adagrad"}.batches(c.Size(), 6)
	for _, j := range jobs {
		if err := j.run(c, dir, parts, h); err != nil {
			t.Fatalf("%+v: %v", j, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s rank=%d size=%d digest=%x\n", mpiCkptMark, c.Rank(), c.Size(), h.Sum(nil))
}

// ckptJob is one model of TestMPICheckpointWorker: loaded from the
// checkpoint load (a new model when ""), with its tables sharded by rows
// or replicated, trained, saved to save (gathered with gather).
type ckptJob struct {
	load, save string
	sharding   string
	gather     bool
}

// run runs the job on comm with the rank's parts of the batches, in the
// folder dir, and adds the model's step and losses to h.
func (j ckptJob) run(c dist.Comm, dir string, parts [][]*loader.Batch, h io.Writer) error {
	cfg := gradConfig("mlp")
	cfg.Optimizer = "adagrad"
	cfg.LR = 0.01
	var m *Model
	var err error
	switch {
	case j.load == "":
		m, err = newTestModel(cfg, testDev(), c, j.sharding)
	case j.sharding == ShardRow:
		m, _, err = LoadShardedCheckpoint(filepath.Join(dir, j.load), testDev(), 128, c)
	default:
		if m, _, err = LoadCheckpoint(filepath.Join(dir, j.load), testDev(), 128); err == nil {
			if err = m.setComm(c); err != nil {
				m.Release()
			}
		}
	}
	if err != nil {
		return err
	}
	defer m.Release()
	if m.RowSharded() != (j.sharding == ShardRow) {
		return fmt.Errorf("RowSharded() = %v", m.RowSharded())
	}
	for s := range parts {
		b := parts[s][c.Rank()]
		if b.Rows == 0 {
			b = &loader.Batch{}
		}
		st, err := m.TrainStep(b)
		if err != nil {
			return fmt.Errorf("step %d: %w", s, err)
		}
		fmt.Fprintln(h, m.Step(), st.Loss)
	}
	save := filepath.Join(dir, j.save)
	switch {
	case j.gather:
		return SaveGatheredCheckpoint(save, m, nil)
	case m.RowSharded():
		return SaveCheckpoint(save, m, nil)
	case c.Rank() == 0: // replicated tables: rank 0 writes
		return SaveCheckpoint(save, m, nil)
	}
	return nil
}
