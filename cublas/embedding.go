//go:build cuda

package cublas

// Embedding gather, backward and fused sparse updates.

/*
#include "mtlcuda.h"
*/
import "C"

// ---- embeddings ----

// EmbeddingGather writes the (combined) embeddings of a batch into columns
// [col, col+dim) of out; offsets == 0 means one id per row. Bad ids and
// offsets are recorded in id-check slot `slot` (see IDCheckFetch).
func (x *Context) EmbeddingGather(out uintptr, outCols, col int, table uintptr, tableRows, dim int, ids uintptr,
	numIDs int, offsets uintptr, batch, comb, slot int) error {
	return x.err("EmbeddingGather", C.mtlcuda_embedding_gather(x.c, C.mtlcuda_dptr(out), C.int(outCols), C.int(col),
		C.mtlcuda_dptr(table), C.int64_t(tableRows), C.int(dim), C.mtlcuda_dptr(ids), C.int64_t(numIDs), C.mtlcuda_dptr(offsets),
		C.int64_t(batch), C.int(comb), C.int(slot)))
}

// IDCheck is the finding of IDCheckFetch.
type IDCheck struct {
	Kind      int // 0 clean, 1 id out of range, 2 malformed offsets
	Slot      int
	Pos, Row  int64
	ID        int64
	TableRows int64
}

// IDCheckFetch reads and clears the first slots id-check slots
// (synchronises the compute stream).
func (x *Context) IDCheckFetch(slots int) (IDCheck, error) {
	var found, slot C.int
	var pos, row, id, rows C.int64_t
	err := x.err("IDCheck", C.mtlcuda_idcheck_fetch(x.c, C.int(slots), &found, &slot, &pos, &row, &id, &rows))
	return IDCheck{Kind: int(found), Slot: int(slot), Pos: int64(pos), Row: int64(row), ID: int64(id), TableRows: int64(rows)}, err
}

// EmbInput is one source of gradient rows for a table (see mtlcuda_emb_input).
type EmbInput struct {
	Dout          uintptr
	DoutCols, Col int
	IDs           uintptr
	NumIDs        int
	Offsets       uintptr // 0: one id per row
	Batch         int
	Comb          int
}

// EmbBuffer holds the C-side copy of an input list between calls.
type EmbBuffer struct{ b []C.mtlcuda_emb_input }

func embInputs(buf *EmbBuffer, in []EmbInput) *C.mtlcuda_emb_input {
	if len(in) == 0 {
		return nil
	}
	b := buf.b[:0]
	for _, e := range in {
		b = append(b, C.mtlcuda_emb_input{dout: C.mtlcuda_dptr(e.Dout), dout_cols: C.int(e.DoutCols), col: C.int(e.Col),
			ids: C.mtlcuda_dptr(e.IDs), num_ids: C.int64_t(e.NumIDs), offsets: C.mtlcuda_dptr(e.Offsets), batch: C.int64_t(e.Batch),
			comb: C.int(e.Comb)})
	}
	buf.b = b
	return &b[0]
}

// EmbeddingBackward writes the sparse gradient of a table into at most
// capacity rows. With exact it waits for and returns the number of unique
// rows (which may exceed capacity: the caller must check); otherwise it pads
// the output with row -1 up to min(total ids, capacity) and returns that.
func (x *Context) EmbeddingBackward(buf *EmbBuffer, outRows, outValues uintptr, capacity, tableRows, dim int, in []EmbInput, exact bool) (int, error) {
	var n C.int64_t
	var np *C.int64_t
	if exact {
		np = &n
	}
	err := x.err("EmbeddingBackward", C.mtlcuda_embedding_backward(x.c, C.mtlcuda_dptr(outRows), C.mtlcuda_dptr(outValues),
		C.int64_t(capacity), C.int64_t(tableRows), C.int(dim), embInputs(buf, in), C.int(len(in)), np))
	if err != nil || exact {
		return int(n), err
	}
	total := 0
	for _, e := range in {
		total += e.NumIDs
	}
	return min(total, capacity), nil
}

// SparseOpt selects the update of EmbeddingUpdate; LR is the
// bias-corrected step size for Adam.
type SparseOpt struct {
	Kind                      int
	LR, Beta1, Beta2, Eps, L2 float32
}

// EmbeddingUpdate is the fused backward + sparse optimizer step of a table.
func (x *Context) EmbeddingUpdate(buf *EmbBuffer, table, s1, s2 uintptr, tableRows, dim int, in []EmbInput, o SparseOpt) error {
	p := C.mtlcuda_sparse_opt{kind: C.int(o.Kind), lr: C.float(o.LR), beta1: C.float(o.Beta1), beta2: C.float(o.Beta2),
		eps: C.float(o.Eps), l2: C.float(o.L2)}
	return x.err("EmbeddingUpdate", C.mtlcuda_embedding_update(x.c, C.mtlcuda_dptr(table), C.mtlcuda_dptr(s1), C.mtlcuda_dptr(s2),
		C.int64_t(tableRows), C.int(dim), embInputs(buf, in), C.int(len(in)), &p))
}

// MaxExperts etc. are the per-launch limits of the library (larger counts
// are split into several launches by the library).
const (
	MaxExperts   = C.MTL_MAX_EXPERTS
	MaxEmbInputs = C.MTL_MAX_EMB_INPUTS
)
