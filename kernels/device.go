package kernels

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoCUDA is what NewCUDADevice and CUDADevices return in a build
// without the cuda tag.
var ErrNoCUDA = errors.New("mtlrank was built without CUDA support; rebuild with -tags cuda after make cuda")

// Activation selects the element-wise nonlinearity applied after a bias
// add. The definitions and constants are Keras' (tf.keras.activations); the
// values are shared with the C kernels (MTL_ACT_* in cpu_kernels.h).
type Activation uint8

const (
	Linear Activation = iota // identity
	ReLU                     // max(x, 0)
	// SELU is scale*x for x > 0, else scale*alpha*(exp(x)-1), with
	// alpha = 1.6732632423543772 and scale = 1.0507009873554805.
	SELU
	ELU     // x for x > 0, else exp(x)-1 (alpha 1)
	GELU    // x*Phi(x) = 0.5*x*(1+erf(x/sqrt(2))): Keras' default, approximate=False
	Tanh    // tanh(x)
	Sigmoid // 1/(1+exp(-x))
	Swish   // x*sigmoid(x), also called silu
	// LeakyReLU is x for x > 0, else 0.2*x: the slope of
	// keras.activations.leaky_relu and tf.nn.leaky_relu, which a layer's
	// activation="leaky_relu" resolves to (the LeakyReLU layer's own
	// default, 0.3, does not apply to an activation given by name).
	LeakyReLU
	numActivations
)

var activationNames = [numActivations]string{"linear", "relu", "selu", "elu", "gelu", "tanh", "sigmoid", "swish", "leaky_relu"}

// String returns the Keras name of the activation.
func (a Activation) String() string {
	if a < numActivations {
		return activationNames[a]
	}
	return fmt.Sprintf("Activation(%d)", a)
}

// NeedsActivator reports whether the activation is computed by an
// Activator rather than fused into BiasAct; those are the ones whose
// gradient is taken at the pre-activation.
func (a Activation) NeedsActivator() bool { return a != Linear && a != ReLU }

// ParseActivation returns the activation with the given Keras name; "silu"
// is another name of swish.
func ParseActivation(name string) (Activation, error) {
	if name == "silu" {
		return Swish, nil
	}
	for a, n := range activationNames {
		if n == name {
			return Activation(a), nil
		}
	}
	return 0, fmt.Errorf("unknown activation %q (want one of %s, silu)", name, strings.Join(activationNames[:], ", "))
}

// CheckActivation reports an error when dev cannot run act: every device
// runs Linear and ReLU, the others need an Activator.
func CheckActivation(dev Device, act Activation) error {
	if act >= numActivations {
		return fmt.Errorf("unknown activation %d", act)
	}
	if !act.NeedsActivator() {
		return nil
	}
	if _, ok := dev.(Activator); !ok {
		return fmt.Errorf("the %s device does not implement the %s activation (it runs relu and linear)", dev.Name(), act)
	}
	return nil
}

// Combiner reduces the embeddings of a list (multi-hot) feature to one vector.
type Combiner uint8

const (
	Mean  Combiner = iota // mean over the real elements; empty lists give zeros
	Sum                   // plain sum
	SqrtN                 // sum / sqrt(n)
)

// AdamParams are the hyper-parameters of one Adam step. Step is 1-based and
// is used for bias correction. L2 adds 2*L2*param to the gradient (the
// gradient of L2*||param||^2, Keras' l2 regularizer).
type AdamParams struct {
	LR, Beta1, Beta2, Eps, L2 float32
	Step                      int
}

// AdagradParams are the hyper-parameters of one Adagrad step.
type AdagradParams struct {
	LR, Eps, L2 float32
}

// SGDParams are the hyper-parameters of one SGD step.
type SGDParams struct {
	LR, L2 float32
}

// SparseGrad is the gradient of an embedding table restricted to the rows a
// batch touched: Rows[i] (unique, ascending) has gradient Values[i, :].
// N is the number of valid entries; Rows and Values have capacity for more.
// It is produced by EmbeddingBackward and consumed by the sparse optimizers.
type SparseGrad struct {
	Rows   *Tensor // Int32 [capacity]
	Values *Tensor // Float32 [capacity, dim]
	N      int
}

