package mtl_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader/synth"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/schema"
)

// Example_scorer trains a small MMoE on synthetic TenRec-like data, saves
// it, loads it as a Scorer and ranks 500 candidate items for one user.
func Example_scorer() {
	dir, err := os.MkdirTemp("", "mtlrank-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Train a few steps on in-memory synthetic batches and save a checkpoint.
	s := schema.TenrecWithRows(1000)
	cfg := mtl.DefaultConfig() // MMoE, 4 experts, towers [64], Adam
	model, err := mtl.NewModel(s, cfg, kernels.NewCPU(1), 256)
	if err != nil {
		log.Fatal(err)
	}
	gen, err := synth.NewGenerator(s, synth.DefaultConfig(0, 1))
	if err != nil {
		log.Fatal(err)
	}
	for step := 0; step < 20; step++ {
		if _, err := model.TrainStep(gen.Batch(256)); err != nil {
			log.Fatal(err)
		}
	}
	ckpt := filepath.Join(dir, "mmoe")
	if err := mtl.SaveCheckpoint(ckpt, model, nil); err != nil {
		log.Fatal(err)
	}
	model.Release()

	// Serving: load once, then score from any number of goroutines.
	scorer, err := mtl.LoadScorer(ckpt, nil, mtl.ScorerOptions{MaxBatch: 500})
	if err != nil {
		log.Fatal(err)
	}
	defer scorer.Close()

	// A reusable request: the user's features broadcast, one row per item.
	req := mtl.NewCandidates(500, []string{"user_id", "gender", "age", "item_id", "video_category"}, nil)
	out := make([][]float32, len(scorer.Tasks()))
	for i := range out {
		out[i] = make([]float32, 500)
	}
	_ = req.Reset(500)
	_ = req.FillID("user_id", 42)
	_ = req.FillID("gender", 1)
	_ = req.FillID("age", 4)
	items, cats := req.IDs("item_id"), req.IDs("video_category")
	for i := range items {
		items[i] = int32(i)
		cats[i] = int32(i % 6)
	}
	if err := scorer.Score(req.Batch(), out); err != nil { // no allocation
		log.Fatal(err)
	}

	// Rank by click probability.
	click := out[0]
	order := make([]int, len(click))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return click[order[a]] > click[order[b]] })
	for _, t := range scorer.Tasks() {
		fmt.Println(t.Name)
	}
	fmt.Println("ranked", len(order), "items; best click probability in (0,1):", click[order[0]] > 0 && click[order[0]] < 1)
	// Output:
	// click/binary_output
	// follow/binary_output
	// like/binary_output
	// share/binary_output
	// watching_times/regression_output
	// ranked 500 items; best click probability in (0,1): true
}
