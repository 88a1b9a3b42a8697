package synth

import (
	"fmt"
	"math"
	"sync/atomic"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

type colKind int

const (
	kindCat colKind = iota
	kindCont
	kindBinary
	kindRegression
)

// domain is one id space (int_domain.name); columns sharing it share id
// popularity and latent vectors, because the model shares their embedding
// table: the same id means the same thing in every such column.
type domain struct {
	name      string
	min, max  int64
	zipf      *zipfTable
	perm      permutation
	latentKey uint64
}

func (d *domain) sample(r *rng) int32 {
	rank := d.zipf.sample(r.next())
	return int32(d.min + int64(d.perm.apply(uint64(rank))))
}

// column is the generation plan of one schema feature.
type column struct {
	f      *schema.Feature
	name   string
	kind   colKind
	list   bool
	lenMin int // list length range, inclusive
	lenMax int
	key    uint64 // per-row stream key of this column

	// Inputs.
	signal bool // contributes to the planted signal
	group  int  // index of its vector among the signal groups
	dom    *domain
	// Continuous: uniform on [lo, hi] when bounded, else standard normal;
	// intValued draws whole numbers (integer dtype).
	bounded   bool
	intValued bool
	lo, hi    float64
	dir       []float64 // direction of x in latent space

	// Targets.
	task      int // index among targets: score component task+1
	baseRate  float64
	roundInt  bool // regression target with an integer dtype
	noise     float64
	clipLo    float64
	clipHi    float64
	clipBound bool
}

// Generator produces rows with planted signal for a schema. It is safe for
// concurrent use; Batch advances a shared cursor atomically, Generate is a
// pure function of its arguments.
type Generator struct {
	s       *schema.Schema
	cfg     Config
	cols    []*column // every feature, schema order
	inputs  []*column
	targets []*column
	domains map[string]*domain
	d       int // latent dimension
	groups  int // number of signal groups
	nComp   int // 1 shared + one per target

	// lin[g] holds the first-order weights of signal group g, nComp x d
	// row-major; proj[g] its projection into the interaction space, h x d.
	// pairW holds each component's weights over the h interaction
	// features, nComp x h.
	lin   [][]float64
	proj  [][]float64
	pairW []float64
	h     int

	// Calibration results: raw component -> whitened score.
	linMean, linW, fmMean, fmW []float64
	whiten                     []float64 // nComp x nComp, lower triangular
	mixShared, mixOwn          float64
	bias                       []float64 // per target (binary: logit bias)

	worldKey, rowKey uint64
	cursor           atomic.Int64
}

// Truth holds what the generator knows about generated rows: the quantities
// a perfect model would predict.
type Truth struct {
	Rows int
	// Logit and Prob: per binary target, the true logit and probability of
	// a positive label.
	Logit map[string][]float32
	Prob  map[string][]float32
	// Mean: per regression target, E[label | inputs], the predictor with
	// the lowest possible RMSE.
	Mean map[string][]float32
	// Score: per target, the unit-variance signal score f_t before the
	// bias and scale are applied (zero with NoSignal).
	Score map[string][]float32
}

// NewGenerator plans the generation of s. Categorical inputs (scalar or
// list, tag categorical, integer dtype, an int_domain within int32),
// continuous inputs (tag continuous; float dtype, or integer dtype with an
// int_domain), binary targets and regression targets are supported;
// untagged integer columns with an int_domain and untagged float columns are
// generated without signal. Anything else is an error naming the feature.
func NewGenerator(s *schema.Schema, cfg Config) (*Generator, error) {
	if s == nil || len(s.Features) == 0 {
		return nil, fmt.Errorf("synth: empty schema")
	}
	cfg = cloneConfig(cfg)
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for i, f := range s.Features {
		if f == nil {
			return nil, fmt.Errorf("synth: feature %d is nil", i)
		}
	}
	// A private copy: later changes to the caller's schema must not change
	// what this generator writes.
	s = s.Clone()
	g := &Generator{s: s, cfg: cfg, d: cfg.LatentDim, domains: map[string]*domain{}}
	g.worldKey = mix64(uint64(cfg.Seed) ^ 0x6d746c72616e6b31)
	g.rowKey = hashKey(g.worldKey, "rows")
	zipfs := map[int]*zipfTable{}
	seen := map[string]bool{}
	for i, f := range s.Features {
		if f.Name == "" {
			return nil, fmt.Errorf("synth: feature %d has no name", i)
		}
		if seen[f.Name] {
			return nil, fmt.Errorf("synth: feature %q appears twice", f.Name)
		}
		seen[f.Name] = true
		c, err := g.planColumn(f, zipfs)
		if err != nil {
			return nil, fmt.Errorf("synth: feature %q: %w", f.Name, err)
		}
		g.cols = append(g.cols, c)
		if c.kind == kindBinary || c.kind == kindRegression {
			c.task = len(g.targets)
			g.targets = append(g.targets, c)
		} else {
			g.inputs = append(g.inputs, c)
			if c.signal {
				c.group = g.groups
				g.groups++
			}
		}
	}
	for name := range cfg.BaseRates {
		f := s.Feature(name)
		if f == nil || !f.IsTarget() || !f.HasTag(schema.TagBinary) {
			return nil, fmt.Errorf("synth: BaseRates names %q, which is not a binary target of the schema", name)
		}
	}
	g.nComp = 1 + len(g.targets)
	g.mixShared = math.Sqrt(cfg.TaskCorrelation)
	g.mixOwn = math.Sqrt(1 - cfg.TaskCorrelation)
	g.buildProjections()
	g.calibrate()
	g.cursor.Store(cfg.StartRow)
	return g, nil
}

func isInt(t schema.DType) bool {
	switch t {
	case schema.Int8, schema.Int16, schema.Int32, schema.Int64:
		return true
	}
	return false
}

func isFloat(t schema.DType) bool { return t == schema.Float32 || t == schema.Float64 }

func dtypeMax(t schema.DType) int64 {
	switch t {
	case schema.Int8:
		return math.MaxInt8
	case schema.Int16:
		return math.MaxInt16
	}
	// Ids travel as int32 inside (docs/ARCHITECTURE.md, "Numerics and
	// determinism").
	return math.MaxInt32
}

func (g *Generator) planColumn(f *schema.Feature, zipfs map[int]*zipfTable) (*column, error) {
	c := &column{f: f, name: f.Name, key: hashString("column:" + f.Name)}
	switch f.DType {
	case schema.Int8, schema.Int16, schema.Int32, schema.Int64, schema.Float32, schema.Float64, schema.Bool:
	case schema.String:
		return nil, fmt.Errorf("dtype string is not supported: categorical features must be integer ids")
	default:
		return nil, fmt.Errorf("unknown dtype %q", f.DType)
	}
	cat, cont := f.HasTag(schema.TagCategorical), f.HasTag(schema.TagContinuous)
	if f.IsTarget() {
		return c, g.planTarget(c, cat)
	}
	if cat && cont {
		return nil, fmt.Errorf("tagged both categorical and continuous")
	}
	if f.IsList() {
		c.list = true
		c.lenMin, c.lenMax = 1, DefaultListMax
		if vc := f.ValueCount; vc != nil && vc.Max > 0 {
			if vc.Min < 0 || vc.Min > vc.Max {
				return nil, fmt.Errorf("value_count min %d, max %d: want 0 <= min <= max", vc.Min, vc.Max)
			}
			if vc.Max > 1<<16 {
				return nil, fmt.Errorf("value_count max %d is above %d", vc.Max, 1<<16)
			}
			c.lenMin, c.lenMax = int(vc.Min), int(vc.Max)
		}
	}
	switch {
	case cat || (!cont && isInt(f.DType)):
		c.kind, c.signal = kindCat, cat
		if !isInt(f.DType) {
			return nil, fmt.Errorf("categorical feature has dtype %s, want an integer dtype", f.DType)
		}
		if f.IntDomain == nil {
			return nil, fmt.Errorf("integer feature has no int_domain: cannot tell which ids to draw")
		}
		d, err := g.domainFor(f, zipfs)
		if err != nil {
			return nil, err
		}
		c.dom = d
	case cont || isFloat(f.DType):
		c.kind, c.signal = kindCont, cont
		c.dir = make([]float64, g.d)
		uniformUnitVar(hashKey(g.worldKey, "direction:"+f.Name), c.dir)
		switch {
		case isInt(f.DType):
			if f.IntDomain == nil || f.IntDomain.Max < f.IntDomain.Min {
				return nil, fmt.Errorf("continuous feature with integer dtype needs an int_domain with min <= max")
			}
			if f.IntDomain.Min < -dtypeMax(f.DType)-1 || f.IntDomain.Max > dtypeMax(f.DType) {
				return nil, fmt.Errorf("int_domain [%d, %d] does not fit dtype %s", f.IntDomain.Min, f.IntDomain.Max, f.DType)
			}
			c.bounded, c.intValued = true, true
			c.lo, c.hi = float64(f.IntDomain.Min), float64(f.IntDomain.Max)
		case isFloat(f.DType):
			if fd := f.FloatDomain; fd != nil && (fd.Min != 0 || fd.Max != 0) {
				if !(fd.Max > fd.Min) || math.IsInf(fd.Max-fd.Min, 0) {
					return nil, fmt.Errorf("float_domain [%v, %v] is empty or unbounded", fd.Min, fd.Max)
				}
				c.bounded, c.lo, c.hi = true, fd.Min, fd.Max
			}
		default:
			return nil, fmt.Errorf("continuous feature has dtype %s, want a float or integer dtype", f.DType)
		}
	default:
		return nil, fmt.Errorf("dtype %s without a categorical or continuous tag: cannot tell what to generate", f.DType)
	}
	return c, nil
}

func (g *Generator) domainFor(f *schema.Feature, zipfs map[int]*zipfTable) (*domain, error) {
	dom := f.IntDomain
	if dom.Min < 0 || dom.Max < dom.Min {
		return nil, fmt.Errorf("int_domain [%d, %d]: want 0 <= min <= max", dom.Min, dom.Max)
	}
	if dom.Max > dtypeMax(f.DType) {
		return nil, fmt.Errorf("int_domain max %d does not fit dtype %s (ids are int32 inside)", dom.Max, f.DType)
	}
	name := f.DomainName()
	if d, ok := g.domains[name]; ok {
		if d.min != dom.Min || d.max != dom.Max {
			return nil, fmt.Errorf("int_domain %q is [%d, %d] here but [%d, %d] in another feature",
				name, dom.Min, dom.Max, d.min, d.max)
		}
		return d, nil
	}
	n := uint64(dom.Max - dom.Min + 1)
	k := int(min(n, uint64(g.cfg.ZipfCap)))
	z := zipfs[k]
	if z == nil {
		z = newZipfTable(k, g.cfg.Zipf)
		zipfs[k] = z
	}
	d := &domain{name: name, min: dom.Min, max: dom.Max, zipf: z,
		perm:      newPermutation(n, hashKey(g.worldKey, "permutation:"+name)),
		latentKey: hashKey(g.worldKey, "latent:"+name)}
	g.domains[name] = d
	return d, nil
}

func (g *Generator) planTarget(c *column, cat bool) error {
	f := c.f
	if cat || f.HasTag(schema.TagContinuous) {
		return fmt.Errorf("a target cannot also be a categorical or continuous input")
	}
	if f.IsList() {
		return fmt.Errorf("list targets are not supported")
	}
	bin, reg := f.HasTag(schema.TagBinary), f.HasTag(schema.TagRegression)
	switch {
	case bin && reg:
		return fmt.Errorf("target tagged both binary and regression")
	case bin:
		c.kind = kindBinary
		c.baseRate = DefaultBaseRate
		if r, ok := tenrecBaseRates[f.Name]; ok {
			c.baseRate = r
		}
		if r, ok := g.cfg.BaseRates[f.Name]; ok {
			c.baseRate = r
		}
	case reg:
		c.kind = kindRegression
		if f.DType == schema.Bool {
			return fmt.Errorf("regression target has dtype bool")
		}
		c.roundInt = isInt(f.DType)
		width := 1.0
		switch {
		case f.FloatDomain != nil && (f.FloatDomain.Min != 0 || f.FloatDomain.Max != 0):
			c.clipLo, c.clipHi = f.FloatDomain.Min, f.FloatDomain.Max
			c.clipBound = true
		case f.IntDomain != nil && (f.IntDomain.Min != 0 || f.IntDomain.Max != 0):
			c.clipLo, c.clipHi = float64(f.IntDomain.Min), float64(f.IntDomain.Max)
			c.clipBound = true
		}
		if c.clipBound {
			if c.roundInt {
				c.clipLo, c.clipHi = math.Ceil(c.clipLo), math.Floor(c.clipHi)
			}
			if !(c.clipHi > c.clipLo) || math.IsInf(c.clipHi-c.clipLo, 0) {
				return fmt.Errorf("regression domain [%v, %v] is empty or unbounded", c.clipLo, c.clipHi)
			}
			width = c.clipHi - c.clipLo
		}
		c.noise = g.cfg.RegressionNoise * width
		if c.roundInt && c.clipBound &&
			(c.clipLo < float64(-dtypeMax(f.DType)-1) || c.clipHi > float64(dtypeMax(f.DType))) {
			return fmt.Errorf("regression domain [%v, %v] does not fit dtype %s", c.clipLo, c.clipHi, f.DType)
		}
	default:
		return fmt.Errorf("target is neither binary nor regression (tag binary_classification or regression)")
	}
	return nil
}

// buildProjections derives the first-order weights, the projections into
// the interaction space and the components' interaction weights from the
// seed. Entries are N(0, 1/d), so that a projected unit-variance vector
// keeps unit-variance components.
func (g *Generator) buildProjections() {
	d := g.d
	g.h = 2 * d
	g.lin = make([][]float64, g.groups)
	g.proj = make([][]float64, g.groups)
	scale := 1 / math.Sqrt(float64(d))
	for _, c := range g.inputs {
		if !c.signal {
			continue
		}
		lin := make([]float64, g.nComp*d)
		for k := 0; k < g.nComp; k++ {
			seg := lin[k*d : (k+1)*d]
			gaussianVec(hashKey(hashKey(g.worldKey, "weights:"+c.name), g.componentName(k)), seg)
			scaleTo(seg, scale)
		}
		proj := make([]float64, g.h*d)
		gaussianVec(hashKey(g.worldKey, "projection:"+c.name), proj)
		scaleTo(proj, scale)
		g.lin[c.group], g.proj[c.group] = lin, proj
	}
	g.pairW = make([]float64, g.nComp*g.h)
	for k := 0; k < g.nComp; k++ {
		gaussianVec(hashKey(g.worldKey, "pairs:"+g.componentName(k)), g.pairW[k*g.h:(k+1)*g.h])
	}
}

func (g *Generator) componentName(k int) string {
	if k == 0 {
		return "shared"
	}
	return "task:" + g.targets[k-1].name
}

// Schema returns (a copy of) the schema the generator was built for; do not
// modify it.
func (g *Generator) Schema() *schema.Schema { return g.s }

// Config returns the configuration with defaults applied.
func (g *Generator) Config() Config { return cloneConfig(g.cfg) }

// Bias returns the solved logit bias of a binary target.
func (g *Generator) Bias(target string) (float64, error) {
	for _, c := range g.targets {
		if c.name == target && c.kind == kindBinary {
			return g.bias[c.task], nil
		}
	}
	return 0, fmt.Errorf("synth: %q is not a binary target", target)
}

// Latent returns the hidden latent vector of id in a categorical feature.
func (g *Generator) Latent(feature string, id int64) ([]float32, error) {
	for _, c := range g.inputs {
		if c.name != feature {
			continue
		}
		if c.kind != kindCat {
			return nil, fmt.Errorf("synth: feature %q is not categorical", feature)
		}
		if id < c.dom.min || id > c.dom.max {
			return nil, fmt.Errorf("synth: feature %q: id %d outside int_domain [%d, %d]", feature, id, c.dom.min, c.dom.max)
		}
		v := make([]float64, g.d)
		g.latent(c.dom, int32(id), v)
		out := make([]float32, g.d)
		for i := range v {
			out[i] = float32(v[i])
		}
		return out, nil
	}
	return nil, fmt.Errorf("synth: no input feature %q", feature)
}

func (g *Generator) latent(d *domain, id int32, dst []float64) {
	uniformUnitVar(mix64(d.latentKey+uint64(uint32(id))), dst)
}

// SetRow sets the row at which the next Batch starts.
func (g *Generator) SetRow(row int64) { g.cursor.Store(row) }

// Batch returns the next rows rows of the stream (starting at
// Config.StartRow for a new generator) with every schema feature: ids in
// Column.I32, continuous values and labels in Column.F32, list offsets in
// Column.Offsets. The rows equal those WriteDataset writes.
func (g *Generator) Batch(rows int) *loader.Batch {
	b, _ := g.Generate(g.advance(rows), rows)
	return b
}

// BatchWithTruth is Batch returning the true probabilities and means too.
func (g *Generator) BatchWithTruth(rows int) (*loader.Batch, *Truth) {
	return g.Generate(g.advance(rows), rows)
}

func (g *Generator) advance(rows int) int64 {
	if rows < 0 {
		rows = 0
	}
	return g.cursor.Add(int64(rows)) - int64(rows)
}

// out holds the column buffers of a batch being generated.
type outCol struct {
	i32 []int32
	f32 []float32
	off []int32
}

// scratch is per-goroutine working memory for one row.
type scratch struct {
	v   []float64 // groups x d signal vectors
	tmp []float64 // d
	lin []float64 // nComp
	fm  []float64
	sum []float64 // nComp x d
	sq  []float64
	x   []float64 // normalized components
	e   []float64 // whitened components
}

func (g *Generator) newScratch() *scratch {
	k := g.nComp
	return &scratch{v: make([]float64, g.groups*g.d), tmp: make([]float64, g.d),
		lin: make([]float64, k), fm: make([]float64, k), sum: make([]float64, g.h),
		sq: make([]float64, g.h), x: make([]float64, k), e: make([]float64, k)}
}

// Generate returns rows [start, start+rows) of the stream and their truth.
// It does not move the cursor of Batch and may be called concurrently.
func (g *Generator) Generate(start int64, rows int) (*loader.Batch, *Truth) {
	if rows < 0 {
		rows = 0
	}
	out := make([]outCol, len(g.cols))
	for i, c := range g.cols {
		o := &out[i]
		switch {
		case c.list:
			o.off = make([]int32, rows+1)
			capacity := rows * (c.lenMin + c.lenMax + 1) / 2
			if c.kind == kindCat {
				o.i32 = make([]int32, 0, capacity)
			} else {
				o.f32 = make([]float32, 0, capacity)
			}
		case c.kind == kindCat:
			o.i32 = make([]int32, rows)
		default:
			o.f32 = make([]float32, rows)
		}
	}
	t := &Truth{Rows: rows, Logit: map[string][]float32{}, Prob: map[string][]float32{},
		Mean: map[string][]float32{}, Score: map[string][]float32{}}
	logit := make([][]float32, len(g.targets))
	prob := make([][]float32, len(g.targets))
	mean := make([][]float32, len(g.targets))
	score := make([][]float32, len(g.targets))
	for i, c := range g.targets {
		score[i] = make([]float32, rows)
		t.Score[c.name] = score[i]
		if c.kind == kindBinary {
			logit[i], prob[i] = make([]float32, rows), make([]float32, rows)
			t.Logit[c.name], t.Prob[c.name] = logit[i], prob[i]
		} else {
			mean[i] = make([]float32, rows)
			t.Mean[c.name] = mean[i]
		}
	}
	sc := g.newScratch()
	colIndex := make(map[*column]int, len(g.cols))
	for i, c := range g.cols {
		colIndex[c] = i
	}
	inOut := make([]*outCol, len(g.inputs))
	for i, c := range g.inputs {
		inOut[i] = &out[colIndex[c]]
	}
	for i := 0; i < rows; i++ {
		rk := g.rowSeed(g.rowKey, start+int64(i))
		g.genInputs(rk, i, inOut, sc)
		g.scores(sc)
		for ti, c := range g.targets {
			o := &out[colIndex[c]]
			f := g.taskScore(sc, ti)
			score[ti][i] = float32(f)
			r := newRNG(rk ^ c.key)
			if c.kind == kindBinary {
				l := g.bias[ti] + g.signalScale()*f
				p := sigmoid(l)
				logit[ti][i], prob[ti][i] = float32(l), float32(p)
				if r.float64() < p {
					o.f32[i] = 1
				}
				continue
			}
			mu := g.regressionMean(c, f)
			y := mu + c.noise*r.normal()
			if c.roundInt {
				y = math.Round(y)
			}
			if c.clipBound {
				y = math.Min(math.Max(y, c.clipLo), c.clipHi)
			}
			o.f32[i] = float32(y)
			mean[ti][i] = float32(expectObserved(mu, c))
		}
	}
	cols := make(map[string]*loader.Column, len(g.cols))
	for i, c := range g.cols {
		o := out[i]
		col := &loader.Column{Name: c.name, I32: o.i32, F32: o.f32}
		if c.list {
			col.Offsets = o.off
		}
		cols[c.name] = col
	}
	src := fmt.Sprintf("synth(seed %d, rows %d..%d)", g.cfg.Seed, start, start+int64(rows))
	return loader.NewBatch(rows, cols, src, nil), t
}

func (g *Generator) signalScale() float64 {
	if g.cfg.NoSignal {
		return 0
	}
	return g.cfg.SignalScale
}

func (g *Generator) rowSeed(key uint64, row int64) uint64 {
	return mix64(key + uint64(row)*golden)
}

// genInputs draws the input columns of one row into out (nil entries are
// skipped: calibration only needs the signal vectors) and fills sc.v.
func (g *Generator) genInputs(rk uint64, i int, out []*outCol, sc *scratch) {
	d := g.d
	for ci, c := range g.inputs {
		r := newRNG(rk ^ c.key)
		o := out[ci]
		var v []float64
		if c.signal {
			v = sc.v[c.group*d : (c.group+1)*d]
		}
		if !c.list {
			if c.kind == kindCat {
				id := c.dom.sample(&r)
				if o != nil {
					o.i32[i] = id
				}
				if v != nil {
					g.latent(c.dom, id, v)
				}
				continue
			}
			x := c.drawContinuous(&r)
			if o != nil {
				o.f32[i] = x
			}
			if v != nil {
				xs := c.standardize(x)
				for j := range v {
					v[j] = xs * c.dir[j]
				}
			}
			continue
		}
		n := c.lenMin + int(r.intn(uint64(c.lenMax-c.lenMin+1)))
		for j := range v {
			v[j] = 0
		}
		var xsum float64
		for e := 0; e < n; e++ {
			if c.kind == kindCat {
				id := c.dom.sample(&r)
				if o != nil {
					o.i32 = append(o.i32, id)
				}
				if v != nil {
					g.latent(c.dom, id, sc.tmp)
					for j := range v {
						v[j] += sc.tmp[j]
					}
				}
			} else {
				x := c.drawContinuous(&r)
				if o != nil {
					o.f32 = append(o.f32, x)
				}
				xsum += c.standardize(x)
			}
		}
		if o != nil {
			if c.kind == kindCat {
				o.off[i+1] = int32(len(o.i32))
			} else {
				o.off[i+1] = int32(len(o.f32))
			}
		}
		if v != nil && n > 0 {
			// Mean over the real elements, the model's default combiner;
			// an empty list gives the zero vector.
			inv := 1 / float64(n)
			if c.kind == kindCat {
				for j := range v {
					v[j] *= inv
				}
			} else {
				for j := range v {
					v[j] = xsum * inv * c.dir[j]
				}
			}
		}
	}
}

// drawContinuous returns a continuous value as stored (float32), so that the
// signal is a function of exactly what a reader sees.
func (c *column) drawContinuous(r *rng) float32 {
	switch {
	case c.intValued:
		return float32(c.lo + float64(r.int63n(uint64(c.hi-c.lo)+1)))
	case c.bounded:
		return float32(c.lo + (c.hi-c.lo)*r.float64())
	default:
		return float32(r.normal())
	}
}

// standardize maps a continuous value to mean 0, variance 1 under its
// generating distribution.
func (c *column) standardize(x float32) float64 {
	if !c.bounded {
		return float64(x)
	}
	half := (c.hi - c.lo) / 2
	if half == 0 {
		return 0
	}
	// Uniform on [lo, hi] has standard deviation half/sqrt(3).
	return (float64(x) - (c.lo + half)) / half * math.Sqrt(3)
}

// rawComponents computes every component's first-order term (sc.lin) and
// pairwise term (sc.fm) from the signal vectors. Each group's vector is
// projected into an interaction space of h = 2d features, y_g = P_g v_g;
// interaction feature r is sum_{g<h} y_g[r]*y_h[r] (user x item, user x
// category, ...), evaluated as ((sum_g y_g[r])^2 - sum_g y_g[r]^2) / 2, and
// a component's pairwise term is its own weighting of these features.
func (g *Generator) rawComponents(sc *scratch) {
	d, k, h := g.d, g.nComp, g.h
	lin, sum, sq := sc.lin[:k], sc.sum[:h], sc.sq[:h]
	for c := range lin {
		lin[c] = 0
	}
	for r := range sum {
		sum[r], sq[r] = 0, 0
	}
	for gi := 0; gi < g.groups; gi++ {
		v := sc.v[gi*d : (gi+1)*d : (gi+1)*d]
		w := g.lin[gi]
		for c := range lin {
			lin[c] += dot(w[c*d:(c+1)*d:(c+1)*d], v)
		}
		p := g.proj[gi]
		for r := range sum {
			y := dot(p[r*d:(r+1)*d:(r+1)*d], v)
			sum[r] += y
			sq[r] += y * y
		}
	}
	for r := range sum {
		sum[r] = 0.5 * (sum[r]*sum[r] - sq[r])
	}
	for c := 0; c < k; c++ {
		sc.fm[c] = dot(g.pairW[c*h:(c+1)*h:(c+1)*h], sum)
	}
}

// scores computes the whitened components sc.e of one row.
func (g *Generator) scores(sc *scratch) {
	if g.cfg.NoSignal || g.groups == 0 {
		for k := range sc.e {
			sc.e[k] = 0
		}
		return
	}
	g.rawComponents(sc)
	for k := 0; k < g.nComp; k++ {
		sc.x[k] = g.linW[k]*(sc.lin[k]-g.linMean[k]) + g.fmW[k]*(sc.fm[k]-g.fmMean[k])
	}
	k := g.nComp
	for i := 0; i < k; i++ {
		var s float64
		row := g.whiten[i*k : i*k+i+1]
		for j, w := range row {
			s += w * sc.x[j]
		}
		sc.e[i] = s
	}
}

// taskScore mixes the shared and the task's own whitened component.
func (g *Generator) taskScore(sc *scratch, task int) float64 {
	return g.mixShared*sc.e[0] + g.mixOwn*sc.e[task+1]
}

func (g *Generator) regressionMean(c *column, f float64) float64 {
	s := g.signalScale()
	if c.clipBound {
		return c.clipLo + (c.clipHi-c.clipLo)*sigmoid(s*f)
	}
	return s * f
}

// dot is the inner product of equal-length vectors (four accumulators to
// shorten the dependency chain).
func dot(a, b []float64) float64 {
	if len(a) != len(b) {
		panic("synth: dot of unequal lengths")
	}
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		a4, b4 := a[i:i+4:i+4], b[i:i+4:i+4]
		s0 += a4[0] * b4[0]
		s1 += a4[1] * b4[1]
		s2 += a4[2] * b4[2]
		s3 += a4[3] * b4[3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}
