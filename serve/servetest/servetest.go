// Package servetest builds small model repositories for the tests of the
// serving packages: a fitted workflow over raw columns and a model
// checkpoint of its output schema.
package servetest

import (
	"math"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/preprocess"
	"github.com/mtlrank/mtlrank/schema"
)

// Users, Items and Cities are raw values the workflow knows.
var (
	Users  = []string{"alice", "bob", "carol", "dave", "erin"}
	Items  = []int64{1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008}
	Cities = []string{"paris", "lyon", "nice"}
)

// Price transform of the workflow: log1p, then (x - PriceMean) / PriceStd;
// nulls are filled with PriceFill.
const (
	PriceMean = 1.5
	PriceStd  = 2.0
	PriceFill = 3.0
)

// Workflow returns a fitted workflow: user_id (Categorify of strings),
// item_id (Categorify of integers), city (HashBucket of 5), price
// (log + normalize, fill), and the click and like targets.
func Workflow() *preprocess.Workflow {
	w := &preprocess.Workflow{Format: preprocess.WorkflowFormat, Version: preprocess.WorkflowVersion, FitRows: 100}
	counts := func(n int) []int64 {
		c := make([]int64, n)
		for i := range c {
			c[i] = int64(n - i)
		}
		return c
	}
	items := make([]string, len(Items))
	for i, v := range Items {
		items[i] = strconv.FormatInt(v, 10)
	}
	w.Categorical = []*preprocess.Categorical{
		{Name: "user_id", Op: preprocess.OpCategorify, Vocab: Users, Counts: counts(len(Users)),
			Tags: []schema.Tag{schema.TagCategorical, schema.TagUserID, schema.TagUser, schema.TagID}},
		{Name: "item_id", Op: preprocess.OpCategorify, Vocab: items, Counts: counts(len(items)),
			Tags: []schema.Tag{schema.TagCategorical, schema.TagItemID, schema.TagItem, schema.TagID}},
		{Name: "city", Op: preprocess.OpHashBucket, NumBuckets: 5,
			Tags: []schema.Tag{schema.TagCategorical, schema.TagUser}},
	}
	w.Continuous = []*preprocess.Continuous{
		{Name: "price", Fill: preprocess.FillConstant, FillValue: PriceFill, Log: true, Normalize: true,
			Mean: PriceMean, Std: PriceStd, Count: 100, Min: 0, Max: 100, Tags: []schema.Tag{schema.TagContinuous, schema.TagItem}},
	}
	w.Targets = []*preprocess.Target{
		{Name: "click", Source: "click", Kind: preprocess.TargetBinary, Rows: 100, Tags: []schema.Tag{schema.TagBinaryClassification, schema.TagTarget}},
		{Name: "like", Source: "like", Kind: preprocess.TargetBinary, Rows: 100, Tags: []schema.Tag{schema.TagBinaryClassification, schema.TagTarget}},
	}
	return w
}

// Config is a small model.
func Config(model string, seed int64) mtl.Config {
	c := mtl.DefaultConfig()
	c.Model = model
	c.MLPLayers = []int{32, 16}
	c.ExpertMLPLayers = []int{16}
	c.MMoENumExperts = 3
	c.GateDim = 8
	c.TowerLayers = []int{8}
	c.Seed = seed
	return c
}

// WriteVersion writes a checkpoint (a freshly initialised model of the
// given architecture and seed) and, when withWorkflow, the workflow into
// repo/name/version/, and returns that folder.
func WriteVersion(t testing.TB, repo, name, version, model string, seed int64, withWorkflow bool) string {
	t.Helper()
	w := Workflow()
	m, err := mtl.NewModel(w.Schema(true), Config(model, seed), kernels.NewCPU(1), 64)
	require.NoError(t, err)
	defer m.Release()
	dir := filepath.Join(repo, name, version)
	require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
	if withWorkflow {
		require.NoError(t, w.Save(filepath.Join(dir, "workflow.json")))
	}
	return dir
}

// Row is one request row in raw values (NaN price: missing).
type Row struct {
	User  string
	Item  int64
	City  string
	Price float64
}

// Encode encodes rows as the workflow does, computed here from the
// workflow's definition: vocabulary position + 2 (unknown: 1), FNV-1a hash
// buckets + 2, (log1p(price) - mean) / std.
func Encode(rows []Row) *loader.Batch {
	n := len(rows)
	cols := map[string]*loader.Column{
		"user_id": {Name: "user_id", I32: make([]int32, n)},
		"item_id": {Name: "item_id", I32: make([]int32, n)},
		"city":    {Name: "city", I32: make([]int32, n)},
		"price":   {Name: "price", F32: make([]float32, n)},
	}
	for i, r := range rows {
		cols["user_id"].I32[i] = 1
		for j, u := range Users {
			if u == r.User {
				cols["user_id"].I32[i] = int32(j + 2)
			}
		}
		cols["item_id"].I32[i] = 1
		for j, v := range Items {
			if v == r.Item {
				cols["item_id"].I32[i] = int32(j + 2)
			}
		}
		h := uint64(14695981039346656037)
		for _, c := range []byte(r.City) {
			h ^= uint64(c)
			h *= 1099511628211
		}
		cols["city"].I32[i] = int32(2 + h%5)
		p := r.Price
		if math.IsNaN(p) {
			p = PriceFill
		}
		cols["price"].F32[i] = float32((math.Log1p(p) - PriceMean) / PriceStd)
	}
	return loader.NewBatch(n, cols, "reference", nil)
}

// Score scores an encoded batch with the checkpoint in dir, alone.
func Score(t testing.TB, dir string, b *loader.Batch) map[string][]float32 {
	t.Helper()
	s, err := mtl.LoadScorer(dir, kernels.NewCPU(1), mtl.ScorerOptions{MaxBatch: max(b.Rows, 1), Workers: 1})
	require.NoError(t, err)
	defer s.Close()
	out, err := s.ScoreMap(b)
	require.NoError(t, err)
	return out
}

// Rows returns n varied raw rows starting at seed.
func Rows(n, seed int) []Row {
	out := make([]Row, n)
	for i := range out {
		k := seed + i
		out[i] = Row{User: Users[k%len(Users)], Item: Items[(k*7)%len(Items)], City: Cities[(k*5)%len(Cities)], Price: float64(k % 13)}
		if k%4 == 3 {
			out[i].Item = 999 // out of vocabulary
		}
		if k%6 == 5 {
			out[i].User = "zed"
		}
	}
	return out
}
