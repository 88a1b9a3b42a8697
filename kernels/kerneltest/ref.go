// Package kerneltest holds what is needed to test a kernels.Device: Ref, a
// naive pure-Go reference device written for clarity rather than speed, and
// CompareDevices, which runs every op of the Device interface on a table of
// cases on two devices and compares the results.
package kerneltest

import (
	"fmt"
	"math"
	"sort"

	"github.com/mtlrank/mtlrank/internal/splitmix"
	"github.com/mtlrank/mtlrank/kernels"
)

// Ref is a reference kernels.Device: host memory, plain loops, float64
// arithmetic wherever a value is accumulated. It shares no code with the CPU
// device beyond the Tensor type, so agreement between the two is evidence
// that both follow the contract in kernels/device.go.
type Ref struct{}

var _ kernels.Device = (*Ref)(nil)

// NewRef returns a reference device.
func NewRef() *Ref { return &Ref{} }

// Name implements kernels.Device.
func (r *Ref) Name() string { return "ref" }

// Threads implements kernels.Device.
func (r *Ref) Threads() int { return 1 }

// Alloc implements kernels.Device.
func (r *Ref) Alloc(dt kernels.DType, shape ...int) *kernels.Tensor {
	t := kernels.NewTensor(r, dt, shape)
	if dt == kernels.Int32 {
		t.I32 = make([]int32, t.Len())
	} else {
		t.F32 = make([]float32, t.Len())
	}
	return t
}

// Free implements kernels.Device.
func (r *Ref) Free(t *kernels.Tensor) { t.F32, t.I32 = nil, nil }

// CopyFromHostF32 implements kernels.Device.
func (r *Ref) CopyFromHostF32(dst *kernels.Tensor, src []float32) {
	for i := range src {
		dst.F32[i] = src[i]
	}
}

// CopyFromHostI32 implements kernels.Device.
func (r *Ref) CopyFromHostI32(dst *kernels.Tensor, src []int32) {
	for i := range src {
		dst.I32[i] = src[i]
	}
}

// CopyToHostF32 implements kernels.Device.
func (r *Ref) CopyToHostF32(dst []float32, src *kernels.Tensor) {
	for i := 0; i < src.Len(); i++ {
		dst[i] = src.F32[i]
	}
}

// CopyToHostI32 implements kernels.Device.
func (r *Ref) CopyToHostI32(dst []int32, src *kernels.Tensor) {
	for i := 0; i < src.Len(); i++ {
		dst[i] = src.I32[i]
	}
}

// Copy implements kernels.Device.
func (r *Ref) Copy(dst, src *kernels.Tensor) {
	if dst.Len() != src.Len() || dst.DType != src.DType {
		panic("ref: Copy: mismatch")
	}
	for i := 0; i < src.Len(); i++ {
		if src.DType == kernels.Int32 {
			dst.I32[i] = src.I32[i]
		} else {
			dst.F32[i] = src.F32[i]
		}
	}
}

// Zero implements kernels.Device.
func (r *Ref) Zero(t *kernels.Tensor) { r.Fill(t, 0) }

// Fill implements kernels.Device.
func (r *Ref) Fill(t *kernels.Tensor, v float32) {
	for i := 0; i < t.Len(); i++ {
		if t.DType == kernels.Int32 {
			t.I32[i] = int32(v)
		} else {
			t.F32[i] = v
		}
	}
}

// Sync implements kernels.Device.
func (r *Ref) Sync() error { return nil }

// at returns element (i, j) of the row-major matrix x with ld columns, or of
// its transpose.
func at(x []float32, ld int, trans bool, i, j int) float64 {
	if trans {
		return float64(x[j*ld+i])
	}
	return float64(x[i*ld+j])
}

// Gemm implements kernels.Device.
func (r *Ref) Gemm(transA, transB bool, alpha float32, a, b *kernels.Tensor, beta float32, c *kernels.Tensor) {
	m, n := c.Rows(), c.Cols()
	k := a.Cols()
	if transA {
		k = a.Rows()
	}
	gemm(transA, transB, m, n, k, alpha, a.F32, a.Cols(), b.F32, b.Cols(), beta, c.F32)
}

func gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				s += at(a, lda, transA, i, p) * at(b, ldb, transB, p, j)
			}
			v := float64(alpha) * s
			if beta != 0 {
				v += float64(beta) * float64(c[i*n+j])
			}
			c[i*n+j] = float32(v)
		}
	}
}

