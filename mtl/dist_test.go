package mtl

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/loader"
)

// concatBatches is the batch of the parts' rows one after the other (the
// global batch of a distributed step whose ranks hold the parts).
func concatBatches(parts []*loader.Batch) *loader.Batch {
	rows := 0
	cols := map[string]*loader.Column{}
	for _, p := range parts {
		for name, c := range p.Columns {
			o := cols[name]
			if o == nil {
				o = &loader.Column{Name: name}
				if c.Offsets != nil {
					o.Offsets = []int32{0}
				}
				cols[name] = o
			}
			if c.Offsets != nil {
				base := o.Offsets[len(o.Offsets)-1]
				for _, x := range c.Offsets[1:] {
					o.Offsets = append(o.Offsets, base+x)
				}
			}
			o.F32 = append(o.F32, c.F32...)
			o.I32 = append(o.I32, c.I32...)
			o.I64 = append(o.I64, c.I64...)
		}
		rows += p.Rows
	}
	return loader.NewBatch(rows, cols, "global", nil)
}

// distSteps are the rows of each rank's batch per step: uneven, and with
// ranks that have run out (0 rows), as at the end of an epoch.
func distSteps(n, steps int) [][]int {
	out := make([][]int, steps)
	for s := range out {
		out[s] = make([]int, n)
		for r := range n {
			out[s][r] = 20 + 3*r + s%5
		}
		if s >= steps-3 && n > 1 {
			out[s][n-1] = 0 // the last rank's part has run out
		}
	}
	return out
}

// TestDistributedStepMatchesOneProcess: N ranks (dist.LocalGroup) training
// on the parts of the same global batches reach the parameters one process
// reaches on the global batches, within 1e-5 relative after 50 steps, with
// every loss term on (L2 on dense parameters and embeddings, sample
// weights, sample spaces, loss and class weights), and every rank holds
// the same bits.
func TestDistributedStepMatchesOneProcess(t *testing.T) {
	const steps = 50
	// With InitOutputBias a regression head's bias starts where its
	// gradient is zero, so that its first gradients are rounding noise,
	// which Adam's normalised step turns into steps of +-LR: one process
	// is as sensitive to the order of its own sums. The Adam cases train
	// without it; the bias itself is checked bit for bit by
	// TestDistributedInitOutputBias.
	for _, tc := range []struct {
		model, opt string
		n          int
		initBias   bool
	}{
		{"mmoe", "adam", 1, false}, {"mmoe", "adam", 2, false}, {"mmoe", "adam", 3, false},
		{"ple", "adagrad", 2, true}, {"mlp", "sgd", 3, true}, {"cgc", "adagrad", 3, true},
	} {
		t.Run(fmt.Sprintf("%s/%s/%d", tc.model, tc.opt, tc.n), func(t *testing.T) {
			cfg := gradConfig(tc.model)
			cfg.Optimizer = tc.opt
			cfg.LR = 0.01
			cfg.InitOutputBias = tc.initBias
			plan := distSteps(tc.n, steps)
			// The ranks' batches of every step, and their concatenation.
			rng := rand.New(rand.NewPCG(5, 6))
			parts := make([][]*loader.Batch, steps)
			global := make([]*loader.Batch, steps)
			for s := range parts {
				parts[s] = make([]*loader.Batch, tc.n)
				for r := range tc.n {
					parts[s][r] = gradBatch(rng, plan[s][r])
				}
				global[s] = concatBatches(parts[s])
			}

			one, err := NewModel(gradSchema(), cfg, testDev(), 128)
			require.NoError(t, err)
			defer one.Release()
			var wantLoss []float64
			for s := range steps {
				st, err := one.TrainStep(global[s])
				require.NoError(t, err)
				wantLoss = append(wantLoss, st.Loss)
			}

			comms := dist.LocalGroup(tc.n)
			got := make([]map[string][]float32, tc.n)
			losses := make([][]float64, tc.n)
			errs := make([]error, tc.n)
			var wg sync.WaitGroup
			for r := range tc.n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[r] = func() error {
						m, err := NewModel(gradSchema(), cfg, testDev(), 128)
						if err != nil {
							return err
						}
						defer m.Release()
						if err := m.setComm(comms[r]); err != nil {
							return err
						}
						for s := range steps {
							b := parts[s][r]
							if b.Rows == 0 {
								b = &loader.Batch{}
							}
							st, err := m.TrainStep(b)
							if err != nil {
								return err
							}
							losses[r] = append(losses[r], st.Loss)
						}
						got[r] = hostParamsOf(m)
						return nil
					}()
				}()
			}
			wg.Wait()
			for r, err := range errs {
				require.NoError(t, err, "rank %d", r)
			}
			want := hostParamsOf(one)
			for r := 1; r < tc.n; r++ {
				for name, v := range got[0] {
					require.True(t, slices.Equal(v, got[r][name]), "rank %d's %s differs from rank 0's", r, name)
				}
				require.Equal(t, losses[0], losses[r], "rank %d's losses", r)
			}
			for name, w := range want {
				requireTensorClose(t, w, got[0][name], 1e-5, name)
			}
			for s := range wantLoss {
				require.InEpsilon(t, wantLoss[s], losses[0][s], 1e-5, "loss of step %d", s)
			}
		})
	}
}

