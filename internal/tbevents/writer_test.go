package tbevents_test

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/internal/tbevents"
	"github.com/mtlrank/mtlrank/internal/tbevents/tbread"
)

func TestCRC(t *testing.T) {
	// the CRC-32C check value
	assert.Equal(t, uint32(0xE3069283), tbread.CRC32C([]byte("123456789")))
	for _, s := range []string{"", "a", "123456789", strings.Repeat("tensorboard", 50)} {
		assert.Equal(t, tbread.Masked([]byte(s)), tbevents.MaskedCRC([]byte(s)), "%q", s)
	}
}

func TestWriterRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tb", "train")
	w, err := tbevents.Create(dir)
	require.NoError(t, err)
	want := []tbread.Scalar{
		{Step: 0, Tag: "epoch_loss", Value: 0.5},
		{Step: 1, Tag: "epoch_click/binary_output/auc", Value: 0.75},
		{Step: 1 << 40, Tag: "gate/task_click/expert_2", Value: 0.125},
		{Step: 7, Tag: "batch_loss", Value: float32(math.Inf(1))},
	}
	for _, s := range want {
		require.NoError(t, w.Scalar(s.Tag, s.Step, float64(s.Value)))
	}
	require.NoError(t, w.Close())
	assert.True(t, strings.HasPrefix(filepath.Base(w.Path()), "events.out.tfevents."))
	version, got, err := tbread.Read(w.Path())
	require.NoError(t, err)
	assert.Equal(t, tbevents.FileVersion, version)
	require.Len(t, got, len(want))
	for i := range want {
		assert.Equal(t, want[i].Tag, got[i].Tag)
		assert.Equal(t, want[i].Step, got[i].Step)
		assert.Equal(t, want[i].Value, got[i].Value)
		assert.Greater(t, got[i].WallTime, 1.6e9, "wall time in seconds")
	}
	// A second writer in the same folder makes a new file.
	w2, err := tbevents.Create(dir)
	require.NoError(t, err)
	require.NoError(t, w2.Close())
	assert.NotEqual(t, w.Path(), w2.Path())
	_, again, err := tbread.Read(w.Path())
	require.NoError(t, err)
	assert.Len(t, again, len(want), "the first file is untouched")
}

// A damaged file is reported, not misread.
func TestReadDetectsCorruption(t *testing.T) {
	w, err := tbevents.Create(t.TempDir())
	require.NoError(t, err)
	require.NoError(t, w.Scalar("x", 1, 2))
	require.NoError(t, w.Close())
	raw, err := os.ReadFile(w.Path())
	require.NoError(t, err)
	raw[len(raw)-6] ^= 1 // a payload byte of the last record
	bad := filepath.Join(t.TempDir(), "bad")
	require.NoError(t, os.WriteFile(bad, raw, 0o644))
	_, _, err = tbread.Read(bad)
	require.EqualError(t, err, "data CRC mismatch")
}
