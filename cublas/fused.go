//go:build cuda

package cublas

/*
#include "mtlcuda.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Limits and enums of the fused kernels (csrc/fused.cu).
const (
	// MaxLossTasks and MaxMetricTasks are the tasks of one launch; more
	// tasks take several launches (the library splits them).
	MaxLossTasks   = C.MTL_MAX_LOSS_TASKS
	MaxMetricTasks = C.MTL_MAX_METRIC_TASKS

	LossBCE = C.MTL_LOSS_BCE
	LossMSE = C.MTL_LOSS_MSE

	// MetricFields is the number of float64 sums per task of
	// MetricAccumulate, indexed by the Metric* constants.
	MetricFields = C.MTL_METRIC_FIELDS

	MetricCount     = C.MTL_METRIC_COUNT
	MetricPositives = C.MTL_METRIC_POSITIVES
	MetricLabelSum  = C.MTL_METRIC_LABEL_SUM
	MetricLogLoss   = C.MTL_METRIC_LOGLOSS
	MetricTP        = C.MTL_METRIC_TP
	MetricFP        = C.MTL_METRIC_FP
	MetricTN        = C.MTL_METRIC_TN
	MetricFN        = C.MTL_METRIC_FN
	MetricSqErr     = C.MTL_METRIC_SQ_ERR
	MetricAbsErr    = C.MTL_METRIC_ABS_ERR
	MetricNaN       = C.MTL_METRIC_NAN
	MetricBadLabels = C.MTL_METRIC_BAD_LABELS
)

// GateForward is the fused gate: w = softmax(logits/temperature) and
// out[b,:] = sum_e w[b,e]*experts[e][b,:] (see mtlcuda_gate_forward).
func (x *Context) GateForward(out, w, logits uintptr, experts []uintptr, rows, d int, temperature float32) error {
	return x.err("GateForward", C.mtlcuda_gate_forward(x.c, C.mtlcuda_dptr(out), C.mtlcuda_dptr(w), C.mtlcuda_dptr(logits),
		dptrs(experts), C.int(len(experts)), C.int64_t(rows), C.int(d), C.float(temperature)))
}

// GateBackward is the fused gate backward: dlogits (overwritten) and
// dexperts (accumulated) from dout. dwScratch ([rows, experts]) is needed
// only with more than MaxExperts experts and may be 0 otherwise.
func (x *Context) GateBackward(dlogits, dout, w uintptr, experts, dexperts []uintptr, rows, d int, temperature float32,
	dwScratch uintptr) error {
	if len(dexperts) != len(experts) {
		return &Error{Op: "GateBackward", Code: CodeInvalid,
			Msg: fmt.Sprintf("%d expert gradients for %d experts", len(dexperts), len(experts))}
	}
	return x.err("GateBackward", C.mtlcuda_gate_backward(x.c, C.mtlcuda_dptr(dlogits), C.mtlcuda_dptr(dout), C.mtlcuda_dptr(w),
		dptrs(experts), dptrs(dexperts), C.int(len(experts)), C.int64_t(rows), C.int(d), C.float(temperature),
		C.mtlcuda_dptr(dwScratch)))
}

// LossTask is one task of MultiTaskLoss (see mtlcuda_loss_task); Weight and
// Space may be 0.
type LossTask struct {
	Kind              int // LossBCE or LossMSE
	Z, DZ, Y          uintptr
	Weight, Space     uintptr
	PosWeight, Lambda float32
}

// LossBuffer holds the C-side copy of a task list between calls, so that
// steady-state calls do not allocate.
type LossBuffer struct{ b []C.mtlcuda_loss_task }

// MultiTaskLoss runs the fused multi-task loss: the gradient of every task,
// taskLoss[t] += scale*sum_i w*l (taskLoss may be 0) and total[0] +=
// sum_t lambda_t*scale*sum_i w*l (total may be 0), in one launch per
// MaxLossTasks tasks.
func (x *Context) MultiTaskLoss(buf *LossBuffer, taskLoss, total uintptr, tasks []LossTask, rows int, scale float32) error {
	b := buf.b[:0]
	for _, t := range tasks {
		b = append(b, C.mtlcuda_loss_task{kind: C.int(t.Kind), z: C.mtlcuda_dptr(t.Z), dz: C.mtlcuda_dptr(t.DZ), y: C.mtlcuda_dptr(t.Y),
			weight: C.mtlcuda_dptr(t.Weight), space: C.mtlcuda_dptr(t.Space), pos_weight: C.float(t.PosWeight),
			lambda: C.float(t.Lambda)})
	}
	buf.b = b
	var p *C.mtlcuda_loss_task
	if len(b) > 0 {
		p = &b[0]
	}
	return x.err("MultiTaskLoss", C.mtlcuda_multi_task_loss(x.c, C.mtlcuda_dptr(taskLoss), C.mtlcuda_dptr(total), p,
		C.int(len(b)), C.int64_t(rows), C.float(scale)))
}

// MetricTask is one task of MetricAccumulate; Mask may be 0.
type MetricTask struct {
	Binary            bool
	Pred, Label, Mask uintptr
}

// MetricBuffer holds the C-side copy of a task list between calls.
type MetricBuffer struct{ b []C.mtlcuda_metric_task }

// MetricAccumulate adds the metric sums of rows rows of every task to acc,
// a device array of len(tasks)*MetricFields float64 (8-byte aligned).
func (x *Context) MetricAccumulate(buf *MetricBuffer, acc uintptr, tasks []MetricTask, rows int, eps float64,
	threshold float32) error {
	b := buf.b[:0]
	for _, t := range tasks {
		b = append(b, C.mtlcuda_metric_task{binary: cbool(t.Binary), pred: C.mtlcuda_dptr(t.Pred), label: C.mtlcuda_dptr(t.Label),
			mask: C.mtlcuda_dptr(t.Mask)})
	}
	buf.b = b
	var p *C.mtlcuda_metric_task
	if len(b) > 0 {
		p = &b[0]
	}
	return x.err("MetricAccumulate", C.mtlcuda_metric_accumulate(x.c, C.mtlcuda_dptr(acc), p, C.int(len(b)), C.int64_t(rows),
		C.double(eps), C.float(threshold)))
}

// CopyDtoHF64 copies len(dst) float64 values from device memory (waits).
func (x *Context) CopyDtoHF64(dst []float64, src uintptr) error {
	if len(dst) == 0 {
		return nil
	}
	return x.CopyDtoH(unsafe.Pointer(&dst[0]), src, 8*len(dst), Compute, true)
}
