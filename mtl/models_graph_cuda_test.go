//go:build cuda

package mtl_test

// CUDA-graph capture of the training step (Config.CUDAGraph) against the
// eager step on the same GPU: the same seed, configuration and batches give
// bit-identical losses, parameters and optimizer state over 20 steps, for
// every architecture and optimizer. Bit-identical is the contract: a
// replay runs the same kernels in the same order on the same data, and only
// the place the per-step scalars (learning rate, Adam step size, dropout
// seed) are read from differs. The schedule decays and dropout is on, so a
// graph that froze step 1's scalars would fail. The batches include list
// features of varying length (a new capture per slot when the views change)
// and a short batch (captured for its own size). The model's maxBatch may
// exceed the training batch (it also covers evaluation and prediction
// batches, as with the CLI's synthetic preset: train 512, eval 1024):
// capture must engage all the same.

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/mtl"
)

func TestCUDAModelGraphParity(t *testing.T) {
	gpu := gpuParityDevice(t)
	cases := []struct {
		model, opt string
		maxBatch   int
		act        string // "" for the default, relu
	}{
		{"mlp", "adam", gpuParityRows, ""}, {"mmoe", "adam", gpuParityRows, ""}, {"cgc", "adam", gpuParityRows, ""},
		{"ple", "adam", gpuParityRows, ""}, {"mmoe", "adagrad", gpuParityRows, ""}, {"mlp", "sgd", gpuParityRows, ""},
		{"mmoe", "adam", 2 * gpuParityRows, ""},
		// an Activator activation: pre-activation copy, Activate and its
		// backward inside the captured step, dropout after it
		{"mlp", "adam", gpuParityRows, "swish"},
		// derived wide inputs, the FM term, the wide logit's dropout
		{"deepfm", "adam", gpuParityRows, ""}, {"wide_n_deep", "adagrad", gpuParityRows, ""},
		// the cross layers and the dot-product interactions inside the
		// captured step
		{"dcn", "adam", gpuParityRows, ""}, {"dlrm", "adam", gpuParityRows, ""},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%s/max%d/%s", tc.model, tc.opt, tc.maxBatch, tc.act), func(t *testing.T) {
			s := gpuParitySchema()
			cfg := gpuParityConfig(tc.model)
			cfg.Optimizer = tc.opt
			if tc.act != "" {
				cfg.Activation = tc.act
			}
			cfg.Dropout = 0.2 // one pass on the GPU: the same masks in both runs
			cfg.LRDecaySteps, cfg.LRDecayRate = 3, 0.8
			eager, err := mtl.NewModel(s, cfg, gpu, tc.maxBatch)
			require.NoError(t, err)
			defer eager.Release()
			cfg.CUDAGraph = true
			graph, err := mtl.NewModel(s, cfg, gpu, tc.maxBatch)
			require.NoError(t, err)
			defer graph.Release()

			const steps = 20
			for i := range steps {
				rows := gpuParityRows
				if i == 13 {
					rows = gpuParityRows - 37 // a short batch: its own graphs
				}
				se, err := eager.TrainStep(gpuParityBatch(1000+i, rows))
				require.NoError(t, err, "eager step %d", i)
				sg, err := graph.TrainStep(gpuParityBatch(1000+i, rows))
				require.NoError(t, err, "graph step %d", i)
				require.Equal(t, math.Float64bits(se.Loss), math.Float64bits(sg.Loss), "loss of step %d: eager %v, graph %v", i, se.Loss, sg.Loss)
				for k := range se.TaskLoss {
					require.Equal(t, math.Float64bits(se.TaskLoss[k]), math.Float64bits(sg.TaskLoss[k]), "task %d loss of step %d", k, i)
				}
			}
			n, gerr := graph.GraphSteps()
			require.NoError(t, gerr, "capture failed and the steps ran eagerly")
			assert.Equal(t, steps-1, n, "every batch after the first ran as a graph")
			ne, _ := eager.GraphSteps()
			assert.Zero(t, ne)

			want, got := gpuHostParams(eager), gpuHostParams(graph)
			require.Equal(t, len(want), len(got))
			for name, w := range want {
				assertBitsEqual(t, name, w, got[name])
			}
			so, go_ := eager.OptimizerState(), graph.OptimizerState()
			require.Equal(t, len(so), len(go_))
			for i := range so {
				w := make([]float32, so[i].Tensor.Len())
				g := make([]float32, go_[i].Tensor.Len())
				gpu.CopyToHostF32(w, so[i].Tensor)
				gpu.CopyToHostF32(g, go_[i].Tensor)
				assertBitsEqual(t, so[i].Name, w, g)
			}
		})
	}
	require.Zero(t, gpu.LiveTensors(), "every model released its tensors")
}

func assertBitsEqual(t *testing.T, name string, want, got []float32) {
	t.Helper()
	require.Equal(t, len(want), len(got), name)
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			t.Fatalf("%s[%d]: eager %v, graph %v", name, i, want[i], got[i])
		}
	}
}
