// Package layers holds the building blocks of the multi-task models: the
// InputBlock (embedding tables + continuous features), Dense, MLP, Experts
// (several expert MLPs computed together with strided-batched GEMMs), Gate
// (softmax gating over expert outputs) and Tower. Every layer has a forward
// pass and a hand-written backward pass that run only through
// kernels.Device operations, so the same code runs on the CPU and on a GPU.
//
// Parameters and activations are kept apart. A layer (Dense, MLP, ...) owns
// its trainable tensors and nothing that depends on a batch. Everything a
// pass writes — activations, dropout masks, gradients — lives in a workspace
// created by the layer's NewWorkspace for a maximum batch size and reused for
// every batch of at most that size without allocating. Several inference
// workspaces can therefore read one set of weights from different goroutines
// at the same time, as long as no training step updates the weights
// concurrently.
//
// Conventions shared by every layer:
//
//   - Forward(ws, x, ...) reads x (row-major [B, In]) and returns a view of the
//     workspace holding the output; the view stays valid until the next
//     Forward on the same workspace. The workspace remembers x for Backward,
//     so x must not be overwritten in between.
//   - The gradient of the loss w.r.t. a layer's output is written by whoever
//     consumes that output into ws.DY() (a view of the same shape as the
//     output). Backward(ws, dx, accumulate) then computes the parameter
//     gradients (overwritten: each parameter is used once per step) and writes
//     or, with accumulate, adds the input gradient into dx (nil: not needed).
//     Backward may overwrite ws.DY().
//   - Params() lists the trainable tensors; a training workspace's Grads()
//     lists the matching gradient tensors in the same order.
package layers
