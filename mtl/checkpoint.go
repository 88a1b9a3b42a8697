package mtl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/internal/readlimit"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/mtl/metrics"
	"github.com/mtlrank/mtlrank/mtl/safetensors"
	"github.com/mtlrank/mtlrank/schema"
)

// Checkpoint layout. A checkpoint is a folder:
//
//	config.json            CheckpointFormat, format version, max batch, tasks and the Config
//	schema.pbtxt           the schema the model was built for (Merlin format)
//	model.safetensors      every parameter, by its Params name
//	optimizer.safetensors  every optimizer tensor, by its OptimizerState name
//	state.json             TrainState: step, epoch, seed, best metric, metrics
//
// It is written into a temporary folder beside the destination and renamed
// into place, so a reader sees either the previous checkpoint or the new
// one, never a mix (a crash between the two renames of a replacement leaves
// the previous checkpoint under "<dir>.old-*" and no folder at dir).
const (
	CheckpointFormat = "mtlrank-checkpoint"
	// CheckpointFormatVersion 2 names the Config's fields in config.json by
	// their JSON tags (the CLI's flag names); version 1, still read, used
	// the Go field names.
	CheckpointFormatVersion = 2

	// The JSON files of a checkpoint are small: these bounds (far above
	// any real file) only keep a corrupt one from exhausting memory.
	maxConfigSize = 16 << 20
	maxStateSize  = 64 << 20

	configFile    = "config.json"
	schemaFile    = "schema.pbtxt"
	modelFile     = "model.safetensors"
	optimizerFile = "optimizer.safetensors"
	stateFile     = "state.json"
)

// checkpointConfig is the content of config.json.
type checkpointConfig struct {
	Format        string     `json:"format"`
	FormatVersion int        `json:"format_version"`
	MaxBatch      int        `json:"max_batch"`
	Tasks         []taskJSON `json:"tasks"`
	Config        Config     `json:"config"`
	Device        string     `json:"device,omitempty"`
}

type taskJSON struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	Kind   string `json:"kind"`
}

// TrainState is the training progress stored with a checkpoint.
type TrainState struct {
	// Step is the number of optimizer steps taken (Model.Step).
	Step int `json:"step"`
	// Epoch is the number of completed epochs.
	Epoch int `json:"epoch"`
	// Seed is the training seed (data shuffling, dropout).
	Seed int64 `json:"seed"`
	// BestMetric and BestValue record early stopping's best result so far
	// (BestValue NaN when none yet), reached at BestEpoch.
	BestMetric string  `json:"best_metric,omitempty"`
	BestValue  float64 `json:"-"`
	BestEpoch  int     `json:"best_epoch,omitempty"`
	// BadEpochs counts the epochs since the best one (early stopping's
	// patience counter).
	BadEpochs int `json:"bad_epochs,omitempty"`
	// Metrics are the last validation metrics.
	Metrics metrics.Results `json:"metrics,omitempty"`
	// Extra holds caller-defined values.
	Extra map[string]any `json:"extra,omitempty"`
}

// MarshalJSON writes BestValue as best_value, null when it is NaN.
func (s TrainState) MarshalJSON() ([]byte, error) {
	var best *float64
	if !math.IsNaN(s.BestValue) && !math.IsInf(s.BestValue, 0) {
		v := s.BestValue
		best = &v
	}
	return json.Marshal(struct {
		*alias
		BestValue *float64 `json:"best_value"`
	}{(*alias)(&s), best})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *TrainState) UnmarshalJSON(data []byte) error {
	var in struct {
		*alias
		BestValue *float64 `json:"best_value"`
	}
	in.alias = (*alias)(s)
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	s.BestValue = math.NaN()
	if in.BestValue != nil {
		s.BestValue = *in.BestValue
	}
	return nil
}

// alias has TrainState's fields without its JSON methods.
type alias TrainState

