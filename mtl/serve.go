package mtl

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
)

// ScorerOptions configures a Scorer.
type ScorerOptions struct {
	// MaxBatch is the largest request (rows) a Score call accepts
	// (default 1024: one user x up to 1024 candidate items).
	MaxBatch int
	// Workers is the number of Predictors, i.e. of Score calls that run at
	// once; further calls wait for a free one (default GOMAXPROCS). Each
	// Predictor owns activations for MaxBatch rows.
	Workers int
}

// Scorer scores candidate batches for Go callers. The model is loaded once
// and shared read-only by a fixed pool of Predictors, each with its own
// workspace, so Score is safe for any number of concurrent goroutines and,
// in steady state, allocates nothing: the request batch and the output
// slices belong to the caller and can be reused across calls.
//
// The model must not be trained while a Scorer uses it.
type Scorer struct {
	m     *Model
	owned bool
	pool  chan *Predictor
	all   []*Predictor
	max   int
	mu    sync.RWMutex // Close waits for in-flight Score calls
	done  bool
	tasks []Task
}

// NewScorer builds a Scorer over m (which stays owned by the caller).
func NewScorer(m *Model, opts ScorerOptions) (*Scorer, error) {
	if m == nil {
		return nil, errors.New("mtl: NewScorer: nil model")
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 1024
	}
	if opts.Workers == 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.MaxBatch < 1 || opts.Workers < 1 {
		return nil, fmt.Errorf("mtl: NewScorer: MaxBatch %d and Workers %d must be >= 1", opts.MaxBatch, opts.Workers)
	}
	if err := checkWorkspaces(m, opts.MaxBatch, opts.Workers); err != nil {
		return nil, err
	}
	s := &Scorer{m: m, pool: make(chan *Predictor, opts.Workers), max: opts.MaxBatch, tasks: m.Tasks()}
	for i := 0; i < opts.Workers; i++ {
		p := m.NewPredictor(opts.MaxBatch)
		s.all = append(s.all, p)
		s.pool <- p
	}
	return s, nil
}

// LoadScorer loads the checkpoint in dir onto dev and builds a Scorer that
// owns the model (Close releases it). dev nil means the CPU device with
// GOMAXPROCS threads.
func LoadScorer(dir string, dev kernels.Device, opts ScorerOptions) (*Scorer, error) {
	if dev == nil {
		dev = kernels.NewCPU(runtime.GOMAXPROCS(0))
	}
	maxBatch := opts.MaxBatch
	if maxBatch == 0 {
		maxBatch = 1024
	}
	// The model's own workspace is only used for training: keep it small.
	// Scoring needs no optimizer state.
	m, err := LoadInference(dir, dev, 1)
	if err != nil {
		return nil, err
	}
	opts.MaxBatch = maxBatch
	s, err := NewScorer(m, opts)
	if err != nil {
		m.Release()
		return nil, err
	}
	s.owned = true
	return s, nil
}

// Tasks lists the outputs in the order Score writes them.
func (s *Scorer) Tasks() []Task { return s.tasks }

// Model returns the underlying model.
func (s *Scorer) Model() *Model { return s.m }

// MaxBatch is the largest batch Score accepts.
func (s *Scorer) MaxBatch() int { return s.max }

// Score writes the scores of b's rows: out[t][i] is the probability
// (binary task) or value (regression task) of task t (Tasks order) for row
// i; every out[t] needs room for b.Rows values. b must hold every input
// column of the model (targets are not needed). It blocks while all
// Predictors are busy.
func (s *Scorer) Score(b *loader.Batch, out [][]float32) error {
	if b == nil {
		return errors.New("mtl: Score: nil batch")
	}
	if b.Rows < 0 {
		return fmt.Errorf("mtl: Score: batch of %d rows", b.Rows)
	}
	if b.Rows == 0 {
		// An empty candidate list is normal in serving: nothing to score.
		return nil
	}
	if b.Rows > s.max {
		return fmt.Errorf("mtl: Score: batch of %d rows exceeds the scorer's MaxBatch %d", b.Rows, s.max)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.done {
		return errors.New("mtl: Score: scorer is closed")
	}
	p := <-s.pool
	err := p.Predict(b, out)
	s.pool <- p
	return err
}

// ScoreMap is Score returning fresh slices keyed by task name (it
// allocates; use Score on hot paths).
func (s *Scorer) ScoreMap(b *loader.Batch) (map[string][]float32, error) {
	if b == nil {
		return nil, errors.New("mtl: Score: nil batch")
	}
	out := make([][]float32, len(s.tasks))
	for i := range out {
		out[i] = make([]float32, b.Rows)
	}
	if err := s.Score(b, out); err != nil {
		return nil, err
	}
	m := make(map[string][]float32, len(s.tasks))
	for i, t := range s.tasks {
		m[t.Name] = out[i]
	}
	return m, nil
}

// Close waits for running Score calls, frees the Predictors and, for a
// Scorer from LoadScorer, the model. Score fails after Close.
func (s *Scorer) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	s.done = true
	for _, p := range s.all {
		p.Release()
	}
	if s.owned {
		s.m.Release()
	}
}

