package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/schema"
)

const benchDescription = `Measures training and inference throughput on the built-in TenRec-like schema
with in-memory batches (ids uniform over each cardinality, random labels: the
same data as the PyTorch reference bench/torch_ref.py, so no file reading is
timed; scripts/bench.sh runs both). Prints one JSON object per line and mode:
  {"model","impl":"mtlrank","mode":"train"|"infer","threads","batch","steps",
   "seconds","examples_per_s","device","table_rows","params"}
Defaults are the benchmark configuration of docs/ARCHITECTURE.md, identical to
the reference: expert MLP [64], 4 MMoE experts, CGC 1 task + 2 shared experts,
PLE 2 levels, gate_dim 64, towers [64], shared-bottom MLP [128,64,32], Adam
1e-3. Training updates embedding rows sparsely (lazy Adam). --num_experts,
--num_task_experts and --num_shared_experts are accepted as in the reference.`

func runBench(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	cfg := mtl.DefaultConfig()
	registerModelFlags(fs, &cfg, true)
	var (
		threads, batch, steps, warmup int
		mode, device                  string
		tableRows, maxMemory          int64
	)
	// The reference's two threads, unless the machine has fewer CPUs.
	fs.IntVar(&threads, "threads", min(2, runtime.NumCPU()), "CPU threads, at most the number of CPUs")
	fs.IntVar(&batch, "batch", 1024, "batch size")
	fs.IntVar(&steps, "steps", 50, "timed steps per mode")
	fs.IntVar(&warmup, "warmup", 5, "untimed steps before timing")
	fs.StringVar(&mode, "mode", "both", "train, infer or both")
	fs.StringVar(&device, "device", "cpu", "cpu or cuda")
	fs.Int64Var(&tableRows, "table_rows", 0, "user_id and item_id cardinality (0: 100001 and 179281)")
	fs.Var(byteSize{&maxMemory}, "max_memory", "refuse a configuration whose estimated memory exceeds this size, e.g. 16G (default: the memory available)")
	if err := helpOr(e, fs, args, "mtlrank bench [flags]", benchDescription); err != nil {
		return err
	}
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case threads < 1:
		return usagef("--threads must be >= 1, got %d", threads)
	case batch < 1:
		return usagef("--batch must be >= 1, got %d", batch)
	case steps < 1:
		return usagef("--steps must be >= 1, got %d", steps)
	case warmup < 0:
		return usagef("--warmup must be >= 0, got %d", warmup)
	case mode != "train" && mode != "infer" && mode != "both":
		return usagef("--mode must be train, infer or both, got %q", mode)
	case tableRows < 0 || tableRows == 1:
		return usagef("--table_rows must be 0 or >= 2, got %d", tableRows)
	case maxMemory < 0:
		return usagef("--max_memory must be >= 0, got %d", maxMemory)
	}
	if err := checkThreads(threads); err != nil {
		return err
	}
	for _, pair := range [][2]string{{"mmoe_num_mlp_experts", "num_experts"}, {"cgc_num_task_experts", "num_task_experts"}, {"cgc_num_shared_experts", "num_shared_experts"}} {
		if set[pair[0]] && set[pair[1]] {
			return usagef("--%s and --%s are the same setting; give one", pair[0], pair[1])
		}
	}
	if err := checkModelFlags(&cfg, set); err != nil {
		return err
	}
	if device == "cpu" {
		// Like torch.set_num_threads: the whole process uses this many.
		prev := runtime.GOMAXPROCS(threads)
		defer runtime.GOMAXPROCS(prev)
	}
	dev, err := newDevice(device, threads)
	if err != nil {
		return err
	}
	s := schema.TenrecWithRows(tableRows)
	// Beside the model: the in-memory batches (8 of them, 4 bytes per
	// value) and, for inference, a predictor workspace and its outputs
	// (bounded by a training workspace).
	extra := int64(benchBatchCount) * int64(batch) * int64(len(s.Features)) * 4
	if mode != "train" {
		est, err := mtl.EstimateMemory(s, cfg, dev, batch)
		if err != nil {
			return &usageError{err.Error()}
		}
		extra += est.Activations
	}
	if err := checkMemory(s, cfg, dev, batch, maxMemory, extra); err != nil {
		return err
	}
	m, err := mtl.NewModel(s, cfg, dev, batch)
	if err != nil {
		return &usageError{err.Error()}
	}
	defer m.Release()
	batches := benchBatches(s, batch, benchBatchCount, 0)
	params := 0
	for _, p := range m.Params() {
		params += p.Tensor.Len()
	}
	rows := tableRows
	if rows == 0 {
		rows = s.Feature("user_id").Cardinality()
	}
	emit := func(mode string, dt time.Duration) error {
		rec := map[string]any{
			"model": cfg.Model, "impl": "mtlrank", "mode": mode, "threads": threads, "batch": batch,
			"steps": steps, "seconds": dt.Seconds(), "examples_per_s": float64(steps*batch) / dt.Seconds(),
			"device": device, "table_rows": rows, "params": params, "go": runtime.Version(),
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(e.stdout, string(b))
		return err
	}
	if mode == "train" || mode == "both" {
		for i := 0; i < warmup; i++ {
			if _, err := m.TrainStep(batches[i%len(batches)]); err != nil {
				return err
			}
		}
		if err := dev.Sync(); err != nil {
			return err
		}
		t0 := time.Now()
		for i := 0; i < steps; i++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			if _, err := m.TrainStep(batches[i%len(batches)]); err != nil {
				return err
			}
		}
		if err := dev.Sync(); err != nil {
			return err
		}
		if err := emit("train", time.Since(t0)); err != nil {
			return err
		}
	}
	if mode == "infer" || mode == "both" {
		p := m.NewPredictor(batch)
		defer p.Release()
		out := make([][]float32, len(m.Tasks()))
		for i := range out {
			out[i] = make([]float32, batch)
		}
		for i := 0; i < warmup; i++ {
			if err := p.Predict(batches[i%len(batches)], out); err != nil {
				return err
			}
		}
		if err := dev.Sync(); err != nil {
			return err
		}
		t0 := time.Now()
		for i := 0; i < steps; i++ {
			if err := p.Predict(batches[i%len(batches)], out); err != nil {
				return err
			}
		}
		if err := dev.Sync(); err != nil {
			return err
		}
		if err := emit("infer", time.Since(t0)); err != nil {
			return err
		}
	}
	return nil
}