// GemmStridedBatched implements kernels.Device.
func (r *Ref) GemmStridedBatched(transA, transB bool, m, n, k int, alpha float32,
	a *kernels.Tensor, strideA int, b *kernels.Tensor, strideB int,
	beta float32, c *kernels.Tensor, strideC int, batch int) {
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	for i := 0; i < batch; i++ {
		gemm(transA, transB, m, n, k, alpha, a.F32[i*strideA:], lda, b.F32[i*strideB:], ldb, beta, c.F32[i*strideC:])
	}
}

// BiasAct implements kernels.Device.
func (r *Ref) BiasAct(x, bias *kernels.Tensor, groups int, act kernels.Activation) {
	n := bias.Len() / groups
	rows := x.Len() / (groups * n)
	for g := 0; g < groups; g++ {
		for i := 0; i < rows; i++ {
			for j := 0; j < n; j++ {
				p := (g*rows+i)*n + j
				v := x.F32[p] + bias.F32[g*n+j]
				if act == kernels.ReLU && v < 0 {
					v = 0
				}
				x.F32[p] = v
			}
		}
	}
}

// ActBackward implements kernels.Device.
func (r *Ref) ActBackward(dy, y *kernels.Tensor, act kernels.Activation) {
	if act != kernels.ReLU {
		return
	}
	for i := range dy.F32 {
		if !(y.F32[i] > 0) {
			dy.F32[i] = 0
		}
	}
}

// BiasGrad implements kernels.Device.
func (r *Ref) BiasGrad(dy, db *kernels.Tensor, groups int, accumulate bool) {
	n := db.Len() / groups
	rows := dy.Len() / (groups * n)
	for g := 0; g < groups; g++ {
		for j := 0; j < n; j++ {
			var s float64
			for i := 0; i < rows; i++ {
				s += float64(dy.F32[(g*rows+i)*n+j])
			}
			if accumulate {
				s += float64(db.F32[g*n+j])
			}
			db.F32[g*n+j] = float32(s)
		}
	}
}

// Dropout implements kernels.Device.
func (r *Ref) Dropout(x, mask *kernels.Tensor, rate float32, seed uint64) {
	for i := range x.F32 {
		var m float32 = 1
		switch {
		case rate >= 1:
			m = 0
		case rate > 0:
			u := splitmix.At(seed, uint64(i)) >> 40 // the documented dropout hash // 24 random bits
			if float64(u) < math.Floor(float64(rate)*(1<<24)) {
				m = 0
			} else {
				m = 1 / (1 - rate)
			}
		}
		mask.F32[i] = m
		x.F32[i] *= m
	}
}

// Mul implements kernels.Device.
func (r *Ref) Mul(dst, a, b *kernels.Tensor) {
	for i := range dst.F32 {
		dst.F32[i] = a.F32[i] * b.F32[i]
	}
}

// Axpy implements kernels.Device.
func (r *Ref) Axpy(alpha float32, x, y *kernels.Tensor) {
	for i := range y.F32 {
		y.F32[i] = float32(float64(y.F32[i]) + float64(alpha)*float64(x.F32[i]))
	}
}

// Scale implements kernels.Device.
func (r *Ref) Scale(x *kernels.Tensor, alpha float32) {
	for i := range x.F32 {
		x.F32[i] *= alpha
	}
}

// EqualMask implements kernels.Device.
func (r *Ref) EqualMask(dst, src *kernels.Tensor, value float32) {
	for i := range dst.F32 {
		dst.F32[i] = 0
		if src.F32[i] == value {
			dst.F32[i] = 1
		}
	}
}

func sigmoid(x float64) float64 {
	if x < 0 {
		e := math.Exp(x)
		return e / (1 + e)
	}
	return 1 / (1 + math.Exp(-x))
}

// Sigmoid implements kernels.Device.
func (r *Ref) Sigmoid(y, x *kernels.Tensor) {
	for i := range y.F32 {
		y.F32[i] = float32(sigmoid(float64(x.F32[i])))
	}
}

// SoftmaxRows implements kernels.Device.
func (r *Ref) SoftmaxRows(y, x *kernels.Tensor, temperature float32) {
	rows, n := x.Rows(), x.Cols()
	for i := 0; i < rows; i++ {
		row := x.F32[i*n : i*n+n]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v)/float64(temperature))
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v)/float64(temperature) - mx)
		}
		for j, v := range row {
			y.F32[i*n+j] = float32(math.Exp(float64(v)/float64(temperature)-mx) / s)
		}
	}
}