// SaveCheckpoint writes m (parameters, optimizer state, config, schema) and
// state to the folder dir, atomically. For a model whose tables are
// sharded by rows (NewShardedModel) it is collective: every rank calls it
// and writes its shard of the tables and their optimizer state into a
// file of its own, rank 0 the dense tensors and a manifest (shards.json),
// and the folder appears complete or not at all; a failure on any rank is
// an error on every rank (SaveGatheredCheckpoint writes the one-process
// checkpoint instead). Such a checkpoint loads on any number of ranks
// (LoadShardedCheckpoint) and in one process (LoadCheckpoint). state may
// be nil (the step is taken from m). An existing dir is replaced only if
// it is empty or a checkpoint; any other folder is an error, so that a
// mistyped path cannot delete data. Files in dir that a checkpoint does
// not have (notes, metrics) are kept, and dir may not lie inside another
// checkpoint folder. Temporary folders that a killed save left beside dir
// are removed.
func SaveCheckpoint(dir string, m *Model, state *TrainState) error {
	return saveCheckpoint(dir, m, state, false)
}

// SaveGatheredCheckpoint is SaveCheckpoint writing the one-process
// checkpoint for a model whose tables are sharded by rows: every rank
// calls it, the tables are gathered to rank 0 one tensor at a time, and
// rank 0 writes the checkpoint of the whole model (the other ranks write
// nothing and return nil), so rank 0 needs the host memory of each full
// table and its optimizer state in turn. For any other model it is
// SaveCheckpoint.
func SaveGatheredCheckpoint(dir string, m *Model, state *TrainState) error {
	return saveCheckpoint(dir, m, state, true)
}

func saveCheckpoint(dir string, m *Model, state *TrainState, gather bool) error {
	if m == nil {
		return errors.New("mtl: SaveCheckpoint: nil model")
	}
	st := TrainState{Seed: m.cfg.Seed, BestValue: math.NaN()}
	if state != nil {
		st = *state
	}
	st.Step = m.Step()
	var full map[string][]float32
	if m.RowSharded() {
		if !gather {
			if err := saveSharded(dir, m, st); err != nil {
				return fmt.Errorf("mtl: save checkpoint %s: %w", dir, err)
			}
			return nil
		}
		// Every rank sends its rows; rank 0 writes the one-process
		// checkpoint, which resumes on any number of ranks in either mode.
		var err error
		if full, err = m.gatherTables(append(m.Params(), m.OptimizerState()...)); err != nil {
			return fmt.Errorf("mtl: save checkpoint %s: %w", dir, err)
		}
		if m.comm.Rank() != 0 {
			return nil
		}
	}
	if err := checkReplaceable(dir); err != nil {
		return fmt.Errorf("mtl: save checkpoint: %w", err)
	}
	err := writeDirAtomic(dir, func(tmp string) error {
		return writeCheckpointFiles(tmp, m, st, CheckpointFormatVersion, "", full)
	})
	if err != nil {
		return fmt.Errorf("mtl: save checkpoint %s: %w", dir, err)
	}
	return nil
}

// writeCheckpointFiles writes the checkpoint's files but the shards into
// the folder tmp: config.json of format version, the schema, the
// parameters and optimizer state (the dense ones only for a per-shard
// checkpoint, version shardedCheckpointVersion, whose saveID the
// safetensors files' metadata carry), state.json. full holds gathered
// tables (writeTensors).
func writeCheckpointFiles(tmp string, m *Model, st TrainState, version int, saveID string, full map[string][]float32) error {
	params, opt := m.Params(), m.OptimizerState()
	if version == shardedCheckpointVersion {
		_, params = m.tableTensors(params)
		_, opt = m.tableTensors(opt)
	}
	cc := checkpointConfig{
		Format: CheckpointFormat, FormatVersion: version,
		MaxBatch: m.MaxBatch(), Config: m.Config(), Device: m.dev.Name(),
	}
	for _, t := range m.tasks {
		cc.Tasks = append(cc.Tasks, taskJSON{Name: t.Name, Target: t.Target, Kind: t.Kind.String()})
	}
	if err := writeJSONFile(filepath.Join(tmp, configFile), cc); err != nil {
		return err
	}
	if err := writeSchemaFile(filepath.Join(tmp, schemaFile), m.schema); err != nil {
		return err
	}
	meta := func(extra ...string) map[string]string {
		out := map[string]string{
			"format": CheckpointFormat, "format_version": strconv.Itoa(version),
			"step": strconv.Itoa(st.Step),
		}
		if saveID != "" {
			out["save_id"] = saveID
		}
		for i := 0; i+1 < len(extra); i += 2 {
			out[extra[i]] = extra[i+1]
		}
		return out
	}
	if err := writeTensors(filepath.Join(tmp, modelFile), m.dev, params, full, meta()); err != nil {
		return err
	}
	if err := writeTensors(filepath.Join(tmp, optimizerFile), m.dev, opt, full, meta("optimizer", m.cfg.Optimizer)); err != nil {
		return err
	}
	return writeJSONFile(filepath.Join(tmp, stateFile), st)
}

