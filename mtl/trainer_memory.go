package mtl

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/mtlrank/mtlrank/internal/sysmem"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/mtl/internal/step"
	"github.com/mtlrank/mtlrank/schema"
)

// MemoryEstimate is what NewModel will allocate for a configuration, in
// bytes, by part. It is computed from the configuration and the schema
// alone, before anything is allocated, so that a size far beyond the
// machine (a 200000-wide layer, a batch of 10^8 rows) is a clear error
// instead of the Go runtime's fatal "out of memory". It counts the large
// buffers (parameters, optimizer state, gradients, per-row workspaces) and
// is accurate to a few percent for those; small per-layer bookkeeping is
// left out.
type MemoryEstimate struct {
	// Embeddings holds the embedding tables; Dense the other parameters
	// (kernels and biases of the MLPs, experts, gates, towers, heads).
	Embeddings, Dense int64
	// Optimizer is the optimizer state: Adam's two moments or Adagrad's
	// accumulator for every parameter, embedding tables included.
	Optimizer int64
	// Gradients are the dense parameters' gradient buffers (one set per
	// shard on a device that shards batches, such as the CPU).
	Gradients int64
	// Activations are the per-row buffers of the training workspace for
	// MaxBatch rows: layer outputs, their gradients, dropout masks, gate
	// weights, sparse embedding gradients, the loss and prediction buffers.
	Activations int64
	// Init is transient: the host copy of the largest embedding table
	// while it is initialised.
	Init int64
	// Exchange is what the steps of a distributed job add on a rank (0 in
	// one process; EstimateRankMemory): the staging of the fused allreduce,
	// the step's ids and gradient rows sent and received (every rank's with
	// replicated tables; with tables sharded by rows, the rows asked and
	// given in the lookup and the gradient rows pushed to their owners),
	// their merge (a slot per table row, and the merged rows), and on a
	// device that fuses the embedding update, the sparse gradients the
	// distributed step materialises instead. An upper bound: every id of
	// every rank's batch counted as distinct and, with row sharding, as
	// asked of this rank.
	Exchange int64
	// Total is the sum of the parts: the peak NewModel reaches.
	Total int64
	// Params is the number of parameters; MaxBatch the batch rows the
	// workspace is sized for.
	Params   int64
	MaxBatch int
}

// String gives the total and the parts in a human unit, for messages.
func (e MemoryEstimate) String() string {
	parts := []string{
		"embedding tables " + FormatBytes(e.Embeddings),
		"dense parameters " + FormatBytes(e.Dense),
		"optimizer state " + FormatBytes(e.Optimizer),
		"gradients " + FormatBytes(e.Gradients),
		fmt.Sprintf("activations for batches of %d rows %s", e.MaxBatch, FormatBytes(e.Activations)),
	}
	if e.Exchange > 0 {
		parts = append(parts, "the distributed step's exchange buffers "+FormatBytes(e.Exchange))
	}
	return fmt.Sprintf("about %s (%s)", FormatBytes(e.Total), strings.Join(parts, ", "))
}

// FormatBytes writes n bytes with a binary unit (KiB, MiB, GiB, TiB).
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}

// EstimateMemory returns what NewModel(s, cfg, dev, maxBatch) would
// allocate, without allocating it. dev only tells whether batches are
// sharded (kernels.Sharder, as the CPU device): each shard then has its own
// gradient buffers. A nil dev counts one shard. The configuration is
// validated as NewModel validates it.
func EstimateMemory(s *schema.Schema, cfg Config, dev kernels.Device, maxBatch int) (MemoryEstimate, error) {
	return EstimateRankMemory(s, cfg, dev, maxBatch, 1, false)
}

