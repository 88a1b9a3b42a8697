package mtl

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mtlrank/mtlrank/internal/splitmix"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl/internal/step"
	"github.com/mtlrank/mtlrank/schema"
)

// The wide part of DeepFM and Wide&Deep is a linear model over sparse
// encodings of the categorical features: Merlin one-hot encodes the scalar
// features (CategoryEncoding "one_hot"), multi-hot encodes the lists after
// padding or truncating them to multihot_max_seq_length (ListToDense, then
// "multi_hot"), and for Wide&Deep adds the hashed crosses of every pair of
// categorical features (HashedCrossAll, max_level 2, "multi_hot"); a
// Dense(1) over the concatenation is the wide logit. A Dense kernel row per
// encoded id is a weight per id, so here every encoding is a derived
// categorical input with its own [ids, 1] embedding table, summed per row
// (kernels.Sum) and then over the features (layers.WideLogit). The derived
// ids are computed on the host from the batch's checked ids while the batch
// is fed (feeder), so every device sees the same ids.
//
// Deliberate differences from Merlin: padding is not encoded (Merlin's
// ListToDense pads short lists with id 0, which its multi-hot encoding and
// crosses then count as a present id 0); a multi-hot row is the set of its
// ids, as in Merlin, for lists and crosses alike; the cross hash is
// crossBucket, not TensorFlow's FarmHash fingerprint (the buckets differ,
// their use does not).

// Derived feature names: "wide/<feature>" for a feature's one-hot or
// multi-hot weights, "wide/cross/<a>/<b>" for the crosses of a and b (a < b
// by name). Each is also its table's name, so the parameters are
// "input/emb/wide/<feature>" and "input/emb/wide/cross/<a>/<b>".
const widePrefix = "wide/"

// wideInputs are a model's derived wide inputs.
type wideInputs struct {
	feats []*schema.Feature // in column order (InputOptions.Extra)
	specs map[string]wideSpec
}

// wideSpec says how one derived input is computed.
type wideSpec struct {
	src   []*schema.Feature // one source (one-/multi-hot) or two (cross)
	bins  int64             // crosses: the number of buckets
	limit int               // lists are truncated to their first limit ids
}

// wideSources are the features the wide part encodes: the categorical
// inputs without the user id (Merlin's scripts remove Tags.USER_ID from
// the wide schemas), in name order (feats is sorted).
func wideSources(feats []*schema.Feature) []*schema.Feature {
	var out []*schema.Feature
	for _, f := range feats {
		if f.HasTag(schema.TagCategorical) && !f.HasTag(schema.TagUserID) {
			out = append(out, f)
		}
	}
	return out
}

// parseIgnoreCombinations reads WNDIgnoreCombinations ("a:b" pairs) into a
// set of unordered pairs, checking both names against the wide sources.
func parseIgnoreCombinations(entries []string, sources []*schema.Feature) (map[[2]string]bool, error) {
	known := map[string]bool{}
	for _, f := range sources {
		known[f.Name] = true
	}
	out := map[[2]string]bool{}
	for _, e := range entries {
		a, b, ok := strings.Cut(e, ":")
		if !ok || a == "" || b == "" || strings.Contains(b, ":") {
			return nil, configErr("WNDIgnoreCombinations", "%q is not a pair of feature names a:b", e)
		}
		for _, n := range []string{a, b} {
			if !known[n] {
				return nil, configErr("WNDIgnoreCombinations", "%q: %q is not a categorical input of the wide part (the user id is not crossed)", e, n)
			}
		}
		if a == b {
			return nil, configErr("WNDIgnoreCombinations", "%q crosses a feature with itself", e)
		}
		out[pairKey(a, b)] = true
	}
	return out, nil
}