// IsCheckpoint reports whether dir holds a checkpoint's config.json.
func IsCheckpoint(dir string) bool {
	data, err := readlimit.ReadFile(filepath.Join(dir, configFile), maxConfigSize)
	if err != nil {
		return false
	}
	var head struct {
		Format string `json:"format"`
	}
	return json.Unmarshal(data, &head) == nil && head.Format == CheckpointFormat
}

func writeJSONFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", filepath.Base(path), err)
	}
	return atomicfile.WriteFile(path, append(data, '\n'))
}

func writeSchemaFile(path string, s *schema.Schema) error {
	var buf bytes.Buffer
	if err := s.WritePbtxt(&buf); err != nil {
		return fmt.Errorf("encoding %s: %w", filepath.Base(path), err)
	}
	return atomicfile.WriteFile(path, buf.Bytes())
}

// writeTensors copies device tensors to the host and stores them; a name
// in full is stored from there instead (a row-sharded table gathered to
// rank 0, [rows, dim]).
func writeTensors(path string, dev kernels.Device, named []NamedTensor, full map[string][]float32, meta map[string]string) error {
	out := make([]safetensors.Tensor, 0, len(named))
	for _, nt := range named {
		t := nt.Tensor
		if v, ok := full[nt.Name]; ok {
			out = append(out, safetensors.FromF32(nt.Name, []int{len(v) / t.Cols(), t.Cols()}, v))
			continue
		}
		switch t.DType {
		case kernels.Float32:
			h := make([]float32, t.Len())
			dev.CopyToHostF32(h, t)
			out = append(out, safetensors.FromF32(nt.Name, t.Shape, h))
		case kernels.Int32:
			h := make([]int32, t.Len())
			dev.CopyToHostI32(h, t)
			out = append(out, safetensors.FromI32(nt.Name, t.Shape, h))
		default:
			return fmt.Errorf("tensor %q: dtype %s cannot be stored", nt.Name, t.DType)
		}
	}
	return safetensors.Write(path, out, meta)
}

// LoadModel loads the checkpoint in dir onto dev, for batches of up to the
// batch size it was saved with. The optimizer state and step are restored
// too, so training can continue exactly where it stopped.
func LoadModel(dir string, dev kernels.Device) (*Model, error) {
	m, _, err := LoadCheckpoint(dir, dev, 0)
	return m, err
}

// LoadCheckpoint loads the model and training state in dir onto dev for
// batches of up to maxBatch rows (0: the batch size it was saved with).
// Every tensor of the model must be in the checkpoint with the same shape,
// and the checkpoint may hold no other tensor; errors name the file and the
// tensor.
func LoadCheckpoint(dir string, dev kernels.Device, maxBatch int) (*Model, *TrainState, error) {
	m, st, err := loadCheckpoint(dir, dev, maxBatch, true)
	if err != nil {
		return nil, nil, fmt.Errorf("mtl: load checkpoint %s: %w", dir, err)
	}
	return m, st, nil
}