// EstimateRankMemory is EstimateMemory for one rank of a distributed job
// of ranks ranks, each with batches of at most maxBatch rows, whose tables
// are replicated or (rowSharded) sharded by rows: with ranks > 1 it adds
// the distributed step's buffers (Exchange) and, with rowSharded, counts
// the rank's share of the tables (RowShard). With one rank it is
// EstimateMemory.
func EstimateRankMemory(s *schema.Schema, cfg Config, dev kernels.Device, maxBatch, ranks int, rowSharded bool) (MemoryEstimate, error) {
	if ranks < 1 {
		return MemoryEstimate{}, fmt.Errorf("mtl: EstimateRankMemory: ranks must be >= 1, got %d", ranks)
	}
	cfg = cfg.Clone()
	if err := cfg.Validate(s); err != nil {
		return MemoryEstimate{}, err
	}
	if maxBatch < 1 {
		return MemoryEstimate{}, fmt.Errorf("mtl: EstimateMemory: maxBatch must be >= 1, got %d", maxBatch)
	}
	tasks, err := cfg.resolveTasks(s)
	if err != nil {
		return MemoryEstimate{}, err
	}
	// Counts are float64: the point is to handle sizes whose products
	// overflow int64 (and whose allocation would crash) gracefully.
	var c counter
	// What the device's optional capabilities change: no sparse embedding
	// gradients with a fused embedding update, double-buffered input
	// columns with asynchronous uploads, no gate-weight gradient with a
	// fused gate.
	caps := step.Probe(dev)
	var fusedGate bool
	c.fusedEmb, c.staged, fusedGate = caps.Fused != nil, caps.Staged != nil, caps.FusedGate
	feats := inputFeatures(s, &cfg)
	cfg.EmbeddingDims = cfg.inputEmbeddingDims(feats)
	icfg, wide, err := wideDeepInputConfig(&cfg, feats)
	if err != nil {
		return MemoryEstimate{}, err
	}
	in := c.input(append(feats, wide...), &icfg)
	T := float64(len(tasks))
	drop := cfg.Dropout > 0
	hiddenAct, _ := kernels.ParseActivation(cfg.Activation)
	act := func(units float64) float64 { // per-row floats of a training Dense layer
		a := 2 * units // output and its gradient
		if drop {
			a += units // dropout multipliers
		}
		if hiddenAct.NeedsActivator() {
			a += units // the pre-activation
		}
		return a
	}
	gate := func(in, experts, expertDim float64) {
		h := in
		if cfg.GateDim > 0 {
			g := float64(cfg.GateDim)
			c.dense += in*g + g
			c.row += act(g)
			if hiddenAct.NeedsActivator() {
				c.row -= g // the gate's hidden layer is always ReLU
			}
			h = g
		}
		c.dense += h * experts // no bias
		// logits and their gradient, softmax weights and their gradient
		// (kept on chip by a fused gate), the mixed output and its gradient
		c.row += 2*experts + 2*experts + 2*expertDim
		if fusedGate {
			c.row -= experts
		}
	}
	experts := func(n, in float64) float64 {
		d := in
		for _, w := range cfg.ExpertMLPLayers {
			wf := float64(w)
			c.dense += n * (d*wf + wf)
			c.row += n * act(wf)
			d = wf
		}
		return d
	}
	var out float64
	switch cfg.Model {
	case "mlp":
		out = c.mlp(in, cfg.MLPLayers, act)
	case "dcn":
		out = c.dcn(in, &cfg, act)
	case "dlrm":
		out = c.dlrm(feats, &cfg, act)
	case "mmoe":
		E := float64(cfg.MMoENumExperts)
		out = experts(E, in)
		for range tasks {
			gate(in, E, out)
		}
	case "deepfm", "wide_n_deep":
		out = c.wideDeep(&icfg, feats, len(wide), act)
	case "cgc", "ple":
		levels := 1
		if cfg.Model == "ple" {
			levels = cfg.PLELayers
		}
		nt, ns := float64(cfg.CGCTaskExperts), float64(cfg.CGCSharedExperts)
		levelIn := in
		for l := range levels {
			out = experts(T*nt+ns, levelIn)
			gateIn := levelIn
			if cfg.PLEGatesOnInput {
				gateIn = in
			}
			for range tasks {
				gate(gateIn, nt+ns, out)
			}
			if l < levels-1 {
				gate(gateIn, T*nt+ns, out)
			}
			levelIn = out
		}
	}
	var towers []int
	if cfg.UseTaskTowers {
		towers = cfg.TowerLayers
	}
	for range tasks {
		last := c.mlp(out, towers, act)
		c.dense += last + 1 // head
		c.row += 2
	}
	// loss weights and scratch, predictions, label conversion and masks
	c.row += 2*T + T + T + 1

	shards, rows := 1.0, float64(maxBatch)
	if caps.Sharder != nil {
		shards = float64(step.ShardCount(maxBatch))
		rows = shards * float64(step.ShardCapacity(maxBatch))
	}
	nState, err := step.StateTensors(cfg.Optimizer)
	if err != nil {
		return MemoryEstimate{}, err
	}
	state := float64(nState)
	const f32 = 4
	e := MemoryEstimate{
		Embeddings:  satBytes(c.emb * f32),
		Dense:       satBytes(c.dense * f32),
		Optimizer:   satBytes(state * (c.emb + c.dense) * f32),
		Gradients:   satBytes(shards * c.dense * f32),
		Activations: satBytes((float64(maxBatch)*c.inputRow + rows*c.row) * f32),
		Init:        satBytes(c.largest * f32),
		Params:      satBytes(c.emb + c.dense),
		MaxBatch:    maxBatch,
	}
	if ranks > 1 {
		e.Exchange = satBytes(c.exchange(float64(maxBatch), float64(ranks), rowSharded) * f32)
	}
	e.Total = e.sum()
	if rowSharded {
		e = e.RowShard(ranks)
	}
	return e, nil
}

