package step

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
)

// optParams are a table [4, 2] (rows 1 and 3 touched by the sparse
// gradient) and two dense parameters, with their values and gradients.
type optParams struct {
	dev    kernels.Device
	ps     []layers.Param
	vals   [][]float64 // per parameter, the starting values
	grads  [][]float64 // per parameter; the table's untouched rows are 0
	dense  []*kernels.Tensor
	dgrads []*kernels.Tensor
	sparse *kernels.SparseGrad
}

func newOptParams(t *testing.T) *optParams {
	dev := kernels.NewCPU(1)
	o := &optParams{dev: dev}
	add := func(name string, sparse bool, vals, grads []float64, shape ...int) {
		v := dev.Alloc(kernels.Float32, shape...)
		dev.CopyFromHostF32(v, f32(vals))
		o.ps = append(o.ps, layers.Param{Name: name, Value: v, Sparse: sparse})
		o.vals, o.grads = append(o.vals, vals), append(o.grads, grads)
		if !sparse {
			g := dev.Alloc(kernels.Float32, shape...)
			dev.CopyFromHostF32(g, f32(grads))
			o.dense, o.dgrads = append(o.dense, v), append(o.dgrads, g)
		}
	}
	add("input/emb/user", true, []float64{0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8},
		[]float64{0, 0, 0.5, -1.5, 0, 0, 2, 0.25}, 4, 2)
	add("mlp/0/kernel", false, []float64{1, -2, 0.5, 0.25, -0.75, 3}, []float64{0.3, -0.6, 0.9, 0, -1.2, 0.05}, 2, 3)
	add("mlp/0/bias", false, []float64{0.5, -0.5, 0}, []float64{-2, 1, 0.125}, 3)
	rows := dev.Alloc(kernels.Int32, 2)
	dev.CopyFromHostI32(rows, []int32{1, 3})
	vals := dev.Alloc(kernels.Float32, 2, 2)
	dev.CopyFromHostF32(vals, []float32{0.5, -1.5, 2, 0.25})
	o.sparse = &kernels.SparseGrad{Rows: rows, Values: vals, N: 2}
	t.Cleanup(func() {
		for _, p := range o.ps {
			p.Value.Release()
		}
		for _, g := range o.dgrads {
			g.Release()
		}
		rows.Release()
		vals.Release()
	})
	return o
}

func f32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func host(dev kernels.Device, t *kernels.Tensor) []float64 {
	h := make([]float32, t.Len())
	dev.CopyToHostF32(h, t)
	out := make([]float64, len(h))
	for i, x := range h {
		out[i] = float64(x)
	}
	return out
}

// wantUpdate is the hand-computed update of kind at 0-based step on
// values p with gradient g and state s (updated in place), in float64,
// from the rules the optimizers follow (Keras / TensorFlow):
//
//	adam:    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//	         p -= lr sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps), t = step+1
//	adagrad: a += g^2; p -= lr g / (sqrt(a) + 1e-7)
//	sgd:     p -= lr g
func wantUpdate(kind string, step int, lr float64, h Hyper, p, g []float64, s [][]float64) []float64 {
	out := make([]float64, len(p))
	b1, b2, eps := float64(h.Beta1), float64(h.Beta2), float64(h.Eps)
	for i := range p {
		switch kind {
		case "adam":
			s[0][i] = b1*s[0][i] + (1-b1)*g[i]
			s[1][i] = b2*s[1][i] + (1-b2)*g[i]*g[i]
			t := float64(step + 1)
			lrT := lr * math.Sqrt(1-math.Pow(b2, t)) / (1 - math.Pow(b1, t))
			out[i] = p[i] - lrT*s[0][i]/(math.Sqrt(s[1][i])+eps)
		case "adagrad":
			s[0][i] += g[i] * g[i]
			out[i] = p[i] - lr*g[i]/(math.Sqrt(s[0][i])+1e-7)
		case "sgd":
			out[i] = p[i] - lr*g[i]
		}
	}
	return out
}

