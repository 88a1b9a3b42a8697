package synth

import (
	"fmt"
	"math"
	"runtime"
)

// Defaults applied by NewGenerator to zero-valued Config fields.
const (
	DefaultRowGroupRows     = 64 * 1024
	DefaultRowGroupsPerFile = 16
	DefaultLatentDim        = 8
	DefaultZipf             = 1.1
	DefaultZipfCap          = 1 << 20
	DefaultSignalScale      = 1.5
	DefaultRegressionNoise  = 0.1
	DefaultCalibrationRows  = 1 << 16
	DefaultOracleExactRows  = 1 << 22
	// DefaultListMax: a list feature without value_count gets lengths
	// uniform in [1, DefaultListMax].
	DefaultListMax = 5
	// DefaultBaseRate is the positive rate of a binary target that neither
	// Config.BaseRates nor TenrecBaseRates names.
	DefaultBaseRate = 0.25
	// DefaultTaskCorrelation and DefaultInteraction are set by
	// DefaultConfig (a zero Config field means 0 for these two).
	DefaultTaskCorrelation = 0.5
	DefaultInteraction     = 0.5
)

var tenrecBaseRates = map[string]float64{"click": 0.29, "like": 0.011, "share": 0.001, "follow": 0.001}

// TenrecBaseRates returns the positive rates of the TenRec-like targets
// (docs/ARCHITECTURE.md, "The tenrec schema"), used for binary targets of
// those names unless
// Config.BaseRates says otherwise.
func TenrecBaseRates() map[string]float64 {
	m := make(map[string]float64, len(tenrecBaseRates))
	for k, v := range tenrecBaseRates {
		m[k] = v
	}
	return m
}

// Config controls a synthetic dataset. Zero-valued fields take the defaults
// above, except those whose zero is meaningful and which are used as given:
// TaskCorrelation (0: independent tasks), Interaction (0: first-order signal
// only), StartRow and NoSignal. DefaultConfig sets every field to its
// recommended value; start from it.
type Config struct {
	// Rows is the number of rows WriteDataset writes. A Generator's stream
	// is unbounded; Rows does not limit Batch.
	Rows int64 `json:"rows"`
	// Seed selects the hidden world (latents, weights, biases) and the rows.
	Seed int64 `json:"seed"`
	// StartRow is the index of the first row WriteDataset writes and where
	// a new Generator's Batch starts. Datasets with the same Seed and
	// disjoint [StartRow, StartRow+Rows) share the world and no rows: use it
	// for train and evaluation splits.
	StartRow int64 `json:"start_row"`
	// RowGroupRows is the Parquet row-group size (default 64k rows).
	RowGroupRows int `json:"row_group_rows"`
	// RowGroupsPerFile is how many row groups go into one part file.
	RowGroupsPerFile int `json:"row_groups_per_file"`
	// LatentDim is the size of the hidden latent vectors (default 8).
	LatentDim int `json:"latent_dim"`
	// Zipf is the exponent s of id popularity, P(rank k) ~ k^-s (default
	// 1.1). Any s > 0 is valid because the ranks are finite.
	Zipf float64 `json:"zipf"`
	// ZipfCap limits the number of distinct ids drawn per domain to
	// min(cardinality, ZipfCap) (default 2^20): ids beyond the cap's ranks
	// never appear, and the alias table stays small.
	ZipfCap int `json:"zipf_cap"`
	// BaseRates gives the positive rate of binary targets by name; others
	// use TenrecBaseRates or DefaultBaseRate. Names must be binary targets.
	BaseRates map[string]float64 `json:"base_rates,omitempty"`
	// TaskCorrelation in [0, 1] is the correlation of two tasks' scores: 1
	// gives every task the same signal, 0 independent signals
	// (DefaultConfig: DefaultTaskCorrelation).
	TaskCorrelation float64 `json:"task_correlation"`
	// SignalScale is the standard deviation of the signal part of a binary
	// target's logit (default 1.5, an oracle click AUC near 0.8 on
	// tenrec); it sets the oracle AUC.
	SignalScale float64 `json:"signal_scale"`
	// Interaction in [0, 1] is the share of each score's variance that comes
	// from pairwise interactions, the rest being first-order
	// (DefaultConfig: DefaultInteraction).
	Interaction float64 `json:"interaction"`
	// RegressionNoise is the noise standard deviation of regression targets
	// as a fraction of the target's domain width (absolute when the target
	// has no domain); default 0.1.
	RegressionNoise float64 `json:"regression_noise"`
	// NoSignal makes every label independent of the inputs (coin flips at
	// the base rates, constant regression means): the oracle AUC is 0.5.
	NoSignal bool `json:"no_signal,omitempty"`
	// CalibrationRows is the size of the sample used to whiten the scores
	// and solve the biases (default 65536).
	CalibrationRows int `json:"calibration_rows"`
	// OracleExactRows bounds the rows whose (logit, label) pairs
	// WriteDataset keeps for the exact oracle AUC, 8 bytes per row and
	// binary target (default 2^22: 128 MiB for tenrec's four). Larger
	// datasets use a fine histogram of the logits instead, and the oracle
	// reports the largest error this can cause.
	OracleExactRows int64 `json:"oracle_exact_rows"`
	// Workers generating row groups in parallel in WriteDataset (default
	// GOMAXPROCS). The output does not depend on it.
	Workers int `json:"-"`
	// Progress, when set, is called by WriteDataset after each row group
	// with the number of rows written so far.
	Progress func(rowsDone int64) `json:"-"`
}

