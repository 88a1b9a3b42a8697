package mtl

import (
	"errors"
	"fmt"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/schema"
)

// Embedding sharding modes of a distributed job (TrainerOptions.EmbeddingSharding).
const (
	// ShardReplicate: every rank holds every table (the default).
	ShardReplicate = "replicate"
	// ShardRow: rank r of N holds the rows id mod N == r of every table
	// and their optimizer state (NewShardedModel).
	ShardRow = "row"
)

// NewShardedModel is NewModel for one rank of the distributed job comm with
// the embedding tables sharded by rows (TrainerOptions.EmbeddingSharding
// "row"): rank r of N holds the rows id mod N == r of every table, at local
// row id div N, and their optimizer state, so that a rank needs about 1/N
// of the tables' memory; the full tables are never allocated. The ranks'
// rows together are the tables NewModel initialises from cfg.Seed, and the
// dense parameters are rank 0's (broadcast). Every rank calls it, and from
// then on every TrainStep, Loss, Predict and InitOutputBias of the model,
// and SaveCheckpoint, are collective: all ranks call them in the same
// order (a rank without rows with an empty batch). Params and
// OptimizerState list the rank's shards of the tables. On any device: on
// a GPU the rank's rows and their optimizer state live on the device, and
// the rows and gradients it exchanges cross through pinned host buffers
// (docs/DISTRIBUTED.md, "GPU ranks"). A comm of one rank gives NewModel's
// model.
func NewShardedModel(s *schema.Schema, cfg Config, dev kernels.Device, maxBatch int, comm dist.Comm) (*Model, error) {
	if comm == nil || comm.Size() == 1 {
		return NewModel(s, cfg, dev, maxBatch)
	}
	m, err := newModel(s, cfg, dev, maxBatch, layers.RowShard{Rank: comm.Rank(), Size: comm.Size()})
	if err != nil {
		return nil, err
	}
	if err := m.setRowComm(comm); err != nil {
		m.Release()
		return nil, err
	}
	return m, nil
}

// setRowComm joins the row-sharded job comm (the model's tables are its
// shards).
func (m *Model) setRowComm(comm dist.Comm) error {
	if err := m.exec.SetRowComm(comm); err != nil {
		return err
	}
	m.comm = comm
	return nil
}

// RowSharded reports whether the model's embedding tables are sharded by
// rows among the ranks of a job (NewShardedModel, LoadShardedCheckpoint).
func (m *Model) RowSharded() bool { return m.shard.Sharded() }

// checkSharding checks the trainer's embedding sharding mode against the
// model and the job comm.
func (m *Model) checkSharding(mode string, comm dist.Comm) error {
	ranks := 1
	if comm != nil {
		ranks = comm.Size()
	}
	switch mode {
	case "", ShardReplicate:
		if m.RowSharded() {
			return errors.New("mtl: the model's tables are sharded by rows (NewShardedModel): set TrainerOptions.EmbeddingSharding to \"row\"")
		}
	case ShardRow:
		if ranks > 1 && !m.RowSharded() {
			return errors.New("mtl: EmbeddingSharding \"row\" needs a model built sharded by rows for the job (NewShardedModel or LoadShardedCheckpoint)")
		}
		if m.RowSharded() && m.comm != comm {
			return errors.New("mtl: the model's tables are sharded among the ranks of another communicator than TrainerOptions.Comm")
		}
	default:
		return fmt.Errorf("mtl: unknown embedding sharding %q (want replicate or row)", mode)
	}
	return nil
}

// isTableState reports whether the named parameter or optimizer tensor is
// an embedding table or a table's optimizer state, and gives the table.
func (m *Model) tableOf(name string) (*layers.EmbeddingTable, bool) {
	for i, p := range m.params {
		if !p.Sparse {
			continue
		}
		if name == p.Name || len(name) > len(p.Name) && name[:len(p.Name)+1] == p.Name+"/" {
			return m.input.Tables[i], true
		}
	}
	return nil, false
}