// LoadInference loads the parameters of the checkpoint in dir onto dev for
// batches of up to maxBatch rows (0: the batch size it was saved with), to
// predict or evaluate: optimizer.safetensors is not read and may be
// missing (a checkpoint trimmed for serving). The returned model's
// optimizer state is zero, so it should not be trained further.
func LoadInference(dir string, dev kernels.Device, maxBatch int) (*Model, error) {
	m, _, err := loadCheckpoint(dir, dev, maxBatch, false)
	if err != nil {
		return nil, fmt.Errorf("mtl: load checkpoint %s: %w", dir, err)
	}
	return m, nil
}

// ReadCheckpointModel reads the schema and the configuration of the
// checkpoint in dir (config.json and schema.pbtxt) without loading any
// tensor, e.g. to EstimateMemory before LoadCheckpoint.
func ReadCheckpointModel(dir string) (*schema.Schema, Config, error) {
	cc, err := readCheckpointConfig(dir)
	if err != nil {
		return nil, Config{}, fmt.Errorf("mtl: read checkpoint %s: %w", dir, err)
	}
	s, err := schema.Load(filepath.Join(dir, schemaFile))
	if err != nil {
		return nil, Config{}, fmt.Errorf("mtl: read checkpoint %s: %s: %w", dir, schemaFile, err)
	}
	return s, cc.Config, nil
}

func loadCheckpoint(dir string, dev kernels.Device, maxBatch int, optimizer bool) (*Model, *TrainState, error) {
	return loadCheckpointShard(dir, dev, maxBatch, optimizer, layers.RowShard{})
}

// loadCheckpointShard is loadCheckpoint keeping the rows of shard of every
// table and of its optimizer state.
func loadCheckpointShard(dir string, dev kernels.Device, maxBatch int, optimizer bool, shard layers.RowShard) (*Model, *TrainState, error) {
	cc, err := readCheckpointConfig(dir)
	if err != nil {
		return nil, nil, err
	}
	s, err := schema.Load(filepath.Join(dir, schemaFile))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", schemaFile, err)
	}
	if dev == nil {
		return nil, nil, errors.New("nil device")
	}
	st, err := ReadTrainState(dir)
	if err != nil {
		return nil, nil, err
	}
	if maxBatch <= 0 {
		maxBatch = cc.MaxBatch
	}
	if maxBatch <= 0 {
		return nil, nil, fmt.Errorf("%s: max_batch is %d", configFile, cc.MaxBatch)
	}
	// NewModel refuses a model this process could never allocate (a
	// corrupt int_domain.max or max_batch) before allocating anything.
	m, err := newModel(s, cc.Config, dev, maxBatch, shard)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", configFile, err)
	}
	if err := fillCheckpoint(dir, m, cc, st.Step, optimizer); err != nil {
		m.Release()
		return nil, nil, err
	}
	m.SetStep(st.Step)
	return m, st, nil
}

// fillCheckpoint checks m's tasks against config.json's and reads the
// parameters and, with optimizer, the optimizer state into m; the tables of
// a per-shard checkpoint (of training step step) from its shard files.
func fillCheckpoint(dir string, m *Model, cc *checkpointConfig, step int, optimizer bool) error {
	// The tasks are derived from config + schema; they must be the ones the
	// checkpoint was trained with.
	if len(cc.Tasks) != len(m.tasks) {
		return fmt.Errorf("%s lists %d tasks, the config and schema give %d", configFile, len(cc.Tasks), len(m.tasks))
	}
	for i, t := range m.tasks {
		if cc.Tasks[i].Name != t.Name {
			return fmt.Errorf("%s: task %d is %q, the config and schema give %q", configFile, i, cc.Tasks[i].Name, t.Name)
		}
	}
	params, opt := m.Params(), m.OptimizerState()
	var man *shardManifest
	if cc.FormatVersion == shardedCheckpointVersion {
		// The tables are in the shard files, the rest as always.
		var err error
		if man, err = readManifest(dir, m, step); err != nil {
			return err
		}
		_, params = m.tableTensors(params)
		_, opt = m.tableTensors(opt)
	}
	saveID := ""
	if man != nil {
		saveID = man.SaveID
	}
	if err := m.readTensors(filepath.Join(dir, modelFile), params, saveID); err != nil {
		return err
	}
	if optimizer {
		if err := m.readTensors(filepath.Join(dir, optimizerFile), opt, saveID); err != nil {
			return err
		}
	}
	if man == nil {
		return nil
	}
	return m.readShards(dir, man, optimizer)
}