// requireTensorClose checks got against want within rel relative in the
// tensor's Euclidean norm: ||got - want|| <= rel * ||want||. Elementwise
// relative errors are not meaningful for elements near zero, which Adam's
// normalised steps move by amounts of the order of the learning rate
// whatever the size of their gradient.
func requireTensorClose(t *testing.T, want, got []float32, rel float64, name string) {
	t.Helper()
	require.Len(t, got, len(want), name)
	var d2, w2 float64
	worst := 0
	for i := range want {
		d := float64(want[i]) - float64(got[i])
		d2 += d * d
		w2 += float64(want[i]) * float64(want[i])
		if math.Abs(d) > math.Abs(float64(want[worst])-float64(got[worst])) {
			worst = i
		}
	}
	if math.Sqrt(d2) > rel*math.Sqrt(w2) {
		t.Fatalf("%s: ||distributed - one process|| = %.3g > %.0e x %.3g; worst [%d]: one process %v, distributed %v",
			name, math.Sqrt(d2), rel, math.Sqrt(w2), worst, want[worst], got[worst])
	}
}

func hostParamsOf(m *Model) map[string][]float32 {
	out := map[string][]float32{}
	for _, list := range [][]NamedTensor{m.Params(), m.OptimizerState()} {
		for _, nt := range list {
			h := make([]float32, nt.Tensor.Len())
			m.dev.CopyToHostF32(h, nt.Tensor)
			out[nt.Name] = h
		}
	}
	return out
}

// TestDistributedInitOutputBias: on N ranks, InitOutputBias calibrates the
// heads on the ranks' first batches together, giving the bits one process
// gets from their concatenation (the rows are gathered in rank order, the
// order of the global batch), on every rank, also when a rank has no rows.
func TestDistributedInitOutputBias(t *testing.T) {
	for _, rows := range [][]int{{20, 23}, {7, 0, 30}, {0, 12}} {
		t.Run(fmt.Sprint(rows), func(t *testing.T) {
			cfg := gradConfig("mmoe")
			n := len(rows)
			rng := rand.New(rand.NewPCG(5, 6))
			parts := make([]*loader.Batch, n)
			for r := range parts {
				parts[r] = gradBatch(rng, rows[r])
			}
			one, err := NewModel(gradSchema(), cfg, testDev(), 128)
			require.NoError(t, err)
			defer one.Release()
			_, err = one.initOutputBias(concatBatches(parts))
			require.NoError(t, err)
			want := hostParamsOf(one)
			comms := dist.LocalGroup(n)
			got := make([]map[string][]float32, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for r := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					m, err := NewModel(gradSchema(), cfg, testDev(), 128)
					if err != nil {
						errs[r] = err
						return
					}
					defer m.Release()
					if errs[r] = m.setComm(comms[r]); errs[r] == nil {
						b := parts[r]
						if b.Rows == 0 {
							b = &loader.Batch{}
						}
						_, errs[r] = m.initOutputBias(b)
						got[r] = hostParamsOf(m)
					}
				}()
			}
			wg.Wait()
			for r := range n {
				require.NoError(t, errs[r], "rank %d", r)
				for name, v := range want {
					require.True(t, slices.Equal(v, got[r][name]), "rank %d: %s", r, name)
				}
			}
		})
	}
}
