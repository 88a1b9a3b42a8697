package mtl

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
	"github.com/stretchr/testify/require"
)

func testDev() *kernels.CPU { return kernels.NewCPU(1) }

func cat(name, domain string, max int64, tags ...schema.Tag) *schema.Feature {
	return &schema.Feature{Name: name, DType: schema.Int32, Tags: append([]schema.Tag{schema.TagCategorical}, tags...),
		IntDomain: &schema.IntDomain{Name: domain, Max: max}}
}

func binTarget(name string) *schema.Feature {
	return &schema.Feature{Name: name, DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification, schema.TagTarget},
		IntDomain: &schema.IntDomain{Max: 1}}
}

func regTarget(name string) *schema.Feature {
	return &schema.Feature{Name: name, DType: schema.Float32, Tags: []schema.Tag{schema.TagRegression, schema.TagTarget}}
}

func contFeature(name string) *schema.Feature {
	return &schema.Feature{Name: name, DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}}
}

// gradSchema has every kind of input: own-domain ids, a list sharing its
// domain with a scalar, a list without value count, a continuous feature,
// a weight column, two binary targets and a regression target.
func gradSchema() *schema.Schema {
	hist := cat("hist", "item", 40, schema.TagList)
	hist.ValueCount = &schema.ValueCount{Min: 0, Max: 5}
	return &schema.Schema{Features: []*schema.Feature{
		cat("user", "", 30),
		cat("item", "item", 40),
		hist,
		cat("tags", "", 12, schema.TagList),
		contFeature("price"),
		contFeature("w"), // weight column: excluded from the inputs
		binTarget("click"),
		binTarget("like"),
		regTarget("watch"),
	}}
}

// gradConfig switches on every loss term.
func gradConfig(model string) Config {
	c := DefaultConfig()
	c.Model = model
	c.MLPLayers = []int{12, 6}
	c.ExpertMLPLayers = []int{6, 5}
	c.MMoENumExperts = 3
	c.CGCTaskExperts, c.CGCSharedExperts = 2, 1
	c.PLELayers = 3
	c.DCNInteractedLayerNum = 2
	c.EmbeddingsDim = 4
	c.GateDim = 4
	c.GateTemperature = 0.7
	c.TowerLayers = []int{5}
	c.L2Reg = 0.01
	c.EmbeddingL2Reg = 0.005
	c.LossWeights = map[string]float32{"click": 0.7, "watch": 0.3}
	c.PosClassWeights = map[string]float32{"like": 3}
	c.WeightColumns = map[string]string{"click": "w"}
	c.SampleSpace = map[string]string{"like": "click"}
	c.Seed = 7
	return c
}

func randList(rng *rand.Rand, rows, maxLen int, max int64) ([]int32, []int32) {
	offs := []int32{0}
	var vals []int32
	for r := 0; r < rows; r++ {
		n := rng.IntN(maxLen + 1)
		for range n {
			vals = append(vals, int32(rng.Int64N(max+1)))
		}
		offs = append(offs, int32(len(vals)))
	}
	return vals, offs
}

func randIDs(rng *rand.Rand, rows int, max int64) []int32 {
	out := make([]int32, rows)
	for i := range out {
		out[i] = int32(rng.Int64N(max + 1))
	}
	return out
}

// gradBatch is a random batch for gradSchema. Item ids come as int64 to
// exercise the conversion.
func gradBatch(rng *rand.Rand, rows int) *loader.Batch {
	cols := map[string]*loader.Column{}
	cols["user"] = &loader.Column{Name: "user", I32: randIDs(rng, rows, 30)}
	items := make([]int64, rows)
	for i := range items {
		items[i] = rng.Int64N(41)
	}
	cols["item"] = &loader.Column{Name: "item", I64: items}
	v, o := randList(rng, rows, 5, 40)
	cols["hist"] = &loader.Column{Name: "hist", I32: v, Offsets: o}
	v, o = randList(rng, rows, 3, 12)
	cols["tags"] = &loader.Column{Name: "tags", I32: v, Offsets: o}
	f := func(gen func() float32) []float32 {
		out := make([]float32, rows)
		for i := range out {
			out[i] = gen()
		}
		return out
	}
	cols["price"] = &loader.Column{Name: "price", F32: f(func() float32 { return float32(rng.NormFloat64()) })}
	cols["w"] = &loader.Column{Name: "w", F32: f(func() float32 { return 0.5 + rng.Float32() })}
	bin := func() float32 {
		if rng.IntN(2) == 0 {
			return 0
		}
		return 1
	}
	cols["click"] = &loader.Column{Name: "click", F32: f(bin)}
	cols["like"] = &loader.Column{Name: "like", F32: f(bin)}
	cols["watch"] = &loader.Column{Name: "watch", F32: f(func() float32 { return float32(rng.IntN(5)) })}
	for k, c := range cols {
		c.Name = k
	}
	return loader.NewBatch(rows, cols, "test", nil)
}

func hostT(t *kernels.Tensor) []float32 {
	out := make([]float32, t.Len())
	t.Dev.CopyToHostF32(out, t)
	return out
}

func colF32(b *loader.Batch, name string) []float32 {
	c := b.Column(name)
	if c.F32 != nil {
		return c.F32
	}
	out := make([]float32, b.Rows)
	for i := range out {
		if c.I32 != nil {
			out[i] = float32(c.I32[i])
		} else {
			out[i] = float32(c.I64[i])
		}
	}
	return out
}