// DefaultConfig returns the recommended configuration for rows rows of the
// given seed: every default, TaskCorrelation DefaultTaskCorrelation and
// Interaction DefaultInteraction.
func DefaultConfig(rows int64, seed int64) Config {
	c := Config{Rows: rows, Seed: seed, TaskCorrelation: DefaultTaskCorrelation, Interaction: DefaultInteraction}
	c.applyDefaults()
	return c
}

func (c *Config) applyDefaults() {
	if c.RowGroupRows == 0 {
		c.RowGroupRows = DefaultRowGroupRows
	}
	if c.RowGroupsPerFile == 0 {
		c.RowGroupsPerFile = DefaultRowGroupsPerFile
	}
	if c.LatentDim == 0 {
		c.LatentDim = DefaultLatentDim
	}
	if c.Zipf == 0 {
		c.Zipf = DefaultZipf
	}
	if c.ZipfCap == 0 {
		c.ZipfCap = DefaultZipfCap
	}
	if c.SignalScale == 0 {
		c.SignalScale = DefaultSignalScale
	}
	if c.RegressionNoise == 0 {
		c.RegressionNoise = DefaultRegressionNoise
	}
	if c.CalibrationRows == 0 {
		c.CalibrationRows = DefaultCalibrationRows
	}
	if c.OracleExactRows == 0 {
		c.OracleExactRows = DefaultOracleExactRows
	}
	if c.Workers == 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
}

func (c *Config) validate() error {
	finite := func(name string, v float64) error {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("synth: %s is %v", name, v)
		}
		return nil
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"Zipf", c.Zipf}, {"TaskCorrelation", c.TaskCorrelation}, {"SignalScale", c.SignalScale},
		{"Interaction", c.Interaction}, {"RegressionNoise", c.RegressionNoise}} {
		if err := finite(p.name, p.v); err != nil {
			return err
		}
	}
	switch {
	case c.Rows < 0:
		return fmt.Errorf("synth: Rows is %d, want >= 0", c.Rows)
	case c.StartRow < 0:
		return fmt.Errorf("synth: StartRow is %d, want >= 0", c.StartRow)
	case c.RowGroupRows < 0:
		return fmt.Errorf("synth: RowGroupRows is %d, want > 0", c.RowGroupRows)
	case c.RowGroupsPerFile < 0:
		return fmt.Errorf("synth: RowGroupsPerFile is %d, want > 0", c.RowGroupsPerFile)
	case c.LatentDim < 0 || c.LatentDim > 1024:
		return fmt.Errorf("synth: LatentDim is %d, want 1..1024", c.LatentDim)
	case c.Zipf < 0:
		return fmt.Errorf("synth: Zipf exponent is %v, want > 0", c.Zipf)
	case c.ZipfCap < 0:
		return fmt.Errorf("synth: ZipfCap is %d, want > 0", c.ZipfCap)
	case c.TaskCorrelation < 0 || c.TaskCorrelation > 1:
		return fmt.Errorf("synth: TaskCorrelation is %v, want 0..1", c.TaskCorrelation)
	case c.SignalScale < 0:
		return fmt.Errorf("synth: SignalScale is %v, want > 0", c.SignalScale)
	case c.Interaction < 0 || c.Interaction > 1:
		return fmt.Errorf("synth: Interaction is %v, want 0..1", c.Interaction)
	case c.RegressionNoise < 0:
		return fmt.Errorf("synth: RegressionNoise is %v, want > 0", c.RegressionNoise)
	case c.CalibrationRows < 0:
		return fmt.Errorf("synth: CalibrationRows is %d, want > 0", c.CalibrationRows)
	case c.OracleExactRows < 0:
		return fmt.Errorf("synth: OracleExactRows is %d, want > 0", c.OracleExactRows)
	case c.Workers < 0:
		return fmt.Errorf("synth: Workers is %d, want > 0", c.Workers)
	}
	if c.StartRow > math.MaxInt64-c.Rows {
		return fmt.Errorf("synth: StartRow %d + Rows %d overflows", c.StartRow, c.Rows)
	}
	for name, r := range c.BaseRates {
		if !(r > 0 && r < 1) {
			return fmt.Errorf("synth: base rate of %q is %v, want a value strictly between 0 and 1", name, r)
		}
	}
	return nil
}

// cloneConfig copies c, including its map, so that a Generator is not
// affected by later changes to the caller's map.
func cloneConfig(c Config) Config {
	if c.BaseRates != nil {
		m := make(map[string]float64, len(c.BaseRates))
		for k, v := range c.BaseRates {
			m[k] = v
		}
		c.BaseRates = m
	}
	return c
}