func readCheckpointConfig(dir string) (*checkpointConfig, error) {
	path := filepath.Join(dir, configFile)
	data, err := readlimit.ReadFile(path, maxConfigSize)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if st, serr := os.Stat(dir); serr != nil || !st.IsDir() {
				return nil, fmt.Errorf("no checkpoint folder at %s", dir)
			}
			return nil, fmt.Errorf("%s is missing: not a checkpoint folder", configFile)
		}
		return nil, err
	}
	var head struct {
		Format        string `json:"format"`
		FormatVersion int    `json:"format_version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("%s: %w", configFile, err)
	}
	if head.Format != CheckpointFormat {
		return nil, fmt.Errorf("%s: format is %q, want %q", configFile, head.Format, CheckpointFormat)
	}
	if head.FormatVersion < 1 || head.FormatVersion > shardedCheckpointVersion {
		return nil, fmt.Errorf("%s: format version %d is not supported (this build reads 1..%d)", configFile, head.FormatVersion, shardedCheckpointVersion)
	}
	if head.FormatVersion == 1 {
		if data, err = configV1ToV2(data); err != nil {
			return nil, fmt.Errorf("%s: %w", configFile, err)
		}
	}
	// Fields absent from an older file keep their defaults, but for
	// init_output_bias: files without it predate the option, and their
	// models were trained from zero biases.
	cc := checkpointConfig{Config: DefaultConfig()}
	cc.Config.InitOutputBias = false
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cc); err != nil {
		return nil, fmt.Errorf("%s: %w", configFile, err)
	}
	return &cc, nil
}

// configV1ToV2 renames the keys of the "config" object of a version-1
// config.json, which are Config's Go field names, to their JSON names.
// Keys that are no field stay as they are, for the strict decoder to
// report.
func configV1ToV2(data []byte) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, err
	}
	raw, ok := top["config"]
	if !ok {
		return data, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	renamed := make(map[string]json.RawMessage, len(fields))
	for k, v := range fields {
		if name, ok := configJSONNames[k]; ok {
			k = name
		}
		renamed[k] = v
	}
	var err error
	if top["config"], err = json.Marshal(renamed); err != nil {
		return nil, err
	}
	return json.Marshal(top)
}

// ReadTrainState reads the state.json of a checkpoint folder.
func ReadTrainState(dir string) (*TrainState, error) {
	data, err := readlimit.ReadFile(filepath.Join(dir, stateFile), maxStateSize)
	if err != nil {
		return nil, err
	}
	st := &TrainState{BestValue: math.NaN()}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("%s: %w", stateFile, err)
	}
	if st.Step < 0 || st.Epoch < 0 {
		return nil, fmt.Errorf("%s: negative step %d or epoch %d", stateFile, st.Step, st.Epoch)
	}
	return st, nil
}

// readTensors fills the model's tensors from a safetensors file: the names
// must match one to one, with equal shapes (the full table's for a table
// sharded by rows, of which the model keeps its rows). A saveID other than
// "" must be the file's (the dense files of a per-shard checkpoint).
func (m *Model) readTensors(path string, named []NamedTensor, saveID string) error {
	dev := m.dev
	// The file is refused before it is read when it is far larger than
	// the model's tensors (a few extra tensors get the clearer message
	// below).
	var size int64
	for _, nt := range named {
		shape, _ := m.fileShape(nt)
		size += int64(shapeLen(shape)) * 4
	}
	f, err := safetensors.ReadLimit(path, 2*size+1<<20)
	if err != nil {
		return err
	}
	base := filepath.Base(path)
	if got := f.Metadata["save_id"]; got != saveID {
		return fmt.Errorf("%s: save id %q, %s's is %q: files of two saves", base, got, manifestFile, saveID)
	}
	want := make(map[string]bool, len(named))
	for _, nt := range named {
		want[nt.Name] = true
		st, ok := f.Tensor(nt.Name)
		if !ok {
			return fmt.Errorf("%s: tensor %q is missing (the model expects %s%v)", base, nt.Name, nt.Tensor.DType, nt.Tensor.Shape)
		}
		shape, shard := m.fileShape(nt)
		if !slices.Equal(st.Shape, shape) {
			return fmt.Errorf("%s: tensor %q has shape %v, the model expects %v", base, nt.Name, st.Shape, shape)
		}
		switch nt.Tensor.DType {
		case kernels.Float32:
			v, err := st.F32()
			if err != nil {
				return fmt.Errorf("%s: %w", base, err)
			}
			// A NaN or infinite weight makes every score the same (or
			// NaN) without a word: refuse it.
			for i, x := range v {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					return fmt.Errorf("%s: tensor %q holds %v at element %d: the checkpoint is corrupt or training diverged", base, nt.Name, x, i)
				}
			}
			if shard.Sharded() {
				v = keepRows(v, shape[0], shape[1], shard)
			}
			dev.CopyFromHostF32(nt.Tensor, v)
		case kernels.Int32:
			v, err := st.I32()
			if err != nil {
				return fmt.Errorf("%s: %w", base, err)
			}
			dev.CopyFromHostI32(nt.Tensor, v)
		default:
			return fmt.Errorf("%s: tensor %q: dtype %s cannot be loaded", base, nt.Name, nt.Tensor.DType)
		}
	}
	var extra []string
	for _, n := range f.Names() {
		if !want[n] {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		return fmt.Errorf("%s: tensors %s are not part of the model (different architecture?)", base, strings.Join(quoteAll(extra), ", "))
	}
	return nil
}

func shapeLen(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strconv.Quote(v)
	}
	return out
}

// CheckDataSchema reports whether data with schema s can feed the model:
// every input column must be present with the same kind (categorical,
// continuous, list) and categorical ids must fit the model's tables
// (int_domain.max not above the model's). With targets, the task targets
// and the weight and sample-space columns must be present too.
func (m *Model) CheckDataSchema(s *schema.Schema, targets bool) error {
	for _, f := range inputFeatures(m.schema, &m.cfg) {
		d := s.Feature(f.Name)
		if d == nil {
			return fmt.Errorf("mtl: data schema has no column %q, a model input", f.Name)
		}
		if f.HasTag(schema.TagCategorical) != d.HasTag(schema.TagCategorical) || f.IsList() != d.IsList() {
			return fmt.Errorf("mtl: column %q is %s in the data schema but %s for the model", f.Name, featureKind(d), featureKind(f))
		}
		if f.IntDomain != nil && d.IntDomain != nil && d.IntDomain.Max > f.IntDomain.Max {
			return fmt.Errorf("mtl: column %q has ids up to %d in the data schema, the model's table has rows 0..%d", f.Name, d.IntDomain.Max, f.IntDomain.Max)
		}
	}
	if !targets {
		return nil
	}
	for _, t := range m.tasks {
		if s.Feature(t.Target) == nil {
			return fmt.Errorf("mtl: data schema has no target column %q (task %s)", t.Target, t.Name)
		}
	}
	for _, cols := range []map[string]string{m.cfg.WeightColumns, m.cfg.SampleSpace} {
		for _, k := range sortedKeys(cols) {
			if s.Feature(cols[k]) == nil {
				return fmt.Errorf("mtl: data schema has no column %q (weights of task %q)", cols[k], k)
			}
		}
	}
	return nil
}

func featureKind(f *schema.Feature) string {
	k := "continuous"
	if f.HasTag(schema.TagCategorical) {
		k = "categorical"
	}
	if f.IsList() {
		k += " list"
	}
	return k
}