// SoftmaxBackward implements kernels.Device via the Jacobian
// d y_j / d x_k = y_j (delta_jk - y_k) / T.
func (r *Ref) SoftmaxBackward(dx, dy, y *kernels.Tensor, temperature float32) {
	rows, n := y.Rows(), y.Cols()
	for i := 0; i < rows; i++ {
		for k := 0; k < n; k++ {
			var s float64
			for j := 0; j < n; j++ {
				yj, yk := float64(y.F32[i*n+j]), float64(y.F32[i*n+k])
				d := 0.0
				if j == k {
					d = 1
				}
				s += float64(dy.F32[i*n+j]) * yj * (d - yk) / float64(temperature)
			}
			dx.F32[i*n+k] = float32(s)
		}
	}
}

// GateCombine implements kernels.Device.
func (r *Ref) GateCombine(out, w *kernels.Tensor, experts []*kernels.Tensor) {
	rows, d, ne := out.Rows(), out.Cols(), len(experts)
	for b := 0; b < rows; b++ {
		for j := 0; j < d; j++ {
			var s float64
			for e := 0; e < ne; e++ {
				s += float64(w.F32[b*ne+e]) * float64(experts[e].F32[b*d+j])
			}
			out.F32[b*d+j] = float32(s)
		}
	}
}

// GateCombineBackward implements kernels.Device.
func (r *Ref) GateCombineBackward(dout, w *kernels.Tensor, experts []*kernels.Tensor, dw *kernels.Tensor, dexperts []*kernels.Tensor) {
	rows, d, ne := dout.Rows(), dout.Cols(), len(experts)
	for b := 0; b < rows; b++ {
		for e := 0; e < ne; e++ {
			var s float64
			for j := 0; j < d; j++ {
				s += float64(dout.F32[b*d+j]) * float64(experts[e].F32[b*d+j])
				dexperts[e].F32[b*d+j] = float32(float64(dexperts[e].F32[b*d+j]) +
					float64(w.F32[b*ne+e])*float64(dout.F32[b*d+j]))
			}
			dw.F32[b*ne+e] = float32(s)
		}
	}
}

// CopyCols implements kernels.Device.
func (r *Ref) CopyCols(dst *kernels.Tensor, dstCol int, src *kernels.Tensor, srcCol, width int, accumulate bool) {
	for i := 0; i < dst.Rows(); i++ {
		for j := 0; j < width; j++ {
			v := src.F32[i*src.Cols()+srcCol+j]
			p := i*dst.Cols() + dstCol + j
			if accumulate {
				v += dst.F32[p]
			}
			dst.F32[p] = v
		}
	}
}

// listOf returns the table ids of batch row b.
func listOf(ids, offsets *kernels.Tensor, b int) []int32 {
	if offsets == nil {
		return ids.I32[b : b+1]
	}
	return ids.I32[offsets.I32[b]:offsets.I32[b+1]]
}

// combineFactor is the factor on the sum of n embeddings.
func combineFactor(comb kernels.Combiner, n int, list bool) float64 {
	switch {
	case !list || n == 0 || comb == kernels.Sum:
		return 1
	case comb == kernels.Mean:
		return 1 / float64(n)
	default:
		return 1 / math.Sqrt(float64(n))
	}
}

// EmbeddingGather implements kernels.Device.
func (r *Ref) EmbeddingGather(out *kernels.Tensor, col int, table, ids, offsets *kernels.Tensor, comb kernels.Combiner) error {
	rows, dim := out.Rows(), table.Cols()
	for b := 0; b < rows; b++ {
		for _, id := range listOf(ids, offsets, b) {
			if id < 0 || int(id) >= table.Rows() {
				return &kernels.IDRangeError{Row: b, ID: int64(id), Rows: table.Rows()}
			}
		}
	}
	for b := 0; b < rows; b++ {
		list := listOf(ids, offsets, b)
		f := combineFactor(comb, len(list), offsets != nil)
		for j := 0; j < dim; j++ {
			var s float64
			for _, id := range list {
				s += float64(table.F32[int(id)*dim+j])
			}
			out.F32[b*out.Cols()+col+j] = float32(s * f)
		}
	}
	return nil
}

