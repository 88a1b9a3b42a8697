package mtl_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/loader/synth"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/preprocess"
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

// Example_rawRequests goes from a raw CSV log to scores for raw ids: fit
// the preprocessing, train on its Parquet output, then encode a serving
// request's string ids with the saved workflow (unseen ones become the
// out-of-vocabulary id) and score it.
func Example_rawRequests() {
	dir, err := os.MkdirTemp("", "mtlrank-raw")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// A click log: users like items of their own parity.
	var csv strings.Builder
	csv.WriteString("user,item,click\n")
	for i := 0; i < 4000; i++ {
		u, it := i%40, (i*7)%31
		fmt.Fprintf(&csv, "user-%d,item-%d,%d\n", u, it, 1-(u+it)%2)
	}
	logPath := filepath.Join(dir, "log.csv")
	if err := os.WriteFile(logPath, []byte(csv.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	spec := preprocess.Spec{CSVHeader: true, UserID: "user", ItemID: "item", BinaryTargets: []string{"click"}}
	rep, err := preprocess.Run(spec, []string{logPath}, nil, filepath.Join(dir, "prep"))
	if err != nil {
		log.Fatal(err)
	}

	// Train an MLP for a few epochs on the encoded Parquet data.
	s, err := schema.Load(rep.Train.Dir)
	if err != nil {
		log.Fatal(err)
	}
	cfg := mtl.DefaultConfig()
	cfg.Model, cfg.LR, cfg.InitOutputBias = "mlp", 0.01, true
	model, err := mtl.NewModel(s, cfg, kernels.NewCPU(1), 256)
	if err != nil {
		log.Fatal(err)
	}
	defer model.Release()
	opt := loader.DefaultOptions()
	opt.BatchSize, opt.Shuffle = 256, true
	data, err := loader.Open(rep.Train.Dir, s, opt)
	if err != nil {
		log.Fatal(err)
	}
	for epoch := 0; epoch < 8; epoch++ {
		it := data.Epoch(context.Background(), epoch)
		for {
			b, err := it.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				log.Fatal(err)
			}
			_, err = model.TrainStep(b)
			b.Release()
			if err != nil {
				log.Fatal(err)
			}
		}
		it.Close()
	}

	// Serving: raw ids in, through the saved workflow, scores out.
	w, err := preprocess.LoadWorkflow(rep.WorkflowPath)
	if err != nil {
		log.Fatal(err)
	}
	scorer, err := mtl.NewScorer(model, mtl.ScorerOptions{MaxBatch: 3})
	if err != nil {
		log.Fatal(err)
	}
	defer scorer.Close()
	req := mtl.NewCandidates(3, []string{"user", "item"}, nil)
	_ = req.Reset(3)
	_ = req.FillID("user", int32(w.Categ("user").Encode("user-2")))
	for i, item := range []string{"item-4", "item-5", "item-never-seen"} {
		req.IDs("item")[i] = int32(w.Categ("item").Encode(item))
	}
	out := [][]float32{make([]float32, 3)}
	if err := scorer.Score(req.Batch(), out); err != nil {
		log.Fatal(err)
	}
	fmt.Println("unseen item id:", req.IDs("item")[2])
	fmt.Println("same-parity item ranked first:", out[0][0] > out[0][1])
	// Output:
	// unseen item id: 1
	// same-parity item ranked first: true
}
