package synth

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/mtlrank/mtlrank/internal/rankkey"
	"github.com/mtlrank/mtlrank/internal/readlimit"
	"github.com/mtlrank/mtlrank/loader"
)

// OracleFile is the name of the oracle written beside a dataset.
const OracleFile = "oracle.json"

// Oracle reports what a perfect model (one that knows the true
// probabilities and means) scores on a dataset.
type Oracle struct {
	Rows int64 `json:"rows"`
	// AUC is the exact ROC-AUC (ties averaged) of the true probabilities
	// against the sampled labels, per binary target. A target whose labels
	// hold a single class has no entry.
	AUC map[string]float64 `json:"auc"`
	// AUCMaxError is set for datasets above Config.OracleExactRows, whose
	// AUC comes from a histogram of the true logits: the largest possible
	// difference from the exact AUC.
	AUCMaxError map[string]float64 `json:"auc_max_error,omitempty"`
	// LogLoss is the mean binary cross-entropy of the true probabilities.
	LogLoss map[string]float64 `json:"logloss"`
	// BaseRate is the observed positive rate; TargetBaseRate the configured
	// one.
	BaseRate       map[string]float64 `json:"base_rate"`
	TargetBaseRate map[string]float64 `json:"target_base_rate"`
	// RMSE is the RMSE of E[label | inputs] per regression target: the
	// noise that no model can remove. ConstantRMSE is the RMSE of the best
	// constant (the label's standard deviation).
	RMSE         map[string]float64 `json:"rmse"`
	ConstantRMSE map[string]float64 `json:"constant_rmse"`
	// Config is the generator configuration, defaults applied (zero for
	// the MMoE paper's data, which records MMoEPaper instead).
	Config Config `json:"config"`
	// MMoEPaper is set for data written by WriteMMoEPaper.
	MMoEPaper *MMoEPaperInfo `json:"mmoe_paper,omitempty"`
}

// maxOracleSize bounds the oracle.json read (a few KiB in practice).
const maxOracleSize = 16 << 20

// ReadOracle reads the oracle.json of a dataset folder (or the named file).
func ReadOracle(path string) (Oracle, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, OracleFile)
	}
	var o Oracle
	b, err := readlimit.ReadFile(path, maxOracleSize)
	if err != nil {
		return o, fmt.Errorf("synth: read oracle: %w", err)
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return o, fmt.Errorf("synth: parse oracle %s: %w", path, err)
	}
	return o, nil
}

// oracleAcc accumulates oracle statistics over batches in row order.
type oracleAcc struct {
	targets []targetInfo
	exact   bool
	rows    int64
	bin     []*binAcc
	reg     []*regAcc
}

type binAcc struct {
	name    string
	pairs   []uint64 // exact mode, rankkey.Pack
	histPos []int64  // binned mode, over the logit
	histNeg []int64
	pos     int64
	logloss float64
}

type regAcc struct {
	name     string
	sse      float64 // sum of (y - E[y|x])^2
	mean, m2 float64 // Welford over y
	n        int64
}

// Binned AUC: the logit clipped to [-histRange, histRange] in histBins bins.
const (
	histBins  = 1 << 18
	histRange = 40.0
)

// targetInfo is what the oracle needs to know of a target.
type targetInfo struct {
	name     string
	binary   bool
	baseRate float64
}

func (g *Generator) targetInfos() []targetInfo {
	out := make([]targetInfo, len(g.targets))
	for i, c := range g.targets {
		out[i] = targetInfo{name: c.name, binary: c.kind == kindBinary, baseRate: c.baseRate}
	}
	return out
}

// newOracleAcc accumulates totalRows rows, keeping (score, label) pairs for
// an exact AUC when totalRows <= exactLimit.
func newOracleAcc(targets []targetInfo, totalRows, exactLimit int64) *oracleAcc {
	a := &oracleAcc{targets: targets, exact: totalRows <= exactLimit}
	for _, c := range targets {
		if c.binary {
			b := &binAcc{name: c.name}
			if a.exact {
				b.pairs = make([]uint64, 0, totalRows)
			} else {
				b.histPos, b.histNeg = make([]int64, histBins), make([]int64, histBins)
			}
			a.bin = append(a.bin, b)
		} else {
			a.reg = append(a.reg, &regAcc{name: c.name})
		}
	}
	return a
}

