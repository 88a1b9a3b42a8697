package preprocess_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/mtlrank/mtlrank/preprocess"
)

// Preprocess a CSV log into outDir/train, outDir/eval (a 20% random split)
// and outDir/workflow.json, then reuse the saved workflow on new data.
func ExampleRun() {
	dir, err := os.MkdirTemp("", "preprocess-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "log.csv")
	data := "user,item,device,watch_time,click\n"
	for i := 0; i < 100; i++ {
		data += fmt.Sprintf("u%d,i%d,%s,%d.5,%d\n", i%10, i%7, []string{"ios", "android"}[i%2], i%30, i%3/2)
	}
	if err := os.WriteFile(in, []byte(data), 0o644); err != nil {
		log.Fatal(err)
	}

	spec := preprocess.Spec{
		CSVHeader: true, UserID: "user", ItemID: "item", Categorical: []string{"device"},
		Continuous: []string{"watch_time"}, ContinuousFillNA: "median", Normalize: true,
		BinaryTargets: []string{"click"}, SplitStrategy: "random", EvalPerc: 0.2, Seed: 1,
	}
	out := filepath.Join(dir, "out")
	rep, err := preprocess.Run(spec, []string{in}, nil, out)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("rows:", rep.Train.Rows+rep.Eval.Rows)
	fmt.Println("device embedding rows:", rep.Cardinalities["device"])

	w, err := preprocess.LoadWorkflow(rep.WorkflowPath)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("unseen user id:", w.Categ("user").Encode("u99"))
	// Output:
	// rows: 100
	// device embedding rows: 4
	// unseen user id: 1
}
