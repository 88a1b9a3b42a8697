// Package cli implements the mtlrank command line: synth, preprocess,
// train, eval, report, predict, schema, bench and demo. Run is the whole program
// behind main, so that tests drive the real commands in-process.
//
// Exit status: 0 on success, 1 when a command fails (bad data, I/O), 2 for
// a command-line mistake (unknown, malformed or contradictory flags).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/kernels"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what a command writes to.
type env struct {
	stdout, stderr io.Writer
	// progress is where progress bars go (stderr when it is a terminal).
	progress io.Writer
}

func commands() []command {
	return []command{
		{"train", "train a model (on synthetic TenRec-like data when no data is given), evaluate, save, predict", runTrain},
		{"eval", "evaluate a saved model on a dataset", runEval},
		{"report", "draw training runs (their metrics.json) as one self-contained HTML page", runReport},
		{"predict", "score a dataset with a saved model and write the scores to Parquet, CSV or TSV", runPredict},
		{"serve", "serve models over HTTP and gRPC with the Open Inference Protocol (KServe v2, Triton)", runServe},
		{"synth", "write a synthetic dataset with planted signal (Parquet + schema.pbtxt + oracle.json)", runSynth},
		{"preprocess", "fit NVTabular-style preprocessing on CSV/Parquet and write model-ready Parquet", runPreprocess},
		{"schema", "print, validate, convert or infer a feature schema", runSchema},
		{"bench", "measure training and inference throughput on in-memory synthetic batches", runBench},
		{"demo", "generate data, train an MMoE, compare with the oracle, save, reload and predict", runDemo},
		{"version", "print the module version and VCS revision of this build (also --version)", runVersion},
	}
}

func topUsage(w io.Writer) {
	fmt.Fprintln(w, "mtlrank trains, evaluates and serves multi-task ranking models (MLP, MMoE, CGC, PLE, DCN, DLRM).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: mtlrank <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'mtlrank <command> --help' for the flags of a command.")
}

// Run executes the command line args (without the program name) and
// returns the exit status.
func Run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return RunContext(ctx, args, stdout, stderr)
}

// RunContext is Run with a context (cancelling it stops long work).
func RunContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		topUsage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		topUsage(stdout)
		return 0
	case "-version", "--version":
		args = append([]string{"version"}, args[1:]...)
	}
	e := &env{stdout: stdout, stderr: stderr}
	if f, ok := stderr.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			e.progress = stderr
		}
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		var ue *usageError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "mtlrank %s: %s\nRun 'mtlrank %s --help' for usage.\n", c.name, ue.msg, c.name)
			return 2
		default:
			fmt.Fprintf(stderr, "mtlrank %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "mtlrank: unknown command %q\n\n", args[0])
	topUsage(stderr)
	return 2
}

// helpOr prints the usage of a command to stdout when args ask for help,
// returning flag.ErrHelp (exit 0).
func helpOr(e *env, fs *flag.FlagSet, args []string, synopsis, description string) error {
	if wantsHelp(args) {
		printUsage(e.stdout, fs, synopsis, description)
		return flag.ErrHelp
	}
	return nil
}

// newDevice returns the compute device named by --device (GPU 0 for
// cuda).
func newDevice(name string, threads int) (kernels.Device, error) {
	return newDeviceOn(name, threads, 0)
}

// newDeviceOn is newDevice with GPU gpu for cuda.
func newDeviceOn(name string, threads, gpu int) (kernels.Device, error) {
	switch name {
	case "cpu":
		if threads <= 0 {
			threads = runtime.GOMAXPROCS(0)
		}
		return kernels.NewCPU(threads), nil
	case "cuda":
		dev, err := kernels.NewCUDADevice(gpu)
		if err != nil {
			return nil, fmt.Errorf("--device cuda: %w", err)
		}
		return dev, nil
	}
	return nil, usagef("--device must be cpu or cuda, got %q", name)
}

// localRankVars are the variables in which launchers give a process its
// rank among the job's processes on its node: Open MPI's mpirun, Slurm's
// srun, MPICH's Hydra.
var localRankVars = []string{"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}

// rankGPU is the GPU of a rank of a distributed job: its local rank (the
// first of localRankVars that getenv sets; 0 when none is) modulo gpus, so
// that the ranks of a node take its GPUs in turn. A launcher that gives
// each rank one GPU of its own (CUDA_VISIBLE_DEVICES) leaves gpus at 1.
func rankGPU(getenv func(string) string, gpus func() (int, error)) (int, error) {
	local := 0
	for _, v := range localRankVars {
		s := getenv(v)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("--device cuda: %s=%q is not a local rank (a number >= 0)", v, s)
		}
		local = n
		break
	}
	n, err := gpus()
	if err != nil {
		return 0, fmt.Errorf("--device cuda: %w", err)
	}
	if n < 1 {
		return 0, errors.New("--device cuda: no GPU is visible")
	}
	return local % n, nil
}

// logger writes structured logs to stderr unless quiet.
func logger(e *env, quiet bool) *slog.Logger {
	if quiet {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// writeJSON writes v as indented JSON to path atomically.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data)
}

// table renders rows of cells with aligned columns: columns whose cells
// are all numbers (or n/a) are right-aligned, the others left-aligned.
func table(w io.Writer, header []string, rows [][]string) {
	width := make([]int, len(header))
	numeric := make([]bool, len(header))
	for i, h := range header {
		width[i] = len(h)
		numeric[i] = i > 0
	}
	for _, r := range rows {
		for i, c := range r {
			if i >= len(width) {
				continue
			}
			width[i] = max(width[i], len(c))
			if c != "" && c != "n/a" {
				if _, err := strconv.ParseFloat(c, 64); err != nil {
					numeric[i] = false
				}
			}
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			if i > 0 {
				b.WriteString("  ")
			}
			if numeric[i] {
				fmt.Fprintf(&b, "%*s", width[i], c)
			} else {
				fmt.Fprintf(&b, "%-*s", width[i], c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(header)
	seps := make([]string, len(header))
	for i := range seps {
		seps[i] = strings.Repeat("-", width[i])
	}
	line(seps)
	for _, r := range rows {
		line(r)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
