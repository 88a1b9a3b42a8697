//go:build cuda

package cublas

// CUDA graphs: capturing a training step and replaying it, and the
// step-parameter block and the *SP kernels that read their per-step scalars
// from it so that a replayed graph sees each step's values.

/*
#include "mtlcuda.h"
*/
import "C"

// ---- graphs: capture and replay of a step ----

// BeginCapture starts capturing the compute stream into a graph.
func (x *Context) BeginCapture() error { return x.err("BeginCapture", C.mtlcuda_capture_begin(x.c)) }

// Capturing reports whether a capture is in progress.
func (x *Context) Capturing() bool { return C.mtlcuda_capturing(x.c) != 0 }

// Graph is an instantiated CUDA graph.
type Graph struct {
	x *Context
	g *C.mtlcuda_graph
}

// EndCapture ends the capture and instantiates the graph.
func (x *Context) EndCapture() (*Graph, error) {
	var g *C.mtlcuda_graph
	if err := x.err("EndCapture", C.mtlcuda_capture_end(x.c, &g)); err != nil {
		return nil, err
	}
	return &Graph{x: x, g: g}, nil
}

// Launch queues the graph on the compute stream.
func (g *Graph) Launch() error { return g.x.err("GraphLaunch", C.mtlcuda_graph_launch(g.x.c, g.g)) }

// Release destroys the graph.
func (g *Graph) Release() {
	if g == nil || g.g == nil {
		return
	}
	C.mtlcuda_graph_destroy(g.g)
	g.g = nil
}

// ---- step parameters (graph capture of a training step) ----

// StepParamsBytes is the size of the device block the *SP variants read
// their per-step scalars from (mtlcuda_step_params: lr, lr_t, seed).
const StepParamsBytes = C.sizeof_mtlcuda_step_params

// AdamSP is Adam with the step size read from the step-parameter block sp.
func (x *Context) AdamSP(buf *OptBuffer, ts []OptTensor, beta1, beta2, eps, l2 float32, sp uintptr) error {
	p := C.mtlcuda_adam_params{beta1: C.float(beta1), beta2: C.float(beta2), eps: C.float(eps), l2: C.float(l2)}
	return x.err("AdamSP", C.mtlcuda_adam_sp(x.c, optTensors(&buf.b, ts), C.int(len(ts)), &p, C.mtlcuda_dptr(sp)))
}

// AdagradSP is Adagrad with the learning rate read from sp.
func (x *Context) AdagradSP(buf *OptBuffer, ts []OptTensor, eps, l2 float32, sp uintptr) error {
	p := C.mtlcuda_adagrad_params{eps: C.float(eps), l2: C.float(l2)}
	return x.err("AdagradSP", C.mtlcuda_adagrad_sp(x.c, optTensors(&buf.b, ts), C.int(len(ts)), &p, C.mtlcuda_dptr(sp)))
}

// SGDSP is SGD with the learning rate read from sp.
func (x *Context) SGDSP(buf *OptBuffer, ts []OptTensor, l2 float32, sp uintptr) error {
	p := C.mtlcuda_sgd_params{l2: C.float(l2)}
	return x.err("SGDSP", C.mtlcuda_sgd_sp(x.c, optTensors(&buf.b, ts), C.int(len(ts)), &p, C.mtlcuda_dptr(sp)))
}

// EmbeddingUpdateSP is EmbeddingUpdate with o.LR read from sp (lr_t for
// Adam, lr otherwise).
func (x *Context) EmbeddingUpdateSP(buf *EmbBuffer, table, s1, s2 uintptr, tableRows, dim int, in []EmbInput, o SparseOpt,
	sp uintptr) error {
	p := C.mtlcuda_sparse_opt{kind: C.int(o.Kind), beta1: C.float(o.Beta1), beta2: C.float(o.Beta2), eps: C.float(o.Eps),
		l2: C.float(o.L2)}
	return x.err("EmbeddingUpdateSP", C.mtlcuda_embedding_update_sp(x.c, C.mtlcuda_dptr(table), C.mtlcuda_dptr(s1), C.mtlcuda_dptr(s2),
		C.int64_t(tableRows), C.int(dim), embInputs(buf, in), C.int(len(in)), &p, C.mtlcuda_dptr(sp)))
}

// DropoutSP is Dropout with the seed layers.MixSeed(sp.seed, site, layer)
// derived on the device.
func (x *Context) DropoutSP(xp, mask uintptr, n int, threshold uint64, scale float32, sp uintptr, site, layer uint64) error {
	return x.err("DropoutSP", C.mtlcuda_dropout_sp(x.c, C.mtlcuda_dptr(xp), C.mtlcuda_dptr(mask), C.int64_t(n), C.uint64_t(threshold),
		C.float(scale), C.mtlcuda_dptr(sp), C.uint64_t(site), C.uint64_t(layer)))
}
