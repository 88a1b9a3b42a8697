package mtl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/internal/pathguard"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl/metrics"
	"github.com/mtlrank/mtlrank/schema"
)

// LossKey is the metric key of the objective (row-weighted mean over a
// pass); task losses are "<task>/loss".
const LossKey = "loss"

// EarlyStopping stops training when a validation metric stops improving.
type EarlyStopping struct {
	// Metric is a validation metric key ("auc_avg", "loss",
	// "click/binary_output/auc", ...); empty disables early stopping.
	Metric string
	// Mode is "max" or "min"; empty picks "min" for loss, logloss, rmse and
	// mae metrics and "max" for the others.
	Mode string
	// Patience is the number of epochs without improvement after which
	// training stops (default 1).
	Patience int
	// MinDelta is the smallest change that counts as an improvement.
	MinDelta float64
	// RestoreBest puts back the parameters of the best epoch at the end.
	RestoreBest bool
}

// TrainerOptions configures a Trainer. The zero value trains one epoch over
// the whole dataset with no progress reports and no logging.
type TrainerOptions struct {
	// Epochs is the total number of epochs (default 1). A resumed run
	// continues from TrainState.Epoch up to Epochs.
	Epochs int
	// StepsPerEpoch limits the batches of an epoch (0: the whole dataset).
	StepsPerEpoch int
	// ValidationSteps limits the validation batches per epoch (0: all); in
	// a distributed job, the batches of each rank's part.
	ValidationSteps int
	// TrainMetricsSteps: every this many steps the batch just trained on is
	// scored (after the update) and added to the epoch's training metrics
	// ("train/..." keys in EpochResult.Train); an epoch with no such step
	// (fewer steps than TrainMetricsSteps) scores its last batch instead,
	// so that its training metrics are never empty. 0 disables training
	// metrics; each scoring costs one extra forward pass.
	TrainMetricsSteps int
	// LogEvery logs the running loss every this many steps (0: only per
	// epoch).
	LogEvery int
	// EarlyStopping needs a validation dataset.
	EarlyStopping EarlyStopping
	// CheckpointDir, when set, receives a checkpoint after every epoch.
	// With the tables sharded by rows every rank writes its shard there
	// (SaveCheckpoint), unless GatherCheckpoint.
	CheckpointDir string
	// GatherCheckpoint makes a job whose tables are sharded by rows write
	// the one-process checkpoint, its tables gathered to rank 0
	// (SaveGatheredCheckpoint), instead of one file per rank.
	GatherCheckpoint bool
	// Logger receives structured progress records (nil: none).
	Logger *slog.Logger
	// OnProgress, when set, is called as every pass over a dataset (a
	// training epoch, a validation, Evaluate, Predict) starts, after each
	// of its batches and when it ends (see Progress). The library draws
	// nothing itself: the command line draws its bar from these reports.
	OnProgress func(Progress)
	// Events, when set, receives scalars named as Keras' TensorBoard
	// callback names them: every EventEvery steps (0: never) the epoch's
	// running loss as "batch_loss" of run "train" at the global step, and
	// after each epoch, at the 0-based epoch, "epoch_loss", the task losses
	// ("epoch_<task>/loss") and every training metric as "epoch_<key>" of
	// run "train", and every validation metric (gate weights included) as
	// "epoch_<key>" of run "validation".
	Events     EventSink
	EventEvery int
	// LossCurveEvery records the loss curve of each epoch in
	// EpochResult.StepLoss: every this many steps, and at the epoch's end,
	// the row-weighted mean loss (and task losses) of the batches since the
	// previous point. Window means rather than the epoch's running mean, so
	// that a late change is not hidden under the early steps. 0: no curve.
	LossCurveEvery int
	// Comm, when it has more than one rank, makes this Trainer one rank of
	// a data-parallel job (docs/DISTRIBUTED.md): every rank runs NewTrainer
	// and Fit with the same model configuration and the same datasets;
	// each rank trains on its part of the row groups (dist.NewPartition),
	// all ranks take the same steps (StepsPerEpoch of the largest part,
	// empty batches where a part runs out), the gradients are summed over
	// the ranks and every rank applies the same update, so that a step is
	// the step of one process on the ranks' batches together: the global
	// batch is the dataset's batch size times the ranks. Epoch results
	// count the rows of all ranks, and each step's rows over all ranks
	// follow from the partition (no collective asks for them). Validation
	// and Evaluate are partitioned too: each rank scores its part of the
	// row groups (a rank may have none), and the scores and labels are
	// gathered, so that every rank returns the metrics of the whole set
	// (AUC, logloss, RMSE and the other per-row metrics the bits of one
	// process on an unshuffled set; the losses and gate means within
	// rounding of them, being sums of per-batch means). Training metrics
	// (TrainMetricsSteps) score every rank's batch of the step, gathered
	// likewise. Only rank 0 writes checkpoints and sends
	// Events; progress reports and logs come from every rank (give them to
	// rank 0 only). A failure outside a step (unreadable data) leaves the
	// other ranks waiting: the process must exit, which ends an MPI job.
	// Nil: one process.
	Comm dist.Comm
	// EmbeddingSharding is how a distributed job holds the embedding
	// tables: ShardReplicate ("replicate", the default; "" is the same),
	// every rank the whole tables, or ShardRow ("row"), each rank the rows
	// id mod N == rank of every table and their optimizer state, which
	// needs a model built for it (NewShardedModel, LoadShardedCheckpoint).
	// With "row", lookups are collective: a rank without rows joins the
	// others' lookups in a step, an evaluation and the training metrics'
	// scoring (Model.JoinLookup), and a checkpoint is gathered to rank 0,
	// which writes it (every rank takes part).
	EmbeddingSharding string
}

