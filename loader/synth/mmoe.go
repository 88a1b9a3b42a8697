package synth

import (
	"context"
	"fmt"
	"math"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

// MMoEPaperConfig holds the constants of the MMoE paper's synthetic data
// (Ma et al., KDD 2018, section 4). Zero fields take the paper's values.
type MMoEPaperConfig struct {
	// Dim is the input dimension d (paper: 100).
	Dim int `json:"dim"`
	// C is the scale constant c of the weight vectors (paper: 1).
	C float64 `json:"c"`
	// M is the number of sinusoids m (paper: 10).
	M int `json:"m"`
	// NoiseStd is the standard deviation of the label noise (paper: noise
	// N(0, 0.01), i.e. 0.1).
	NoiseStd float64 `json:"noise_std"`
	// Rows, StartRow, RowGroupRows, RowGroupsPerFile and Workers are used by
	// WriteMMoEPaper, as in Config.
	Rows             int64 `json:"rows,omitempty"`
	StartRow         int64 `json:"start_row,omitempty"`
	RowGroupRows     int   `json:"row_group_rows,omitempty"`
	RowGroupsPerFile int   `json:"row_groups_per_file,omitempty"`
	Workers          int   `json:"-"`
}

// MMoEPaperInfo records the generator's parameters in an oracle.
type MMoEPaperInfo struct {
	MMoEPaperConfig
	Rho  float64 `json:"rho"`
	Seed int64   `json:"seed"`
}

// MMoEPaperGenerator produces the MMoE paper's two regression tasks:
//
//	u1, u2 orthogonal unit vectors in R^d
//	w1 = c*u1,  w2 = c*(rho*u1 + sqrt(1-rho^2)*u2)
//	x ~ N(0, I_d)
//	y_i = w_i.x + sum_{j=1..m} sin(alpha_j * w_i.x + beta_j) + noise_i
//
// The cosine of w1 and w2 is rho, which controls the Pearson correlation of
// y1 and y2. The paper calls alpha_j, beta_j given parameters without
// listing them; here they are drawn from N(0, 1) with the seed. The inputs
// are continuous features x_000 .. x_{d-1}, the targets y1 and y2.
type MMoEPaperGenerator struct {
	cfg         MMoEPaperConfig
	rho         float64
	seed        int64
	w1, w2      []float64
	alpha, beta []float64
	s           *schema.Schema
	rowKey      uint64
	names       []string
}

// NewMMoEPaper builds the generator for correlation score rho in [-1, 1].
func NewMMoEPaper(rho float64, seed int64, cfg MMoEPaperConfig) (*MMoEPaperGenerator, error) {
	if cfg.Dim == 0 {
		cfg.Dim = 100
	}
	if cfg.C == 0 {
		cfg.C = 1
	}
	if cfg.M == 0 {
		cfg.M = 10
	}
	if cfg.NoiseStd == 0 {
		cfg.NoiseStd = 0.1
	}
	if cfg.RowGroupRows == 0 {
		cfg.RowGroupRows = DefaultRowGroupRows
	}
	if cfg.RowGroupsPerFile == 0 {
		cfg.RowGroupsPerFile = DefaultRowGroupsPerFile
	}
	switch {
	case !(rho >= -1 && rho <= 1):
		return nil, fmt.Errorf("synth: MMoE paper: rho is %v, want -1..1", rho)
	case cfg.Dim < 2 || cfg.Dim > 100000:
		return nil, fmt.Errorf("synth: MMoE paper: Dim is %d, want 2..100000 (two orthogonal vectors)", cfg.Dim)
	case cfg.M < 0:
		return nil, fmt.Errorf("synth: MMoE paper: M is %d, want >= 0", cfg.M)
	case cfg.NoiseStd < 0 || math.IsNaN(cfg.NoiseStd) || math.IsInf(cfg.C, 0) || math.IsNaN(cfg.C):
		return nil, fmt.Errorf("synth: MMoE paper: NoiseStd %v / C %v invalid", cfg.NoiseStd, cfg.C)
	case cfg.Rows < 0 || cfg.StartRow < 0 || cfg.RowGroupRows < 0 || cfg.RowGroupsPerFile < 0 || cfg.Workers < 0:
		return nil, fmt.Errorf("synth: MMoE paper: negative Rows, StartRow, RowGroupRows, RowGroupsPerFile or Workers")
	}
	g := &MMoEPaperGenerator{cfg: cfg, rho: rho, seed: seed}
	world := mix64(uint64(seed) ^ 0x6d6d6f652d706170)
	g.rowKey = hashKey(world, "rows")
	d := cfg.Dim
	// Two orthonormal vectors by Gram-Schmidt on Gaussian draws.
	u1, u2 := make([]float64, d), make([]float64, d)
	gaussianVec(hashKey(world, "u1"), u1)
	gaussianVec(hashKey(world, "u2"), u2)
	scaleTo(u1, 1/math.Sqrt(dot(u1, u1)))
	p := dot(u1, u2)
	for i := range u2 {
		u2[i] -= p * u1[i]
	}
	scaleTo(u2, 1/math.Sqrt(dot(u2, u2)))
	g.w1, g.w2 = make([]float64, d), make([]float64, d)
	q := math.Sqrt(1 - rho*rho)
	for i := range u1 {
		g.w1[i] = cfg.C * u1[i]
		g.w2[i] = cfg.C * (rho*u1[i] + q*u2[i])
	}
	g.alpha, g.beta = make([]float64, cfg.M), make([]float64, cfg.M)
	gaussianVec(hashKey(world, "alpha"), g.alpha)
	gaussianVec(hashKey(world, "beta"), g.beta)

	g.s = &schema.Schema{}
	for j := 0; j < d; j++ {
		name := fmt.Sprintf("x_%03d", j)
		g.names = append(g.names, name)
		g.s.Features = append(g.s.Features, &schema.Feature{Name: name, DType: schema.Float32,
			Tags: []schema.Tag{schema.TagContinuous}})
	}
	for _, name := range []string{"y1", "y2"} {
		g.s.Features = append(g.s.Features, &schema.Feature{Name: name, DType: schema.Float32,
			Tags: []schema.Tag{schema.TagRegression, schema.TagTarget}})
	}
	return g, nil
}

func scaleTo(v []float64, s float64) {
	for i := range v {
		v[i] *= s
	}
}

// Schema returns the generated columns: x_000.. (continuous), y1, y2
// (regression targets).
func (g *MMoEPaperGenerator) Schema() *schema.Schema { return g.s }

// Weights returns copies of w1 and w2.
func (g *MMoEPaperGenerator) Weights() (w1, w2 []float64) {
	return append([]float64(nil), g.w1...), append([]float64(nil), g.w2...)
}

// label is w.x + sum_j sin(alpha_j * w.x + beta_j), the noise-free label.
func (g *MMoEPaperGenerator) label(wx float64) float64 {
	y := wx
	for j, a := range g.alpha {
		y += math.Sin(a*wx + g.beta[j])
	}
	return y
}

// Generate returns rows [start, start+rows). Truth.Mean holds the noise-free
// labels, Truth.Score the projections w_i.x.
func (g *MMoEPaperGenerator) Generate(start int64, rows int) (*loader.Batch, *Truth) {
	if rows < 0 {
		rows = 0
	}
	d := g.cfg.Dim
	xs := make([][]float32, d)
	for j := range xs {
		xs[j] = make([]float32, rows)
	}
	y := [2][]float32{make([]float32, rows), make([]float32, rows)}
	mean := [2][]float32{make([]float32, rows), make([]float32, rows)}
	score := [2][]float32{make([]float32, rows), make([]float32, rows)}
	x := make([]float64, d)
	noiseKeys := [2]uint64{hashString("column:y1"), hashString("column:y2")}
	inputKey := hashString("inputs")
	for i := 0; i < rows; i++ {
		rk := mix64(g.rowKey + uint64(start+int64(i))*golden)
		r := newRNG(rk ^ inputKey)
		for j := range x {
			v := float32(r.normal())
			xs[j][i] = v
			x[j] = float64(v)
		}
		for t, w := range [2][]float64{g.w1, g.w2} {
			wx := dot(w, x)
			m := g.label(wx)
			nr := newRNG(rk ^ noiseKeys[t])
			y[t][i] = float32(m + g.cfg.NoiseStd*nr.normal())
			mean[t][i], score[t][i] = float32(m), float32(wx)
		}
	}
	cols := make(map[string]*loader.Column, d+2)
	for j, name := range g.names {
		cols[name] = &loader.Column{Name: name, F32: xs[j]}
	}
	t := &Truth{Rows: rows, Logit: map[string][]float32{}, Prob: map[string][]float32{},
		Mean: map[string][]float32{}, Score: map[string][]float32{}}
	for k, name := range []string{"y1", "y2"} {
		cols[name] = &loader.Column{Name: name, F32: y[k]}
		t.Mean[name], t.Score[name] = mean[k], score[k]
	}
	src := fmt.Sprintf("mmoe-paper(rho %v, seed %d, rows %d..%d)", g.rho, g.seed, start, start+int64(rows))
	return loader.NewBatch(rows, cols, src, nil), t
}

// MMoEPaper returns rows rows of the MMoE paper's synthetic data for
// correlation score rho, with their schema (see MMoEPaperGenerator).
func MMoEPaper(rows int, rho float64, seed int64, cfg MMoEPaperConfig) (*loader.Batch, *schema.Schema, error) {
	g, err := NewMMoEPaper(rho, seed, cfg)
	if err != nil {
		return nil, nil, err
	}
	b, _ := g.Generate(g.cfg.StartRow, rows)
	return b, g.s, nil
}

// WriteMMoEPaper writes cfg.Rows rows of the MMoE paper's data to dir like
// WriteDataset (part files, schema.pbtxt, oracle.json with the noise RMSE).
func WriteMMoEPaper(ctx context.Context, dir string, rho float64, seed int64, cfg MMoEPaperConfig) (Oracle, error) {
	g, err := NewMMoEPaper(rho, seed, cfg)
	if err != nil {
		return Oracle{}, err
	}
	if g.cfg.Rows <= 0 {
		return Oracle{}, fmt.Errorf("synth: write %s: Rows is %d, want > 0", dir, g.cfg.Rows)
	}
	wcfg := Config{RowGroupRows: g.cfg.RowGroupRows, RowGroupsPerFile: g.cfg.RowGroupsPerFile, Workers: g.cfg.Workers}
	wcfg.applyDefaults()
	acc := newOracleAcc([]targetInfo{{name: "y1"}, {name: "y2"}}, g.cfg.Rows, 0)
	return writeStaged(dir, func(stage string) (Oracle, error) {
		if err := writeParts(ctx, stage, dir, g, g.cfg.StartRow, g.cfg.Rows, wcfg, acc.add); err != nil {
			return Oracle{}, err
		}
		o := acc.result()
		o.MMoEPaper = &MMoEPaperInfo{MMoEPaperConfig: g.cfg, Rho: rho, Seed: seed}
		return o, nil
	})
}
