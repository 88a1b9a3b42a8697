package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/mtl"
)

func TestIntList(t *testing.T) {
	cases := []struct {
		in      string
		want    []int
		wantErr string
	}{
		{"128,64,32", []int{128, 64, 32}, ""},
		{" 8 , 4 ", []int{8, 4}, ""},
		{"", []int{}, ""},
		{"None", []int{}, ""},
		{"  ", []int{}, ""},
		{"64,", nil, "entry 2 is empty"},
		{"1,,2", nil, "entry 2 is empty"},
		{",8", nil, "entry 1 is empty"},
		{"64,x", nil, `"x" is not an integer`},
		{"0", nil, "must be positive"},
		{"8,-1", nil, "must be positive, got -1"},
	}
	for _, tc := range cases {
		var v []int
		err := intList{&v}.Set(tc.in)
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, v, tc.in)
	}
	v := []int{1, 2}
	assert.Equal(t, "1,2", intList{&v}.String())
}

// TestIntListFlagError: through the flag parser the message names the
// flag and the value.
func TestIntListFlagError(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var v []int
	fs.Var(intList{&v}, "mlp_layers", "")
	_, err := parseFlags(fs, []string{"--mlp_layers", "1,,2"})
	var ue *usageError
	require.True(t, errors.As(err, &ue))
	assert.EqualError(t, err, `--mlp_layers: invalid value "1,,2": entry 2 is empty (give positive sizes separated by commas, e.g. 128,64,32)`)
}

func TestOptFloat32(t *testing.T) {
	var p *float32
	v := optFloat32{&p}
	assert.Equal(t, "", v.String(), "unset")
	require.NoError(t, v.Set("-1.5"))
	require.NotNil(t, p)
	assert.Equal(t, float32(-1.5), *p)
	assert.Equal(t, "-1.5", v.String())
	for _, bad := range []string{"", "x", "NaN", "inf", "1e99"} {
		assert.Error(t, v.Set(bad), bad)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "1K": 1 << 10, "512M": 512 << 20, "512MiB": 512 << 20,
		"16G": 16 << 30, "16gb": 16 << 30, "1.5G": 3 << 29, " 2T ": 2 << 40} {
		got, err := parseByteSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "G", "-1G", "lots", "1P", "9999999T"} {
		_, err := parseByteSize(bad)
		assert.Error(t, err, bad)
	}
}

func TestCheckThreads(t *testing.T) {
	n := runtime.NumCPU()
	require.NoError(t, checkThreads(0))
	require.NoError(t, checkThreads(n))
	err := checkThreads(n + 1)
	var ue *usageError
	require.True(t, errors.As(err, &ue), "a command-line mistake (exit 2)")
	assert.Contains(t, err.Error(), fmt.Sprintf("--threads %d is more than the %d CPUs", n+1, n))
}

func TestStrList(t *testing.T) {
	var v []string
	require.NoError(t, strList{v: &v}.Set("a,,b"))
	assert.Equal(t, []string{"a", "b"}, v)
	require.NoError(t, strList{v: &v, keepEmpty: true}.Set(",click,"))
	assert.Equal(t, []string{"", "click", ""}, v, "sample spaces stay aligned with the tasks")
	require.NoError(t, strList{v: &v}.Set(""))
	assert.Empty(t, v)
}

func TestBoolValueMerlinSpellings(t *testing.T) {
	for in, want := range map[string]bool{"yes": true, "True": true, "t": true, "Y": true, "1": true,
		"no": false, "FALSE": false, "f": false, "n": false, "0": false} {
		var b bool
		require.NoError(t, boolValue{&b}.Set(in), in)
		assert.Equal(t, want, b, in)
	}
	var b bool
	require.Error(t, boolValue{&b}.Set("maybe"))

	// "--flag False" (space separated, as Merlin's nargs='?') and a bare
	// "--flag" both parse.
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	towers, quiet := true, false
	fs.Var(boolValue{&towers}, "use_task_towers", "")
	fs.Var(boolValue{&quiet}, "quiet", "")
	n := 0
	fs.IntVar(&n, "n", 0, "")
	_, err := parseFlags(fs, []string{"--use_task_towers", "False", "--quiet", "--n", "3"})
	require.NoError(t, err)
	assert.False(t, towers)
	assert.True(t, quiet)
	assert.Equal(t, 3, n)
}