// Device is everything a layer needs from the hardware. All tensors passed
// to one call must live on that device. Shapes are validated by the layers;
// ops return an error only for data-dependent failures (an id outside its
// table, a device fault) and may panic on shape mismatches, which are
// programming errors.
//
// Unless stated, an op writes its output (overwriting it) and the output may
// not alias an input. "accumulate" means the result is added to the output.
type Device interface {
	Name() string
	// Threads is the parallelism the device uses for host work.
	Threads() int

	// Memory.
	Alloc(dt DType, shape ...int) *Tensor // zero-filled, owned
	Free(t *Tensor)                       // called by Tensor.Release
	CopyFromHostF32(dst *Tensor, src []float32)
	CopyFromHostI32(dst *Tensor, src []int32)
	CopyToHostF32(dst []float32, src *Tensor)
	CopyToHostI32(dst []int32, src *Tensor)
	Copy(dst, src *Tensor) // same length, same dtype
	Zero(t *Tensor)
	Fill(t *Tensor, v float32) // an Int32 tensor gets int32(v)
	Sync() error               // waits for queued work; reports asynchronous faults

	// Gemm computes C = alpha*op(A)*op(B) + beta*C for 2-D row-major tensors,
	// op(X) = X or X^T.
	Gemm(transA, transB bool, alpha float32, a, b *Tensor, beta float32, c *Tensor)
	// GemmStridedBatched runs batch GEMMs of shape op(A_i)[m,k]*op(B_i)[k,n]
	// -> C_i[m,n], with A_i starting at element i*strideA of a (stride 0
	// broadcasts one matrix to every batch entry), and so on. Row-major.
	GemmStridedBatched(transA, transB bool, m, n, k int, alpha float32,
		a *Tensor, strideA int, b *Tensor, strideB int,
		beta float32, c *Tensor, strideC int, batch int)

	// BiasAct views x as [groups, rows, n] and bias as [groups, n]; it adds
	// bias[g] to every row of group g and applies act, in place.
	BiasAct(x, bias *Tensor, groups int, act Activation)
	// ActBackward turns dy into the gradient w.r.t. the pre-activation, in
	// place, given the activation output y.
	ActBackward(dy, y *Tensor, act Activation)
	// BiasGrad views dy as [groups, rows, n] and writes (or accumulates into)
	// db [groups, n] the sum over rows.
	BiasGrad(dy, db *Tensor, groups int, accumulate bool)

	// Dropout zeroes each element of x with probability rate and scales the
	// others by 1/(1-rate), in place, recording the multiplier in mask (same
	// shape as x). The pattern is a deterministic function of (seed, element).
	Dropout(x, mask *Tensor, rate float32, seed uint64)
	// Mul is dst = a*b element-wise (dst may alias a or b).
	Mul(dst, a, b *Tensor)
	// Axpy is y += alpha*x.
	Axpy(alpha float32, x, y *Tensor)
	// Scale is x *= alpha.
	Scale(x *Tensor, alpha float32)
	// EqualMask writes dst[i] = 1 if src[i] == value else 0.
	EqualMask(dst, src *Tensor, value float32)
	// Sigmoid is y = 1/(1+exp(-x)) (y may alias x).
	Sigmoid(y, x *Tensor)

	// SoftmaxRows computes y = softmax(x / temperature) over each row of the
	// 2-D x.
	SoftmaxRows(y, x *Tensor, temperature float32)
	// SoftmaxBackward computes dx from dy and the softmax output y.
	SoftmaxBackward(dx, dy, y *Tensor, temperature float32)

	// GateCombine computes out[b,:] = sum_e w[b,e] * experts[e][b,:], with
	// w [B,E] and each expert [B,d] (experts may be views of one tensor).
	GateCombine(out, w *Tensor, experts []*Tensor)
	// GateCombineBackward writes dw[b,e] = <dout[b,:], experts[e][b,:]> and
	// accumulates dexperts[e] += w[:,e] * dout.
	GateCombineBackward(dout, w *Tensor, experts []*Tensor, dw *Tensor, dexperts []*Tensor)

	// CopyCols copies width columns: dst[:, dstCol:dstCol+width] =
	// src[:, srcCol:srcCol+width] for 2-D tensors with equal row counts
	// (concat / split along features). accumulate adds instead.
	CopyCols(dst *Tensor, dstCol int, src *Tensor, srcCol, width int, accumulate bool)

	// EmbeddingGather writes the embeddings of a batch into
	// out[:, col:col+dim] where dim = table.Cols(). Without offsets (nil),
	// ids [B] holds one id per row. With offsets [B+1], row b combines
	// table rows ids[offsets[b]:offsets[b+1]] with comb. It returns an
	// *IDRangeError if an id is negative or >= table.Rows() (the first such
	// id in value order).
	EmbeddingGather(out *Tensor, col int, table, ids, offsets *Tensor, comb Combiner) error
	// EmbeddingBackward turns dout[:, col:col+dim] into the sparse gradient
	// of the table with the given number of rows: duplicates accumulated,
	// rows unique and ascending. grad must have capacity >= len(ids).
	EmbeddingBackward(grad *SparseGrad, dout *Tensor, col int, ids, offsets *Tensor, comb Combiner, tableRows int)

	// Losses. For each i: w = 1 if weights is nil else weights[i].
	// BCEWithLogits adds scale*sum_i w*bce(z_i, y_i) to loss[0] and writes
	// dz[i] = scale*w*(sigmoid(z_i)-y_i). Stable for any |z|.
	BCEWithLogits(loss, dz, z, y, weights *Tensor, scale float32)
	// MSE adds scale*sum_i w*(z_i-y_i)^2 to loss[0] and writes
	// dz[i] = 2*scale*w*(z_i-y_i).
	MSE(loss, dz, z, y, weights *Tensor, scale float32)
	// SumSquares adds scale*sum(x^2) to loss[0] (L2 regularisation terms).
	SumSquares(loss, x *Tensor, scale float32)

	// Dense optimizers, one tensor at a time or many per call (the CUDA
	// device runs the Multi variants as one kernel launch).
	Adam(param, grad, m, v *Tensor, p AdamParams)
	AdamMulti(params, grads, ms, vs []*Tensor, p AdamParams)
	Adagrad(param, grad, acc *Tensor, p AdagradParams)
	SGD(param, grad *Tensor, p SGDParams)
	// Sparse (lazy) optimizers: only rows in grad are read or written.
	SparseAdam(table, m, v *Tensor, grad *SparseGrad, p AdamParams)
	SparseAdagrad(table, acc *Tensor, grad *SparseGrad, p AdagradParams)
	SparseSGD(table *Tensor, grad *SparseGrad, p SGDParams)
}

// IDRangeError reports an embedding id outside its table.
type IDRangeError struct {
	Row  int   // batch row (for a list feature: the row whose list holds the id)
	ID   int64 // the offending id
	Rows int   // number of rows in the table
}

func (e *IDRangeError) Error() string {
	return fmt.Sprintf("id %d at row %d is outside the embedding table [0, %d)", e.ID, e.Row, e.Rows)
}
