package synth_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/mtlrank/mtlrank/loader/synth"
	"github.com/mtlrank/mtlrank/schema"
)

// Write train and evaluation splits of the same synthetic world, and read
// the best achievable scores from their oracles.
func ExampleWriteDataset() {
	dir, err := os.MkdirTemp("", "synth-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	cfg := synth.DefaultConfig(20_000, 1) // rows, seed
	cfg.RowGroupRows = 4096
	train, err := synth.WriteDataset(filepath.Join(dir, "train"), schema.Tenrec(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	// The evaluation rows follow the training rows: same latents, other rows.
	cfg.StartRow, cfg.Rows = cfg.Rows, 5_000
	eval, err := synth.WriteDataset(filepath.Join(dir, "eval"), schema.Tenrec(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "train", "*"))
	for _, f := range files {
		fmt.Println(filepath.Base(f))
	}
	fmt.Println(train.Rows, eval.Rows, eval.AUC["click"] > 0.7)
	// Output:
	// oracle.json
	// part_0000.parquet
	// schema.pbtxt
	// 20000 5000 true
}

// Generate in-memory batches together with the true probabilities.
func ExampleGenerator_BatchWithTruth() {
	g, err := synth.NewGenerator(schema.Tenrec(), synth.DefaultConfig(0, 1))
	if err != nil {
		log.Fatal(err)
	}
	batch, truth := g.BatchWithTruth(1024)
	fmt.Println(batch.Rows, len(batch.Column("item_id").I32), len(truth.Prob["click"]))
	o, err := g.OracleOf(batch, truth)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(o.AUC["click"] > 0.7)
	// Output:
	// 1024 1024 1024
	// true
}
