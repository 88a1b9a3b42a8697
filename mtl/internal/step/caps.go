// Package step is mtl's execution engine: it runs a model's training
// step, loss pass and inference on a device. It feeds a batch's columns to
// the device (checked on the host; staged and double-buffered on a device
// with asynchronous uploads), runs the input block, cuts the batch into
// shards that run concurrently on a kernels.Sharder, computes the task
// losses, finishes the gradients, applies the optimizer (Adam, Adagrad,
// SGD) and, on a device that can, captures the training step as CUDA
// graphs.
//
// The model is seen through small interfaces (Net, Shard) and plain
// values (Spec): package mtl builds the layers, the forward and the
// backward pass; this package decides how they run. It never imports mtl.
// Its errors carry mtl's prefix: they reach users as mtl's errors.
//
// Every optional device capability that changes how a step runs is asked
// for once, in Probe (caps.go).
package step

import "github.com/mtlrank/mtlrank/kernels"

// Caps are the optional capabilities of a device that change how a step
// runs. Probe is the only place that asks a device for them.
type Caps struct {
	Dev kernels.Device
	// Layers is the device the layers (body, towers, loss) run on: the
	// Sharder's ShardDevice (each shard of a batch runs serially in its
	// own goroutine), else Dev.
	Layers kernels.Device
	// Sharder cuts batches into shards that run concurrently (nil: one
	// shard).
	Sharder kernels.Sharder
	// CPU is set on the CPU device, whose tensors can wrap host memory:
	// batch columns are used in place.
	CPU *kernels.CPU
	// Staged uploads batch columns through pinned staging memory on a
	// copy stream (nil on the CPU, which wraps them, and on devices that
	// copy synchronously).
	Staged kernels.AsyncUploader
	// Fused updates embedding tables straight from the output gradient:
	// their sparse gradients are never materialised.
	Fused kernels.FusedEmbeddingUpdater
	// FusedGate computes gates without materialising the gate-weight
	// gradient (layers.Gate asks the device itself; the memory estimate
	// needs to know).
	FusedGate bool
	// IDChecker can defer the device's embedding id checks to Sync.
	IDChecker kernels.AsyncIDChecker
	// Graphs, StepOps: capture of the training step (CUDA graphs) and the
	// optimizer and dropout ops that read their per-step scalars from the
	// device.
	Graphs  kernels.GraphCapturer
	StepOps kernels.StepParamOps
}

// Probe asks dev for its optional capabilities.
func Probe(dev kernels.Device) Caps {
	c := Caps{Dev: dev, Layers: dev}
	if sh, ok := dev.(kernels.Sharder); ok {
		c.Sharder, c.Layers = sh, sh.ShardDevice()
	}
	c.CPU, _ = dev.(*kernels.CPU)
	if c.CPU == nil {
		c.Staged, _ = dev.(kernels.AsyncUploader)
	}
	c.Fused, _ = dev.(kernels.FusedEmbeddingUpdater)
	_, c.FusedGate = dev.(kernels.FusedGater)
	c.IDChecker, _ = dev.(kernels.AsyncIDChecker)
	c.Graphs, _ = dev.(kernels.GraphCapturer)
	c.StepOps, _ = dev.(kernels.StepParamOps)
	return c
}

// WhyNoGraphs says why the training step cannot be captured as graphs on
// the device ("" if it can): capture needs the step's scalars on the
// device, fused embedding updates (no host-sized sparse gradients) and
// staged uploads, and one unsharded stream of work.
func (c Caps) WhyNoGraphs() string {
	switch {
	case c.Graphs == nil:
		return "the device cannot capture graphs"
	case c.Sharder != nil:
		return "the device shards batches"
	case c.Layers != c.Dev:
		return "the layers run on another device"
	case c.StepOps == nil:
		return "the device has no step-parameter ops"
	case c.Fused == nil:
		return "the device has no fused embedding update"
	case c.Staged == nil:
		return "the device has no asynchronous batch uploads"
	}
	return ""
}