// sum is the total of the parts.
func (e MemoryEstimate) sum() int64 {
	return satBytes(float64(e.Embeddings) + float64(e.Dense) + float64(e.Optimizer) +
		float64(e.Gradients) + float64(e.Activations) + float64(e.Init) + float64(e.Exchange))
}

// exchange is the floats (4 bytes each, as the int32 ids) of a distributed
// step's buffers on one of n ranks with batches of b rows (docs/DISTRIBUTED.md
// has the buffers): u = b·exchRow is the most a rank's batch can send (each
// table's ids and their gradient rows, every id distinct).
//
//   - both modes: the fused allreduce's staging (the dense gradients), the
//     rank's own ids and rows sent, and the sparse gradients a fused-update
//     device materialises (u each);
//   - replicated tables: every rank's ids and rows received (n·u), merged
//     (n·u) and held for the update at twice the largest merge so far
//     (2n·u), and a merge slot per table row;
//   - row sharding: the lookup's rows received and its small tables (u
//     each), the rows given to every asker (n·u), the gradient rows
//     pushed to the owners received and merged (2n·u, held at twice: 2n·u
//     more), and a slot per local row (the table rows / n).
func (c *counter) exchange(b, n float64, rowSharded bool) float64 {
	u := b * c.exchRow
	f := c.dense + u
	if c.fusedEmb {
		f += u
	}
	if rowSharded {
		return f + 2*u + 5*n*u + math.Ceil(c.tableRows/n)
	}
	return f + 4*n*u + c.tableRows
}

// RowShard is the estimate for one rank of n whose embedding tables are
// sharded by rows (NewShardedModel): the tables and their optimizer state
// divided by n (rounded up), and no transient copy of a table (a shard is
// initialised row by row).
func (e MemoryEstimate) RowShard(n int) MemoryEstimate {
	if n <= 1 {
		return e
	}
	emb := float64(e.Embeddings)
	optEmb := 0.0
	if all := emb + float64(e.Dense); all > 0 {
		optEmb = float64(e.Optimizer) * emb / all
	}
	e.Embeddings = satBytes(math.Ceil(emb / float64(n)))
	e.Optimizer = satBytes(float64(e.Optimizer) - optEmb + math.Ceil(optEmb/float64(n)))
	e.Init = 0
	e.Total = e.sum()
	return e
}

// counter accumulates parameter and per-row float counts.
type counter struct {
	emb, largest float64 // embedding floats; the largest table's
	dense        float64 // dense parameter floats
	inputRow     float64 // per-row floats of the input block (whole batch)
	row          float64 // per-row floats of the body, towers and loss (per shard row)
	// the device fuses the embedding update; uploads batches asynchronously
	fusedEmb, staged bool
	// per batch row, each table's ids and their gradient rows (what a rank
	// sends in a distributed step); the rows of all tables
	exchRow, tableRows float64
}