// EmbeddingBackward implements kernels.Device.
func (r *Ref) EmbeddingBackward(grad *kernels.SparseGrad, dout *kernels.Tensor, col int, ids, offsets *kernels.Tensor, comb kernels.Combiner, tableRows int) {
	dim := grad.Values.Cols()
	acc := map[int32][]float64{}
	for b := 0; b < dout.Rows(); b++ {
		list := listOf(ids, offsets, b)
		f := combineFactor(comb, len(list), offsets != nil)
		for _, id := range list {
			if id < 0 || int(id) >= tableRows {
				panic(fmt.Sprintf("ref: EmbeddingBackward: id %d outside [0, %d)", id, tableRows))
			}
			if acc[id] == nil {
				acc[id] = make([]float64, dim)
			}
			for j := 0; j < dim; j++ {
				acc[id][j] += f * float64(dout.F32[b*dout.Cols()+col+j])
			}
		}
	}
	keys := make([]int, 0, len(acc))
	for id := range acc {
		keys = append(keys, int(id))
	}
	sort.Ints(keys)
	for i, id := range keys {
		grad.Rows.I32[i] = int32(id)
		for j := 0; j < dim; j++ {
			grad.Values.F32[i*dim+j] = float32(acc[int32(id)][j])
		}
	}
	grad.N = len(keys)
}

func weight(weights *kernels.Tensor, i int) float64 {
	if weights == nil {
		return 1
	}
	return float64(weights.F32[i])
}

// BCEWithLogits implements kernels.Device. The loss of one example is
// -y*log(p) - (1-y)*log(1-p) with p = sigmoid(z), written with log-sigmoid so
// that it stays finite: log(p) = -softplus(-z), log(1-p) = -softplus(z).
func (r *Ref) BCEWithLogits(loss, dz, z, y, weights *kernels.Tensor, scale float32) {
	softplus := func(x float64) float64 { // log(1+exp(x))
		if x > 0 {
			return x + math.Log(1+math.Exp(-x))
		}
		return math.Log(1 + math.Exp(x))
	}
	var s float64
	for i := range z.F32 {
		zi, yi, w := float64(z.F32[i]), float64(y.F32[i]), weight(weights, i)
		s += w * (yi*softplus(-zi) + (1-yi)*softplus(zi))
		dz.F32[i] = float32(float64(scale) * w * (sigmoid(zi) - yi))
	}
	loss.F32[0] = float32(float64(loss.F32[0]) + float64(scale)*s)
}

// MSE implements kernels.Device.
func (r *Ref) MSE(loss, dz, z, y, weights *kernels.Tensor, scale float32) {
	var s float64
	for i := range z.F32 {
		d, w := float64(z.F32[i])-float64(y.F32[i]), weight(weights, i)
		s += w * d * d
		dz.F32[i] = float32(2 * float64(scale) * w * d)
	}
	loss.F32[0] = float32(float64(loss.F32[0]) + float64(scale)*s)
}

// SumSquares implements kernels.Device.
func (r *Ref) SumSquares(loss, x *kernels.Tensor, scale float32) {
	var s float64
	for _, v := range x.F32 {
		s += float64(v) * float64(v)
	}
	loss.F32[0] = float32(float64(loss.F32[0]) + float64(scale)*s)
}

// adam is one Keras (TensorFlow ResourceApplyAdam) step on element i.
func adam(param, grad, m, v []float32, i, gi int, p kernels.AdamParams) {
	t := float64(p.Step)
	b1, b2 := float64(p.Beta1), float64(p.Beta2)
	g := float64(grad[gi]) + 2*float64(p.L2)*float64(param[i])
	mi := b1*float64(m[i]) + (1-b1)*g
	vi := b2*float64(v[i]) + (1-b2)*g*g
	lr := float64(p.LR) * math.Sqrt(1-math.Pow(b2, t)) / (1 - math.Pow(b1, t))
	m[i], v[i] = float32(mi), float32(vi)
	param[i] = float32(float64(param[i]) - lr*mi/(math.Sqrt(vi)+float64(p.Eps)))
}

// Adam implements kernels.Device.
func (r *Ref) Adam(param, grad, m, v *kernels.Tensor, p kernels.AdamParams) {
	for i := range param.F32 {
		adam(param.F32, grad.F32, m.F32, v.F32, i, i, p)
	}
}

// AdamMulti implements kernels.Device.
func (r *Ref) AdamMulti(params, grads, ms, vs []*kernels.Tensor, p kernels.AdamParams) {
	for i := range params {
		r.Adam(params[i], grads[i], ms[i], vs[i], p)
	}
}

// adagrad is one TensorFlow ApplyAdagradV2 step on element i.
func adagrad(param, grad, acc []float32, i, gi int, p kernels.AdagradParams) {
	g := float64(grad[gi]) + 2*float64(p.L2)*float64(param[i])
	a := float64(acc[i]) + g*g
	acc[i] = float32(a)
	param[i] = float32(float64(param[i]) - float64(p.LR)*g/(math.Sqrt(a)+float64(p.Eps)))
}