func pairKey(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

// wideDeepInputs returns the derived inputs of cfg's model over the input
// features feats, and adds their settings to opt: dim-1 tables,
// zero-initialised, summed over lists, with Wide&Deep's L2 factor; for
// DeepFM every embedding is EmbeddingsDim wide (the FM term needs one
// width). Models without a wide part return nil.
func wideDeepInputs(cfg *Config, feats []*schema.Feature, opt *layers.InputOptions) (*wideInputs, error) {
	if cfg.Model != "deepfm" && cfg.Model != "wide_n_deep" {
		return nil, nil
	}
	if opt.Dims == nil {
		opt.Dims = map[string]int{}
	}
	for _, f := range feats {
		if strings.HasPrefix(f.Name, widePrefix) {
			return nil, fmt.Errorf("input %q: names starting with %q are reserved for the wide part of --model %s", f.Name, widePrefix, cfg.Model)
		}
		if cfg.Model == "deepfm" && f.HasTag(schema.TagCategorical) {
			opt.Dims[f.DomainName()] = cfg.EmbeddingsDim
		}
	}
	w := &wideInputs{specs: map[string]wideSpec{}}
	sorted := slices.Clone(feats)
	slices.SortFunc(sorted, func(a, b *schema.Feature) int { return strings.Compare(a.Name, b.Name) })
	sources := wideSources(sorted)
	add := func(name string, spec wideSpec) {
		max, values := spec.bins-1, 1
		list := false
		if spec.bins == 0 {
			max = spec.src[0].IntDomain.Max
		}
		for _, s := range spec.src {
			if s.IsList() {
				list = true
				values *= spec.limit
			}
		}
		f := &schema.Feature{Name: name, DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical},
			IntDomain: &schema.IntDomain{Name: name, Max: max}}
		if list {
			f.Tags = append(f.Tags, schema.TagList)
			f.ValueCount = &schema.ValueCount{Max: int64(values)}
		}
		w.feats = append(w.feats, f)
		w.specs[name] = spec
	}
	for _, f := range sources {
		add(widePrefix+f.Name, wideSpec{src: []*schema.Feature{f}, limit: cfg.MultihotMaxSeqLength})
	}
	if cfg.Model == "wide_n_deep" {
		ignore, err := parseIgnoreCombinations(cfg.WNDIgnoreCombinations, sources)
		if err != nil {
			return nil, err
		}
		for i, a := range sources {
			for _, b := range sources[i+1:] {
				if ignore[pairKey(a.Name, b.Name)] {
					continue
				}
				add(widePrefix+"cross/"+a.Name+"/"+b.Name, wideSpec{src: []*schema.Feature{a, b},
					bins: int64(cfg.WNDHashedCrossNumBins), limit: cfg.MultihotMaxSeqLength})
			}
		}
	}
	if len(w.feats) == 0 {
		return nil, configErr("Model", "%s needs a categorical input other than the user id for its wide part", cfg.Model)
	}
	sum := kernels.Sum
	l2 := float32(0) // DeepFM's wide logit has no regulariser in Merlin
	if cfg.Model == "wide_n_deep" {
		l2 = float32(cfg.WNDWideL2Reg)
	}
	if opt.Domains == nil {
		opt.Domains = map[string]layers.DomainOptions{}
	}
	for _, f := range w.feats {
		opt.Dims[f.Name] = 1
		opt.Domains[f.Name] = layers.DomainOptions{Combiner: &sum, BatchL2: &l2, ZeroInit: true}
	}
	opt.Extra = w.feats
	return w, nil
}

// has reports whether the input named name is derived.
func (w *wideInputs) has(name string) bool {
	if w == nil {
		return false
	}
	_, ok := w.specs[name]
	return ok
}

// Deriver returns the function that computes the derived input name of a
// batch, for one feeder (it keeps its own buffers), or nil when name is not
// derived (step.Derived). The sources are read with the feeder's checks.
func (w *wideInputs) Deriver(name string) step.DeriveFunc {
	spec, ok := w.specs[name]
	if !ok {
		return nil
	}
	d := &wideDeriver{spec: spec}
	for _, s := range spec.src {
		var max int64 // the feeder's bound (Model.featMax)
		if s.IntDomain != nil {
			max = s.IntDomain.Max
		}
		d.src = append(d.src, step.NewIDColumn(s.Name, s.IsList(), max))
	}
	return d.derive
}

// wideDeriver computes one derived input.
type wideDeriver struct {
	spec      wideSpec
	src       []*step.IDColumn
	ids, offs []int32
}

// derive reads the sources (checked as any input is) and returns the
// derived ids, with offsets when the result is a list.
func (d *wideDeriver) derive(b *loader.Batch) ([]int32, []int32, error) {
	var ids, offs [2][]int32
	for i := range d.src {
		var err error
		if ids[i], offs[i], err = d.src[i].Read(b); err != nil {
			return nil, nil, err
		}
	}
	if len(d.src) == 1 && offs[0] == nil {
		return ids[0], nil, nil // one-hot: the weight of the id itself
	}
	if len(d.src) == 2 && offs[0] == nil && offs[1] == nil {
		d.ids = slices.Grow(d.ids[:0], b.Rows)[:b.Rows]
		for r := range d.ids {
			d.ids[r] = crossBucket(ids[0][r], ids[1][r], d.spec.bins)
		}
		return d.ids, nil, nil
	}
	// a list somewhere: one set of ids per row
	d.ids, d.offs = d.ids[:0], append(d.offs[:0], 0)
	for r := 0; r < b.Rows; r++ {
		start := len(d.ids)
		a := d.row(ids[0], offs[0], r)
		if len(d.src) == 1 {
			d.ids = append(d.ids, a...)
		} else {
			for _, x := range a {
				for _, y := range d.row(ids[1], offs[1], r) {
					d.ids = append(d.ids, crossBucket(x, y, d.spec.bins))
				}
			}
		}
		row := d.ids[start:]
		slices.Sort(row)
		d.ids = d.ids[:start+len(slices.Compact(row))]
		d.offs = append(d.offs, int32(len(d.ids)))
	}
	return d.ids, d.offs, nil
}

// row is row r of a source: its id, or its list truncated to the first
// limit ids.
func (d *wideDeriver) row(ids, offs []int32, r int) []int32 {
	if offs == nil {
		return ids[r : r+1]
	}
	lo, hi := int(offs[r]), int(offs[r+1])
	return ids[lo:min(hi, lo+d.spec.limit)]
}

// crossBucket is the bucket of the id pair (a, b) among bins buckets: the
// splitmix64 output function (Steele, Lea and Flood, OOPSLA 2014) of the
// 64-bit key a<<32 | b (each as uint32), plus the golden-gamma increment,
// modulo bins. It depends on nothing but the ids, so the buckets are the
// same on every device and in every process.
func crossBucket(a, b int32, bins int64) int32 {
	z := uint64(uint32(a))<<32 | uint64(uint32(b))
	return int32(splitmix.Mix(z+splitmix.Gamma) % uint64(bins))
}