// input counts the embedding tables (one per domain, as layers.InputBlock
// builds them) and returns the width of the input block's output.
func (c *counter) input(feats []*schema.Feature, cfg *Config) float64 {
	type table struct {
		rows, dim, features, values float64
	}
	tables := map[string]*table{}
	var order []string
	var width, embCols float64
	for _, f := range feats {
		if !f.HasTag(schema.TagCategorical) {
			width++ // continuous: one column
			continue
		}
		dom := f.DomainName()
		t, ok := tables[dom]
		if !ok {
			var max int64
			if f.IntDomain != nil {
				max = f.IntDomain.Max
			}
			t = &table{rows: float64(max) + 1}
			d, ok := cfg.EmbeddingDims[f.Name]
			if !ok {
				d, ok = cfg.EmbeddingDims[dom]
			}
			if !ok {
				d = layers.InferDim(max+1, cfg.EmbeddingDimMultiplier)
			}
			t.dim = float64(d)
			tables[dom] = t
			order = append(order, dom)
		}
		t.features++
		values := 1.0
		if f.IsList() {
			values = 4 // the sparse gradient's starting size for unknown lengths
			if f.ValueCount != nil && f.ValueCount.Max > 0 {
				values = float64(f.ValueCount.Max)
			}
		}
		t.values += values
		width += t.dim
		embCols += t.dim
	}
	for _, dom := range order {
		t := tables[dom]
		c.emb += t.rows * t.dim
		c.largest = math.Max(c.largest, t.rows*t.dim)
		// ids fed per row (twice when double-buffered), and the sparse
		// gradient: a row index and a dim-wide value per id (none with a
		// fused embedding update)
		perID := 1 + 1 + t.dim
		if c.fusedEmb {
			perID = 1
		}
		if c.staged {
			perID++
		}
		c.inputRow += t.values * perID
		c.exchRow += t.values * (1 + t.dim)
		c.tableRows += t.rows
		if t.features > 1 {
			c.inputRow += t.features * t.dim // per-feature lookups of a shared table
		}
	}
	c.inputRow += 2 * width // output and its gradient
	if cfg.EmbeddingL2Reg > 0 {
		c.inputRow += embCols
	}
	return width
}

// mlp counts a stack of Dense layers over an input of width in and returns
// the output width (in when there are no layers).
func (c *counter) mlp(in float64, dims []int, act func(float64) float64) float64 {
	for _, w := range dims {
		wf := float64(w)
		c.dense += in*wf + wf
		c.row += act(wf)
		in = wf
	}
	return in
}

// satBytes converts a count to int64, saturating instead of overflowing.
func satBytes(v float64) int64 {
	if v >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(math.Ceil(v))
}

// ErrTooLarge is wrapped by the errors of NewModel and the checkpoint
// loaders for a model that this process could never allocate.
var ErrTooLarge = errors.New("the model cannot fit in this machine's memory")

// checkAllocatable refuses a model whose host allocations exceed what this
// process could ever hold (RAM plus swap, or the cgroup limit): allocating
// it would end the process with the Go runtime's fatal "out of memory" or
// a "makeslice: len out of range" panic, which no caller (a server loading
// a corrupt checkpoint, say) can recover from. On a CPU device every part
// of the estimate is host memory; on a GPU only the host copy made while
// initialising a table is. What is available right now is the caller's
// business (the CLI's --max_memory), since it changes from one moment to
// the next.
func checkAllocatable(s *schema.Schema, cfg Config, dev kernels.Device, maxBatch int, shard layers.RowShard) error {
	est, err := EstimateMemory(s, cfg, dev, maxBatch)
	if err != nil {
		return err
	}
	if shard.Sharded() {
		est = est.RowShard(shard.Size)
	}
	host := est.Init
	if step.Probe(dev).CPU != nil {
		host = est.Total
	}
	limit, ok := sysmem.Ceiling()
	if !ok || host <= limit {
		return nil
	}
	return fmt.Errorf("mtl: %w: it needs %s, more than the %s of RAM and swap (or the cgroup limit) this process could ever use; lower the batch size, the layer widths or the embedding tables (int_domain.max)",
		ErrTooLarge, est, FormatBytes(limit))
}

// checkWorkspaces refuses Predictor workspaces for batches of maxBatch
// rows, workers of them, that this process could never allocate (counted
// as the training workspace's activations, an upper bound of a
// Predictor's).
func checkWorkspaces(m *Model, maxBatch, workers int) error {
	est, err := EstimateMemory(m.schema, m.cfg, m.dev, maxBatch)
	if err != nil {
		return err
	}
	limit, ok := sysmem.Ceiling()
	if need := float64(est.Activations) * float64(workers); ok && need > float64(limit) {
		return fmt.Errorf("mtl: %w: %d workers with batches of %d rows need about %s of workspace, more than the %s of RAM and swap (or the cgroup limit) this process could ever use; lower MaxBatch or Workers",
			ErrTooLarge, workers, maxBatch, FormatBytes(satBytes(need)), FormatBytes(limit))
	}
	return nil
}