// gatherTables gathers, on rank 0, every table and table optimizer
// tensor of named (shards on each rank) into the full tensor on the
// host, one tensor at a time: full[name] is its [Rows, Dim] values on rank
// 0, nil elsewhere. Every rank calls it. Rank 0 ends up holding the full
// tables and their optimizer state on the host, what one process's
// SaveCheckpoint copies to the host too.
func (m *Model) gatherTables(named []NamedTensor) (map[string][]float32, error) {
	c := m.comm
	n, rank := c.Size(), c.Rank()
	var full map[string][]float32
	if rank == 0 {
		full = map[string][]float32{}
	}
	for _, nt := range named {
		tab, ok := m.tableOf(nt.Name)
		if !ok {
			continue
		}
		d := tab.Dim
		shard := make([]float32, nt.Tensor.Len())
		m.dev.CopyToHostF32(shard, nt.Tensor)
		send, recv := make([]int, n), make([]int, n)
		send[0] = len(shard)
		var all []float32
		if rank == 0 {
			for j := range n {
				recv[j] = layers.RowShard{Rank: j, Size: n}.Rows(tab.Rows) * d
			}
			all = make([]float32, tab.Rows*d)
		}
		if err := c.AlltoallvFloat32(shard, send, all, recv); err != nil {
			return nil, fmt.Errorf("gathering %s: %w", nt.Name, err)
		}
		if rank != 0 {
			continue
		}
		// all holds rank 0's rows, then rank 1's, ...: row k of rank j is
		// id k*n + j.
		out := make([]float32, tab.Rows*d)
		at := 0
		for j := range n {
			for id := j; id < tab.Rows; id += n {
				copy(out[id*d:(id+1)*d], all[at:at+d])
				at += d
			}
		}
		full[nt.Name] = out
	}
	return full, nil
}

// LoadShardedCheckpoint is LoadCheckpoint for one rank of the job comm with
// the tables sharded by rows (NewShardedModel): the checkpoint, written by
// one process, by rank 0 of a job of any size in either mode, or per shard
// by the ranks of a row-sharded job of any size, is re-sharded by id mod
// comm.Size(), and the rank keeps only its rows of every table and of
// their optimizer state. Every rank calls it, and when it fails on one
// rank it fails on all. From a per-shard checkpoint a rank streams the
// shard files that hold rows of its own (all of them unless the sizes
// share a factor; only its own for the same size), so that its host
// memory holds its rows, never a full table; from a one-process
// checkpoint each rank reads the whole files (its host memory holds them
// while they are read). A comm of one rank gives LoadCheckpoint's model.
func LoadShardedCheckpoint(dir string, dev kernels.Device, maxBatch int, comm dist.Comm) (*Model, *TrainState, error) {
	if comm == nil || comm.Size() == 1 {
		return LoadCheckpoint(dir, dev, maxBatch)
	}
	m, st, err := loadCheckpointShard(dir, dev, maxBatch, true, layers.RowShard{Rank: comm.Rank(), Size: comm.Size()})
	// Every rank fails when one does (a shard file it alone reads is
	// corrupt), rather than the others waiting in the next collective.
	if err = agree(comm, err); err != nil {
		if m != nil {
			m.Release()
		}
		return nil, nil, fmt.Errorf("mtl: load checkpoint %s: %w", dir, err)
	}
	if err := m.setRowComm(comm); err != nil {
		m.Release()
		return nil, nil, err
	}
	return m, st, nil
}

// readShape is the shape of nt in a checkpoint file (the full table's for
// a shard), and the shard of its rows the model holds (the zero value:
// all).
func (m *Model) fileShape(nt NamedTensor) ([]int, layers.RowShard) {
	if !m.RowSharded() {
		return nt.Tensor.Shape, layers.RowShard{}
	}
	tab, ok := m.tableOf(nt.Name)
	if !ok {
		return nt.Tensor.Shape, layers.RowShard{}
	}
	return []int{tab.Rows, tab.Dim}, m.shard
}

// keepRows returns the rows of v ([rows, dim]) that shard holds, in local
// order.
func keepRows(v []float32, rows, dim int, shard layers.RowShard) []float32 {
	if !shard.Sharded() {
		return v
	}
	out := make([]float32, 0, shard.Rows(rows)*dim)
	for id := shard.Rank; id < rows; id += shard.Size {
		out = append(out, v[id*dim:(id+1)*dim]...)
	}
	return out
}

// JoinLookup takes part, without a batch, in the collective lookup that
// the other ranks of a row-sharded job make in a TrainStep's
// InitOutputBias, Loss or Predict of their batches (an evaluation whose
// ranks run out of batches at different steps): it serves their rows. A
// model whose tables are not sharded has nothing to do.
func (m *Model) JoinLookup() error { return m.exec.JoinLookup() }