func TestDynamicFloats(t *testing.T) {
	found, rest, err := dynamicFloats([]string{"--lr", "0.1", "--mtl_loss_weight_click=2", "--mtl_pos_class_weight_like", "5.5", "--x"},
		lossWeightPrefix, posWeightPrefix)
	require.NoError(t, err)
	assert.Equal(t, []string{"--lr", "0.1", "--x"}, rest)
	assert.Equal(t, map[string]float64{"click": 2}, found[lossWeightPrefix])
	assert.Equal(t, map[string]float64{"like": 5.5}, found[posWeightPrefix])

	for _, bad := range [][]string{
		{"--mtl_loss_weight_click"},
		{"--mtl_loss_weight_click", "abc"},
		{"--mtl_loss_weight_click=NaN"},
		{"--mtl_loss_weight_click=-1"},
		{"--mtl_loss_weight_=1"},
		{"--mtl_loss_weight_a=1", "--mtl_loss_weight_a=2"},
	} {
		_, _, err := dynamicFloats(bad, lossWeightPrefix)
		var ue *usageError
		require.True(t, errors.As(err, &ue), "%v: %v", bad, err)
	}
	// Nothing after "--" is interpreted.
	_, rest, err = dynamicFloats([]string{"--", "--mtl_loss_weight_a=1"}, lossWeightPrefix)
	require.NoError(t, err)
	assert.Equal(t, []string{"--", "--mtl_loss_weight_a=1"}, rest)
}

func TestSuggest(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("epochs", 1, "")
	fs.Int("train_batch_size", 1, "")
	assert.Equal(t, "epochs", suggest(fs, "epoch"))
	assert.Equal(t, "train_batch_size", suggest(fs, "train_batchsize"))
	assert.Equal(t, "", suggest(fs, "completely_different"))
	assert.Equal(t, 3, editDistance("kitten", "sitting"))
	assert.Equal(t, 0, editDistance("", ""))
}

func TestParseFlagsMessages(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("epochs", 1, "")
	_, err := parseFlags(fs, []string{"--epochs", "two"})
	require.EqualError(t, err, `--epochs: invalid value "two": parse error`)
	_, err = parseFlags(fs, []string{"--epochs"})
	require.EqualError(t, err, "--epochs needs a value")
	_, err = parseFlags(fs, []string{"-epoch=2"})
	require.EqualError(t, err, "unknown flag --epoch (did you mean --epochs?)")
}

func TestCheckModelFlags(t *testing.T) {
	cfg := mtl.DefaultConfig()
	cfg.Model = "ple"
	require.NoError(t, checkModelFlags(&cfg, map[string]bool{"ple_num_layers": true, "cgc_num_task_experts": true}))
	require.ErrorContains(t, checkModelFlags(&cfg, map[string]bool{"mlp_layers": true}), "--mlp_layers does not apply to --model ple")
	cfg.Model = "mlp"
	require.ErrorContains(t, checkModelFlags(&cfg, map[string]bool{"gate_dim": true}), "--gate_dim does not apply")
	cfg.Model = "dcn"
	require.NoError(t, checkModelFlags(&cfg, map[string]bool{"mlp_layers": true, "dcn_interacted_layer_num": true}))
	require.EqualError(t, checkModelFlags(&cfg, map[string]bool{"embeddings_dim": true}), "--embeddings_dim does not apply to --model dcn (only to dlrm, deepfm)")
	cfg.Model = "dlrm"
	require.NoError(t, checkModelFlags(&cfg, map[string]bool{"mlp_layers": true, "embeddings_dim": true}))
	require.EqualError(t, checkModelFlags(&cfg, map[string]bool{"dcn_interacted_layer_num": true}), "--dcn_interacted_layer_num does not apply to --model dlrm (only to dcn)")
	require.EqualError(t, checkModelFlags(&cfg, map[string]bool{"gate_dim": true}), "--gate_dim does not apply to --model dlrm (only to mmoe, cgc, ple)")
	cfg.Model = "deepfm"
	require.NoError(t, checkModelFlags(&cfg, map[string]bool{"mlp_layers": true, "embeddings_dim": true, "multihot_max_seq_length": true}))
	require.EqualError(t, checkModelFlags(&cfg, map[string]bool{"wnd_hashed_cross_num_bins": true}), "--wnd_hashed_cross_num_bins does not apply to --model deepfm (only to wide_n_deep)")
	cfg.Model = "wide_n_deep"
	require.NoError(t, checkModelFlags(&cfg, map[string]bool{"mlp_layers": true, "wnd_hashed_cross_num_bins": true, "wnd_wide_l2_reg": true,
		"wnd_ignore_combinations": true, "multihot_max_seq_length": true}))
	require.EqualError(t, checkModelFlags(&cfg, map[string]bool{"embeddings_dim": true}), "--embeddings_dim does not apply to --model wide_n_deep (only to dlrm, deepfm)")
	cfg.Model = "wide"
	require.EqualError(t, checkModelFlags(&cfg, nil), "--model must be mlp, mmoe, cgc, ple, dcn, dlrm, deepfm or wide_n_deep, got \"wide\"")
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	table(&b, []string{"task", "auc"}, [][]string{{"click/binary_output", "0.7500"}, {"x", "n/a"}})
	assert.Equal(t, "task                    auc\n-------------------  ------\nclick/binary_output  0.7500\nx                       n/a\n", b.String())
}