// Progress is one report of a pass over a dataset (TrainerOptions.OnProgress).
// A pass sends a report with Done == 0 when it starts, one after each
// batch, and one with Finished set when it ends; a pass that fails sends
// no Finished report.
type Progress struct {
	// Phase names the pass: "epoch 2/3", "validation 2/3", "evaluate" or
	// "predict".
	Phase string
	// Train is set for a training epoch, whose reports carry Loss.
	Train bool
	// Steps counts the batches done; Done the examples done, of Total
	// (the dataset's rows, or fewer when StepsPerEpoch stops the epoch
	// early).
	Steps       int
	Done, Total int64
	// Loss is the running training loss of the epoch (the row-weighted
	// mean over its batches so far); 0 when Train is not set.
	Loss float64
	// Finished marks the last report of the pass.
	Finished bool
}

// progress sends the reports of one pass; its methods do nothing on a nil
// progress (no OnProgress).
type progress struct {
	f func(Progress)
	p Progress
}

// startProgress reports the start of a pass over total examples (nil
// without OnProgress).
func (t *Trainer) startProgress(phase string, train bool, total int64) *progress {
	if t.opts.OnProgress == nil {
		return nil
	}
	p := &progress{f: t.opts.OnProgress, p: Progress{Phase: phase, Train: train, Total: total}}
	p.f(p.p)
	return p
}

// add reports a batch of n examples; loss is the epoch's running loss.
func (p *progress) add(n int64, loss float64) {
	if p == nil {
		return
	}
	p.p.Steps++
	p.p.Done += n
	if p.p.Train {
		p.p.Loss = loss
	}
	p.f(p.p)
}

// finish reports the end of the pass.
func (p *progress) finish() {
	if p == nil {
		return
	}
	p.p.Finished = true
	p.f(p.p)
}

// EventSink receives training scalars (TrainerOptions.Events).
type EventSink interface {
	Scalar(run, tag string, step int64, value float64) error
}

// EpochResult summarises one epoch. Its JSON form (as in the CLI's
// metrics.json) uses snake_case keys.
type EpochResult struct {
	Epoch    int   `json:"epoch"` // 1-based
	Steps    int   `json:"steps"`
	Examples int64 `json:"examples"`
	// Loss is the row-weighted mean training loss over the epoch (each
	// batch's loss before its update); TaskLoss per task name.
	Loss     float64            `json:"loss"`
	TaskLoss map[string]float64 `json:"task_loss"`
	// Train holds the training metrics when TrainMetricsSteps > 0.
	Train metrics.Results `json:"train,omitempty"`
	// Validation holds the validation metrics (nil without a validation
	// set), including "loss".
	Validation     metrics.Results `json:"validation,omitempty"`
	Seconds        float64         `json:"seconds"`
	ExamplesPerSec float64         `json:"examples_per_s"`
	// StepLoss is the epoch's loss curve (TrainerOptions.LossCurveEvery).
	StepLoss []StepLoss `json:"step_loss,omitempty"`
}

// StepLoss is one point of a loss curve: the row-weighted mean training
// loss (and task losses) of the batches after the previous point, up to
// and including the update that brought the model to Step.
type StepLoss struct {
	Step     int                `json:"step"`
	Steps    int                `json:"steps"` // batches in the window
	Loss     float64            `json:"loss"`
	TaskLoss map[string]float64 `json:"task_loss"`
}

// History is the outcome of Fit. Its JSON form uses snake_case keys, with
// best_value null when it is NaN.
type History struct {
	Epochs []EpochResult `json:"epochs"`
	// BestEpoch and BestValue are early stopping's best epoch (1-based; 0
	// without early stopping) and its metric value.
	BestEpoch int     `json:"best_epoch"`
	BestValue float64 `json:"-"`
	// StoppedEarly is true when early stopping ended the run.
	StoppedEarly bool `json:"stopped_early"`
	// State is the training state at the end (what a checkpoint stores).
	State TrainState `json:"state"`
}

// MarshalJSON writes History with best_value as a number, or null when it
// is NaN or infinite (JSON has no NaN).
func (h History) MarshalJSON() ([]byte, error) {
	type plain History
	var best *float64
	if !math.IsNaN(h.BestValue) && !math.IsInf(h.BestValue, 0) {
		best = &h.BestValue
	}
	return json.Marshal(struct {
		plain
		BestValue *float64 `json:"best_value"`
	}{plain(h), best})
}

// Trainer runs the training loop, evaluation and batch prediction of a
// Model over loader datasets. It is not safe for concurrent use.
type Trainer struct {
	m     *Model
	opts  TrainerOptions
	log   *slog.Logger
	state TrainState
	// rank0 is set in one process and on rank 0 of a distributed job: the
	// rank that writes.
	rank0 bool
	// noPlan makes distributed steps sum their row counts over the ranks
	// instead of taking them from the partition (tests compare the two).
	noPlan bool
	// preds holds one output buffer per task, sized to the model's batch.
	preds [][]float32
	// conv converts non-float label columns.
	conv [][]float32
	mask []float32
}