// TestOptimizerUpdates: each optimizer's dense (per tensor and all at
// once) and sparse updates over two steps match the hand-computed rule;
// a table's untouched rows, and with Adam their moments, do not move
// (lazy updates); the state starts at Keras' values and carries its
// checkpoint names.
func TestOptimizerUpdates(t *testing.T) {
	h := Hyper{LearningRate: func(step int) float32 { return []float32{0.01, 0.005}[step] }, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7}
	cases := []struct {
		kind  string
		names []string
		init  float64
	}{
		{"adam", []string{"input/emb/user/m", "input/emb/user/v", "mlp/0/kernel/m", "mlp/0/kernel/v", "mlp/0/bias/m", "mlp/0/bias/v"}, 0},
		{"adagrad", []string{"input/emb/user/accumulator", "mlp/0/kernel/accumulator", "mlp/0/bias/accumulator"}, float64(float32(0.1))},
		{"sgd", nil, 0},
	}
	for _, tc := range cases {
		for _, path := range []string{"denseAll", "dense"} {
			t.Run(tc.kind+"/"+path, func(t *testing.T) {
				o := newOptParams(t)
				opt, err := NewOptimizer(tc.kind, o.dev, o.ps, h)
				require.NoError(t, err)
				defer opt.release()
				n, err := StateTensors(tc.kind)
				require.NoError(t, err)
				var names []string
				for _, st := range opt.State() {
					names = append(names, st.Name)
					for _, v := range host(o.dev, st.Tensor) {
						require.Equal(t, tc.init, v, "%s starts at %v", st.Name, tc.init)
					}
				}
				assert.Equal(t, tc.names, names)
				assert.Len(t, names, n*len(o.ps))

				// the state the rule keeps, per parameter
				state := make([][][]float64, len(o.ps))
				for i := range o.ps {
					state[i] = make([][]float64, n)
					for k := range state[i] {
						state[i][k] = make([]float64, len(o.vals[i]))
						for j := range state[i][k] {
							state[i][k][j] = tc.init
						}
					}
				}
				want := o.vals
				for step := range 2 {
					lr := float64(h.LearningRate(step))
					opt.begin(step, float32(lr))
					if path == "denseAll" {
						opt.denseAll(o.dev, o.dense, o.dgrads, []int{1, 2})
					} else {
						for k, p := range o.dense {
							opt.dense(o.dev, k+1, p, o.dgrads[k])
						}
					}
					opt.sparse(o.dev, 0, o.ps[0].Value, o.sparse)
					next := make([][]float64, len(o.ps))
					for i := range o.ps {
						next[i] = wantUpdate(tc.kind, step, float64(float32(lr)), h, want[i], o.grads[i], state[i])
					}
					// untouched table rows (0 and 2) keep their values and state
					for _, j := range []int{0, 1, 4, 5} {
						next[0][j] = want[0][j]
						for k := range state[0] {
							state[0][k][j] = tc.init
						}
					}
					want = next
					for i, p := range o.ps {
						got := host(o.dev, p.Value)
						for j := range got {
							require.InDelta(t, want[i][j], got[j], 1e-6*math.Abs(want[i][j])+1e-7, "step %d %s[%d]", step, p.Name, j)
						}
					}
					for k, st := range opt.State() {
						i, s := k/n, k%n
						got := host(o.dev, st.Tensor)
						for j := range got {
							require.InDelta(t, state[i][s][j], got[j], 1e-6*math.Abs(state[i][s][j])+1e-9, "step %d %s[%d]", step, st.Name, j)
						}
					}
				}
			})
		}
	}
}

// TestOptimizerKinds: an unknown optimizer is refused by name; each kind
// keeps its number of state tensors per parameter.
func TestOptimizerKinds(t *testing.T) {
	for kind, want := range map[string]int{"adam": 2, "adagrad": 1, "sgd": 0} {
		n, err := StateTensors(kind)
		require.NoError(t, err)
		assert.Equal(t, want, n, kind)
	}
	_, err := StateTensors("rmsprop")
	require.ErrorContains(t, err, `unknown optimizer "rmsprop"`)
	_, err = NewOptimizer("rmsprop", kernels.NewCPU(1), nil, Hyper{})
	require.ErrorContains(t, err, `unknown optimizer "rmsprop"`)
}

// TestCapturedScalars: a captured step uploads the learning rate of its
// step and, for Adam, the parameters of its step size (kernels.StepParams
// computes the bias-corrected rate from them); the other kinds read only
// the learning rate.
func TestCapturedScalars(t *testing.T) {
	h := Hyper{LearningRate: func(int) float32 { return 0.5 }, Beta1: 0.8, Beta2: 0.99, Eps: 1e-6}
	for _, tc := range []struct {
		kind string
		adam kernels.AdamParams
	}{
		{"adam", kernels.AdamParams{LR: 0.25, Beta1: 0.8, Beta2: 0.99, Eps: 1e-6, Step: 4}},
		{"adagrad", kernels.AdamParams{}},
		{"sgd", kernels.AdamParams{}},
	} {
		opt, err := NewOptimizer(tc.kind, kernels.NewCPU(1), nil, h)
		require.NoError(t, err)
		opt.begin(3, 0.25)
		lr, adam := opt.scalars()
		assert.Equal(t, float32(0.25), lr, tc.kind)
		assert.Equal(t, tc.adam, adam, tc.kind)
	}
}