// Adagrad implements kernels.Device.
func (r *Ref) Adagrad(param, grad, acc *kernels.Tensor, p kernels.AdagradParams) {
	for i := range param.F32 {
		adagrad(param.F32, grad.F32, acc.F32, i, i, p)
	}
}

// SGD implements kernels.Device.
func (r *Ref) SGD(param, grad *kernels.Tensor, p kernels.SGDParams) {
	for i := range param.F32 {
		g := float64(grad.F32[i]) + 2*float64(p.L2)*float64(param.F32[i])
		param.F32[i] = float32(float64(param.F32[i]) - float64(p.LR)*g)
	}
}

// SparseAdam implements kernels.Device.
func (r *Ref) SparseAdam(table, m, v *kernels.Tensor, grad *kernels.SparseGrad, p kernels.AdamParams) {
	dim := table.Cols()
	for k := 0; k < grad.N; k++ {
		row := int(grad.Rows.I32[k])
		for j := 0; j < dim; j++ {
			adam(table.F32, grad.Values.F32, m.F32, v.F32, row*dim+j, k*dim+j, p)
		}
	}
}

// SparseAdagrad implements kernels.Device.
func (r *Ref) SparseAdagrad(table, acc *kernels.Tensor, grad *kernels.SparseGrad, p kernels.AdagradParams) {
	dim := table.Cols()
	for k := 0; k < grad.N; k++ {
		row := int(grad.Rows.I32[k])
		for j := 0; j < dim; j++ {
			adagrad(table.F32, grad.Values.F32, acc.F32, row*dim+j, k*dim+j, p)
		}
	}
}

// SparseSGD implements kernels.Device.
func (r *Ref) SparseSGD(table *kernels.Tensor, grad *kernels.SparseGrad, p kernels.SGDParams) {
	dim := table.Cols()
	for k := 0; k < grad.N; k++ {
		row := int(grad.Rows.I32[k])
		for j := 0; j < dim; j++ {
			i := row*dim + j
			g := float64(grad.Values.F32[k*dim+j]) + 2*float64(p.L2)*float64(table.F32[i])
			table.F32[i] = float32(float64(table.F32[i]) - float64(p.LR)*g)
		}
	}
}

// Activation is the float64 definition of each activation, as in Keras,
// written from the formulas rather than from the C kernels.
func Activation(act kernels.Activation, x float64) float64 {
	const alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
	switch act {
	case kernels.Linear:
		return x
	case kernels.ReLU:
		return math.Max(x, 0)
	case kernels.SELU:
		if x > 0 {
			return scale * x
		}
		return scale * alpha * (math.Exp(x) - 1)
	case kernels.ELU:
		if x > 0 {
			return x
		}
		return math.Exp(x) - 1
	case kernels.GELU:
		return x * 0.5 * math.Erfc(-x/math.Sqrt2)
	case kernels.Tanh:
		return math.Tanh(x)
	case kernels.Sigmoid:
		return 0.5 + 0.5*math.Tanh(x/2)
	case kernels.Swish:
		return x * (0.5 + 0.5*math.Tanh(x/2))
	case kernels.LeakyReLU:
		if x > 0 {
			return x
		}
		return 0.2 * x
	}
	panic(fmt.Sprintf("kerneltest: unknown activation %v", act))
}

// ActivationGrad is the float64 derivative of Activation at x, from the
// formulas (at a kink, x = 0, the one-sided value the kernels take: that of
// the x <= 0 branch).
func ActivationGrad(act kernels.Activation, x float64) float64 {
	const alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
	sig := 0.5 + 0.5*math.Tanh(x/2)
	switch act {
	case kernels.Linear:
		return 1
	case kernels.ReLU:
		if x > 0 {
			return 1
		}
		return 0
	case kernels.SELU:
		if x > 0 {
			return scale
		}
		return scale * alpha * math.Exp(x)
	case kernels.ELU:
		if x > 0 {
			return 1
		}
		return math.Exp(x)
	case kernels.GELU:
		// Phi(x) + x*phi(x)
		return 0.5*math.Erfc(-x/math.Sqrt2) + x*math.Exp(-x*x/2)/math.Sqrt(2*math.Pi)
	case kernels.Tanh:
		t := math.Tanh(x)
		return 1 - t*t
	case kernels.Sigmoid:
		return sig * (1 - sig)
	case kernels.Swish:
		return sig + x*sig*(1-sig)
	case kernels.LeakyReLU:
		if x > 0 {
			return 1
		}
		return 0.2
	}
	panic(fmt.Sprintf("kerneltest: unknown activation %v", act))
}