// NewTrainer returns a Trainer for m. Options are checked here.
func NewTrainer(m *Model, opts TrainerOptions) (*Trainer, error) {
	if m == nil {
		return nil, errors.New("mtl: NewTrainer: nil model")
	}
	if opts.Epochs == 0 {
		opts.Epochs = 1
	}
	switch {
	case opts.Epochs < 0:
		return nil, fmt.Errorf("mtl: trainer Epochs must be >= 1, got %d", opts.Epochs)
	case opts.StepsPerEpoch < 0:
		return nil, fmt.Errorf("mtl: trainer StepsPerEpoch must be >= 0, got %d", opts.StepsPerEpoch)
	case opts.ValidationSteps < 0:
		return nil, fmt.Errorf("mtl: trainer ValidationSteps must be >= 0, got %d", opts.ValidationSteps)
	case opts.TrainMetricsSteps < 0:
		return nil, fmt.Errorf("mtl: trainer TrainMetricsSteps must be >= 0, got %d", opts.TrainMetricsSteps)
	case opts.LogEvery < 0:
		return nil, fmt.Errorf("mtl: trainer LogEvery must be >= 0, got %d", opts.LogEvery)
	case opts.LossCurveEvery < 0:
		return nil, fmt.Errorf("mtl: trainer LossCurveEvery must be >= 0, got %d", opts.LossCurveEvery)
	}
	es := &opts.EarlyStopping
	if es.Metric != "" {
		if es.Mode == "" {
			es.Mode = defaultMode(es.Metric)
		}
		if es.Mode != "max" && es.Mode != "min" {
			return nil, fmt.Errorf("mtl: early stopping mode must be max or min, got %q", es.Mode)
		}
		if es.Patience == 0 {
			es.Patience = 1
		}
		if es.Patience < 0 {
			return nil, fmt.Errorf("mtl: early stopping patience must be >= 1, got %d", es.Patience)
		}
		if es.MinDelta < 0 || math.IsNaN(es.MinDelta) {
			return nil, fmt.Errorf("mtl: early stopping min delta must be >= 0, got %v", es.MinDelta)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := m.checkSharding(opts.EmbeddingSharding, opts.Comm); err != nil {
		return nil, err
	}
	if err := m.setComm(opts.Comm); err != nil {
		return nil, err
	}
	t := &Trainer{m: m, opts: opts, log: log, rank0: opts.Comm == nil || opts.Comm.Rank() == 0,
		state: TrainState{Step: m.Step(), Seed: m.cfg.Seed, BestValue: math.NaN(), BestMetric: es.Metric}}
	t.preds = make([][]float32, len(m.tasks))
	t.conv = make([][]float32, len(m.tasks))
	for i := range t.preds {
		t.preds[i] = make([]float32, m.MaxBatch())
	}
	if es.Metric != "" {
		if err := t.checkMetric(es.Metric); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// checkMetric refuses an early-stopping metric that validation will not
// compute, before the first step rather than after the first epoch: the
// keys are those of an evaluation of the model's tasks (per-task metrics
// and losses, auc_avg, loss) and the gate weights ("gate/...").
func (t *Trainer) checkMetric(metric string) error {
	keys := metrics.NewEvaluator(t.taskSpecs()).Results()
	keys[LossKey] = 0
	for _, task := range t.m.tasks {
		keys[metrics.Key(task.Name, LossKey)] = 0
	}
	if _, ok := keys[metric]; ok || strings.HasPrefix(metric, "gate/") {
		return nil
	}
	return fmt.Errorf("mtl: early stopping metric %q is not a validation metric of this model (%s)", metric, strings.Join(keys.Keys(), ", "))
}

// defaultMode is "min" for loss-like metrics and "max" otherwise.
func defaultMode(metric string) string {
	last := metric[strings.LastIndexByte(metric, '/')+1:]
	switch last {
	case LossKey, metrics.LogLoss, metrics.RMSE, metrics.MAE:
		return "min"
	}
	return "max"
}

// Model returns the model being trained.
func (t *Trainer) Model() *Model { return t.m }

// State returns the current training state.
func (t *Trainer) State() TrainState { return t.state }

// Resume continues from a checkpoint's state: Fit starts at epoch
// state.Epoch+1 and early stopping keeps its best value and patience
// counter. The model's step must already be restored (LoadCheckpoint does).
func (t *Trainer) Resume(state *TrainState) {
	if state == nil {
		return
	}
	t.state = *state
	t.state.Step = t.m.Step()
	if t.state.BestMetric != t.opts.EarlyStopping.Metric {
		// A different metric: the recorded best does not apply.
		t.state.BestMetric = t.opts.EarlyStopping.Metric
		t.state.BestValue = math.NaN()
		t.state.BestEpoch = 0
		t.state.BadEpochs = 0
	}
}

// Fit trains the model on train for the configured epochs, validating on
// val after each epoch (val may be nil). It stops with an error naming the
// step and task when a loss becomes NaN or infinite, and returns the
// history of the epochs it ran (also on error).
func (t *Trainer) Fit(ctx context.Context, train, val *loader.Dataset) (*History, error) {
	if train == nil {
		return nil, errors.New("mtl: Fit: nil training dataset")
	}
	es := t.opts.EarlyStopping
	if es.Metric != "" && val == nil {
		return nil, fmt.Errorf("mtl: Fit: early stopping on %q needs a validation dataset", es.Metric)
	}
	h := &History{BestValue: math.NaN()}
	var best []hostTensor
	t.log.Info("training", "model", t.m.cfg.String(), "rows", train.Rows(), "epochs", t.opts.Epochs,
		"start_epoch", t.state.Epoch+1, "step", t.m.Step())
	part, err := t.partition(train)
	if err != nil {
		return h, err
	}
	for epoch := t.state.Epoch; epoch < t.opts.Epochs; epoch++ {
		res, err := t.trainEpoch(ctx, part, epoch)
		if err != nil {
			h.State = t.state
			return h, err
		}
		if val != nil {
			vm, err := t.evaluate(ctx, val, t.opts.ValidationSteps, fmt.Sprintf("validation %d/%d", epoch+1, t.opts.Epochs))
			if err != nil {
				h.Epochs = append(h.Epochs, res)
				h.State = t.state
				return h, fmt.Errorf("mtl: validation after epoch %d: %w", epoch+1, err)
			}
			res.Validation = vm
			t.state.Metrics = vm
		}
		t.state.Epoch = epoch + 1
		t.state.Step = t.m.Step()
		h.Epochs = append(h.Epochs, res)
		t.logEpoch(res)
		if err := t.epochEvents(res); err != nil {
			h.State = t.state
			return h, err
		}

		stop := false
		if es.Metric != "" {
			v, ok := res.Validation[es.Metric]
			if !ok {
				h.State = t.state
				return h, fmt.Errorf("mtl: early stopping metric %q is not among the validation metrics (%s)", es.Metric, strings.Join(res.Validation.Keys(), ", "))
			}
			if t.improved(v) {
				t.state.BestValue, t.state.BestEpoch, t.state.BadEpochs = v, epoch+1, 0
				if es.RestoreBest {
					best = snapshot(t.m)
				}
			} else {
				t.state.BadEpochs++
				if t.state.BadEpochs >= es.Patience {
					stop = epoch+1 < t.opts.Epochs
				}
			}
		}
		if t.opts.CheckpointDir != "" && (t.rank0 || t.m.RowSharded()) {
			// (a row-sharded model's save is collective)
			save := SaveCheckpoint
			if t.opts.GatherCheckpoint {
				save = SaveGatheredCheckpoint
			}
			if err := save(t.opts.CheckpointDir, t.m, &t.state); err != nil {
				h.State = t.state
				return h, err
			}
		}
		if stop {
			h.StoppedEarly = true
			t.log.Info("early stopping", "metric", es.Metric, "best", t.state.BestValue, "best_epoch", t.state.BestEpoch)
			break
		}
	}
	if es.Metric != "" {
		h.BestEpoch, h.BestValue = t.state.BestEpoch, t.state.BestValue
		if es.RestoreBest && best != nil && t.state.BestEpoch != t.state.Epoch {
			restore(t.m, best)
			t.log.Info("restored best parameters", "epoch", t.state.BestEpoch, es.Metric, t.state.BestValue)
		}
	}
	h.State = t.state
	return h, nil
}

// improved reports whether v beats the best value so far. NaN never
// improves.
func (t *Trainer) improved(v float64) bool {
	if math.IsNaN(v) {
		return false
	}
	best := t.state.BestValue
	if math.IsNaN(best) {
		return true
	}
	d := t.opts.EarlyStopping.MinDelta
	if t.opts.EarlyStopping.Mode == "min" {
		return v < best-d
	}
	return v > best+d
}

// epochEvents sends an epoch's scalars to the event sink.
func (t *Trainer) epochEvents(r EpochResult) error {
	ev := t.opts.Events
	if ev == nil || !t.rank0 {
		return nil
	}
	step := int64(r.Epoch - 1)
	if err := ev.Scalar("train", "epoch_loss", step, r.Loss); err != nil {
		return err
	}
	for _, task := range t.m.tasks {
		if err := ev.Scalar("train", "epoch_"+task.Name+"/loss", step, r.TaskLoss[task.Name]); err != nil {
			return err
		}
	}
	for _, run := range []struct {
		name string
		res  metrics.Results
	}{{"train", r.Train}, {"validation", r.Validation}} {
		for _, k := range run.res.Keys() {
			if err := ev.Scalar(run.name, "epoch_"+k, step, run.res[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *Trainer) logEpoch(r EpochResult) {
	attrs := []any{"epoch", r.Epoch, "steps", r.Steps, "loss", r.Loss, "examples_per_s", math.Round(r.ExamplesPerSec), "seconds", r.Seconds}
	for _, k := range []string{metrics.AUCAvg, LossKey} {
		if v, ok := r.Validation[k]; ok {
			attrs = append(attrs, "val_"+k, v)
		}
	}
	if v, ok := r.Train[metrics.AUCAvg]; ok {
		attrs = append(attrs, "train_auc_avg", v)
	}
	t.log.Info("epoch done", attrs...)
}

// rankPart is the part of the training data this rank trains on.
type rankPart struct {
	ds *loader.Dataset
	// steps is the steps every rank takes per epoch (0: until the data
	// ends, in one process); rows the rows of all ranks.
	steps int
	rows  int64
	// p is the partition of a distributed job, from which every rank
	// knows every rank's rows of each step.
	p dist.Partition
}

// partition returns this rank's part of train: all of it in one process;
// in a distributed job the row groups dist.NewPartition gives the rank,
// after checking that every rank sees the same files.
func (t *Trainer) partition(train *loader.Dataset) (rankPart, error) {
	c := t.opts.Comm
	if c == nil || c.Size() == 1 {
		return rankPart{ds: train, rows: train.Rows()}, nil
	}
	layout := train.RowGroupRows()
	if err := dist.AgreeOnLayout(c, train.Files(), layout); err != nil {
		return rankPart{}, fmt.Errorf("mtl: Fit: %s: %w", train.Path(), err)
	}
	p, err := dist.NewPartition(layout, c.Size())
	if err != nil {
		return rankPart{}, fmt.Errorf("mtl: Fit: %s: %w", train.Path(), err)
	}
	steps, err := p.StepsPerEpoch(train.BatchSize(), train.DropLast())
	if err != nil {
		return rankPart{}, fmt.Errorf("mtl: Fit: %w", err)
	}
	ds, err := train.Select(p.Parts[c.Rank()])
	if err != nil {
		return rankPart{}, fmt.Errorf("mtl: Fit: %w", err)
	}
	return rankPart{ds: ds, steps: steps, rows: train.Rows(), p: p}, nil
}

func (t *Trainer) trainEpoch(ctx context.Context, part rankPart, epoch int) (EpochResult, error) {
	res := EpochResult{Epoch: epoch + 1, TaskLoss: map[string]float64{}}
	train := part.ds
	total := part.rows
	limit := t.opts.StepsPerEpoch
	if part.steps > 0 && (limit == 0 || part.steps < limit) {
		limit = part.steps
	}
	distributed := part.steps > 0
	if t.opts.StepsPerEpoch > 0 {
		total = min(total, int64(t.opts.StepsPerEpoch)*int64(t.m.MaxBatch()))
	}
	bar := t.startProgress(fmt.Sprintf("epoch %d/%d", epoch+1, t.opts.Epochs), true, total)
	var trainEval *metrics.Evaluator
	var trainScored *scored // a distributed job's rows of a scored step
	if t.opts.TrainMetricsSteps > 0 {
		trainEval = metrics.NewEvaluator(t.taskSpecs())
		if distributed {
			trainScored = newScored(len(t.m.tasks))
		}
	}
	// score adds a trained batch to the training metrics: in a distributed
	// job every rank's batch of the step, on every rank (b may be empty).
	score := func(b *loader.Batch) error {
		if distributed {
			return t.scoreDist(b, trainEval, trainScored)
		}
		return t.score(b, trainEval)
	}
	// unscored is the last batch trained on while no step of the epoch has
	// been scored: the epoch's last batch is scored when no other is.
	var unscored *loader.Batch
	defer func() { unscored.Release() }()
	it := train.Epoch(ctx, epoch)
	defer it.Close()
	start := time.Now()
	var lossSum float64
	taskSum := make([]float64, len(t.m.tasks))
	var curve lossWindow
	if t.opts.LossCurveEvery > 0 {
		curve.taskSum = make([]float64, len(t.m.tasks))
	}
	for limit == 0 || res.Steps < limit {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		b, err := it.Next()
		if errors.Is(err, io.EOF) {
			if !distributed {
				break
			}
			// This rank's part has run out: it joins the step with an
			// empty batch, so that the others' step is complete.
			b, err = &loader.Batch{}, nil
		}
		if err != nil {
			return res, fmt.Errorf("mtl: epoch %d: reading training data: %w", epoch+1, err)
		}
		step := t.m.Step()
		if distributed && !t.noPlan {
			// Every rank's rows of this step follow from the partition: the
			// step needs no allreduce of its row count.
			bs, dl := train.BatchSize(), train.DropLast()
			t.m.exec.PlanRows(globalRows(part.p, res.Steps, bs, dl), part.p.BatchRows(t.opts.Comm.Rank(), res.Steps, bs, dl))
		}
		st, err := t.m.TrainStep(b)
		if err != nil {
			b.Release()
			if nf := (*NonFiniteLossError)(nil); errors.As(err, &nf) {
				return res, fmt.Errorf("mtl: epoch %d: %w", epoch+1, err) // it names the step
			}
			return res, fmt.Errorf("mtl: epoch %d, step %d: %w", epoch+1, step, err)
		}
		if err := t.checkFinite(st, step, epoch, b.Source); err != nil {
			b.Release()
			return res, err
		}
		rows := float64(b.Rows)
		if distributed {
			rows = float64(t.m.exec.GlobalRows()) // the loss is the step's over all ranks
		}
		lossSum += st.Loss * rows
		for i, l := range st.TaskLoss {
			taskSum[i] += l * rows
		}
		res.Steps++
		res.Examples += int64(rows)
		if t.opts.LossCurveEvery > 0 {
			curve.add(st, rows)
			if curve.steps == t.opts.LossCurveEvery {
				res.StepLoss = append(res.StepLoss, curve.point(t.m.Step(), t.m.tasks))
			}
		}
		// In a distributed job every rank takes part in the scoring of a
		// step, with or without rows of its own.
		has := b.Rows > 0 || distributed
		if trainEval != nil && res.Steps%t.opts.TrainMetricsSteps == 0 && has {
			unscored.Release()
			unscored = nil
			if err := score(b); err != nil {
				b.Release()
				return res, fmt.Errorf("mtl: epoch %d, step %d: training metrics: %w", epoch+1, step, err)
			}
		}
		if trainEval != nil && res.Steps < t.opts.TrainMetricsSteps && has {
			unscored.Release()
			unscored = b
		} else {
			b.Release()
		}
		bar.add(int64(rows), lossSum/float64(res.Examples))
		if t.opts.Events != nil && t.opts.EventEvery > 0 && res.Steps%t.opts.EventEvery == 0 {
			if err := t.opts.Events.Scalar("train", "batch_loss", int64(t.m.Step()), lossSum/float64(res.Examples)); err != nil {
				return res, err
			}
		}
		if t.opts.LogEvery > 0 && res.Steps%t.opts.LogEvery == 0 {
			el := time.Since(start).Seconds()
			t.log.Info("step", "epoch", epoch+1, "step", t.m.Step(), "loss", lossSum/float64(res.Examples),
				"examples_per_s", math.Round(float64(res.Examples)/el))
		}
	}
	bar.finish()
	if curve.steps > 0 {
		res.StepLoss = append(res.StepLoss, curve.point(t.m.Step(), t.m.tasks))
	}
	if unscored != nil {
		// No update since it was trained on: scored as right after its step.
		if err := score(unscored); err != nil {
			return res, fmt.Errorf("mtl: epoch %d, step %d: training metrics: %w", epoch+1, t.m.Step()-1, err)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	t.state.Step = t.m.Step()
	if res.Examples == 0 {
		return res, fmt.Errorf("mtl: epoch %d: the training data has no batch", epoch+1)
	}
	res.Loss = lossSum / float64(res.Examples)
	for i, task := range t.m.tasks {
		res.TaskLoss[task.Name] = taskSum[i] / float64(res.Examples)
	}
	if res.Seconds > 0 {
		res.ExamplesPerSec = float64(res.Examples) / res.Seconds
	}
	if trainEval != nil {
		res.Train = trainEval.Results()
	}
	return res, nil
}

// lossWindow accumulates the batches of one point of a loss curve.
type lossWindow struct {
	steps   int
	rows    float64
	sum     float64
	taskSum []float64
}

func (w *lossWindow) add(st StepStats, rows float64) {
	w.steps++
	w.rows += rows
	w.sum += st.Loss * rows
	for i, l := range st.TaskLoss {
		w.taskSum[i] += l * rows
	}
}

// point returns the window's means and empties it.
func (w *lossWindow) point(step int, tasks []Task) StepLoss {
	p := StepLoss{Step: step, Steps: w.steps, Loss: w.sum / w.rows, TaskLoss: make(map[string]float64, len(tasks))}
	for i, task := range tasks {
		p.TaskLoss[task.Name] = w.taskSum[i] / w.rows
	}
	w.steps, w.rows, w.sum = 0, 0, 0
	clear(w.taskSum)
	return p
}

// checkFinite turns a NaN/Inf loss into an error naming the step and task.
func (t *Trainer) checkFinite(st StepStats, step, epoch int, source string) error {
	if !math.IsNaN(st.Loss) && !math.IsInf(st.Loss, 0) {
		return nil
	}
	where := fmt.Sprintf("epoch %d, step %d", epoch+1, step)
	if source != "" {
		where += " (batch " + source + ")"
	}
	for i, l := range st.TaskLoss {
		if math.IsNaN(l) || math.IsInf(l, 0) {
			return fmt.Errorf("mtl: loss of task %s is %v at %s: training diverged (lower the learning rate, check the data for extreme values)", t.m.tasks[i].Name, l, where)
		}
	}
	return fmt.Errorf("mtl: loss is %v at %s while every task loss is finite: the regularisation term overflowed", st.Loss, where)
}

func (t *Trainer) taskSpecs() []metrics.TaskSpec {
	specs := make([]metrics.TaskSpec, len(t.m.tasks))
	for i, task := range t.m.tasks {
		k := metrics.KindBinary
		if task.Kind == Regression {
			k = metrics.KindRegression
		}
		specs[i] = metrics.TaskSpec{Name: task.Name, Kind: k}
	}
	return specs
}

// score predicts b and adds the predictions, labels and gate weights to e.
func (t *Trainer) score(b *loader.Batch, e *metrics.Evaluator) error {
	err := t.predictLabeled(b, func(i int, preds, labels, mask []float32) error {
		if err := e.Add(i, preds, labels, mask); err != nil {
			return fmt.Errorf("batch %s: %w", b.Source, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for name, w := range t.m.GateWeights() {
		e.AddGate(name, w, b.Rows)
	}
	return nil
}

// predictLabeled predicts b and hands add, task by task, the task's
// predictions, labels and sample-space mask (nil without one). The slices are
// the Trainer's buffers: add copies what it keeps.
func (t *Trainer) predictLabeled(b *loader.Batch, add func(task int, preds, labels, mask []float32) error) error {
	if err := t.m.Predict(b, t.preds); err != nil {
		return err
	}
	for i := range t.m.tasks {
		labels, mask, err := t.taskLabels(b, i)
		if err != nil {
			return err
		}
		if err := add(i, t.preds[i][:b.Rows], labels, mask); err != nil {
			return err
		}
	}
	return nil
}

// taskLabels returns task i's labels in b and, when the task has a sample
// space, its mask (1 inside); the buffers are reused by the next call.
func (t *Trainer) taskLabels(b *loader.Batch, i int) (labels, mask []float32, err error) {
	task := t.m.tasks[i]
	if labels, err = t.floatColumn(b, task.Target, i); err != nil {
		return nil, nil, err
	}
	if col := t.m.cfg.SampleSpace[task.Target]; col != "" {
		if mask, err = t.sampleMask(b, col); err != nil {
			return nil, nil, err
		}
	}
	return labels, mask, nil
}

// floatColumn returns a scalar column of b as float32 (converted into a
// per-task buffer when it holds ids).
func (t *Trainer) floatColumn(b *loader.Batch, name string, slot int) ([]float32, error) {
	c := b.Column(name)
	if c == nil {
		return nil, fmt.Errorf("batch %s has no column %q", b.Source, name)
	}
	if c.Offsets != nil {
		return nil, fmt.Errorf("batch %s: column %q is a list, want one value per row", b.Source, name)
	}
	switch {
	case c.F32 != nil:
		return c.F32[:b.Rows], nil
	case c.I32 != nil:
		buf := t.grow(slot, b.Rows)
		for i, v := range c.I32[:b.Rows] {
			buf[i] = float32(v)
		}
		return buf, nil
	case c.I64 != nil:
		buf := t.grow(slot, b.Rows)
		for i, v := range c.I64[:b.Rows] {
			buf[i] = float32(v)
		}
		return buf, nil
	}
	if b.Rows == 0 {
		return nil, nil
	}
	return nil, fmt.Errorf("batch %s: column %q holds no values", b.Source, name)
}

func (t *Trainer) grow(slot, n int) []float32 {
	if cap(t.conv[slot]) < n {
		t.conv[slot] = make([]float32, n)
	}
	return t.conv[slot][:n]
}

func (t *Trainer) sampleMask(b *loader.Batch, col string) ([]float32, error) {
	c := b.Column(col)
	if c == nil {
		return nil, fmt.Errorf("batch %s has no sample-space column %q", b.Source, col)
	}
	if cap(t.mask) < b.Rows {
		t.mask = make([]float32, b.Rows)
	}
	mask := t.mask[:b.Rows]
	for i := range mask {
		var v float64
		switch {
		case c.F32 != nil:
			v = float64(c.F32[i])
		case c.I32 != nil:
			v = float64(c.I32[i])
		case c.I64 != nil:
			v = float64(c.I64[i])
		}
		mask[i] = 0
		if v == 1 {
			mask[i] = 1
		}
	}
	return mask, nil
}

// Evaluate scores every batch of ds (in order) and returns the metrics:
// the per-task metrics of the metrics package (binary: auc, pr_auc,
// logloss, precision, recall, binary_accuracy; regression: rmse, mae),
// auc_avg, the mean gate weights, "loss" and "<task>/loss". Tasks with a
// sample space are scored only on the rows inside it (where the column is
// 1), as they are trained. Sample weights do not weight the metrics.
func (t *Trainer) Evaluate(ctx context.Context, ds *loader.Dataset) (metrics.Results, error) {
	return t.evaluate(ctx, ds, 0, "evaluate")
}

func (t *Trainer) evaluate(ctx context.Context, ds *loader.Dataset, maxSteps int, desc string) (metrics.Results, error) {
	if ds == nil {
		return nil, errors.New("mtl: Evaluate: nil dataset")
	}
	if t.distributed() {
		return t.evaluateDist(ctx, ds, maxSteps, desc)
	}
	e := metrics.NewEvaluator(t.taskSpecs())
	bar := t.startProgress(desc, false, ds.Rows())
	it := ds.Epoch(ctx, 0)
	defer it.Close()
	var rows float64
	var lossSum float64
	taskSum := make([]float64, len(t.m.tasks))
	for steps := 0; maxSteps == 0 || steps < maxSteps; steps++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, err := it.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("mtl: reading evaluation data: %w", err)
		}
		st, err := t.m.Loss(b)
		if err != nil {
			b.Release()
			return nil, err
		}
		n := float64(b.Rows)
		rows += n
		lossSum += st.Loss * n
		for i, l := range st.TaskLoss {
			taskSum[i] += l * n
		}
		err = t.score(b, e)
		b.Release()
		if err != nil {
			return nil, fmt.Errorf("mtl: evaluate: %w", err)
		}
		bar.add(int64(n), 0)
	}
	bar.finish()
	if rows == 0 {
		return nil, errors.New("mtl: evaluate: the dataset has no rows")
	}
	out := e.Results()
	out[LossKey] = lossSum / rows
	for i, task := range t.m.tasks {
		out[metrics.Key(task.Name, LossKey)] = taskSum[i] / rows
	}
	return out, nil
}

// PredictOptions configures Trainer.Predict.
type PredictOptions struct {
	// KeepColumns are data columns copied next to the scores, in this
	// order. A column the dataset reads is copied from its batches; any
	// other (a pass-through column such as a raw string id, which the
	// loader does not carry) is read straight from the dataset's files
	// with its type and nulls, which needs a dataset that does not
	// shuffle. Nil keeps none.
	KeepColumns []string
	// RowGroupRows of the output file (default the loader's).
	RowGroupRows int
	// Schema describes the kept columns (their dtypes); nil means the
	// model's schema.
	Schema *schema.Schema
	// Format of the output: "parquet", "csv" or "tsv" (a header line, then
	// one line per row; list columns cannot be kept). Empty: the format of
	// the path's extension, else parquet (see PredictionFile).
	Format string
}

// predictionFormats maps the extensions of prediction files to formats.
var predictionFormats = map[string]string{".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}

// PredictionFile returns the file Predict writes for path and format, and
// the format. A path ending in .parquet, .csv or .tsv (in any case) is
// the file, and an empty format is the extension's; any other path is a
// folder receiving predictions.<format> (parquet when format is empty). A
// format that contradicts the extension ("scores.csv" with "parquet") is
// an error: it would otherwise make a folder named like a file.
func PredictionFile(path, format string) (file, outFormat string, err error) {
	if format != "" && format != "parquet" && format != "csv" && format != "tsv" {
		return "", "", fmt.Errorf("mtl: predict: format %q: want parquet, csv or tsv", format)
	}
	byExt := predictionFormats[strings.ToLower(filepath.Ext(path))]
	switch {
	case byExt == "":
		if format == "" {
			format = "parquet"
		}
		return filepath.Join(path, "predictions."+format), format, nil
	case format != "" && format != byExt:
		return "", "", fmt.Errorf("mtl: predict: %s has the extension of %s but the format is %s; name the file .%s or give the format %s",
			path, byExt, format, format, byExt)
	}
	return path, byExt, nil
}

// Predict scores every row of ds in order and writes a file at path with
// the kept columns followed by one float32 column per task, named like the
// task ("click/binary_output": the probability; regression tasks: the
// value), in opts.Format. A path without one of the formats' extensions
// (.parquet, .csv, .tsv) is a folder that receives predictions.<ext>
// (PredictionFile); missing folders are created. The file is written
// under a temporary name and renamed. ds must not shuffle rows if the output is to be joined with the
// input by position. It returns the rows written.
func (t *Trainer) Predict(ctx context.Context, ds *loader.Dataset, path string, opts PredictOptions) (int64, error) {
	if ds == nil {
		return 0, errors.New("mtl: Predict: nil dataset")
	}
	path, format, err := PredictionFile(path, opts.Format)
	if err != nil {
		return 0, err
	}
	// The scores may not replace the data, nor land in its folder, where
	// the next read of the dataset would take them for data.
	data := []pathguard.Path{{What: "the data", Path: ds.Path()}}
	preds := []pathguard.Path{{What: "the predictions", Path: path}}
	if err := pathguard.Check(data, preds); err != nil {
		return 0, fmt.Errorf("mtl: predict: %w", err)
	}
	if err := pathguard.CheckDatasetFolders(data, preds); err != nil {
		return 0, fmt.Errorf("mtl: predict: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o777); err != nil {
		return 0, fmt.Errorf("mtl: predict: %w", err)
	}
	out := &schema.Schema{}
	seen := map[string]bool{}
	src := opts.Schema
	if src == nil {
		src = t.m.schema
	}
	for _, c := range opts.KeepColumns {
		f := src.Feature(c)
		if f == nil {
			return 0, fmt.Errorf("mtl: predict: kept column %q is not in the schema", c)
		}
		if seen[c] {
			return 0, fmt.Errorf("mtl: predict: kept column %q listed twice", c)
		}
		seen[c] = true
		out.Features = append(out.Features, f.Clone())
	}
	for _, task := range t.m.tasks {
		if seen[task.Name] {
			return 0, fmt.Errorf("mtl: predict: kept column %q has the name of a score column", task.Name)
		}
		out.Features = append(out.Features, &schema.Feature{Name: task.Name, DType: schema.Float32})
	}
	var w predictionSink
	switch format {
	case "parquet":
		w, err = loader.NewWriter(path, out, loader.WriterOptions{RowGroupRows: opts.RowGroupRows})
	default:
		comma := ','
		if format == "tsv" {
			comma = '\t'
		}
		w, err = newTextSink(path, out.Names(), comma)
	}
	if err != nil {
		return 0, fmt.Errorf("mtl: predict: %w", err)
	}
	var raw []string
	for _, c := range opts.KeepColumns {
		if !slices.Contains(ds.Columns(), c) {
			raw = append(raw, c)
		}
	}
	if len(raw) > 0 && ds.Shuffles() {
		_ = w.Abort()
		return 0, fmt.Errorf("mtl: predict: kept column %q is read from the files, in file order: the dataset must not shuffle", raw[0])
	}
	n, err := t.predictInto(ctx, ds, w, opts.KeepColumns, raw)
	if err != nil {
		_ = w.Abort()
		return 0, fmt.Errorf("mtl: predict %s: %w", path, err)
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("mtl: predict: %w", err)
	}
	return n, nil
}

func (t *Trainer) predictInto(ctx context.Context, ds *loader.Dataset, w predictionSink, keep, raw []string) (int64, error) {
	bar := t.startProgress("predict", false, ds.Rows())
	it := ds.Epoch(ctx, 0)
	defer it.Close()
	var rr *rawColumns
	if len(raw) > 0 {
		rr = newRawColumns(ctx, ds.Files(), raw)
		defer rr.Close()
	}
	var rows int64
	cols := make(map[string]any, len(keep)+len(t.m.tasks))
	for {
		if err := ctx.Err(); err != nil {
			return rows, err
		}
		b, err := it.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rows, err
		}
		err = t.m.Predict(b, t.preds)
		var arrs []arrow.Array
		if err == nil {
			clear(cols)
			if rr != nil {
				if arrs, err = rr.take(b.Rows); err != nil {
					err = fmt.Errorf("kept columns: %w", err)
				}
				for i, c := range raw {
					if err == nil {
						cols[c] = arrs[i]
					}
				}
			}
			for _, c := range keep {
				if err != nil {
					break
				}
				if cols[c] != nil {
					continue
				}
				col := b.Column(c)
				if col == nil {
					err = fmt.Errorf("batch %s has no column %q to keep", b.Source, c)
					break
				}
				cols[c] = col
			}
		}
		if err == nil {
			for i, task := range t.m.tasks {
				cols[task.Name] = t.preds[i][:b.Rows]
			}
			err = w.Write(cols)
		}
		releaseArrays(arrs)
		rows += int64(b.Rows)
		b.Release()
		if err != nil {
			return rows, err
		}
		bar.add(int64(b.Rows), 0)
	}
	bar.finish()
	return rows, nil
}

// hostTensor is a host copy of a parameter, for restoring the best epoch.
type hostTensor struct {
	nt   NamedTensor
	data []float32
}

func snapshot(m *Model) []hostTensor {
	ps := m.Params()
	out := make([]hostTensor, len(ps))
	for i, p := range ps {
		out[i] = hostTensor{nt: p, data: make([]float32, p.Tensor.Len())}
		m.dev.CopyToHostF32(out[i].data, p.Tensor)
	}
	return out
}

func restore(m *Model, snap []hostTensor) {
	for _, h := range snap {
		m.dev.CopyFromHostF32(h.nt.Tensor, h.data)
	}
}