func (a *oracleAcc) add(b *loader.Batch, t *Truth) error {
	if b.Rows != t.Rows {
		return fmt.Errorf("synth: batch has %d rows, truth %d", b.Rows, t.Rows)
	}
	for _, acc := range a.bin {
		col := b.Column(acc.name)
		logit, prob := t.Logit[acc.name], t.Prob[acc.name]
		if col == nil || len(col.F32) != b.Rows || len(logit) != b.Rows || len(prob) != b.Rows {
			return fmt.Errorf("synth: batch or truth lacks binary target %q", acc.name)
		}
		for i, y := range col.F32 {
			pos := y > 0.5
			p := float64(prob[i])
			if pos {
				acc.pos++
				acc.logloss -= math.Log(math.Max(p, 1e-300))
			} else {
				acc.logloss -= math.Log(math.Max(1-p, 1e-300))
			}
			if a.exact {
				acc.pairs = append(acc.pairs, rankkey.Pack(logit[i], pos))
				continue
			}
			bin := int((float64(logit[i]) + histRange) / (2 * histRange) * histBins)
			bin = min(max(bin, 0), histBins-1)
			if pos {
				acc.histPos[bin]++
			} else {
				acc.histNeg[bin]++
			}
		}
	}
	for _, acc := range a.reg {
		col := b.Column(acc.name)
		mean := t.Mean[acc.name]
		if col == nil || len(col.F32) != b.Rows || len(mean) != b.Rows {
			return fmt.Errorf("synth: batch or truth lacks regression target %q", acc.name)
		}
		for i, y := range col.F32 {
			d := float64(y) - float64(mean[i])
			acc.sse += d * d
			acc.n++
			delta := float64(y) - acc.mean
			acc.mean += delta / float64(acc.n)
			acc.m2 += delta * (float64(y) - acc.mean)
		}
	}
	a.rows += int64(b.Rows)
	return nil
}

func (a *oracleAcc) result() Oracle {
	o := Oracle{Rows: a.rows, AUC: map[string]float64{}, LogLoss: map[string]float64{},
		BaseRate: map[string]float64{}, TargetBaseRate: map[string]float64{},
		RMSE: map[string]float64{}, ConstantRMSE: map[string]float64{}}
	for _, c := range a.targets {
		if c.binary {
			o.TargetBaseRate[c.name] = c.baseRate
		}
	}
	if a.rows == 0 {
		return o
	}
	n := float64(a.rows)
	var scratch []uint64
	for _, acc := range a.bin {
		o.BaseRate[acc.name] = float64(acc.pos) / n
		o.LogLoss[acc.name] = acc.logloss / n
		var auc, maxErr float64
		if a.exact {
			if cap(scratch) < len(acc.pairs) {
				scratch = make([]uint64, len(acc.pairs))
			}
			auc = exactAUC(acc.pairs, scratch[:len(acc.pairs)])
			acc.pairs = nil
		} else {
			auc, maxErr = histAUC(acc.histPos, acc.histNeg)
			if o.AUCMaxError == nil {
				o.AUCMaxError = map[string]float64{}
			}
			o.AUCMaxError[acc.name] = maxErr
		}
		if !math.IsNaN(auc) {
			o.AUC[acc.name] = auc
		}
	}
	for _, acc := range a.reg {
		o.RMSE[acc.name] = math.Sqrt(acc.sse / n)
		o.ConstantRMSE[acc.name] = math.Sqrt(acc.m2 / n)
	}
	return o
}

// exactAUC is the ROC-AUC of rankkey-packed (score, label) pairs (NaN
// when a class is missing); it reorders pairs, using tmp (same length) as
// scratch.
func exactAUC(pairs, tmp []uint64) float64 {
	auc, _, _ := rankkey.AUC(rankkey.Sort(pairs, tmp))
	return auc
}

// histAUC is the AUC over histogram bins (pairs within a bin count one
// half) and the largest error that causes: half the share of positive-
// negative pairs that share a bin.
func histAUC(posH, negH []int64) (auc, maxErr float64) {
	var negBelow, pos, neg, sum, same float64
	for i := range posH {
		p, q := float64(posH[i]), float64(negH[i])
		sum += p*negBelow + 0.5*p*q
		same += p * q
		negBelow += q
		pos += p
		neg += q
	}
	if pos == 0 || neg == 0 {
		return math.NaN(), 0
	}
	return sum / (pos * neg), 0.5 * same / (pos * neg)
}

// OracleOf computes the oracle of in-memory rows and their truth, as
// returned by Generate or BatchWithTruth (AUC always exact).
func (g *Generator) OracleOf(b *loader.Batch, t *Truth) (Oracle, error) {
	a := newOracleAcc(g.targetInfos(), int64(b.Rows), int64(b.Rows))
	if err := a.add(b, t); err != nil {
		return Oracle{}, err
	}
	o := a.result()
	o.Config = g.Config()
	return o, nil
}
