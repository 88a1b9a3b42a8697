package step

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/mtlrank/mtlrank/kernels"
)

// Devices with chosen capabilities for Probe. The embedded interfaces are
// nil: Probe only asks which ones a device has (a Sharder is asked for
// its ShardDevice, so the sharding devices embed a real CPU).
type (
	plainDevice struct{ kernels.Device }
	// gpuDevice has every capability of the CUDA device.
	gpuDevice struct {
		kernels.Device
		kernels.GraphCapturer
		kernels.StepParamOps
		kernels.FusedEmbeddingUpdater
		kernels.AsyncUploader
		kernels.AsyncIDChecker
		kernels.FusedGater
	}
	noGraphsDevice struct {
		kernels.Device
		kernels.StepParamOps
		kernels.FusedEmbeddingUpdater
		kernels.AsyncUploader
	}
	noStepOpsDevice struct {
		kernels.Device
		kernels.GraphCapturer
		kernels.FusedEmbeddingUpdater
		kernels.AsyncUploader
	}
	noFusedDevice struct {
		kernels.Device
		kernels.GraphCapturer
		kernels.StepParamOps
		kernels.AsyncUploader
	}
	noStagedDevice struct {
		kernels.Device
		kernels.GraphCapturer
		kernels.StepParamOps
		kernels.FusedEmbeddingUpdater
	}
	// shardingGPU can capture but shards its batches.
	shardingGPU struct {
		*kernels.CPU
		kernels.GraphCapturer
		kernels.StepParamOps
		kernels.FusedEmbeddingUpdater
		kernels.AsyncUploader
	}
)

// TestProbe is the capability table: what Probe finds on each kind of
// device, and why a training step can or cannot be captured there.
func TestProbe(t *testing.T) {
	cpu := kernels.NewCPU(2)
	type want struct {
		sharder, cpu, staged, fused, idCheck, fusedGate bool
		layersElsewhere                                 bool // Layers != Dev
		noGraphs                                        string
	}
	cases := []struct {
		name string
		dev  kernels.Device
		want want
	}{
		{"CPU: shards, wraps host columns", cpu, want{sharder: true, cpu: true, layersElsewhere: true, noGraphs: "the device cannot capture graphs"}},
		{"plain device: copies, one shard", plainDevice{cpu}, want{noGraphs: "the device cannot capture graphs"}},
		{"CUDA-like: everything", gpuDevice{Device: cpu}, want{staged: true, fused: true, idCheck: true, fusedGate: true}},
		{"no graphs", noGraphsDevice{Device: cpu}, want{staged: true, fused: true, noGraphs: "the device cannot capture graphs"}},
		{"no step-parameter ops", noStepOpsDevice{Device: cpu}, want{staged: true, fused: true, noGraphs: "the device has no step-parameter ops"}},
		{"no fused embedding update", noFusedDevice{Device: cpu}, want{staged: true, noGraphs: "the device has no fused embedding update"}},
		{"no staged uploads", noStagedDevice{Device: cpu}, want{fused: true, noGraphs: "the device has no asynchronous batch uploads"}},
		{"graphs on a sharding device", shardingGPU{CPU: cpu}, want{sharder: true, cpu: false, fused: true, staged: true, layersElsewhere: true, noGraphs: "the device shards batches"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Probe(tc.dev)
			got := want{
				sharder: c.Sharder != nil, cpu: c.CPU != nil, staged: c.Staged != nil, fused: c.Fused != nil,
				idCheck: c.IDChecker != nil, fusedGate: c.FusedGate, layersElsewhere: c.Layers != c.Dev,
				noGraphs: c.WhyNoGraphs(),
			}
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.dev, c.Dev)
			if c.Sharder != nil {
				assert.Equal(t, cpu.ShardDevice(), c.Layers, "the layers run on the shard device")
			}
		})
	}
	// A nil device (EstimateMemory's "count one shard") has no capability.
	assert.Equal(t, Caps{}, Probe(nil))
	// Capture needs the layers on the capturing device itself.
	c := Probe(gpuDevice{Device: cpu})
	c.Layers = cpu
	assert.Equal(t, "the layers run on another device", c.WhyNoGraphs())
}
