package mtl_test

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/mtl/metrics"
	"github.com/mtlrank/mtlrank/mtl/safetensors"
	"github.com/mtlrank/mtlrank/schema"
)

func TestCheckpointRoundTrip(t *testing.T) {
	batches := trBatches(t, 3, 128)
	cfg := trConfig("ple")
	cfg.Optimizer = "adagrad"
	m, err := mtl.NewModel(trSchema(), cfg, trDev(), 128)
	require.NoError(t, err)
	defer m.Release()
	for _, b := range batches[:2] {
		_, err := m.TrainStep(b)
		require.NoError(t, err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	state := &mtl.TrainState{Epoch: 3, Seed: 9, BestMetric: "auc_avg", BestValue: 0.75, BestEpoch: 2,
		Metrics: metrics.Results{"auc_avg": 0.75, "share/binary_output/auc": math.NaN()}, Extra: map[string]any{"note": "x"}}
	require.NoError(t, mtl.SaveCheckpoint(dir, m, state))
	for _, f := range []string{"config.json", "schema.pbtxt", "model.safetensors", "optimizer.safetensors", "state.json"} {
		assert.FileExists(t, filepath.Join(dir, f))
	}
	assert.True(t, mtl.IsCheckpoint(dir))

	m2, st, err := mtl.LoadCheckpoint(dir, trDev(), 0)
	require.NoError(t, err)
	defer m2.Release()
	assert.Equal(t, 2, m2.Step())
	assert.Equal(t, 2, st.Step)
	assert.Equal(t, 3, st.Epoch)
	assert.Equal(t, int64(9), st.Seed)
	assert.Equal(t, 0.75, st.BestValue)
	assert.Equal(t, 2, st.BestEpoch)
	assert.True(t, math.IsNaN(st.Metrics["share/binary_output/auc"]))
	assert.Equal(t, 128, m2.MaxBatch())
	assert.Equal(t, m.Tasks(), m2.Tasks())
	assert.Equal(t, m.Config(), m2.Config())
	// Every parameter and optimizer tensor is bit-identical.
	assert.Equal(t, hostParams(m), hostParams(m2))

	// Same predictions.
	out1 := [][]float32{make([]float32, 128), make([]float32, 128), make([]float32, 128), make([]float32, 128), make([]float32, 128)}
	out2 := [][]float32{make([]float32, 128), make([]float32, 128), make([]float32, 128), make([]float32, 128), make([]float32, 128)}
	require.NoError(t, m.Predict(batches[2], out1))
	require.NoError(t, m2.Predict(batches[2], out2))
	assert.Equal(t, out1, out2)

	// A NaN best value round-trips as NaN (null in JSON).
	state.BestValue = math.NaN()
	require.NoError(t, mtl.SaveCheckpoint(dir, m, state))
	st2, err := mtl.ReadTrainState(dir)
	require.NoError(t, err)
	assert.True(t, math.IsNaN(st2.BestValue))
	raw, err := os.ReadFile(filepath.Join(dir, "state.json"))
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"best_value": null`)

	// LoadModel with the saved batch size; no temporary folders are left.
	m3, err := mtl.LoadModel(dir, trDev())
	require.NoError(t, err)
	m3.Release()
	entries, err := os.ReadDir(filepath.Dir(dir))
	require.NoError(t, err)
	require.Len(t, entries, 1, "only the checkpoint folder")
}

// TestReadCheckpointModel: the schema and configuration come back without
// the tensors, and give the same memory estimate as the saved model.
func TestReadCheckpointModel(t *testing.T) {
	cfg := trConfig("ple")
	m, err := mtl.NewModel(trSchema(), cfg, trDev(), 64)
	require.NoError(t, err)
	defer m.Release()
	dir := filepath.Join(t.TempDir(), "ckpt")
	require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
	s, got, err := mtl.ReadCheckpointModel(dir)
	require.NoError(t, err)
	assert.Equal(t, m.Config(), got)
	assert.Equal(t, trSchema().Names(), s.Names())
	a, err := mtl.EstimateMemory(trSchema(), cfg, trDev(), 64)
	require.NoError(t, err)
	b, err := mtl.EstimateMemory(s, got, trDev(), 64)
	require.NoError(t, err)
	assert.Equal(t, a, b)

	_, _, err = mtl.ReadCheckpointModel(filepath.Join(t.TempDir(), "none"))
	require.ErrorContains(t, err, "no checkpoint folder")
}

// TestCheckpointFileModes: a checkpoint is readable like files written in
// place: folder 0777 and files 0666 minus the umask (not the 0700/0600 of
// temporary names), on first save and on replacement.
func TestCheckpointFileModes(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	dir := filepath.Join(t.TempDir(), "ckpt")
	for range 2 {
		require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
		st, err := os.Stat(dir)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o755), st.Mode().Perm(), "folder")
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Len(t, entries, 5)
		for _, e := range entries {
			info, err := e.Info()
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o644), info.Mode().Perm(), e.Name())
		}
	}
}

// TestResumeEqualsUninterrupted: N+M steps equal N steps, save, load, M
// steps, for every architecture (dropout on, so the per-step dropout seeds
// are exercised) and every optimizer.
func TestResumeEqualsUninterrupted(t *testing.T) {
	const n, m = 3, 3
	batches := trBatches(t, n+m, 128)
	cases := []struct{ model, opt string }{
		{"mlp", "adam"}, {"mmoe", "adam"}, {"cgc", "adagrad"}, {"ple", "adam"}, {"mmoe", "sgd"},
	}
	for _, tc := range cases {
		t.Run(tc.model+"/"+tc.opt, func(t *testing.T) {
			cfg := trConfig(tc.model)
			cfg.Optimizer = tc.opt
			cfg.Dropout = 0.1
			cfg.LRDecayRate, cfg.LRDecaySteps = 0.9, 2

			full, err := mtl.NewModel(trSchema(), cfg, trDev(), 128)
			require.NoError(t, err)
			defer full.Release()
			var want []float64
			for _, b := range batches {
				st, err := full.TrainStep(b)
				require.NoError(t, err)
				want = append(want, st.Loss)
			}

			first, err := mtl.NewModel(trSchema(), cfg, trDev(), 128)
			require.NoError(t, err)
			for _, b := range batches[:n] {
				_, err := first.TrainStep(b)
				require.NoError(t, err)
			}
			dir := filepath.Join(t.TempDir(), "ckpt")
			require.NoError(t, mtl.SaveCheckpoint(dir, first, nil))
			first.Release()

			resumed, err := mtl.LoadModel(dir, trDev())
			require.NoError(t, err)
			defer resumed.Release()
			require.Equal(t, n, resumed.Step())
			for i, b := range batches[n:] {
				st, err := resumed.TrainStep(b)
				require.NoError(t, err)
				assert.InDelta(t, want[n+i], st.Loss, 1e-6, "step %d", n+i)
			}
			got, exp := hostParams(resumed), hostParams(full)
			for name, v := range exp {
				require.Len(t, got[name], len(v), name)
				for j := range v {
					if math.Abs(float64(v[j]-got[name][j])) > 1e-6 {
						t.Fatalf("%s[%d]: resumed %v, uninterrupted %v", name, j, got[name][j], v[j])
					}
				}
			}
		})
	}
}

// rewriteTensors edits a safetensors file of a checkpoint.
func rewriteTensors(t *testing.T, path string, edit func([]safetensors.Tensor) []safetensors.Tensor) {
	f, err := safetensors.Read(path)
	require.NoError(t, err)
	ts := make([]safetensors.Tensor, len(f.Tensors))
	for i, x := range f.Tensors {
		x.Data = append([]byte(nil), x.Data...)
		ts[i] = x
	}
	require.NoError(t, safetensors.Write(path, edit(ts), f.Metadata))
}

func TestLoadCheckpointErrors(t *testing.T) {
	m, err := mtl.NewModel(trSchema(), trConfig("mmoe"), trDev(), 64)
	require.NoError(t, err)
	defer m.Release()
	save := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "ckpt")
		require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
		return dir
	}
	cases := []struct {
		name    string
		corrupt func(t *testing.T, dir string)
		want    []string
	}{
		{"missing tensor", func(t *testing.T, dir string) {
			rewriteTensors(t, filepath.Join(dir, "model.safetensors"), func(ts []safetensors.Tensor) []safetensors.Tensor {
				var out []safetensors.Tensor
				for _, x := range ts {
					if x.Name != "tower/click/head/bias" {
						out = append(out, x)
					}
				}
				return out
			})
		}, []string{"model.safetensors", `"tower/click/head/bias" is missing`}},
		{"shape mismatch", func(t *testing.T, dir string) {
			rewriteTensors(t, filepath.Join(dir, "model.safetensors"), func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i, x := range ts {
					if x.Name == "input/emb/gender" {
						ts[i] = safetensors.FromF32(x.Name, []int{x.Shape[0] - 1, x.Shape[1]}, make([]float32, (x.Shape[0]-1)*x.Shape[1]))
					}
				}
				return ts
			})
		}, []string{`tensor "input/emb/gender" has shape`}},
		{"extra tensor", func(t *testing.T, dir string) {
			rewriteTensors(t, filepath.Join(dir, "optimizer.safetensors"), func(ts []safetensors.Tensor) []safetensors.Tensor {
				return append(ts, safetensors.FromF32("mystery/m", []int{1}, []float32{1}))
			})
		}, []string{"optimizer.safetensors", `"mystery/m"`, "not part of the model"}},
		{"schema changed", func(t *testing.T, dir string) {
			// A bigger user table than the stored weights: the schema and
			// the tensors disagree.
			s := trSchema()
			s.Feature("user_id").IntDomain.Max = 999
			require.NoError(t, schema.Save(filepath.Join(dir, "schema.pbtxt"), s))
		}, []string{`"input/emb/user_id" has shape`, "[1000 "}},
		{"config changed", func(t *testing.T, dir string) {
			mtl.EditJSON(t, filepath.Join(dir, "config.json"), func(v map[string]any) {
				v["config"].(map[string]any)["mmoe_num_mlp_experts"] = 5
			})
		}, []string{"mmoe/"}},
		{"invalid config", func(t *testing.T, dir string) {
			mtl.EditJSON(t, filepath.Join(dir, "config.json"), func(v map[string]any) {
				v["config"].(map[string]any)["mmoe_num_mlp_experts"] = 0
			})
		}, []string{"config.json", "MMoENumExperts"}},
		{"unknown config field", func(t *testing.T, dir string) {
			mtl.EditJSON(t, filepath.Join(dir, "config.json"), func(v map[string]any) {
				v["config"].(map[string]any)["Experts"] = 5
			})
		}, []string{"config.json", "Experts"}},
		{"future version", func(t *testing.T, dir string) {
			mtl.EditJSON(t, filepath.Join(dir, "config.json"), func(v map[string]any) { v["format_version"] = 99 })
		}, []string{"format version 99"}},
		{"not a checkpoint", func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, "config.json")))
		}, []string{"config.json is missing"}},
		{"corrupt tensors", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "model.safetensors"), []byte("garbage"), 0o644))
		}, []string{"model.safetensors"}},
		{"corrupt state", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "state.json"), []byte("{"), 0o644))
		}, []string{"state.json"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := save(t)
			tc.corrupt(t, dir)
			_, err := mtl.LoadModel(dir, trDev())
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Contains(t, err.Error(), dir)
		})
	}
	t.Run("missing folder", func(t *testing.T) {
		_, err := mtl.LoadModel(filepath.Join(t.TempDir(), "nope"), trDev())
		require.ErrorContains(t, err, "no checkpoint folder")
	})
}

func TestSaveCheckpointRefusesForeignFolder(t *testing.T) {
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	dir := t.TempDir()
	precious := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(precious, []byte("keep me"), 0o644))
	err = mtl.SaveCheckpoint(dir, m, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "refusing to replace")
	assert.FileExists(t, precious)

	// An empty folder and an older checkpoint are replaced.
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.Mkdir(empty, 0o755))
	require.NoError(t, mtl.SaveCheckpoint(empty, m, nil))
	require.NoError(t, mtl.SaveCheckpoint(empty, m, &mtl.TrainState{Epoch: 4, BestValue: math.NaN()}))
	st, err := mtl.ReadTrainState(empty)
	require.NoError(t, err)
	assert.Equal(t, 4, st.Epoch)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), "."), "left-over temporary %s", e.Name())
	}
}

func TestCheckDataSchema(t *testing.T) {
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	require.NoError(t, m.CheckDataSchema(trSchema(), true))
	// A smaller id domain fits the model's tables.
	s := trSchema()
	s.Feature("item_id").IntDomain.Max = 10
	require.NoError(t, m.CheckDataSchema(s, true))

	s = trSchema()
	s.Feature("item_id").IntDomain.Max = 5000
	require.ErrorContains(t, m.CheckDataSchema(s, false), `"item_id" has ids up to 5000`)

	s = trSchema()
	s.Features = s.Features[1:] // no user_id
	require.ErrorContains(t, m.CheckDataSchema(s, false), `no column "user_id"`)

	s = trSchema()
	var kept []*schema.Feature
	for _, f := range s.Features {
		if f.Name != "like" {
			kept = append(kept, f)
		}
	}
	s.Features = kept
	require.NoError(t, m.CheckDataSchema(s, false), "targets are not needed for prediction")
	require.ErrorContains(t, m.CheckDataSchema(s, true), `no target column "like"`)
}

// TestConfigJSONNames: every saved Config field has its own snake_case JSON
// name, so that config.json reads like the CLI's flags and a new field
// cannot silently fall back to its Go name.
func TestConfigJSONNames(t *testing.T) {
	typ := reflect.TypeFor[mtl.Config]()
	seen := map[string]string{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		require.NotEmpty(t, name, "field %s has no json name", f.Name)
		assert.Regexp(t, `^[a-z][a-z0-9_]*$`, name, "field %s", f.Name)
		if prev, dup := seen[name]; dup {
			t.Errorf("json name %q used by %s and %s", name, prev, f.Name)
		}
		seen[name] = f.Name
	}
}

// TestCheckpointReadsFormatVersion1: a version-1 config.json, whose config
// object has Config's Go field names, loads with the same configuration
// as the version-2 file it was made from.
func TestCheckpointReadsFormatVersion1(t *testing.T) {
	cfg := trConfig("cgc")
	cfg.Tasks = []string{"click", "like"}
	cfg.EmbeddingDims = map[string]int{"user_id": 12}
	cfg.LossWeights = map[string]float32{"like": 2}
	cfg.LRDecayRate, cfg.LRDecaySteps = 0.5, 100
	cfg.InitOutputBias = true
	m, err := mtl.NewModel(trSchema(), cfg, trDev(), 64)
	require.NoError(t, err)
	defer m.Release()
	dir := filepath.Join(t.TempDir(), "ckpt")
	require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"mmoe_num_mlp_experts"`)
	assert.Contains(t, string(raw), `"format_version": 2`)

	// Version 1 wrote the Config as Go's encoding/json writes a struct
	// without tags: every field under its Go name.
	v1 := map[string]any{}
	val := reflect.ValueOf(m.Config())
	for i := range val.NumField() {
		if f := val.Type().Field(i); f.Tag.Get("json") != "-" {
			v1[f.Name] = val.Field(i).Interface()
		}
	}
	mtl.EditJSON(t, filepath.Join(dir, "config.json"), func(v map[string]any) {
		v["format_version"] = 1
		v["config"] = v1
	})
	raw, err = os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	require.Contains(t, string(raw), `"MMoENumExperts"`)

	m2, _, err := mtl.LoadCheckpoint(dir, trDev(), 0)
	require.NoError(t, err)
	defer m2.Release()
	assert.Equal(t, m.Config(), m2.Config())
	assert.Equal(t, hostParams(m), hostParams(m2))

	// An unknown Go name in a version-1 file is still an error.
	mtl.EditJSON(t, filepath.Join(dir, "config.json"), func(v map[string]any) {
		v["config"].(map[string]any)["Experts"] = 5
	})
	_, _, err = mtl.LoadCheckpoint(dir, trDev(), 0)
	require.ErrorContains(t, err, "Experts")
}

// TestCheckpointKeepsStoredInitOutputBias: a checkpoint loads with the
// init_output_bias it was written with, whatever DefaultConfig says now;
// a config.json without the key predates the option, whose runs all
// started from zero biases, so it loads as false (in either format
// version).
func TestCheckpointKeepsStoredInitOutputBias(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stored bool
		edit   func(map[string]any)
		want   bool
	}{
		{"stored true", true, nil, true},
		{"stored false", false, nil, false},
		{"key absent", true, func(v map[string]any) {
			delete(v["config"].(map[string]any), "init_output_bias")
		}, false},
		{"version 1 without the key", true, func(v map[string]any) {
			c := v["config"].(map[string]any)
			delete(c, "init_output_bias")
			c["MMoENumExperts"] = c["mmoe_num_mlp_experts"]
			delete(c, "mmoe_num_mlp_experts")
			v["format_version"] = 1
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := trConfig("mlp")
			cfg.InitOutputBias = tc.stored
			m, err := mtl.NewModel(trSchema(), cfg, trDev(), 16)
			require.NoError(t, err)
			defer m.Release()
			dir := filepath.Join(t.TempDir(), "ckpt")
			require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
			if tc.edit != nil {
				mtl.EditJSON(t, filepath.Join(dir, "config.json"), tc.edit)
			}
			_, got, err := mtl.ReadCheckpointModel(dir)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got.InitOutputBias, "ReadCheckpointModel")
			m2, _, err := mtl.LoadCheckpoint(dir, trDev(), 0)
			require.NoError(t, err)
			defer m2.Release()
			assert.Equal(t, tc.want, m2.Config().InitOutputBias, "LoadCheckpoint")
		})
	}
}