// refLoss is the model objective computed on the host in float64 from the
// task outputs of a forward pass, following docs/ARCHITECTURE.md ("Model
// semantics") independently of the
// device loss ops: sum_t lambda_t * (1/B) sum_i w_ti l_ti + L2 terms.
func refLoss(t *testing.T, m *Model, b *loader.Batch) float64 {
	ws := m.exec.Train()
	require.NoError(t, ws.Forward(b, layers.Mode{}, false))
	require.Equal(t, 1, ws.Shards(), "the reference reads one shard's outputs")
	cfg := m.cfg
	B := float64(b.Rows)
	total := 0.0
	for ti, task := range m.tasks {
		z := hostT(ws.Output(0, ti))
		y := colF32(b, task.Target)
		lambda := 1.0
		if v, ok := cfg.LossWeights[task.Target]; ok {
			lambda = float64(v)
		}
		s := 0.0
		for i := 0; i < b.Rows; i++ {
			w := 1.0
			if pw, ok := cfg.PosClassWeights[task.Target]; ok && y[i] == 1 {
				w *= float64(pw)
			}
			if c, ok := cfg.WeightColumns[task.Target]; ok {
				w *= float64(colF32(b, c)[i])
			}
			if c, ok := cfg.SampleSpace[task.Target]; ok && colF32(b, c)[i] != 1 {
				w = 0
			}
			zi, yi := float64(z[i]), float64(y[i])
			var l float64
			if task.Kind == Binary {
				p := 1 / (1 + math.Exp(-zi))
				l = -(yi*math.Log(p) + (1-yi)*math.Log(1-p))
			} else {
				l = (zi - yi) * (zi - yi)
			}
			s += w * l
		}
		total += lambda * s / B
	}
	for _, p := range m.params {
		if p.L2 {
			for _, v := range hostT(p.Value) {
				total += float64(cfg.L2Reg) * float64(v) * float64(v)
			}
		}
	}
	if cfg.EmbeddingL2Reg > 0 {
		out := hostT(ws.Input().Y())
		D := m.input.OutDim
		for _, f := range m.input.Features {
			if f.Continuous {
				continue
			}
			for r := 0; r < b.Rows; r++ {
				for j := f.Col; j < f.Col+f.Dim; j++ {
					v := float64(out[r*D+j])
					total += float64(cfg.EmbeddingL2Reg) * v * v
				}
			}
		}
	}
	return total
}

type fdOpts struct {
	eps, atol, rtol float64
	samples         int
}

// fdCheck compares analytic gradients with central differences of loss on a
// sample of p's entries (plus must); entries where a ReLU kink falls inside
// the step (the estimates with step eps and eps/2 disagree) are skipped.
func fdCheck(t *testing.T, name string, p *kernels.Tensor, grad []float32, loss func() float64, o fdOpts, rng *rand.Rand, must ...int) {
	t.Helper()
	require.Equal(t, p.Len(), len(grad), "%s: gradient length", name)
	vals := hostT(p)
	idx := append([]int(nil), must...)
	for i := 0; i < min(o.samples, p.Len()); i++ {
		idx = append(idx, rng.IntN(p.Len()))
	}
	at := func(i int, v float32) float64 {
		vals[i] = v
		p.Dev.CopyFromHostF32(p, vals)
		return loss()
	}
	bad, kinks := 0, 0
	for _, i := range idx {
		orig := vals[i]
		e := float32(o.eps)
		// the actual steps are what float32 can represent
		hp, hm := float64(orig+e)-float64(orig), float64(orig)-float64(orig-e)
		f0, fp, fm := at(i, orig), at(i, orig+e), at(i, orig-e)
		at(i, orig)
		num := (fp - fm) / (hp + hm)
		// A ReLU kink inside the step shows as a jump between the forward
		// and the backward one-sided slopes (on a smooth function they only
		// differ by eps*f''); such entries say nothing about the analytic
		// gradient and are skipped. A few are expected; many mean the check
		// is useless.
		if math.Abs((fp-f0)/hp-(f0-fm)/hm) > o.atol+o.rtol*math.Abs(num) {
			kinks++
			continue
		}
		a := float64(grad[i])
		if math.Abs(a-num) > o.atol+o.rtol*math.Max(math.Abs(a), math.Abs(num)) {
			bad++
			if bad <= 5 {
				t.Errorf("%s[%d]: analytic %.6g, numeric %.6g", name, i, a, num)
			}
		}
	}
	if kinks > 0 {
		t.Logf("%s: %d of %d entries skipped (ReLU kink inside the step)", name, kinks, len(idx))
	}
	if kinks > len(idx)/2 {
		t.Errorf("%s: %d of %d entries sit on a ReLU kink", name, kinks, len(idx))
	}
}

// sparseToDense scatters a table's sparse gradient.
func sparseToDense(g *kernels.SparseGrad, rows, dim int) ([]float32, []int) {
	dense := make([]float32, rows*dim)
	ids := make([]int32, g.N)
	g.Rows.Dev.CopyToHostI32(ids, g.Rows.View(0, g.N))
	vals := hostT(g.Values)
	var touched []int
	for i, r := range ids {
		copy(dense[int(r)*dim:(int(r)+1)*dim], vals[i*dim:(i+1)*dim])
		touched = append(touched, int(r)*dim, int(r)*dim+dim-1)
	}
	return dense, touched
}

// tenrecSmall is schema.Tenrec with the default cardinalities (the tables
// are allocated but small enough for tests).
func tenrecSmall() *schema.Schema { return schema.Tenrec() }