// Candidates is a reusable request of one user and up to a fixed number of
// candidate items: the user's columns are broadcast to every row, the item
// columns are set per row. It owns its column buffers, so building and
// scoring a request allocates nothing after construction. Only scalar
// (non-list) columns are supported; build a loader.Batch directly for list
// features.
type Candidates struct {
	batch *loader.Batch
	cols  map[string]*loader.Column
	max   int
}

// NewCandidates allocates a request for up to maxRows rows with the given
// int32 id columns and float32 columns.
func NewCandidates(maxRows int, idColumns, floatColumns []string) *Candidates {
	c := &Candidates{cols: map[string]*loader.Column{}, max: maxRows}
	for _, n := range idColumns {
		c.cols[n] = &loader.Column{Name: n, I32: make([]int32, maxRows)}
	}
	for _, n := range floatColumns {
		c.cols[n] = &loader.Column{Name: n, F32: make([]float32, maxRows)}
	}
	c.batch = loader.NewBatch(0, c.cols, "candidates", nil)
	return c
}

// Reset sets the number of rows for the next request.
func (c *Candidates) Reset(rows int) error {
	if rows < 0 || rows > c.max {
		return fmt.Errorf("mtl: candidates: %d rows outside [0, %d]", rows, c.max)
	}
	c.batch.Rows = rows
	for _, col := range c.cols {
		if col.I32 != nil {
			col.I32 = col.I32[:rows:c.max]
		} else {
			col.F32 = col.F32[:rows:c.max]
		}
	}
	return nil
}

// FillID sets id column name to v on every row (a user feature).
func (c *Candidates) FillID(name string, v int32) error {
	col := c.cols[name]
	if col == nil || col.I32 == nil {
		return fmt.Errorf("mtl: candidates: no id column %q", name)
	}
	for i := range col.I32 {
		col.I32[i] = v
	}
	return nil
}

// FillFloat sets float column name to v on every row.
func (c *Candidates) FillFloat(name string, v float32) error {
	col := c.cols[name]
	if col == nil || col.F32 == nil {
		return fmt.Errorf("mtl: candidates: no float column %q", name)
	}
	for i := range col.F32 {
		col.F32[i] = v
	}
	return nil
}

// IDs returns id column name's values for the current rows, to be filled
// per candidate (nil if there is no such column).
func (c *Candidates) IDs(name string) []int32 {
	if col := c.cols[name]; col != nil {
		return col.I32
	}
	return nil
}

// Floats returns float column name's values for the current rows.
func (c *Candidates) Floats(name string) []float32 {
	if col := c.cols[name]; col != nil {
		return col.F32
	}
	return nil
}

// Batch is the request as a batch for Scorer.Score.
func (c *Candidates) Batch() *loader.Batch { return c.batch }

// InputColumns lists the columns the model reads to score a row, in schema
// order: every non-target categorical or continuous feature except sample
// weight and sample-space columns.
func (m *Model) InputColumns() []string {
	feats := inputFeatures(m.schema, &m.cfg)
	out := make([]string, len(feats))
	for i, f := range feats {
		out[i] = f.Name
	}
	return out
}

// TrainColumns lists the columns training and evaluation read: the inputs,
// the task targets and the weight and sample-space columns.
func (m *Model) TrainColumns() []string {
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, n := range m.InputColumns() {
		add(n)
	}
	for _, t := range m.tasks {
		add(t.Target)
	}
	for _, cols := range []map[string]string{m.cfg.WeightColumns, m.cfg.SampleSpace} {
		for _, k := range sortedKeys(cols) {
			add(cols[k])
		}
	}
	return out
}