// benchBatchCount is the number of distinct in-memory batches bench cycles
// through.
const benchBatchCount = 8

// benchBatches builds n batches of the schema's columns with ids uniform
// over each cardinality and random labels (binary 0/1, regression
// integers 0..4), as the PyTorch reference does.
func benchBatches(s *schema.Schema, rows, n int, seed uint64) []*loader.Batch {
	rng := rand.New(rand.NewPCG(seed, 0x62656e6368))
	out := make([]*loader.Batch, n)
	for i := range out {
		cols := map[string]*loader.Column{}
		for _, f := range s.Features {
			c := &loader.Column{Name: f.Name}
			switch {
			case f.IsTarget() && f.HasTag(schema.TagBinary):
				c.F32 = make([]float32, rows)
				for j := range c.F32 {
					c.F32[j] = float32(rng.IntN(2))
				}
			case f.IsTarget():
				c.F32 = make([]float32, rows)
				for j := range c.F32 {
					c.F32[j] = float32(rng.IntN(5))
				}
			case f.Cardinality() > 0:
				c.I32 = make([]int32, rows)
				card := int(f.Cardinality())
				for j := range c.I32 {
					c.I32[j] = int32(rng.IntN(card))
				}
			default:
				c.F32 = make([]float32, rows)
				for j := range c.F32 {
					c.F32[j] = float32(rng.NormFloat64())
				}
			}
			cols[f.Name] = c
		}
		out[i] = loader.NewBatch(rows, cols, fmt.Sprintf("bench batch %d", i), nil)
	}
	return out
}
