package mtl_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/mtl"
)

// Config.CUDAGraph needs a device that captures the training step: on the
// CPU device NewModel and SetCUDAGraph(true) fail with an error that says
// so, SetCUDAGraph(false) is a no-op, and the option is not saved with the
// configuration (checkpoints).
func TestCUDAGraphOption(t *testing.T) {
	cfg := trConfig("mlp")
	cfg.CUDAGraph = true
	_, err := mtl.NewModel(trSchema(), cfg, trDev(), 16)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "CUDAGraph needs a device that can capture the training step")
	assert.Contains(t, err.Error(), "cannot capture graphs")

	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	require.NoError(t, m.SetCUDAGraph(false))
	require.Error(t, m.SetCUDAGraph(true))
	assert.False(t, m.Config().CUDAGraph)
	n, gerr := m.GraphSteps()
	assert.Zero(t, n)
	assert.NoError(t, gerr)

	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	assert.NotContains(t, string(js), "CUDAGraph")
}
